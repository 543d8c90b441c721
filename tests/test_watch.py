"""`busguard status --watch` in a real terminal (tmux) at 80x24 and 160x50, against the
bundled site's demo on free loopback ports; both screens are saved into docs/img/ (shown in
docs/operations-cli.md). Plus the view's own rules on a decoded map, without a terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from busguard.watch import layout_from_map, render
from test_demo import bundled_site_on_free_ports

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
METERS = [f"pqm-a{i}" for i in range(1, 7)] + [f"pqm-b{i}" for i in range(1, 5)]


def draw(data: dict, width: int, height: int) -> str:
    con = Console(width=width, height=height, record=True, color_system=None,
                  force_terminal=False)
    con.print(render(data, layout_from_map(data), "x:1", width, height))
    return con.export_text()


def point(v, q="good"):
    return {"value": v, "quality": q, "age_ms": 0}


DATA = {
    "header": {"data_origin": "LIVE", "runtime_state": "running", "scan_lateness_p99_ms": 0.2,
               "overruns": 0, "active_alarms": 1, "unacked_alarms": 1,
               "highest_severity": "critical"},
    "devices": [
        {"kind": "meter", "name": "m1", "alarms": [], "flags": [],
         "points": {"power_kw": point(88.5), "current_l1_a": point(150.0),
                    "temp_c": point(35.5)}},
        {"kind": "probe", "name": "p1", "alarms": [], "flags": [],
         "points": {"temp_c": point(None, "not-connected")}},
        {"kind": "breaker", "name": "b1", "alarms": [], "flags": ["trip_latched"],
         "points": {"led": point(1.0)}, "trip_cause_name": "overcurrent"},
    ],
    "alarm_table": [{"code": "0xCF", "severity": "critical", "device": "p1", "state": "active",
                     "acked": False, "raised_utc": 1.8e9}],
}


def test_a_tap_off_is_one_row_and_a_missing_probe_is_not_a_temperature():
    text = draw(DATA, 80, 24)
    row = next(ln for ln in text.splitlines() if ln.startswith("m1"))
    assert "88.5" in row and "150" in row and "TRIPPED" in row  # meter, breaker: one row
    assert "-- n/c" in row and "not-c C" not in text
    assert "meter °C" not in text  # at 80 columns the meter's own temperature is left out
    wide = draw(DATA, 160, 50)
    assert "meter °C" in wide and "joint °C" in wide and "35.5" in wide
    assert "TRIPPED overcurrent" in wide and "0xCF" in wide and "NO" in wide
    assert all(len(ln) <= 80 for ln in text.splitlines())


def test_no_answer_yet_draws_an_empty_view_not_a_traceback():
    assert "no alarms" in draw({}, 80, 24)


# -- the real thing in tmux ------------------------------------------------------------------
SOCKET = f"busguard-test-{os.getpid()}"  # a private tmux server: no other session's size


def tmux(*args: str, sock: str = SOCKET) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=20,
                          check=True).stdout


def status_json(site: Path) -> dict | None:
    out = subprocess.run([sys.executable, "-m", "busguard.cli", "status", "--site", str(site),
                          "--json", "--timeout", "1"], capture_output=True, text=True,
                         timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def capture(site: Path, width: int, height: int, name: str) -> str:
    exe = Path(sys.executable).with_name("busguard")
    # a server per capture: killing one capture's last session makes its server exit, and a
    # new session started on that socket meanwhile fails ("server exited unexpectedly")
    sock = f"{SOCKET}-{name}"
    tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
         f"env -u COLUMNS -u LINES {exe} status --watch --interval 0.5 --site {site}; "
         "sleep 60", sock=sock)  # rich would take a COLUMNS the test runner exported over the pane
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", name, sock=sock)
            if "pqm-b4" in screen and "0xCF" in screen:
                time.sleep(1.0)  # one more frame: a whole one
                return tmux("capture-pane", "-p", "-t", name, sock=sock)
        raise AssertionError(f"the view never showed every tap-off and the alarm:\n{screen}")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=20)


@pytest.mark.integration
def test_watch_at_80x24_and_160x50_in_tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux (Debian package tmux) is needed for the terminal test")
    site = bundled_site_on_free_ports(tmp_path)
    demo = subprocess.Popen([sys.executable, "-m", "busguard.cli", "demo", str(site), "--plain",
                             "--scenario", "thermal-runaway", "--speed", "30", "--duration",
                             "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        data = None
        while time.monotonic() < deadline:
            data = status_json(site)
            if data and data["alarm_table"]:
                break
            time.sleep(0.5)
        assert data and data["alarm_table"], "the thermal-runaway scenario raised nothing"
        tag = f"bgw{os.getpid()}"
        small = capture(site, 80, 24, tag + "s")
        big = capture(site, 160, 50, tag + "b")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(10)
    lines = small.rstrip("\n").splitlines()
    assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
    assert lines[0].startswith("busguard 127.0.0.1:") and "  LIVE  " in lines[0]
    assert lines[1].startswith("scan p99 ") and "alarms " in lines[1]
    for m in METERS:  # one row per tap-off, none wrapped or cut
        assert sum(ln.startswith(m + " ") for ln in lines) == 1, small
    assert "joint °C" in small and "not-c" not in small
    assert "meter °C" in big and "I1 A" in big and "V L-N" in big
    assert max(len(ln) for ln in big.splitlines()) > 120  # it grew with the terminal
    DOCS_IMG.mkdir(exist_ok=True)
    (DOCS_IMG / "watch-80x24.txt").write_text(small, encoding="utf-8")
    (DOCS_IMG / "watch-160x50.txt").write_text(big, encoding="utf-8")
    embed_captures(DOCS_IMG.parent / "operations-cli.md",
                   {"watch-80x24.txt": small, "watch-160x50.txt": big})


def embed_captures(doc: Path, captures: dict[str, str]) -> None:
    """Put each capture into the fenced block after its ``<!-- capture: NAME -->`` marker in
    ``doc``, so the screens the docs show are the last run's, not a hand-copied old one."""
    text = doc.read_text(encoding="utf-8")
    for name, screen in captures.items():
        marker = f"<!-- capture: {name} -->\n```\n"
        start = text.index(marker) + len(marker)
        end = text.index("\n```\n", start)
        text = text[:start] + "\n".join(ln.rstrip() for ln in screen.rstrip("\n")
                                         .splitlines()) + text[end:]
    doc.write_text(text, encoding="utf-8")


def test_the_docs_show_the_saved_captures():
    """The two screens in docs/operations-cli.md are the ones the tmux test saved, and they
    group each tap-off's meter, probe and breaker on one row, with no quality word glued to
    a unit ("not-c C") and no bare "T C" column."""
    doc = (DOCS_IMG.parent / "operations-cli.md").read_text(encoding="utf-8")
    for name in ("watch-80x24.txt", "watch-160x50.txt"):
        saved = "\n".join(ln.rstrip() for ln in (DOCS_IMG / name).read_text(
            encoding="utf-8").rstrip("\n").splitlines())
        assert f"<!-- capture: {name} -->\n```\n{saved}\n```\n" in doc, name
        assert "joint °C" in saved and "not-c" not in saved and " T C " not in saved
        for m in METERS:
            assert sum(ln.startswith(m + " ") for ln in saved.splitlines()) == 1, name
