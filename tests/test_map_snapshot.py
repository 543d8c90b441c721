"""The decoded map the other interfaces serve (busguard.northbound.snapshot): the same data a
DCIM reads over Modbus TCP, decoded once per scan image however many callers ask."""

from __future__ import annotations

import pytest

from busguard.commands.status import connect, reader
from busguard.errors import BusguardError
from busguard.northbound.reader import read_all
from busguard.northbound.snapshot import map_snapshot

SITE = """
[site]
name = "snap"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "voltage_l1_n_v"]
[[block]]
name = "limit"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
code = "BG-LIMIT"
[modbus_server]
port = 0
"""


def test_the_snapshot_is_what_the_dcim_reads_over_tcp(make_runtime, run_scans):
    rt = make_runtime(SITE, start=True)
    snap = map_snapshot(rt.publishers)
    assert map_snapshot(rt.publishers) is snap  # one per process, shared
    client = connect("127.0.0.1", rt.publishers[0].port(), 3.0)
    try:
        rt.image.write("m1.current_l1_a", 150.0)  # above 100 A: an alarm
        run_scans(rt, 3)
        first = snap.latest()
        assert snap.latest() is first  # no new scan: no new decode
        gen = snap.generation
        assert first == read_all(reader(client, 1))
        m1 = next(d for d in first["devices"] if d["name"] == "m1")
        assert m1["points"]["current_l1_a"]["value"] == pytest.approx(150.0)
        assert first["alarms"]["limit"]["count"] == 1
        rt.image.write("m1.current_l1_a", 20.0)
        run_scans(rt, 2)
        second = snap.latest()
        assert snap.generation == gen + 1
        m1 = next(d for d in second["devices"] if d["name"] == "m1")
        assert m1["points"]["current_l1_a"]["value"] == pytest.approx(20.0)
        assert second == read_all(reader(client, 1))
    finally:
        client.close()


def test_without_a_modbus_server_the_error_says_what_to_add(make_runtime):
    rt = make_runtime(SITE.replace("[modbus_server]\nport = 0\n", ""), start=True)
    with pytest.raises(BusguardError, match=r"needs a \[modbus_server\] table"):
        map_snapshot(rt.publishers)
