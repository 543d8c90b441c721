"""`busguard run` under a systemd-like supervisor: a real AF_UNIX datagram socket as
NOTIFY_SOCKET, a real subprocess, real signals (READY, WATCHDOG, STATUS, SIGHUP, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from busguard import hookimpl
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.runtime import Runtime
from busguard.service import Service, clear_realtime, set_realtime, watchdog_interval

SITE = """\
[site]
name = "svc-test"

[scan]
period_ms = 10

[paths]
state_dir = "state"
fault_log = "log/fault.log"

[service]
realtime = "{rt}"
status_every_s = 0.2

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
initial = {{ current_l1_a = 100.0 }}

[[output]]
name = "relays"
driver = "memory"
outputs = ["relay.alarm"]

[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = {high}
code = "BG-HI"
output = "relay.alarm"
"""


class Notifications:
    """The systemd side: a bound datagram socket collecting what the service sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, predicate, timeout: float = 30.0) -> str:
        """Receive until a message satisfies ``predicate``; returns it. (The timeout is a
        bound, not a timing claim: a reload checks the file in a child process and builds
        the site, seconds on a loaded CI machine.)"""
        for _t, msg in self.messages:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching notification in {timeout} s; got "
                                     f"{[m for _t, m in self.messages][-10:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            msg = data.decode()
            self.messages.append((time.monotonic(), msg))
            if predicate(msg):
                return msg

    def drain(self) -> list[str]:
        """Everything still queued (after the process exited)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
        except BlockingIOError:
            pass
        return [m for _t, m in self.messages]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.close()


def _start(tmp_path: Path, notify: Notifications, high: float = 500.0, rt: str = "off",
           watchdog_usec: int = 400_000) -> subprocess.Popen:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(high=high, rt=rt), encoding="utf-8")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec))
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(site),
                             "--stats-every", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _status(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "status.json").read_text())


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def test_ready_watchdog_status_and_clean_sigterm(tmp_path: Path, notify: Notifications) -> None:
    proc = _start(tmp_path, notify, rt="auto")
    try:
        ready = notify.wait_for(lambda m: "READY=1" in m)
        assert "STATUS=scan cycle" in ready
        pid = int((tmp_path / "state" / "busguard.pid").read_text())
        assert pid == proc.pid
        notify.wait_for(lambda m: m == "WATCHDOG=1")
        notify.wait_for(lambda m: m == "WATCHDOG=1" and
                        sum(1 for _t, x in notify.messages if x == "WATCHDOG=1") >= 3)
        notify.wait_for(lambda m: m.startswith("STATUS=scan cycle") and "0 alarms" in m)
        st = _wait_status(tmp_path, lambda s: s["ready"])
        assert st["pid"] == proc.pid and st["state"] == "running"
        assert st["watchdog_s"] == pytest.approx(0.2)
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "stopped (SIGTERM)" in out
    assert notify.drain()[-1].startswith("STOPPING=1")
    assert not (tmp_path / "state" / "busguard.pid").exists()
    assert "scan thread scheduling:" in err  # says what it got (FIFO or why not)


def test_sighup_good_bad_and_unchanged(tmp_path: Path, notify: Notifications) -> None:
    proc = _start(tmp_path, notify)
    site = tmp_path / "site.toml"
    try:
        notify.wait_for(lambda m: "READY=1" in m)
        first = _wait_status(tmp_path, lambda s: s["ready"])["config_hash"]
        # good change: the alarm threshold drops below the reading -> alarm after the swap
        site.write_text(SITE.format(high=50.0, rt="off"), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        notify.wait_for(lambda m: m.startswith("RELOADING=1"))
        notify.wait_for(lambda m: "READY=1" in m and m != notify.messages[0][1])
        notify.wait_for(lambda m: m.startswith("STATUS=") and "1 alarm active" in m)
        st = _wait_status(tmp_path, lambda s: s.get("last_reload", {}).get("ok") is True)
        assert st["config_hash"] != first and st["pid"] == proc.pid
        second = st["config_hash"]
        # bad change: refused, logged, the running site goes on
        site.write_text(SITE.format(high=50.0, rt="off") + "\nbogus_option = 1\n[oops\n")
        proc.send_signal(signal.SIGHUP)
        msg = notify.wait_for(lambda m: "reload refused" in m)
        assert "previous site.toml keeps running" in msg
        st = _wait_status(tmp_path, lambda s: s["last_reload"].get("ok") is False)
        assert st["config_hash"] == second and st["state"] == "running"
        assert "not valid TOML" in st["last_reload"]["message"]
        n_pings = sum(1 for _t, m in notify.messages if m == "WATCHDOG=1")
        notify.wait_for(lambda m: m == "WATCHDOG=1" and sum(
            1 for _t, x in notify.messages if x == "WATCHDOG=1") > n_pings + 1)
    finally:
        _out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "reload refused" in err and "not valid TOML" in err
    assert "carried over" in err


def _wait_status(tmp_path: Path, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    while True:
        try:
            st = _status(tmp_path)
            if pred(st):
                return st
        except (OSError, ValueError):
            st = {}
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {st}")
        ev.wait(0.05)  # polling a file another process writes, not waiting for a scan


# -- in-process: the health rule on the fake clock -----------------------------------------
def test_watchdog_pings_only_while_on_time(tmp_path: Path, make_runtime, run_scans,
                                           fake_clock) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "n.sock"))
    server.setblocking(False)
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "100000"}
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = env["NOTIFY_SOCKET"]  # sdnotify reads os.environ itself
    try:
        svc = Service(env)
    finally:
        if old is None:
            os.environ.pop("NOTIFY_SOCKET")
        else:
            os.environ["NOTIFY_SOCKET"] = old
    assert svc.watchdog_s == pytest.approx(0.05)
    rt = make_runtime(SITE.format(high=500.0, rt="off").replace('"state"', f'"{tmp_path}/s"'),
                      extra=[svc], start=True)

    def drain() -> list[str]:
        out = []
        while True:
            try:
                out.append(server.recv(4096).decode())
            except BlockingIOError:
                return out

    run_scans(rt, 30)  # 0.3 s of 10 ms scans on time
    got = drain()
    assert got[0].startswith("READY=1")
    assert got.count("WATCHDOG=1") == 5  # healthy from cycle 10, then every 50 ms
    # every scan now starts 15 ms late: unhealthy, no pings however long it lasts
    run_scans(rt, 30, between=lambda _rt, _i: fake_clock.advance(0.025))
    assert "WATCHDOG=1" not in drain()
    assert not svc.healthy
    run_scans(rt, 20)  # back on time: pings resume after 10 good cycles
    assert drain().count("WATCHDOG=1") >= 1
    server.close()


def test_watchdog_interval_rules() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000",
                              "WATCHDOG_PID": str(os.getpid())}) == 1.0


def test_realtime_request_reports_what_it_got() -> None:
    got: list[str] = []

    def scan_thread() -> None:
        got.append(set_realtime(10))
        clear_realtime()
        got.append(str(os.sched_getscheduler(0)))

    t = threading.Thread(target=scan_thread)
    t.start()
    t.join(5)
    assert got[0].startswith(("SCHED_FIFO priority 10", "SCHED_OTHER (SCHED_FIFO 10 refused"))
    assert got[1] == str(os.SCHED_OTHER)


def test_outside_systemd_the_service_is_inert(tmp_path: Path, make_runtime, run_scans,
                                               caplog) -> None:
    svc = Service({})
    assert not svc.notify_enabled and svc.watchdog_s is None
    rt = make_runtime(SITE.format(high=500.0, rt="off").replace('"state"', f'"{tmp_path}/s"'),
                      extra=[svc], start=True)
    with caplog.at_level("WARNING"):
        run_scans(rt, 15)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    assert svc.ready and svc.healthy and svc.pings == 0


RELAY_SITE = """\
[site]
name = "sigterm"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

[service]
realtime = "off"
status_every_s = 0.1

[gpio]
backend = "mock"
mock_dir = "gpio"

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
initial = { current_l1_a = 100.0 }

[[output]]
name = "alarm-relay"
driver = "gpio_relay"
line = 20
output = "relay.alarm"

[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 500.0
output = "relay.alarm"
output_failsafe = 1.0
"""


def test_sigterm_drives_outputs_to_failsafe_and_flushes_state(tmp_path: Path,
                                                              notify: Notifications) -> None:
    """The relay line (mock GPIO: a file per line, written by the real gpio_relay driver) is
    off while running and at its declared fail-safe level after SIGTERM; retained state is
    on disk."""
    site = tmp_path / "site.toml"
    site.write_text(RELAY_SITE)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(site),
                             "--stats-every", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = tmp_path / "gpio" / "20"
    try:
        notify.wait_for(lambda m: "READY=1" in m)
        _wait_status(tmp_path, lambda s: s["ready"] and s["cycles"] > 5)
        assert line.read_text().strip() == "0"
    finally:
        _out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert line.read_text().strip() == "1"  # fail-safe applied before the driver stopped
    assert (tmp_path / "state" / "retained.json").exists()
    assert notify.drain()[-1].startswith("STOPPING=1")


class Hang(Block):
    """Scans normally until ``hang`` is set, then blocks in scan() until ``release``."""

    type_name = "test_hang"
    params: ClassVar[Mapping[str, Param]] = {"point": Param(str, ref="point")}

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.hang = threading.Event()
        self.release = threading.Event()

    def inputs(self) -> tuple[str, ...]:
        return (self.p["point"],)

    def scan(self, inputs, now: float) -> BlockResult:
        if self.hang.is_set():
            self.release.wait(20)
        return BlockResult()


class HangTypes:
    @hookimpl
    def busguard_register_types(self, registry) -> None:
        registry.add_block(Hang)


def test_a_hung_scan_stops_the_pings_while_status_goes_on(tmp_path: Path,
                                                          notify: Notifications) -> None:
    """Real clock, real scan thread: the watchdog is fed from the scan path only, so a block
    stuck in scan() stops the pings (systemd would restart us) while STATUS= says why."""
    site = tmp_path / "site.toml"
    site.write_text(f"""[site]
name = "hang"
[paths]
state_dir = "{tmp_path}/state"
fault_log = "{tmp_path}/state/fault.log"
[service]
realtime = "off"
status_every_s = 0.1
[[meter]]
name = "m1"
driver = "memory"
points = ["a"]
initial = {{ a = 1.0 }}
[[block]]
name = "stuck"
type = "test_hang"
point = "m1.a"
""")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "100000"}
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = env["NOTIFY_SOCKET"]
    try:
        svc = Service(env)
    finally:
        if old is None:
            os.environ.pop("NOTIFY_SOCKET")
        else:
            os.environ["NOTIFY_SOCKET"] = old
    rt = Runtime.from_file(site, extra=[svc, HangTypes()])
    rt.start()
    scan = threading.Thread(target=rt.run, daemon=True)
    scan.start()
    block = rt.blocks[0]
    try:
        notify.wait_for(lambda m: m == "WATCHDOG=1")
        block.hang.set()
        notify.wait_for(lambda m: "SCAN STALLED" in m)
        stalled_at = len(notify.messages)
        for _ in range(3):  # three more status refreshes (0.3 s: six pings' worth)
            n = len(notify.messages)
            notify.wait_for(lambda m, n=n: m.startswith("STATUS=") and
                            len(notify.messages) > n)
        assert "WATCHDOG=1" not in [m for _t, m in notify.messages[stalled_at:]]
        st = svc.status()
        assert st["stalled"] is True and st["healthy"] is False
        block.hang.clear()
        block.release.set()
        n = len(notify.messages)
        notify.wait_for(lambda m: m == "WATCHDOG=1" and len(notify.messages) > n)
    finally:
        block.hang.clear()
        block.release.set()
        rt.request_stop()
        scan.join(10)
        rt.stop()
