"""[sparkplug] on the I/O side: with ``[scan] io = "process"`` the edge node runs in the I/O
process (no busguard-sparkplug thread beside the scan), publishes what the scan process's
image holds, and ``busguard status`` still shows its session; and every point of the map's
layout is declared in the DBIRTH, even before the first meter read."""

from __future__ import annotations

import threading
import time

import pytest

from busguard.sparkplug import metrics as mx
from busguard.sparkplug.node import EdgeNode
from busguard.testing import io_process, running
from test_sparkplug_helpers import SITE, Broker, Host, names, value

NEVER_READ = {"header": {"runtime_state": "running"},
              "devices": [{"kind": "meter", "name": "m1", "slot": 0, "status": "not-connected",
                           "alarms": [], "flags": [], "points": {}, "counters": {}}],
              "outputs": {}, "alarms": {}, "extras": {}}


def test_a_dbirth_before_the_first_read_declares_every_point_of_the_layout_as_null():
    from busguard.northbound import mapdef as md

    node = EdgeNode("g", "n")
    cur = node.current(NEVER_READ, {})
    birth = node.dbirth(cur["m1"], 1_000_000)
    declared = {m.name: m for m in birth.metrics}
    for q in md.STANDARD["meter"]:
        m = declared[q]
        assert m.is_null and m.alias == mx.alias_of("meter", 0, q)
        assert dict(zip(m.properties.keys, [value(v) for v in m.properties.values],
                        strict=True)) == {"Quality": 0, "quality": "not-connected"}
    for c in md.ENERGY_COUNTERS:
        assert declared[f"counter/{c}"].is_null
    node.baseline(cur)
    # the first read: DDATA carries only aliases the DBIRTH declared, with quality good
    dev = dict(NEVER_READ["devices"][0], status="good", points={
        "power_kw": {"value": 12.0, "quality": "good", "age_ms": 3}})
    d = node.delta(node.current(dict(NEVER_READ, devices=[dev]), {}))
    data = EdgeNode.data(d.changes["m1"], 1_000_000)
    aliases = {m.alias for m in birth.metrics}
    assert [m.alias for m in data.metrics if m.alias not in aliases] == []
    pk = next(m for m in data.metrics if m.alias == mx.alias_of("meter", 0, "power_kw"))
    assert value(pk) == pytest.approx(12.0) and "good" in [value(v) for v in
                                                           pk.properties.values]


@pytest.mark.integration
def test_with_an_io_process_the_edge_node_runs_there(tmp_path):

    b = Broker(tmp_path)
    b.start()
    h = Host(b.port).connect()
    text = io_process(SITE.format(state=tmp_path / "state", port=b.port, extra=""))
    site = tmp_path / "site.toml"
    site.write_text(text)
    try:
        with running(site) as rt:
            h.wait(lambda: len(h.all("DBIRTH")) == 3, timeout=60)
            assert not [th for th in threading.enumerate() if th.name == "busguard-sparkplug"]
            m1 = names(next(m for m in h.all("DBIRTH") if m.device == "m1"))
            assert m1["power_kw"].is_null  # nothing read yet, declared all the same
            aliases = {m.alias for m in m1.values()}
            deadline = time.monotonic() + 30
            kw = 40.0
            while not [m for m in h.all("DDATA") if m.device == "m1" and any(
                    value(x) == kw for x in m.payload.metrics)]:
                assert time.monotonic() < deadline, [m.topic for m in h.all()][-10:]
                rt.image.write("m1.power_kw", kw)
                time.sleep(0.2)
            assert all(x.alias in aliases for m in h.all("DDATA") if m.device == "m1"
                       for x in m.payload.metrics)
            spb = next(p for p in rt.publishers if p.section == "sparkplug")
            # its status comes from the I/O process's statistics (once a second)
            Host.wait_for(lambda: spb.status().get("connected") and spb.status()["ddata"] >= 1,
                          timeout=10)
    finally:
        h.close()
        b.stop()
