"""shunt_trip: table-driven traces replayed through busguard.replay."""

from __future__ import annotations

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.errors import ConfigError
from busguard.image import Quality
from busguard_blocks.shunt_trip import operate_time_s

DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a", "current_l3_a", "residual_current_ma"]
[[probe]]
name = "bb1"
driver = "memory"
poll_ms = 100
points = ["temp_c"]
[[breaker]]
name = "cb1"
driver = "memory"
poll_ms = 100
points = ["led", "maint"]
"""

BLOCK = """
[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
pickup_a = 1000.0
delay_s = 0.5
residual_pickup_ma = 300.0
probes = ["bb1"]
{extra}
"""

NORMAL = {"m1.current_l1_a": 500, "m1.current_l2_a": 510, "m1.current_l3_a": 490,
          "m1.residual_current_ma": 20, "bb1.temp_c": 55, "cb1.led": 0, "cb1.maint": 0}
TRIP = "cb1.shunt_trip"
RESET = "cb1.cmd_reset"


def trace(make_runtime, tmp_path, rows, extra="", **kw):
    return run_trace(make_runtime, tmp_path, site(BLOCK.format(extra=extra), DEVICES), rows,
                     **kw)


# (name, rows after a normal first scan, expected shunt_trip per scan, code latched at the end)
CASES = [
    ("overcurrent needs the delay",
     [{"m1.current_l2_a": 1200}, {}, {}, {}, {}, {}, {}],
     [0, 0, 0, 0, 0, 0, 1, 1], "BG-TRIP-OC"),
    ("overcurrent shorter than the delay does not trip",
     [{"m1.current_l2_a": 1200}, {}, {}, {"m1.current_l2_a": 900}, {}, {}, {}],
     [0] * 8, None),
    ("ground fault on the LED trips at once",
     [{"cb1.led": 2}, {"cb1.led": 0}],
     [0, 1, 1], "BG-TRIP-GF"),
    ("overcurrent trip shown on the LED",
     [{"cb1.led": 1}],
     [0, 1], "BG-TRIP-OC-LED"),
    ("residual current above pickup after its delay",
     [{"m1.residual_current_ma": 450}, {}, {}],
     [0, 0, 1, 1], "BG-TRIP-RCM"),
    ("thermal critical at exactly 90 C",
     [{"bb1.temp_c": 89.9}, {"bb1.temp_c": 90.0}],
     [0, 0, 1], "0xCF"),
    ("stale current never trips",
     [{"m1.current_l1_a": QUIET}, {"dt": 5}, {"dt": 5}],
     [0, 0, 0, 0], None),
    ("bad LED (unclassifiable) never trips",
     [{"cb1.led": (2, Quality.BAD)}, {}],
     [0, 0, 0], None),
]


@pytest.mark.parametrize(("rows", "expect", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_trip_table(make_runtime, tmp_path, rows, expect, code):
    _rt, views = trace(make_runtime, tmp_path, [NORMAL, *rows])
    assert [v.outputs[TRIP] for v in views] == expect
    trip = views[-1].alarms.get("st:trip")
    if code is None:
        assert trip is None
    else:
        assert trip["code"] == code and trip["severity"] == "critical"
        assert "breaker-trip" in trip["message"]
        assert trip["values"]["time_utc"].endswith("Z")


def test_trip_records_cause_values_and_time(make_runtime, tmp_path):
    rt, views = trace(make_runtime, tmp_path, [NORMAL, {"m1.current_l3_a": 1500}, *[{}] * 6])
    trip = views[-1].alarms["st:trip"]["values"]
    assert trip["cause"] == "overcurrent"
    assert trip["values"]["currents_a"]["m1.current_l3_a"] == 1500
    assert trip["time_utc"].startswith("2026-01-01T00:")
    state = rt.blocks[0].state()
    assert state["latched"] and state["trips"] == 1 and state["trip"]["cause"] == "overcurrent"


def test_stale_inputs_raise_input_alarm_not_trip(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path,
                       [NORMAL, {"m1.current_l1_a": QUIET}, {"dt": 1}, {"dt": 2.5}])
    assert views[-1].outputs[TRIP] == 0
    alarm = views[-1].alarms["st:input"]
    assert alarm["code"] == "BG-INPUT" and alarm["values"]["lost"] == {"m1.current_l1_a": "stale"}


def test_missing_input_is_not_connected(make_runtime, tmp_path):
    rows = [{k: v for k, v in NORMAL.items() if k != "bb1.temp_c"}, {"dt": 4.0}, {"dt": 1.0},
            {"dt": 2.0}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    # a start-up grace of 5 s for points not connected yet (first polls), then 2 s to raise
    assert ["st:input" in v.alarms for v in views] == [False, False, False, True]
    assert views[3].alarms["st:input"]["values"]["lost"] == {"bb1.temp_c": "not-connected"}
    assert views[-1].outputs[TRIP] == 0


def test_trip_on_input_loss_when_configured(make_runtime, tmp_path):
    rows = [NORMAL, {"bb1.temp_c": QUIET}, {"dt": 2}, {"dt": 2}, {"dt": 2}]
    _rt, views = trace(make_runtime, tmp_path, rows,
                       extra="trip_on_input_loss = true\ninput_loss_delay_s = 3.0")
    assert [v.outputs[TRIP] for v in views] == [0, 0, 0, 0, 1]
    assert views[-1].alarms["st:trip"]["code"] == "BG-TRIP-INPUT-LOSS"


def test_latch_and_reset(make_runtime, tmp_path):
    rows = [
        {**NORMAL, RESET: 0},
        {"cb1.led": 2},             # 1: trip
        {RESET: 1},                 # 2: refused: the LED still shows the ground fault
        {"cb1.led": 0},             # 3: cause gone, still latched
        {},                         # 4
        {RESET: 2},                 # 5: reset accepted
        {},                         # 6
    ]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert [v.outputs[TRIP] for v in views] == [0, 1, 1, 1, 1, 0, 0]
    assert "st:reset-refused" in views[2].alarms
    assert views[2].alarms["st:reset-refused"]["values"]["persisting"] == ["ground-fault-led"]
    assert "st:trip" in views[4].alarms
    assert "st:trip" not in views[5].alarms and "cleared st:trip BG-TRIP-GF" in views[5].edges
    # the alarm was raised once and cleared once: edges, not one per scan
    all_edges = [e for v in views for e in v.edges if "st:trip" in e]
    assert all_edges == ["raised st:trip BG-TRIP-GF", "cleared st:trip BG-TRIP-GF"]


def test_reset_refused_while_thermal_not_cool(make_runtime, tmp_path):
    rows = [{**NORMAL, RESET: 0}, {"bb1.temp_c": 92}, {"bb1.temp_c": 87, RESET: 1},
            {"bb1.temp_c": 80, RESET: 2}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert [v.outputs[TRIP] for v in views] == [0, 1, 1, 0]


def test_reset_refused_when_cause_cannot_be_verified(make_runtime, tmp_path):
    rows = [{**NORMAL, RESET: 0}, {"cb1.led": 2}, {"cb1.led": (0, Quality.BAD), RESET: 1}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert views[-1].outputs[TRIP] == 1
    assert views[-1].alarms["st:reset-refused"]["values"]["persisting"] == ["cb1.led bad"]


def test_inhibit_holds_off_the_trip(make_runtime, tmp_path):
    rows = [{**NORMAL, "cb1.maint": 1}, {"cb1.led": 2}, {"cb1.maint": 0}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra='inhibit = "cb1.maint"')
    assert [v.outputs[TRIP] for v in views] == [0, 0, 1]
    assert views[1].alarms["st:inhibited"]["code"] == "BG-TRIP-INHIBITED"


def test_bad_inhibit_input_does_not_block_protection(make_runtime, tmp_path):
    rows = [{**NORMAL, "cb1.maint": (1, Quality.BAD), "cb1.led": 2}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra='inhibit = "cb1.maint"')
    assert views[0].outputs[TRIP] == 1


def test_latched_trip_survives_restart(make_runtime, tmp_path):
    state = {"latched": True, "trips": 3, "resets": 1,
             "trip": {"cause": "ground-fault-led", "code": "BG-TRIP-GF",
                      "time_utc": "2026-01-01T00:00:00.000Z"}}
    rt, views = trace(make_runtime, tmp_path, [NORMAL, {}], restore={"st": state},
                      check_replay=False)
    assert [v.outputs[TRIP] for v in views] == [1, 1]
    assert views[0].alarms["st:trip"]["code"] == "BG-TRIP-GF"
    assert rt.blocks[0].state()["trips"] == 3


def test_pickup_alarm_shows_time_to_trip(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [NORMAL, {"m1.current_l1_a": 1200}, {}])
    alarm = views[-1].alarms["st:oc-pickup"]
    assert alarm["severity"] == "major"
    assert alarm["values"]["time_to_trip_s"] == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize(("curve", "multiple", "tms", "expected"), [
    ("iec-standard-inverse", 2.0, 1.0, 10.03),
    ("iec-very-inverse", 2.0, 1.0, 13.5),
    ("iec-extremely-inverse", 2.0, 1.0, 26.67),
    ("ieee-very-inverse", 2.0, 1.0, 7.03),
    ("ieee-extremely-inverse", 2.0, 1.0, 9.52),
    ("definite", 5.0, 1.0, 0.5),
])
def test_curves(curve, multiple, tms, expected):
    assert operate_time_s(curve, multiple, tms, 0.5) == pytest.approx(expected, abs=0.01)


def test_inverse_curve_trips_later_at_lower_current(make_runtime, tmp_path):
    def text():
        return site(BLOCK.format(extra='curve = "iec-very-inverse"\ntime_multiplier = 0.05')
                    .replace("delay_s = 0.5", "delay_s = 0.0"), DEVICES)
    # 3x pickup: 0.05 * 13.5 / 2 = 0.3375 s; 1.5x: 0.05 * 13.5 / 0.5 = 1.35 s
    _rt, fast = run_trace(make_runtime, tmp_path, text(),
                          [NORMAL, {"m1.current_l1_a": 3000}, *[{}] * 5])
    _rt, slow = run_trace(make_runtime, tmp_path, text(),
                          [NORMAL, {"m1.current_l1_a": 1500}, *[{}] * 15])
    first = [v.outputs[TRIP] for v in fast].index(1)
    first_slow = [v.outputs[TRIP] for v in slow].index(1)
    assert first == 5 and first_slow == 15


def test_bad_params_are_config_errors(make_runtime):
    bad = site(BLOCK.format(extra='curve = "iec-very-inverse-x"').replace(
        'breaker = "cb1"', 'breaker = "cb9"'), DEVICES)
    with pytest.raises(ConfigError) as exc:
        make_runtime(bad)
    text = str(exc.value)
    assert "block[0].curve: got 'iec-very-inverse-x'" in text
    assert "did you mean 'iec-very-inverse'?" in text
    assert "block[0].breaker: no breaker named 'cb9'" in text


def test_pickups_need_their_inputs(make_runtime):
    text = site(BLOCK.format(extra="").replace('meter = "m1"\n', ""), DEVICES)
    with pytest.raises(ConfigError) as exc:
        make_runtime(text)
    assert "block[0].pickup_a: an overcurrent pickup needs `meter` or `currents`" in \
        str(exc.value)
    assert "block[0].residual_pickup_ma: a residual pickup needs `meter` or " \
        "`residual_point`" in str(exc.value)
