"""`busguard demo` as a user runs it: a subprocess that starts the simulator, runs the scan
and stops both cleanly (end of --duration, Ctrl-C, or even a SIGKILL of the demo), leaving no
process behind. Bounded waits only."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from busguard.clock import FakeClock
from busguard.runtime import Runtime
from busguard.testing import run_scans
from busguard.view import LiveView
from test_sim_site import free_ports, site_text

REPO = Path(__file__).resolve().parents[1]
PID_RE = re.compile(r"simulator ready \(pid (\d+)")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


class Lines:
    """stdout of a child, line by line, with bounded waits."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.q.put(line)

    def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s; got {self.seen}")


@pytest.fixture
def demo_site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(site_text(*free_ports(2)), encoding="utf-8")
    return path


def start_demo(site: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "busguard.cli", "demo", str(site), "--plain",
                             "--refresh", "0.5", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=site.parent)


def test_demo_runs_for_a_duration_and_leaves_nothing_behind(demo_site: Path) -> None:
    proc = start_demo(demo_site, "--duration", "2")
    lines = Lines(proc)
    try:
        pid = int(lines.until(PID_RE.pattern).group(1))
        lines.until(r"cycles=\d+ p50=")  # the plain view: one summary line per refresh
        lines.until(r"busguard demo: stopped \(end\); simulator exit 0")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert wait_gone(pid)
    assert not (demo_site.parent / "var/sim/ttyRS485-1").is_symlink()


def test_ctrl_c_stops_demo_and_simulator_with_exit_0(demo_site: Path) -> None:
    proc = start_demo(demo_site)
    lines = Lines(proc)
    try:
        pid = int(lines.until(PID_RE.pattern).group(1))
        assert alive(pid)
        lines.until(r"cycles=[1-9]\d* p50=")  # scanning
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)  # impatient users press it twice
        lines.until(r"stopped \(SIGINT\); simulator exit 0")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert wait_gone(pid)


def test_simulator_exits_by_itself_when_the_demo_is_killed(demo_site: Path) -> None:
    proc = start_demo(demo_site)
    lines = Lines(proc)
    try:
        pid = int(lines.until(PID_RE.pattern).group(1))
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup at all in the demo
        proc.wait(timeout=10)
        assert wait_gone(pid, 15.0), "simulator left running after its demo died"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_view_renders_in_place_on_a_terminal_and_plain_otherwise(tmp_path: Path) -> None:
    rt = Runtime.from_file(REPO / "site.toml", clock=FakeClock())
    run_scans(rt, 3)
    tty = io.StringIO()
    view = LiveView(rt, out=tty, tty=True, title="test")
    view.draw()
    view.draw()
    text = tty.getvalue()
    assert text.count("\x1b[H") == 2 and "\x1b[J" in text  # home, redraw, erase below
    for word in ("METER", "pqm-a1", "pqm-b4", "PROBES", "tap-a1", "BREAKERS", "brk-a2",
                 "ALARMS", "cycles 3", "p99", "overruns"):
        assert word in text, word
    plain = io.StringIO()
    LiveView(rt, out=plain, tty=False).draw()
    line = plain.getvalue()
    assert "\x1b" not in line and line.count("\n") == 1 and "cycles=3" in line


def bundled_site_on_free_ports(folder: Path, io: str = "thread") -> Path:
    """The bundled site.toml with its fixed loopback ports moved to free ones."""
    text = (REPO / "site.toml").read_text(encoding="utf-8")
    text = text.replace("[scan]\nperiod_ms = 10\n", f'[scan]\nperiod_ms = 10\nio = "{io}"\n')
    fixed = sorted({int(p) for p in re.findall(r"^port = (\d+)$", text, re.MULTILINE)})
    for old, new in zip(fixed, free_ports(len(fixed)), strict=True):
        text = re.sub(rf"^port = {old}$", f"port = {new}", text, flags=re.MULTILINE)
    path = folder / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("io", ["thread", "process"])
def test_thermal_runaway_horn_holds_until_acknowledged_over_modbus(tmp_path: Path,
                                                                   io: str) -> None:
    """`busguard demo --scenario thermal-runaway --ack-after S` on the bundled site: the
    critical relay (a horn that follows the alarm table) goes on with 0xCF and stays on after
    the joint has cooled, until the acknowledgement arrives through the Modbus command area
    (served by the scan process, or by the I/O process with `io = "process"`)."""
    site = bundled_site_on_free_ports(tmp_path, io)
    proc = start_demo(site, "--scenario", "thermal-runaway", "--speed", "30",
                      "--duration", "14", "--ack-after", "10")
    lines = Lines(proc)
    try:
        lines.until(r"busguard demo: stopped", timeout=60)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    horn: list[tuple[int, float]] = []  # (line index, relay.critical)
    ack_at = None
    for i, line in enumerate(lines.seen):
        m = re.search(r"relay\.critical=(\d)", line)
        if m:
            horn.append((i, float(m.group(1))))
        if "acknowledged all alarms: cmd.ack_alarms = 1" in line:
            ack_at = i
    assert ack_at is not None, lines.seen
    on = [i for i, v in horn if v == 1.0]
    assert on and on[0] < ack_at, "0xCF never sounded the horn before the ack"
    assert all(v == 1.0 for i, v in horn if on[0] <= i < ack_at)  # held until the ack
    after = [v for i, v in horn if i > ack_at + 1]
    assert after and after[-1] == 0.0  # silenced by the acknowledgement
    log = (tmp_path / "var/log/power/distribution_fault.log").read_text()
    assert "info command code=BG-CMD device=cmd alarm=cmd.ack_alarms" in log
    assert "critical raised code=0xCF device=tap-a1" in log
