"""shunt_trip's memory: the IEC 60255-151 / IEEE C37.112 reset characteristic of the
inverse-time element, the IEC 60255-149 thermal replica, and reclose on trial after a
ground-fault reset. Every trace runs live on a fake clock and is replayed (blocktrace), and
each expected time is worked out in the test from the standards' equations.

Scans are 0.1 s apart; the integrator takes each interval with the current seen at its start,
so a trip shows at the first scan at or after the exact time (at most 0.1 s later).
"""

from __future__ import annotations

import math

import pytest

from blocktrace import run_trace, site
from busguard.image import Quality
from busguard_blocks.idmt import CURVES, reset_time_s
from busguard_blocks.thermal_image import trip_time_s

PERIOD_S = 0.1
DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a", "current_l3_a", "residual_current_ma"]
[[breaker]]
name = "cb1"
driver = "memory"
poll_ms = 100
points = ["led"]
"""
BLOCK = """
[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
{extra}
"""
OC = 'pickup_a = 1000.0\ncurve = "ieee-very-inverse"\ntime_multiplier = 1.0\ndelay_s = 0.0\n'
BASE = {"m1.current_l1_a": 500.0, "m1.current_l2_a": 500.0, "m1.current_l3_a": 500.0,
        "m1.residual_current_ma": 10.0, "cb1.led": 0.0, "cb1.cmd_reset": 0.0}
TRIP = "cb1.shunt_trip"


def trace(make_runtime, tmp_path, rows, extra, restore=None):
    """Live, then replayed; a restored trace is not replayed (the recording holds no
    retained state)."""
    text = site(BLOCK.format(extra=extra), DEVICES)
    return run_trace(make_runtime, tmp_path, text, rows, restore=restore,
                     check_replay=restore is None)


def hold(amps: float, seconds: float) -> list[dict]:
    """Phase L1 at ``amps`` for ``seconds`` (one row per 0.1 s scan)."""
    n = round(seconds / PERIOD_S)
    return [{"m1.current_l1_a": amps}] + [{}] * (n - 1)


def cyclic(cycles: int) -> list[dict]:
    """GPU training load: 1.3x pickup for 8 s, 0.9x for 1 s, repeated."""
    rows: list[dict] = []
    for _ in range(cycles):
        rows += hold(1300.0, 8.0) + hold(900.0, 1.0)
    return rows


def first_trip_s(views) -> float:
    """Seconds from the first overload scan (row 1) to the first scan showing the trip."""
    first = [v.outputs[TRIP] for v in views].index(1.0)
    return (first - 1) * PERIOD_S


def t_op_ieee_vi(m: float, td: float = 1.0) -> float:
    a, p, b, _tr = CURVES["ieee-very-inverse"]
    return td * (a / (m ** p - 1.0) + b)


def test_cyclic_load_trips_through_the_inverse_reset(make_runtime, tmp_path):
    # IEEE C37.112 very inverse, TD 1: operate t = 19.61 / (M^2 - 1) + 0.491; reset
    # t_r = 21.6 / (1 - M^2). At M = 1.3: t_op = 19.61 / 0.69 + 0.491 = 28.911 s, so 8 s add
    # 8 / 28.911 = 0.27671; at M = 0.9: t_r = 21.6 / 0.19 = 113.68 s, so 1 s takes back
    # 0.00880. Net per 9 s cycle: 0.26791. After 3 cycles G = 0.80373; the remaining 0.19627
    # take 0.19627 * 28.911 = 5.674 s of the 4th overload: trip at 27 + 5.674 = 32.674 s.
    t_op = t_op_ieee_vi(1.3)
    t_r = reset_time_s(0.9, 21.6)
    assert t_op == pytest.approx(28.911, abs=1e-3) and t_r == pytest.approx(113.684, abs=1e-3)
    g3 = 3 * (8.0 / t_op - 1.0 / t_r)
    expected = 27.0 + (1.0 - g3) * t_op
    assert expected == pytest.approx(32.674, abs=1e-3)
    _rt, views = trace(make_runtime, tmp_path, [BASE, *cyclic(5)], OC)
    assert expected <= first_trip_s(views) < expected + PERIOD_S + 1e-9
    trip = views[-1].alarms["st:trip"]
    assert trip["code"] == "BG-TRIP-OC" and "breaker-trip" in trip["message"]


def test_instantaneous_reset_is_the_old_behaviour_and_never_trips(make_runtime, tmp_path):
    # each 8 s overload reaches only G = 8 / 28.911 = 0.277 and the dip clears it
    _rt, views = trace(make_runtime, tmp_path, [BASE, *cyclic(5)],
                       OC + 'reset = "instantaneous"\n')
    assert max(v.outputs[TRIP] for v in views) == 0.0
    pickups = [e for v in views for e in v.edges if e.startswith("raised st:oc-pickup")]
    assert len(pickups) == 5  # one pickup alarm per overload, each forgotten


def test_definite_reset_holds_through_short_dips(make_runtime, tmp_path):
    # reset_delay_s = 2: the 1 s dips hold G, so only overload time counts:
    # 3 * 8 s = 24 s give G = 24 / 28.911 = 0.8301; 0.1699 * 28.911 = 4.911 s more:
    # trip at 27 + 4.911 = 31.911 s
    t_op = t_op_ieee_vi(1.3)
    expected = 27.0 + (1.0 - 24.0 / t_op) * t_op
    _rt, views = trace(make_runtime, tmp_path, [BASE, *cyclic(5)],
                       OC + 'reset = "definite"\nreset_delay_s = 2.0\n')
    assert expected <= first_trip_s(views) < expected + PERIOD_S + 1e-9


def test_a_long_dip_resets_fully(make_runtime, tmp_path):
    # 8 s at 1.3x: G = 0.27671; at 0 A the full reset takes TD * tr = 21.6 s, so G is 0
    # after 0.27671 * 21.6 = 5.98 s; 7 s at 0 A leave nothing. The next overload then needs
    # the whole 28.911 s again.
    t_op = t_op_ieee_vi(1.3)
    dip = hold(0.0, 7.0)
    dip[0] = {"m1.current_l1_a": 0.0, "m1.current_l2_a": 0.0, "m1.current_l3_a": 0.0}
    rows = [BASE, *hold(1300.0, 8.0), *dip, *hold(1300.0, 31.0)]
    _rt, views = trace(make_runtime, tmp_path, rows, OC)
    assert expected_between(first_trip_s(views), 15.0 + t_op)
    g_after_dip = max(0.0, 8.0 / t_op - 7.0 / 21.6)
    assert g_after_dip == 0.0


def expected_between(got: float, expected: float) -> bool:
    return expected <= got < expected + PERIOD_S + 1e-9


def test_a_lost_current_holds_the_integrator(make_runtime, tmp_path):
    # 8 s at 1.3x (G = 0.27671), then L1 reads BAD for 20 s while L2/L3 read 500 A: the
    # element holds (it must not reset on the good phases alone), then 1.3x again: trip after
    # (1 - 0.27671) * 28.911 = 20.911 s, at 28 + 20.911 = 48.911 s. An instantaneous reset on
    # the loss (0.1) would have needed 28 + 28.911 s.
    t_op = t_op_ieee_vi(1.3)
    lost = [{"m1.current_l1_a": (0.0, Quality.BAD)}] + [{}] * 199
    rows = [BASE, *hold(1300.0, 8.0), *lost, *hold(1300.0, 22.0)]
    _rt, views = trace(make_runtime, tmp_path, rows, OC)
    assert expected_between(first_trip_s(views), 28.0 + (1.0 - 8.0 / t_op) * t_op)
    assert any("st:input" in v.alarms for v in views)  # the loss itself is reported


THERMAL = ('thermal_ib_a = 1000.0\nthermal_k = 1.0\nthermal_tau_s = 60.0\n'
           'thermal_alarm_pct = 80.0\nthermal_reset_pct = 60.0\n')


def test_thermal_replica_from_cold(make_runtime, tmp_path):
    # IEC 60255-149: t = tau * ln((I^2 - Ip^2) / (I^2 - (k Ib)^2)); cold (Ip = 0), I = 1.3 kIb,
    # tau = 60 s: t = 60 * ln(1.69 / 0.69) = 60 * 0.89578 = 53.747 s
    expected = 60.0 * math.log(1.69 / 0.69)
    assert trip_time_s(1300.0, 0.0, 1000.0, 60.0) == pytest.approx(expected)
    assert expected == pytest.approx(53.747, abs=1e-3)
    _rt, views = trace(make_runtime, tmp_path, [BASE, *hold(1300.0, 56.0)], THERMAL)
    assert expected_between(first_trip_s(views), expected)
    assert views[-1].alarms["st:trip"]["code"] == "BG-TRIP-THERMAL"
    # the alarm at 80 %: theta = 1.69 (1 - exp(-t / 60)) = 0.8 at t = -60 ln(1 - 0.8 / 1.69)
    t_alarm = -60.0 * math.log(1.0 - 0.8 / 1.69)
    raised = next(i for i, v in enumerate(views) if "st:thermal-ol" in v.alarms)
    assert t_alarm <= (raised - 1) * PERIOD_S < t_alarm + PERIOD_S + 1e-9
    assert views[raised].outputs["st.thermal_pct"] >= 80.0


def test_thermal_memory_survives_a_restart_hot(make_runtime, tmp_path):
    # restored theta = 0.81 (a steady 900 A preload) with no downtime to cool: at 1300 A the
    # trip comes after 60 * ln((1.69 - 0.81) / 0.69) = 60 * 0.24328 = 14.597 s, not 53.7 s
    expected = 60.0 * math.log((1.69 - 0.81) / 0.69)
    assert trip_time_s(1300.0, 900.0, 1000.0, 60.0) == pytest.approx(expected)
    state = {"latched": False, "thermal": {"theta": 0.81, "t_utc": None}}
    preload = {**BASE, "m1.current_l1_a": 900.0}  # steady at 0.81: the first interval holds
    rt, views = trace(make_runtime, tmp_path, [preload, *hold(1300.0, 16.0)], THERMAL,
                      restore={"st": state})
    assert expected_between(first_trip_s(views), expected)
    assert rt.blocks[0].state()["thermal"]["theta"] >= 1.0


def test_thermal_memory_cools_for_the_time_the_unit_was_down(make_runtime, tmp_path):
    # saved one tau (60 s) before the fake clock's start (2026-01-01T00:00:00Z): the replica
    # cools with no current, theta = 0.81 * exp(-1) = 0.29799; then at 1300 A the trip comes
    # after 60 * ln((1.69 - 0.29799) / 0.69) = 42.109 s
    theta0 = 0.81 * math.exp(-1.0)
    expected = 60.0 * math.log((1.69 - theta0) / 0.69)
    assert expected == pytest.approx(42.109, abs=1e-3)
    state = {"latched": False, "thermal": {"theta": 0.81, "t_utc": 1_767_225_600.0 - 60.0}}
    _rt, views = trace(make_runtime, tmp_path, [BASE, *hold(1300.0, 44.0)], THERMAL,
                       restore={"st": state})
    # the cooling is applied at the first scan (t = 0.0 s after the wall start, +- a scan)
    assert expected - PERIOD_S <= first_trip_s(views) < expected + 2 * PERIOD_S


def test_thermal_trip_reset_refused_until_cool(make_runtime, tmp_path):
    rows = [BASE, *hold(1300.0, 56.0), {"m1.current_l1_a": 0.0, "m1.current_l2_a": 0.0,
                                         "m1.current_l3_a": 0.0, "cb1.cmd_reset": 1.0}]
    # at 0 A theta falls from ~1.0 with tau 60 s; 60 % after 60 * ln(1 / 0.6) = 30.6 s
    rows += [{}] * 100 + [{"cb1.cmd_reset": 2.0}] + [{}] * 250 + [{"cb1.cmd_reset": 3.0}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, THERMAL)
    refused = [v for v in views if "st:reset-refused" in v.alarms]
    assert refused and refused[0].alarms["st:reset-refused"]["values"]["persisting"] == [
        "thermal-overload"]
    assert views[-1].outputs[TRIP] == 0.0 and views[-1].outputs["st.thermal_pct"] < 60.0


GF = 'residual_pickup_ma = 300.0\nresidual_delay_s = 0.5\ntrial_s = 10.0\n'


def test_ground_fault_reset_recloses_on_trial(make_runtime, tmp_path):
    rows = [BASE, {},
            {"m1.residual_current_ma": 450.0}, *[{}] * 6,  # 2: above pickup; 7: tripped
            {"m1.residual_current_ma": 0.0}, {},  # 9: the open feeder reads 0 mA
            {"cb1.cmd_reset": 1.0}, {},  # 11: accepted: nothing can show the fault is gone
            {"m1.residual_current_ma": 450.0}, {}]  # 13: on trial: trips at once, no delay
    _rt, views = trace(make_runtime, tmp_path, rows, GF)
    outs = [v.outputs[TRIP] for v in views]
    assert outs[:7] == [0] * 7 and outs[7:] == [1, 1, 1, 1, 0, 0, 1, 1]
    assert views[7].alarms["st:trip"]["code"] == "BG-TRIP-RCM"
    trial = views[11].alarms["st:reclose-trial"]
    assert trial["code"] == "BG-RECLOSE-TRIAL" and trial["severity"] == "warning"
    assert trial["values"]["reset_cause"] == "ground-fault-residual"
    again = views[13].alarms["st:trip"]["values"]
    assert again["values"]["on_trial"] is True
    assert "st:reclose-trial" not in views[13].alarms


def test_after_the_trial_the_delay_applies_again(make_runtime, tmp_path):
    rows = [BASE, {"cb1.led": 2.0}, {"cb1.led": 0.0}, {"cb1.cmd_reset": 1.0},
            *[{}] * 101,  # 10 s of trial pass quietly
            {"m1.residual_current_ma": 450.0}, {}, {}, {}, {}, {}, {}]
    _rt, views = trace(make_runtime, tmp_path, rows, GF)
    assert "st:reclose-trial" in views[4].alarms
    assert views[4].alarms["st:reclose-trial"]["values"]["reset_cause"] == "ground-fault-led"
    assert "st:reclose-trial" not in views[104].alarms
    outs = [v.outputs[TRIP] for v in views[105:]]
    assert outs == [0, 0, 0, 0, 0, 1, 1]  # the 0.5 s residual delay, as before the trip
