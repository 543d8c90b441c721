"""thermal_interlock: levels with hysteresis, rate of rise, disagreement, time to trip."""

from __future__ import annotations

import itertools
import math

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.image import Quality
from busguard_blocks.thermal_interlock import time_to_trip_s

DEVICES = """
[[probe]]
name = "bb1"
driver = "memory"
poll_ms = 1000
points = ["temp_c"]
[[probe]]
name = "bb2"
driver = "memory"
poll_ms = 1000
points = ["temp_c"]
"""

BLOCK = """
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1", "bb2"]
output = "relay.critical"
rate_window_s = 20.0
{extra}
"""


def trace(make_runtime, tmp_path, rows, extra="", window=20.0, **kw):
    block = BLOCK.format(extra=extra).replace("rate_window_s = 20.0", f"rate_window_s = {window}")
    return run_trace(make_runtime, tmp_path, site(block, DEVICES, period_ms=1000), rows, **kw)


def level(view):
    for word in ("trip", "alarm", "warn"):
        if f"th:{word}" in view.alarms:
            return word
    return "ok"


# temperatures of bb1 (bb2 stays at 50) scan by scan, and the level seen after each scan
LEVEL_CASES = [
    ("rising through every level",
     [60, 70, 79.9, 80, 90], ["ok", "warn", "warn", "alarm", "trip"]),
    ("hysteresis: stays until 2 C below",
     [91, 89, 88.5, 87.9, 78.5, 77.9, 68.1, 67.9], ["trip", "trip", "trip", "alarm", "alarm",
                                                    "warn", "warn", "ok"]),
    ("chatter at the limit makes one raise", [70, 69.5, 70.2, 69.0, 70.0],
     ["warn"] * 5),
]


@pytest.mark.parametrize(("temps", "levels"), [c[1:] for c in LEVEL_CASES],
                         ids=[c[0] for c in LEVEL_CASES])
def test_levels(make_runtime, tmp_path, temps, levels):
    rows = [{"bb1.temp_c": t, "bb2.temp_c": 50 if t < 60 else t - 1} for t in temps]
    _rt, views = trace(make_runtime, tmp_path, rows,
                       extra="disagreement_c = 0.0\nlatch_trip_alarm = false")
    assert [level(v) for v in views] == levels
    assert [v.outputs["relay.critical"] for v in views] == [
        1.0 if lv == "trip" else 0.0 for lv in levels]
    raises = [e for v in views for e in v.edges if e.startswith("raised th:warn")]
    assert len(raises) <= 1 + sum(1 for a, b in itertools.pairwise(levels)
                                  if a != "warn" and b == "warn")


def test_trip_level_is_thermal_critical_0xcf(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{"bb1.temp_c": 91, "bb2.temp_c": 90.5}])
    alarm = views[0].alarms["th:trip"]
    assert alarm["code"] == "0xCF" and alarm["severity"] == "critical"
    assert "Thermal-Critical (0xCF)" in alarm["message"] and alarm["device"] == "bb1"


def test_rate_of_rise_and_time_to_trip(make_runtime, tmp_path):
    # 0.2 C/s = 12 C/min from 60 C: T_inf = 60 + 900 * 0.2 = 240 C
    rows = [{"bb1.temp_c": 60 + 0.2 * i, "bb2.temp_c": 60 + 0.2 * i} for i in range(25)]
    _rt, views = trace(make_runtime, tmp_path, rows)
    # judged from the first two readings (1 s apart here): 12 C/min less the noise floor of
    # 0.0625 C over 1 s (3.75 C/min) is 8.25, above the 5 C/min limit
    assert "th:rate" not in views[0].alarms and "th:rate" in views[1].alarms
    assert views[1].alarms["th:rate"]["values"]["rate_c_per_min"] == pytest.approx(12.0)
    assert views[1].alarms["th:rate"]["values"]["rate_noise_c_per_min"] == pytest.approx(3.75)
    last = views[-1]
    assert last.alarms["th:rate"]["values"]["rate_c_per_min"] == pytest.approx(12.0, abs=0.01)
    temp = 60 + 0.2 * 24
    expected = time_to_trip_s(temp, 0.2, 90.0, 900.0)
    assert last.outputs["th.time_to_trip_s"] == pytest.approx(expected, rel=1e-6)
    assert 100 < expected < 600 and "th:ttt" in last.alarms


def test_steady_temperature_has_no_estimate(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 75, "bb2.temp_c": 75}] * 15
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert views[-1].outputs["th.time_to_trip_s"] == -1.0
    assert "th:ttt" not in views[-1].alarms and "th:rate" not in views[-1].alarms


@pytest.mark.parametrize(("temp", "slope", "expected"), [
    (90.0, 0.0, 0.0), (80.0, 0.0, -1.0), (80.0, -0.1, -1.0),
    (80.0, 0.01, -1.0),  # heads for 89 C: never trips
    (80.0, 0.1, 900 * math.log(90 / 80)),
])
def test_time_to_trip_model(temp, slope, expected):
    assert time_to_trip_s(temp, slope, 90.0, 900.0) == pytest.approx(expected)


def test_probe_disagreement(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50, "bb2.temp_c": 55}, {"bb1.temp_c": 50, "bb2.temp_c": 61},
            {"bb1.temp_c": 50, "bb2.temp_c": 59.5}, {"bb1.temp_c": 50, "bb2.temp_c": 58.5}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert ["th:disagree" in v.alarms for v in views] == [False, True, True, False]


def test_lost_probe_judged_on_the_other(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 85, "bb2.temp_c": 85}, {"bb1.temp_c": (95, Quality.BAD)}, {"dt": 2}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert level(views[-1]) == "alarm"  # the bad 95 C reading is ignored
    assert views[-1].alarms["th:input"]["values"]["lost"] == {"bb1.temp_c": "bad"}


def test_all_probes_lost_holds_the_trip(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 92, "bb2.temp_c": 91}, {"bb1.temp_c": QUIET, "bb2.temp_c": QUIET},
            {"dt": 5}, {"dt": 5}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert [v.outputs["relay.critical"] for v in views] == [1, 1, 1, 1]
    assert "th:input" in views[-1].alarms and "th:trip" in views[-1].alarms
    assert views[-1].outputs["th.time_to_trip_s"] == -1.0


def test_all_probes_lost_never_trips_by_default(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50, "bb2.temp_c": 50}, {"bb1.temp_c": QUIET, "bb2.temp_c": QUIET},
            {"dt": 10}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert views[-1].outputs["relay.critical"] == 0 and level(views[-1]) == "ok"
    _rt, views = trace(make_runtime, tmp_path, rows, extra='on_input_loss = "trip"')
    assert views[-1].outputs["relay.critical"] == 1


def test_level_survives_restart(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{"bb1.temp_c": 89, "bb2.temp_c": 89}],
                       restore={"th": {"level": 3}}, check_replay=False)
    assert level(views[0]) == "trip"  # 89 C is within the 2 C hysteresis of 90 C


def test_turning_down_stops_rate_and_time_to_trip_at_once(make_runtime, tmp_path):
    # 0.5 C/s up for 24 s, then the breaker opens and it falls 0.5 C/s for 6 s: the whole
    # 20 s window still fits +16 C/min, its recent half -8 C/min; the smaller one counts
    up = [{"bb1.temp_c": 50 + 0.5 * i, "bb2.temp_c": 50 + 0.5 * i} for i in range(25)]
    down = [{"bb1.temp_c": 62 - 0.5 * i, "bb2.temp_c": 62 - 0.5 * i} for i in range(1, 7)]
    _rt, views = trace(make_runtime, tmp_path, up + down)
    assert "th:rate" in views[24].alarms and "th:ttt" in views[24].alarms
    assert "th:rate" not in views[-1].alarms and "th:ttt" not in views[-1].alarms
    assert views[-1].outputs["th.time_to_trip_s"] == -1.0


def test_thermal_critical_alarm_latches_until_acknowledged(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50, "bb2.temp_c": 50, "cmd.ack_alarms": 0}, {"bb1.temp_c": 91},
            {"bb1.temp_c": 60}, {}, {"cmd.ack_alarms": 1}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert [v.outputs["relay.critical"] for v in views] == [0, 1, 0, 0, 0, 0]
    trip = [v.alarms.get("th:trip") for v in views]
    assert trip[1]["active"] and trip[1]["latch"]
    assert trip[2] is not None and not trip[2]["active"]  # cooled: kept until acknowledged
    assert trip[4] is None and "cleared th:trip 0xCF" in views[4].edges
    edges = [e for v in views for e in v.edges if "th:trip" in e]
    assert edges == ["raised th:trip 0xCF", "cleared th:trip 0xCF"]


def test_a_fast_rise_is_seen_from_the_first_two_readings(make_runtime, tmp_path):
    # 0.1's blind spot: ~49 C/min logged a rate of 0.0 for the first half window (30 s).
    # With the default 60 s window readings are 2 s apart, so the second reading (2 s) gives
    # the rate: (49/60 C/s * 2 s) / 2 s = 49 C/min, floor 0.0625 C / 2 s = 1.875 C/min.
    rows = [{"bb1.temp_c": 40 + 49 / 60 * i, "bb2.temp_c": 40 + 49 / 60 * i} for i in range(4)]
    _rt, views = trace(make_runtime, tmp_path, rows, extra="", window=60.0)
    assert "th:rate" not in views[1].alarms  # one reading so far (2 s apart)
    rate = views[2].alarms["th:rate"]["values"]
    assert rate["rate_c_per_min"] == pytest.approx(49.0, abs=0.01)
    assert rate["rate_noise_c_per_min"] == pytest.approx(1.875, abs=0.005)  # rounded


def test_one_quantisation_step_is_not_a_rise(make_runtime, tmp_path):
    # a DS18B20 flicking by one LSB (0.0625 C) between two readings 2 s apart "rises" at
    # 1.875 C/min: that is exactly the noise floor, so a 1 C/min limit does not alarm
    rows = [{"bb1.temp_c": 50.0, "bb2.temp_c": 50.0}, {}, {"bb1.temp_c": 50.0625}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, extra="rate_alarm_c_per_min = 1.0",
                       window=60.0)
    assert not any("th:rate" in v.alarms for v in views)
