"""threshold_alarm: high/low limits with hysteresis, peaks between scans, and its fail-safe
policy for a stale or bad input (the BG-INPUT warning, hold or fail-safe output)."""

from __future__ import annotations

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.image import Quality

DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a"]
"""

BLOCK = """
[[block]]
name = "lim"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
low = 10.0
hysteresis = 5.0
code = "BG-TEST"
output = "relay.alarm"
output_failsafe = 1.0
{extra}
"""

P = "m1.current_l1_a"


def trace(make_runtime, tmp_path, rows, extra=""):
    return run_trace(make_runtime, tmp_path, site(BLOCK.format(extra=extra), DEVICES), rows)


LIMIT_CASES = [
    ("high at the limit, clears only below limit - hysteresis",
     [50, 100, 97, 95.1, 94.9], [0, 1, 1, 1, 0]),
    ("low at the limit, clears only above limit + hysteresis",
     [50, 10, 14.9, 15.1], [0, 1, 1, 0]),
    ("a spike between two scans counts (use_peak)", [50, [50, 130, 50], 50], [0, 1, 0]),
]


@pytest.mark.parametrize(("why", "values", "want"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_and_hysteresis(make_runtime, tmp_path, why, values, want):
    _rt, views = trace(make_runtime, tmp_path, [{P: v} for v in values])
    assert [v.outputs["relay.alarm"] for v in views] == want
    for view, out in zip(views, want, strict=True):
        assert ("lim:limit" in view.alarms) == bool(out)
    raised = [v.alarms["lim:limit"] for v in views if "lim:limit" in v.alarms]
    assert all(a["code"] == "BG-TEST" and a["device"] == "m1" for a in raised)


def test_use_peak_off_judges_the_value_the_scan_sees(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{P: 50}, {P: [50, 130, 50]}],
                       extra="use_peak = false")
    assert [v.outputs["relay.alarm"] for v in views] == [0, 0]


def test_a_quiet_input_warns_once_and_holds_the_output(make_runtime, tmp_path):
    """Nothing alarms because the meter went quiet: BG-INPUT (raised once, its message
    following the quality), the limit alarm is not raised, the output keeps its value."""
    rows = [{P: 120}, {P: QUIET, "dt": 0.5}, {"dt": 0.1}, {P: (0.0, Quality.BAD)},
            {P: 50}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert [v.outputs["relay.alarm"] for v in views] == [1, 1, 1, 1, 0]
    assert "lim:input" not in views[0].alarms
    assert views[1].alarms["lim:input"]["code"] == "BG-INPUT"
    assert views[1].alarms["lim:input"]["message"] == \
        "m1.current_l1_a is stale; limit check suspended"
    assert views[2].edges == []  # still stale: no new edge, the same alarm
    assert views[3].alarms["lim:input"]["message"] == \
        "m1.current_l1_a is bad; limit check suspended"
    assert views[3].edges == []  # same key, same code and severity: one alarm, updated
    assert "lim:input" not in views[4].alarms
    assert "cleared lim:input BG-INPUT" in views[4].edges


def test_on_bad_input_failsafe_drives_the_output(make_runtime, tmp_path):
    rows = [{P: 50}, {P: QUIET, "dt": 0.5}, {P: 50}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra='on_bad_input = "failsafe"')
    assert [v.outputs["relay.alarm"] for v in views] == [0, 1, 0]
