"""Record and replay: replaying a recording gives exactly the outputs the live run produced."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from busguard.errors import RecordingError
from busguard.image import Quality
from busguard.record import Recorder
from busguard.replay import replay

SITE = """
[site]
name = "rr"
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["thd_v_pct", "current_l1_a"]
[[output]]
name = "relays"
driver = "memory"
outputs = ["relay.thd", "relay.load"]
[[block]]
name = "thd"
type = "threshold_alarm"
point = "m1.thd_v_pct"
high = 5.0
hysteresis = 0.3
output = "relay.thd"
[[block]]
name = "load"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 640.0
output = "relay.load"
on_bad_input = "failsafe"
output_failsafe = 1.0
"""


def drive(rt, i):
    """A deterministic trace with ramps, a spike between scans, a bad and a silent meter."""
    if 40 <= i < 60:
        rt.clock.advance(0.05)  # meter silent: goes stale
        return
    thd = 3.0 + 3.0 * math.sin(i / 9.0)
    cur = 500.0 + (300.0 if i % 37 == 0 else 0.0)
    q = Quality.BAD if i % 53 == 0 else Quality.GOOD
    rt.image.write_many([("m1.thd_v_pct", thd, q), ("m1.current_l1_a", cur - 100, Quality.GOOD),
                         ("m1.current_l1_a", cur, Quality.GOOD)])


def record(make_runtime, run_scans, tmp_path, text=SITE, n=200):
    site = tmp_path / "site.toml"
    site.write_text(text)
    rt = make_runtime(site, start=True)
    rec_path = tmp_path / "trace.jsonl"
    rt.recorder = Recorder(rec_path, rt.recording_header())
    results = run_scans(rt, n, drive)
    rt.stop()
    return site, rec_path, [dict(r.outputs) for r in results]


def test_replay_reproduces_the_live_outputs(make_runtime, run_scans, tmp_path):
    site, rec_path, live = record(make_runtime, run_scans, tmp_path)
    assert len({json.dumps(o, sort_keys=True) for o in live}) > 2, "the trace must exercise logic"
    report, steps = replay(rec_path, site)
    replayed = [s.outputs for s in steps]
    assert replayed == live
    assert report.cycles == 200 and report.mismatches == [] and report.site_hash_matches


def test_replay_detects_a_changed_logic(make_runtime, run_scans, tmp_path):
    _site, rec_path, _live = record(make_runtime, run_scans, tmp_path)
    changed = tmp_path / "changed.toml"
    changed.write_text(SITE.replace("high = 5.0", "high = 4.0"))
    report, steps = replay(rec_path, changed)
    for _ in steps:
        pass
    assert report.mismatches and not report.site_hash_matches


def test_truncated_recording_is_reported(make_runtime, run_scans, tmp_path):
    site, rec_path, _ = record(make_runtime, run_scans, tmp_path, n=10)
    text = rec_path.read_text()
    rec_path.write_text(text[: len(text) - 40])  # killed mid-line
    _report, steps = replay(rec_path, site)
    with pytest.raises(RecordingError, match=r"line 11: not a valid cycle"):
        list(steps)
    (tmp_path / "junk").write_text("hello\n")
    with pytest.raises(RecordingError, match="not a busguard recording header"):
        replay(tmp_path / "junk", site)


def test_cli_run_record_then_replay(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.replace('points = ["thd_v_pct", "current_l1_a"]',
                                 'points = ["thd_v_pct", "current_l1_a"]\n'
                                 'initial = { thd_v_pct = 6.5, current_l1_a = 100.0 }'))
    rec = tmp_path / "live.jsonl"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "run", str(site), "--cycles",
                          "50", "--record", str(rec), "--stats-every", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "cycles=50 overruns=" in run.stdout
    rep = subprocess.run([sys.executable, "-m", "busguard.cli", "replay", str(rec), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    lines = [json.loads(x) for x in rep.stdout.splitlines()]
    assert lines[-1]["summary"] == {"cycles": 50, "mismatches": 0, "first_mismatch": None,
                                    "site_hash_matches": True, "identical": True}
    assert lines[0]["changed"]["relay.thd"] == 1.0
