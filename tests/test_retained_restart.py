"""Restart end to end: `busguard run` in a subprocess, killed with SIGKILL, started again.

A throwaway third-party plugin (installed the real way: a module and a ``.dist-info`` with a
``busguard`` entry point on PYTHONPATH) brings a meter driver fed from a JSON file (so the test
decides when fresh readings arrive) and a latching trip block. The DCIM's view is read through
the map with the raw Modbus client, as any DCIM would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from busguard.northbound import mapdef
from test_northbound_helpers import f32, read, wait_for

PLUGIN_SRC = '''
"""busguard test plugin: a meter fed from a JSON file, and a latching trip block."""
import json
import threading

from busguard import hookimpl
from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult, BreakerStatus, BreakerView
from busguard.config.params import Param
from busguard.driver import Driver
from busguard.image import PointSpec, Quality


class FileMeter(Driver):
    type_name = "file_feed"
    kind = "meter"
    params = {"points": Param(list, item=str, default=()),
              "feed": Param(str, default="feed.json")}

    @classmethod
    def declare_points(cls, config, site):
        age = config.poll_s * site.scan.stale_after_polls
        return [PointSpec(f"{config.name}.{p}", source=config.name, max_age_s=age)
                for p in config.params["points"]]

    def start(self, ctx):
        self.stop_ev = threading.Event()
        path = self.site.resolve(self.config.params["feed"])

        def loop():
            while not self.stop_ev.wait(self.config.poll_s):
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                items = [(f"{self.name}.{k}", float(v), Quality.GOOD)
                         for k, v in data.get(self.name, {}).items()
                         if f"{self.name}.{k}" in ctx.image]
                if items:
                    ctx.image.write_many(items)

        threading.Thread(target=loop, daemon=True).start()

    def stop(self):
        self.stop_ev.set()


class LatchTrip(Block):
    type_name = "latch_trip"
    params = {"point": Param(str, ref="point"), "breaker": Param(str, ref="breaker"),
              "above": Param(float)}

    def __init__(self, name, params):
        super().__init__(name, params)
        self.latched = False
        self.last_cmd = None

    def inputs(self):
        return (self.p["point"],)

    def outputs(self):
        return {self.p["breaker"] + ".shunt_trip": 0.0}

    def points(self):
        return [PointSpec(self.p["breaker"] + ".cmd_reset", source="command", command=True,
                          minval=0, maxval=65535)]

    def scan(self, snap, now):
        cmd = self.p["breaker"] + ".cmd_reset"
        high = snap.value(self.p["point"]) > self.p["above"]
        if snap.is_good(cmd):
            v = snap.values[snap.index[cmd]]
            if self.last_cmd is not None and v != self.last_cmd and not high:
                self.latched = False
            self.last_cmd = v
        if high:
            self.latched = True
        res = BlockResult(outputs={self.p["breaker"] + ".shunt_trip": float(self.latched)})
        if self.latched:
            res.alarms.append(AlarmCondition("trip", Severity.CRITICAL, "BG-TEST-TRIP",
                                             "latched trip", device=self.p["breaker"],
                                             latch=True))
        return res

    def map_breakers(self):
        br = self.p["breaker"]
        return (BreakerView(br, br + ".shunt_trip", br + ".cmd_reset"),)

    def breakers(self):
        return {self.p["breaker"]: BreakerStatus(self.latched)}

    def state(self):
        return {"latched": self.latched}

    def restore(self, state):
        self.latched = bool(state.get("latched"))


@hookimpl
def busguard_register_types(registry):
    registry.add_driver(FileMeter)
    registry.add_block(LatchTrip)
'''

SITE = """
[site]
name = "restart-test"

[scan]
period_ms = 10

[retained]
interval_s = {interval}

[[meter]]
name = "pqm-a1"
driver = "file_feed"
poll_ms = 20
points = ["current_l1_a", "voltage_l1_n_v"]

[[breaker]]
name = "cb-a1-01"
driver = "memory"
points = ["led"]

[[block]]
name = "trip-a1"
type = "latch_trip"
point = "pqm-a1.current_l1_a"
breaker = "cb-a1-01"
above = 1000.0

[modbus_server]
port = {port}
write_allow = ["127.0.0.1/32"]
"""


def install_plugin(d: Path) -> Path:
    """A module plus its .dist-info with an entry point: a real (throwaway) installation."""
    (d / "bgtestplug.py").write_text(PLUGIN_SRC, encoding="utf-8")
    info = d / "bgtestplug-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bgtestplug\nVersion: 0.1\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text("[busguard]\nbgtestplug = bgtestplug\n",
                                           encoding="utf-8")
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(d: Path, port: int, interval: float = 0.05) -> Path:
    path = d / "site.toml"
    path.write_text(SITE.format(port=port, interval=interval), encoding="utf-8")
    return path


def feed(d: Path, current: float, voltage: float) -> None:
    tmp = d / "feed.json.tmp"
    tmp.write_text(json.dumps({"pqm-a1": {"current_l1_a": current, "voltage_l1_n_v": voltage}}))
    os.replace(tmp, d / "feed.json")


def start(d: Path, site: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(d))
    busguard = Path(sys.executable).with_name("busguard")
    return subprocess.Popen([str(busguard), "run", str(site), "--stats-every", "0"], cwd=d,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def first_read(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> list[int]:
    """Poll until the map answers (the earliest moment a DCIM could read it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("busguard exited: " + proc.stdout.read().decode())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                return read(s, 0, 64)
        except OSError:
            time.sleep(0.002)
    raise AssertionError("the map never answered")


def snapshot(port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        head = read(s, 0, 64)
        meter = read(s, 1000, 124)
        breaker = read(s, mapdef.LAYOUT["breaker"][0], 12)  # breaker slot 0
    cur = 8 + 6 * 4  # current_l1_a is the 7th meter quantity
    volt = 8
    return {"origin": head[3], "restored": head[5], "retained": head[4],
            "cycle": head[6] << 16 | head[7], "current": f32(meter[cur:cur + 2]),
            "current_q": meter[cur + 2], "voltage": f32(meter[volt:volt + 2]),
            "voltage_q": meter[volt + 2], "flags": breaker[3], "alarms": head[16]}


@pytest.fixture
def unit(tmp_path):
    d = install_plugin(tmp_path)
    port = free_port()
    return d, port, write_site(d, port)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    finally:
        if proc.stdout:
            proc.stdout.close()


def test_restart_after_kill_9_serves_last_values_stale_then_fresh(unit):
    d, port, site = unit
    proc = start(d, site)
    try:
        first_read(port, proc)
        feed(d, 1500.0, 277.5)  # over the trip threshold: the trip latches
        wait_for(lambda: snapshot(port)["flags"] & 2, timeout=10, what="trip latched")
        feed(d, 420.0, 278.25)  # the cause goes; the trip stays latched
        wait_for(lambda: snapshot(port)["current"] == 420.0, timeout=10, what="new reading")
        time.sleep(0.2)  # let the 50 ms retained interval pass a few times (saves in flight)
    finally:
        stop(proc, signal.SIGKILL)  # no shutdown hook, no final save
    (d / "feed.json").unlink()  # the meters are silent at the next start

    # How soon the first read comes is the bench's restart figure (`busguard bench --only
    # restart`), never a timing assertion here: this asserts what the first answer holds.
    proc = start(d, site)
    head = first_read(port, proc)
    try:
        assert head[3] == 1 and head[4] == 0  # RESTORED, retained state loaded
        s = snapshot(port)
        assert s["current"] == 420.0 and s["voltage"] == 278.25  # last known values...
        assert s["current_q"] == 1 and s["voltage_q"] == 1  # ...served stale
        assert s["flags"] & 2  # the latched trip survived kill -9 (restored before any scan)
        wait_for(lambda: snapshot(port)["cycle"] > 0, what="first scan")
        assert snapshot(port)["flags"] & 1  # and the first scan drives the shunt trip again
        feed(d, 421.0, 279.0)  # the meter answers again
        wait_for(lambda: snapshot(port)["origin"] == 0, timeout=10, what="LIVE")
        s = snapshot(port)
        assert s["current"] == 421.0 and s["current_q"] == 0 and s["restored"] == 0
        assert s["flags"] & 2  # still latched: only a reset clears it
    finally:
        stop(proc)
    out = proc.returncode
    assert out == 0


def test_clean_stop_saves_and_a_reset_clears_the_latch_for_good(unit):
    d, port, site = unit
    proc = start(d, site)
    try:
        first_read(port, proc)
        feed(d, 1500.0, 277.0)
        wait_for(lambda: snapshot(port)["flags"] & 2, timeout=10, what="trip latched")
        feed(d, 400.0, 277.0)
        wait_for(lambda: snapshot(port)["current"] == 400.0, timeout=10, what="reading")
        from test_northbound_helpers import write

        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            head = read(s, 0, 64)
            cmd_base = head[32 + 3 * 5]
            # commands: cmd.ack_alarms, cmd.reset_faults, cb-a1-01.cmd_reset
            assert write(s, cmd_base + 2 * 4 + 2, [0, 1]) is None  # baseline
            wait_for(lambda: read(s, cmd_base + 2 * 4 + 2, 2) == [0, 1], what="baseline seen")
            assert write(s, cmd_base + 2 * 4 + 2, [0, 2]) is None  # reset
        wait_for(lambda: not snapshot(port)["flags"] & 2, timeout=10, what="trip reset")
    finally:
        stop(proc)
    assert proc.returncode == 0
    proc = start(d, site)
    try:
        first_read(port, proc)
        s = snapshot(port)
        assert not s["flags"] & 3  # the reset survived too
        with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
            head = read(c, 0, 64)
            cmd_base = head[32 + 3 * 5]
            assert read(c, cmd_base + 2 * 4 + 2, 2) == [0, 2]  # the counter continues
    finally:
        stop(proc)
