"""The simulator's physical model: deterministic (pure in seed and t) and each scenario does
what it says. No sockets, no clocks."""

from __future__ import annotations

import itertools
import math

import pytest

from busguard.gpio.led import LedDecoder, pattern_level
from busguard.sim.model import (
    LED_OFF,
    LED_SOLID,
    LED_TWO_BLINK,
    METER_QUANTITIES,
    BreakerSpec,
    MeterSpec,
    ProbeSpec,
    SiteModel,
)
from busguard.sim.scenarios import SCENARIOS, CommFaults, get_scenario

METERS = [MeterSpec(f"pqm-{i}", bus="rtu" if i >= 6 else "tcp") for i in range(8)]
PROBES = [ProbeSpec(f"tap-{i}", meter=i) for i in range(8)]
BREAKERS = [BreakerSpec("brk-a", 0), BreakerSpec("brk-b", 1)]


def model(scenario: str = "normal", seed: int = 1) -> SiteModel:
    return SiteModel(METERS, PROBES, BREAKERS, SCENARIOS[scenario], seed=seed)


def test_same_seed_and_time_give_the_same_values_in_any_order() -> None:
    a, b = model("training-spike", 5), model("training-spike", 5)
    times = [0.0, 31.0, 12.25, 500.0, 31.0]
    first = [a.snapshot(t) for t in times]
    second = [b.snapshot(t) for t in reversed(times)][::-1]
    assert first == second
    assert first[1] == first[4]
    assert model("normal", 5).snapshot(12.25) != model("normal", 6).snapshot(12.25)


def test_meters_serve_every_generic_quantity_with_plausible_values() -> None:
    m = model()
    v = m.meter(0, 10.0)
    assert set(v) == set(METER_QUANTITIES)
    assert 260 < v["voltage_l1_n_v"] < 285 and 455 < v["voltage_l1_l2_v"] < 490
    assert 0.3 < v["current_l1_a"] / METERS[0].rated_a < 0.8
    # three phases, some imbalance, none equal
    phases = [v[f"current_l{p}_a"] for p in (1, 2, 3)]
    assert len(set(phases)) == 3 and max(phases) / min(phases) < 1.1
    assert v["power_kw"] < v["apparent_power_kva"] and 0.9 < v["power_factor"] < 1.0
    assert 59.9 < v["frequency_hz"] < 60.1
    assert 1.0 < v["thd_v_l1_pct"] < 4.0
    assert m.meter(0, 3600.0)["energy_kwh"] > v["energy_kwh"]


def test_thd_rises_with_gpu_load() -> None:
    m = model("training-spike")
    idle, busy = m.meter(3, 20.0), m.meter(3, 60.0)  # before and after the jobs start
    assert busy["current_l1_a"] > idle["current_l1_a"] * 1.3
    assert busy["thd_i_l1_pct"] > idle["thd_i_l1_pct"] + 3
    assert busy["thd_v_l1_pct"] > idle["thd_v_l1_pct"]


def test_thd_rise_crosses_the_5_percent_limit() -> None:
    m = model("thd-rise")
    assert all(m.meter(i, 10.0)["thd_v_l1_pct"] < 5.0 for i in range(8))
    assert all(m.meter(i, 200.0)["thd_v_l1_pct"] > 5.0 for i in range(8))


def test_thermal_runaway_crosses_90_c_with_inertia() -> None:
    m = model("thermal-runaway")
    temps = [m.probe(0, t) for t in range(0, 400, 10)]
    assert temps[0] < 60
    assert max(temps) > 90.0
    crossing = next(i for i, x in enumerate(temps) if x > 90.0) * 10
    assert crossing > 60  # thermal inertia: not the instant the joint degrades (t=20 s)
    # first order: no step from one 10 s sample to the next bigger than the heat could cause
    assert max(b - a for a, b in itertools.pairwise(temps)) < 15
    assert model("normal").probe(0, 300.0) < 60
    assert max(m.probe(1, t) for t in range(0, 400, 50)) < 60  # other probes unaffected


def test_training_spike_trips_the_first_breaker_on_overcurrent() -> None:
    m = model("training-spike")
    assert m.breaker(0, 35.0).closed and m.breaker(0, 35.0).led == LED_OFF
    st = m.breaker(0, 60.0)
    assert not st.closed and st.led == LED_SOLID and st.cause == "overcurrent"
    assert m.meter(0, 60.0)["current_l1_a"] == 0.0  # its rack lost power
    assert m.breaker(1, 60.0).closed


def test_ground_fault_raises_residual_current_then_trips_with_two_blink() -> None:
    m = model("ground-fault")
    assert m.meter(1, 10.0)["residual_current_ma"] < 30
    assert m.meter(1, 20.1)["residual_current_ma"] > 300
    st = m.breaker(1, 21.0)
    assert not st.closed and st.led == LED_TWO_BLINK and st.cause == "ground-fault"
    # the LED line, sampled every 20 ms with the production decoder, reads as a 2-blink
    dec = LedDecoder()
    for k in range(400):
        t = 1000.0 + k * 0.02
        dec.feed(t, pattern_level(st.led, t))
    reading = dec.classify(1000.0 + 400 * 0.02)
    assert reading.code == 2


def test_shunt_trip_is_an_external_event() -> None:
    m = model()
    m.shunt_trips[1] = 50.0
    assert m.breaker(1, 49.0).closed
    st = m.breaker(1, 51.0)
    assert not st.closed and st.cause == "shunt-trip"
    assert m.load(1, 51.0) == 0.0


def test_comm_faults_by_scenario() -> None:
    m = model("comm-loss")
    assert not m.comm_faults(1, 10.0).any
    assert m.comm_faults(1, 20.0).drop_pct == 100.0
    assert not m.comm_faults(1, 80.0).any  # recovers
    assert m.comm_faults(2, 20.0).latency_ms > 0
    n = model("rs485-noise")
    assert n.comm_faults(7, 20.0).garbage_pct > 0.1  # the RTU meters
    assert not n.comm_faults(0, 20.0).any  # TCP meters are not on the noisy line


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="thermal-runaway"):
        get_scenario("thermal")


def test_values_are_finite_for_every_scenario() -> None:
    for name in SCENARIOS:
        snap = model(name).snapshot(100.0)
        assert all(math.isfinite(v) for v in snap.values()), name


def test_fault_knobs_apply_to_the_named_meters_only() -> None:
    knobs = CommFaults(latency_ms=20.0, drop_pct=5.0)
    m = SiteModel(METERS, PROBES, BREAKERS, SCENARIOS["normal"], seed=1, faults=knobs,
                  fault_meters=frozenset({"pqm-3"}))
    assert m.comm_faults(3, 5.0) == knobs
    assert not m.comm_faults(2, 5.0).any
    assert SiteModel(METERS, faults=knobs).comm_faults(2, 5.0) == knobs


def test_cooling_demand_cools_every_probe_with_inertia() -> None:
    hot, cooled = model("training-spike"), model("training-spike")
    cooled.set_cooling(60.0, 100.0)
    assert cooled.probe(3, 59.0) == hot.probe(3, 59.0)  # nothing before the set point
    assert 0 < hot.probe(3, 65.0) - cooled.probe(3, 65.0) < 3  # inertia: a slow start
    assert hot.probe(3, 400.0) - cooled.probe(3, 400.0) > 6
    assert cooled.cooling_pct(59.0) == 0.0 and cooled.cooling_pct(61.0) == 100.0


def test_cooling_history_stays_bounded() -> None:
    m = model()
    for k in range(2000):
        m.set_cooling(k * 1.0, float(k % 7))
    assert len(m.cooling) < 400
    assert m.cooling_pct(1999.5) == float(1999 % 7)
