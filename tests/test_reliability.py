"""The reliability suite (issue 21): a real `busguard run` in each io mode under hostile
input on loopback, bounded in count and time. Marked ``reliability``: deselected by default,
run once in CI (`pytest -m reliability`, about 1-2 minutes). The figures in
docs/reliability.md come from the same code (tools/hostile.py) with the longer settings.

Also in the suite (same marker): tests/test_apply_bind.py (a reload that cannot bind, io =
"process") and tests/test_site_limits.py (a 50 MB site file on SIGHUP)."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import hostile  # tools/hostile.py: the same code makes the report's figures

pytestmark = pytest.mark.reliability
MODES = ["thread", "process"]


def alias_ok() -> bool:
    try:
        with socket.socket() as s:
            s.bind(("127.0.3.7", 0))
        return True
    except OSError:
        return False


if not alias_ok():  # pragma: no cover - every Linux loopback has 127/8
    pytest.skip("no 127.0.0.0/8 loopback addresses here", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _nofile() -> None:
    hostile.raise_nofile()


@pytest.mark.parametrize("io", MODES)
def test_100k_fuzzed_frames_leave_the_runtime_serving_without_a_traceback(io: str) -> None:
    t = hostile.Target(io, hostile.FUZZ_SERVER)
    try:
        got = hostile.fuzz(t.port, 100_000, time_limit_s=90.0)
        assert got["frames"] == 100_000, got
        assert got["probes_lost"] == 0, got  # every well-formed request before garbage answered
        assert t.alive() and t.read_ok()
        logs = t.log_figures()
        assert logs["tracebacks"] == 0, t.log.read_text()[-3000:]
        assert logs["pymodbus_lines"] == 0
        assert logs["log_lines"] < 60, t.log.read_text()[-3000:]  # once per streak, no flood
    finally:
        t.stop()


@pytest.mark.parametrize("io", MODES)
def test_a_priority_dcim_connects_and_reads_through_a_1000_connection_flood(io: str) -> None:
    """1,000 connections from 250 addresses (127.0.x.y), trickling bytes and reconnecting as
    fast as they are dropped; the DCIM in `priority` connects and reads meanwhile."""
    t = hostile.Target(io, hostile.FLOOD_SERVER)
    try:
        got = hostile.flood(t.port, 1000, 250, seconds=5.0, dcims=("127.0.0.4",))
        dcim = got["dcim"]["127.0.0.4"]
        assert got["attackers"].get("opened", 0) >= 1000, got
        assert dcim["connects"] >= 1 and dcim["reads"] >= 10, got
        assert t.alive() and t.read_ok()
        assert t.log_figures()["tracebacks"] == 0
    finally:
        t.stop()


@pytest.mark.parametrize("io", MODES)
def test_trickling_clients_do_not_lock_out_a_reconnecting_dcim(io: str) -> None:
    """The issue's lockout against a real runtime: 4 addresses x 4 connections sending one
    byte now and then fill the 16-connection cap; an ordinary client from another address
    (not in `priority`: eviction, not the reserve) still gets in and reads."""
    server = hostile.FLOOD_SERVER.replace("idle_timeout_s = 10.0", "idle_timeout_s = 4.0")
    t = hostile.Target(io, server)
    stop = threading.Event()
    socks = [hostile.connect(t.port, f"127.0.1.{a}") for a in range(1, 5) for _ in range(4)]

    def trickle() -> None:
        while not stop.wait(0.2):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"\x01")

    th = threading.Thread(target=trickle, daemon=True)
    th.start()
    try:
        got = hostile.dcim_reads(t.port, "127.0.0.3", seconds=8.0, period_s=0.05)
        assert got["reads"] >= 1, got
    finally:
        stop.set()
        th.join(timeout=5)
        for s in socks:
            s.close()
        t.stop()
