"""Alarm edges to the journal with syslog priorities: `busguard run` as systemd runs it (stderr
the journal stream named by JOURNAL_STREAM), each line in sd-daemon's `<N>` form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SITE = """
[site]
name = "journal"
[scan]
period_ms = 10
[paths]
state_dir = "state"
fault_log = "fault.log"
[[breaker]]
name = "brk-1"
driver = "memory"
points = ["led"]
initial = { led = 2.0 }
[[block]]
name = "trip-1"
type = "shunt_trip"
breaker = "brk-1"
"""


def run(tmp_path: Path, journal: bool) -> list[str]:
    site = tmp_path / "site.toml"
    site.write_text(SITE, encoding="utf-8")
    err_path = tmp_path / f"stderr-{journal}.log"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-m", "busguard.cli", "run", str(site), "--cycles", "5",
                        "--stats-every", "0"], stderr=err, stdout=subprocess.DEVNULL, env=env,
                       cwd=tmp_path, timeout=60, check=True)
    return err_path.read_text().splitlines()


def test_a_trip_is_a_crit_entry_with_breaker_trip(tmp_path):
    lines = run(tmp_path, journal=True)
    trips = [ln for ln in lines if "code=BG-TRIP-GF" in ln]
    assert trips, lines
    assert trips[0].startswith("<2>CRITICAL busguard.alarms: critical raised code=BG-TRIP-GF "
                               "device=brk-1: breaker-trip: brk-1 shunt trip latched")
    assert all(ln[:1] == "<" and ln[2:3] == ">" for ln in lines if ln)  # every line prioritised
    assert any(ln.startswith("<6>INFO busguard.runtime:") for ln in lines)


def test_without_the_journal_plain_lines(tmp_path):
    lines = run(tmp_path, journal=False)
    trip = next(ln for ln in lines if "code=BG-TRIP-GF" in ln)
    assert " CRITICAL busguard.alarms: critical raised code=BG-TRIP-GF" in trip
    assert not trip.startswith("<")


def test_priorities_of_every_severity():
    from busguard.alarms import AlarmCondition, AlarmEdge, AlarmState, Severity
    from busguard.journal import edge_line

    def edge(sev: Severity, kind: str = "raised") -> int:
        st = AlarmState("b:k", "b", AlarmCondition("k", sev, "C", "m"), 0.0)
        return edge_line(AlarmEdge(kind, st, 0.0))[0]

    assert [edge(s) for s in (Severity.CRITICAL, Severity.MAJOR, Severity.MINOR,
                              Severity.WARNING, Severity.INFO)] == [2, 3, 4, 5, 6]
    assert edge(Severity.CRITICAL, "cleared") == 5
