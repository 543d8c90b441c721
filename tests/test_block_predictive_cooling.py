"""predictive_cooling: demand raised lead_s before the DCIM's job, scaled, released after."""

from __future__ import annotations

from blocktrace import run_trace, site
from busguard.image import Quality

W0 = 1_767_225_600.0  # the fake clock's UTC at the first scan
DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 1000
points = ["power_kw"]
"""
BLOCK = """
[[block]]
name = "pc"
type = "predictive_cooling"
lead_s = 5.0
settle_s = 3.0
full_load_kw = 1000.0
{extra}
"""
START, LOAD, OUT = "cooling.cmd_job_start_utc", "cooling.cmd_job_load_kw", "cooling.demand_pct"


def trace(make_runtime, tmp_path, rows, extra="", **kw):
    return run_trace(make_runtime, tmp_path,
                     site(BLOCK.format(extra=extra), DEVICES, period_ms=1000), rows, **kw)


def test_demand_leads_the_job_and_releases_after_settle(make_runtime, tmp_path):
    rows = [{START: W0 + 10, LOAD: 600.0, "m1.power_kw": 50.0}] + [{}] * 16
    _rt, views = trace(make_runtime, tmp_path, rows)
    demand = [v.outputs[OUT] for v in views]
    # scans at W0+0..16 s: pre from +5, job at +10, released 3 s later
    assert demand == [0.0] * 5 + [60.0] * 8 + [0.0] * 4
    assert views[5].alarms["pc:job"]["values"]["phase"] == "pre"
    assert views[10].alarms["pc:job"]["values"]["phase"] == "running"
    assert views[5].alarms["pc:job"]["severity"] == "info"


def test_demand_scales_with_load_within_limits(make_runtime, tmp_path):
    for kw, pct in ((100.0, 20.0), (450.0, 45.0), (5000.0, 90.0)):
        rows = [{START: W0 + 2, LOAD: kw}, {}]
        _rt, views = trace(make_runtime, tmp_path, rows, extra="max_pct = 90.0")
        assert views[-1].outputs[OUT] == pct


def test_release_waits_for_measured_power_to_settle(make_runtime, tmp_path):
    rows = [{START: W0 + 2, LOAD: 800.0, "m1.power_kw": 60.0}, {}, {}, {},
            {"m1.power_kw": 500.0}, {"m1.power_kw": 790.0}, {}, {}, {}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra='power_point = "m1.power_kw"')
    assert [v.outputs[OUT] for v in views] == [80.0] * 8 + [0.0] * 2


def test_lost_power_point_keeps_demand_until_max_hold(make_runtime, tmp_path):
    rows = [{START: W0 + 1, LOAD: 500.0, "m1.power_kw": (0.0, Quality.BAD)}] + [{}] * 9
    _rt, views = trace(make_runtime, tmp_path, rows,
                       extra='power_point = "m1.power_kw"\nmax_hold_s = 6.0')
    assert [v.outputs[OUT] for v in views] == [50.0] * 7 + [0.0] * 3
    assert "pc:input" in views[3].alarms


def test_no_schedule_means_base_demand_and_a_new_job_rearms(make_runtime, tmp_path):
    rows = [{}, {START: W0 + 2, LOAD: 300.0}, {}, {}, {}, {}, {}, {START: W0 + 9}, {}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra="base_pct = 10.0")
    assert [v.outputs[OUT] for v in views] == [10.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0,
                                               30.0, 30.0, 30.0]


def test_release_survives_restart(make_runtime, tmp_path):
    # the job was released before the restart; the command area still holds its start time
    state = {"job_start": W0 - 1, "job_kw": 700.0, "released_for": W0 - 1}
    rows = [{START: W0 - 1, LOAD: 700.0}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, restore={"pc": state}, check_replay=False)
    assert [v.outputs[OUT] for v in views] == [0.0, 0.0]


def test_without_retained_state_a_running_job_is_cooled(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{START: W0 - 1, LOAD: 700.0}, {}])
    assert [v.outputs[OUT] for v in views] == [70.0, 70.0]


def test_failsafe_output_is_full_cooling(make_runtime, tmp_path):
    rt = make_runtime(site(BLOCK.format(extra=""), DEVICES))
    assert rt.engine.failsafe[OUT] == 100.0
