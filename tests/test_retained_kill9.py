"""kill -9 at random moments while retained state is being saved, round after round: a latched
trip and an acknowledgement, once on disk, are never lost; and a restart of a unit with
latched, acknowledged alarms adds no raise/clear pair to the fault log.

A real ``busguard run`` process (the throwaway plugin of test_retained_restart: a meter fed
from a JSON file and a latching trip block), read and commanded through its Modbus map.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time

import pytest

from busguard.northbound import mapdef
from busguard.statefile import load_newest
from test_northbound_helpers import read, wait_for, write
from test_retained_restart import (
    feed,
    first_read,
    free_port,
    install_plugin,
    start,
    stop,
    write_site,
)

pytestmark = pytest.mark.reliability


def head(port: int) -> list[int]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        return read(s, 0, 64)


def breaker_flags(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        return read(s, mapdef.LAYOUT["breaker"][0], 12)[3]  # breaker slot 0


def acknowledge(port: int, n: int) -> None:
    """Write the cmd.ack_alarms counter (the first command) to n, as a DCIM would."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        cmd_base = read(s, 0, 64)[32 + 3 * 5]
        assert write(s, cmd_base + 2, [0, n]) is None


def alarm_on_disk(path, alarm_id: str) -> dict | None:
    try:
        body = load_newest(path).body
    except OSError:  # a slot being written: retry later
        return None
    return next((a for a in (body or {}).get("alarms", []) if a["id"] == alarm_id), None)


class Feeder:
    """Changes the meter's values every few ms, so values are saved continuously."""

    def __init__(self, d, current: float) -> None:
        self.d = d
        self.current = current
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self._stop.wait(0.005) and k < 100_000:
            k += 1
            feed(self.d, self.current + (k % 50) / 10.0, 230.0 + (k % 7))

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def latch_and_acknowledge(d, port, proc, path) -> None:
    first_read(port, proc)
    feed(d, 1500.0, 230.0)
    wait_for(lambda: breaker_flags(port) & 2, timeout=10, what="trip latched")
    feed(d, 400.0, 230.0)
    wait_for(lambda: head(port)[17] == 1, timeout=10, what="the trip alarm unacknowledged")
    acknowledge(port, 1)
    acknowledge(port, 2)  # the first write is the baseline, the change acknowledges
    wait_for(lambda: head(port)[17] == 0, timeout=10, what="acknowledged")
    wait_for(lambda: (alarm_on_disk(path, "trip-a1:trip") or {}).get("acked"), timeout=10,
             what="the acknowledgement on disk")


def test_kill_9_at_random_moments_during_saves_never_loses_a_trip_or_an_ack(tmp_path):
    d = install_plugin(tmp_path)
    port = free_port()
    site = write_site(d, port, interval=0.01)  # values saved every 10 ms: always mid-save
    path = d / "var" / "lib" / "busguard" / "retained.json"
    seed = int(os.environ.get("BG_KILL9_SEED", "0")) or random.randrange(1, 10**6)
    rng = random.Random(seed)
    proc = start(d, site)
    try:
        latch_and_acknowledge(d, port, proc, path)
    finally:
        stop(proc, signal.SIGKILL)
    rounds, torn = 12, 0
    with Feeder(d, 400.0):
        for r in range(rounds):
            proc = start(d, site)
            try:
                h = first_read(port, proc)
                # restored before anything serves: latched, still acknowledged
                assert breaker_flags(port) & 2, f"round {r} (seed {seed}): trip lost"
                assert h[16] >= 1 and h[17] == 0, \
                    f"round {r} (seed {seed}): alarms {h[16]}, unacknowledged {h[17]}"
                time.sleep(rng.uniform(0.05, 0.5))  # saves every 10 ms: killed in one
            finally:
                stop(proc, signal.SIGKILL)
            torn += len(load_newest(path).damaged)
    proc = start(d, site)
    try:
        first_read(port, proc)
        assert breaker_flags(port) & 2 and head(port)[17] == 0
    finally:
        stop(proc)
    print(f"seed {seed}: {rounds} kills, {torn} left a torn slot (killed mid-write)")


THERMAL_SITE = """
[site]
name = "thermal-restart"
[scan]
period_ms = 10
[retained]
values_every_s = 0.05
[onewire]
base_dir = "w1/devices"
[[probe]]
name = "tap-1"
sensor_id = "28-00000a1c0001"
poll_ms = 100
[[probe]]
name = "tap-2"
sensor_id = "28-00000a1c0002"
poll_ms = 100
[[block]]
name = "busbar-a"
type = "thermal_interlock"
probes = ["tap-1", "tap-2"]
disagreement_c = 10.0
[modbus_server]
port = {port}
write_allow = ["127.0.0.1/32"]
"""


def test_restart_with_latched_acknowledged_alarms_adds_no_raise_clear_pair(tmp_path):
    """The issue's case: a latched 0xCF trip and a BG-PROBE-DISAGREE (not latching), both
    acknowledged. Before, each restart cleared the disagreement at the first scan (its
    probes were restored values, stale until read) and raised it again a second later, its
    acknowledgement lost."""
    from busguard.w1 import write_sensor_file

    base = tmp_path / "w1" / "devices"
    write_sensor_file(base, "28-00000a1c0001", 95.0)  # over trip_c: 0xCF, latched
    write_sensor_file(base, "28-00000a1c0002", 60.0)  # 35 C apart: BG-PROBE-DISAGREE
    port = free_port()
    site = tmp_path / "site.toml"
    site.write_text(THERMAL_SITE.format(port=port), encoding="utf-8")
    path = tmp_path / "var" / "lib" / "busguard" / "retained.json"
    log = tmp_path / "var" / "log" / "power" / "distribution_fault.log"
    proc = start(tmp_path, site)
    try:
        first_read(port, proc)
        wait_for(lambda: head(port)[17] == 2, timeout=10, what="0xCF and the disagreement")
        acknowledge(port, 1)
        acknowledge(port, 2)
        wait_for(lambda: head(port)[17] == 0, timeout=10, what="acknowledged")
        wait_for(lambda: all((alarm_on_disk(path, a) or {}).get("acked") for a in
                             ("busbar-a:trip", "busbar-a:disagree")), timeout=10,
                 what="the acknowledgements on disk")
    finally:
        stop(proc)
    before = log.read_text().splitlines()
    assert any("0xCF" in line for line in before)
    assert any("BG-PROBE-DISAGREE" in line for line in before)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = start(tmp_path, site)
        try:
            first_read(port, proc)
            wait_for(lambda: head(port)[3] == 0, timeout=10, what="LIVE: probes read again")
            time.sleep(1.5)  # past the restored alarms' hold: a clear would have come
            h = head(port)
            assert h[17] == 0, f"{h[17]} unacknowledged after the restart"
            assert h[16] >= 2
        finally:
            stop(proc, sig)
    added = log.read_text().splitlines()[len(before):]
    mine = [line for line in added if "busbar-a:trip" in line or "busbar-a:disagree" in line]
    assert not mine, "a restart cleared and raised a restored alarm:\n" + "\n".join(mine)
