"""transient_events: dI/dt and peak events with pre/post buffers in the event record."""

from __future__ import annotations

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.faultlog import parse_line

DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a", "current_l3_a"]
"""
BLOCK = """
[[block]]
name = "tr"
type = "transient_events"
meter = "m1"
didt_a_per_s = 2000.0
pre_samples = 3
post_samples = 2
hold_s = 0.5
{extra}
"""
BASE = {"m1.current_l1_a": 400.0, "m1.current_l2_a": 400.0, "m1.current_l3_a": 400.0}


def trace(make_runtime, tmp_path, rows, extra=""):
    block = BLOCK.format(extra=extra)
    if "didt_a_per_s" in extra:
        block = block.replace("didt_a_per_s = 2000.0\n", "")
    return run_trace(make_runtime, tmp_path, site(block, DEVICES),
                     [BASE, {}, {}, {}, *rows])


def test_ramp_raises_one_event_with_pre_and_post_samples(make_runtime, tmp_path):
    # a training job starts: +300 A in one 100 ms scan = 3000 A/s
    rows = [{"m1.current_l1_a": 700.0}, {"m1.current_l1_a": 720.0}, {}, {}, {}, {}, {}, {}]
    rt, views = trace(make_runtime, tmp_path, rows)
    active = ["tr:event" in v.alarms for v in views]
    assert active == [False] * 4 + [True] * 5 + [False] * 3
    record = views[8].alarms["tr:event"]["values"]
    assert record["trigger"]["point"] == "m1.current_l1_a"
    assert record["trigger"]["didt_a_per_s"] == 3000.0
    assert record["pre"] == [[-300, 400.0, 400.0, 400.0], [-200, 400.0, 400.0, 400.0],
                             [-100, 400.0, 400.0, 400.0]]
    assert record["post"] == [[0, 700.0, 400.0, 400.0], [100, 720.0, 400.0, 400.0],
                              [200, 720.0, 400.0, 400.0]]
    assert record["time_utc"] == "2026-01-01T00:00:00.400Z"
    edges = [e for v in views for e in v.edges if "tr:event" in e]
    assert edges == ["raised tr:event BG-TRANSIENT", "cleared tr:event BG-TRANSIENT"]
    assert rt.blocks[0].state()["events"] == 1
    # the fault log line of the clear carries the whole record, pre and post
    lines = (tmp_path / "fault.log").read_text().splitlines()
    cleared = [ln for ln in lines if " cleared code=BG-TRANSIENT" in ln]
    assert len(cleared) == 1
    values = parse_line(cleared[0])["values"]
    assert values["post"][-1] == [200, 720.0, 400.0, 400.0] and len(values["pre"]) == 3


def test_spike_between_two_scans_is_caught_through_the_peak(make_runtime, tmp_path):
    rows = [{"m1.current_l2_a": [1500.0, 410.0]}, {}, {}, {}, {}, {}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra="didt_a_per_s = 0.0\npeak_a = 1000.0")
    alarm = views[4].alarms["tr:event"]
    assert alarm["values"]["trigger"]["peak_a"] == 1500.0
    assert alarm["values"]["post"][0] == [0, 400.0, 1500.0, 400.0]


def test_slow_rise_is_not_an_event(make_runtime, tmp_path):
    rows = [{"m1.current_l1_a": 400.0 + 50 * i} for i in range(1, 8)]  # 500 A/s
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert not any("tr:event" in v.alarms for v in views)


def test_gap_is_not_a_step(make_runtime, tmp_path):
    rows = [{"m1.current_l3_a": QUIET}, {"dt": 1.0}, {"dt": 2.5}, {"m1.current_l3_a": 900.0}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert "tr:input" in views[6].alarms
    assert not any("tr:event" in v.alarms for v in views)


def test_retrigger_extends_the_event(make_runtime, tmp_path):
    rows = [{"m1.current_l1_a": 700.0}, {}, {}, {"m1.current_l1_a": 1100.0}, {}, {}, {}, {},
            {}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    edges = [e for v in views for e in v.edges if "tr:event" in e]
    assert edges == ["raised tr:event BG-TRANSIENT", "cleared tr:event BG-TRANSIENT"]
    last = [v for v in views if "tr:event" in v.alarms][-1]
    assert last.alarms["tr:event"]["values"]["trigger"]["didt_a_per_s"] == 4000.0


def test_didt_uses_the_meters_sample_times_not_the_scan_period(make_runtime, tmp_path):
    # 10 ms scans, the meter answers every 100 ms: a 60 A step is 600 A/s, not 6000 A/s
    quiet = {"m1.current_l1_a": QUIET}
    rows = [BASE, *[quiet] * 9, {"m1.current_l1_a": 400.0}, *[quiet] * 9,
            {"m1.current_l1_a": 460.0}, *[quiet] * 3]
    _rt, views = run_trace(make_runtime, tmp_path,
                           site(BLOCK.format(extra=""), DEVICES, period_ms=10.0), rows)
    assert not any("tr:event" in v.alarms for v in views)
    rows[20] = {"m1.current_l1_a": 700.0}  # 300 A in 100 ms: 3000 A/s
    _rt, views = run_trace(make_runtime, tmp_path,
                           site(BLOCK.format(extra=""), DEVICES, period_ms=10.0), rows)
    assert views[20].alarms["tr:event"]["values"]["trigger"]["didt_a_per_s"] == \
        pytest.approx(3000.0, rel=1e-6)
