"""Every simulator scenario triggers the blocks it should, on the bundled site's own [[block]]
configuration: the simulator's physical model (busguard.sim.model, a pure function of time)
feeds in-memory devices named like the bundled site's, the shunt-trip outputs are fed back to
the model (the breaker opens, its rack's load drops), and the alarm edges are collected.

The Modbus driver's comm_* figures are stood in for from the scenario's fault knobs (100% drop:
comm_ok 0 and the meter's points stale; latency; drop %; garbage frames as RTU error %); the
real driver path is tested in the field I/O suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from busguard.sim.model import METER_QUANTITIES, BreakerSpec, MeterSpec, ProbeSpec, SiteModel
from busguard.sim.scenarios import SCENARIOS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUNDLED = Path(__file__).resolve().parents[1] / "site.toml"
COMM = ("comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms", "comm_loss_pct",
        "comm_error_pct", "comm_poll_ms")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def bundled_as_memory_site(period_ms: float) -> tuple[str, dict]:
    data = tomllib.loads(BUNDLED.read_text(encoding="utf-8"))
    nominals = {k: v for k, v in data["site"].items() if k.startswith("nominal_")}
    out = ['[site]\nname = "scenario"\n' + "\n".join(f"{k} = {v!r}" for k, v in nominals.items()),
           f"[scan]\nperiod_ms = {period_ms}",
           '[paths]\nfault_log = "fault.log"\nstate_dir = "state-scenario"']
    poll = {}
    for m in data.get("meter", []):
        poll[m["name"]] = float(m.get("poll_ms", 100.0))
        pts = [*METER_QUANTITIES, *COMM]
        out.append(f'[[meter]]\nname = "{m["name"]}"\ndriver = "memory"\npoll_ms = 1000\n'
                   f"points = {_toml_value(pts)}")
    for p in data.get("probe", []):
        out.append(f'[[probe]]\nname = "{p["name"]}"\ndriver = "memory"\npoll_ms = 1000\n'
                   f'points = ["temp_c"]')
    for b in data.get("breaker", []):
        out.append(f'[[breaker]]\nname = "{b["name"]}"\ndriver = "memory"\npoll_ms = 1000\n'
                   f'points = ["led"]')
    for o in data.get("output", []):  # annunciators follow the alarm table, as on the site
        if o.get("follows") == "alarms":
            opts = {k: o[k] for k in ("follows", "severity", "latched_unacked", "unacked_only",
                                      "codes") if k in o}
            out.append(f'[[output]]\nname = "{o["name"]}"\ndriver = "memory"\n'
                       f'outputs = ["{o["output"]}"]\n' +
                       "\n".join(f"{k} = {_toml_value(v)}" for k, v in opts.items()))
    for blk in data.get("block", []):
        out.append("[[block]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in blk.items()))
    return "\n".join(out) + "\n", {"data": data, "poll": poll}


def model_for(data: dict, scenario: str) -> SiteModel:
    meters = [MeterSpec(m["name"], bus="rtu" if m.get("driver") == "modbus_rtu" else "tcp")
              for m in data.get("meter", [])]
    probes = [ProbeSpec(p["name"], meter=i % len(meters))
              for i, p in enumerate(data.get("probe", []))]
    breakers = [BreakerSpec(b["name"], meter=j) for j, b in enumerate(data.get("breaker", []))]
    site = data["site"]
    return SiteModel(meters, probes, breakers, scenario=SCENARIOS[scenario],
                     v_ll_nominal=site["nominal_voltage_ll_v"], f_nominal=site["nominal_hz"])


def run_scenario(make_runtime, run_scans, scenario: str, seconds: float, period_ms: float):
    text, info = bundled_as_memory_site(period_ms)
    model = model_for(info["data"], scenario)
    rt = make_runtime(text)
    rt.start()
    period = period_ms / 1000.0
    raised: dict[str, str] = {}
    when: dict[str, float] = {}
    outputs: list[dict[str, float]] = []
    breakers = [b.name for b in model.breakers]

    def drive(rt, i):
        t = i * period
        values = model.snapshot(t)
        items = []
        for k, m in enumerate(model.meters):
            f = model.comm_faults(k, t)
            dead = f.drop_pct >= 100.0
            items += [(f"{m.name}.comm_ok", 0.0 if dead else 1.0),
                      (f"{m.name}.comm_latency_p50_ms", 2.0 + f.latency_ms),
                      (f"{m.name}.comm_latency_p99_ms", 4.0 + f.latency_ms),
                      (f"{m.name}.comm_loss_pct", f.drop_pct),
                      (f"{m.name}.comm_error_pct", f.garbage_pct if m.bus == "rtu" else 0.0),
                      (f"{m.name}.comm_poll_ms", info["poll"][m.name])]
            if not dead:
                items += [(f"{m.name}.{q}", values[f"{m.name}.{q}"]) for q in METER_QUANTITIES]
        items += [(f"{p.name}.temp_c", values[f"{p.name}.temp_c"]) for p in model.probes]
        items += [(f"{b}.led", values[f"{b}.led"]) for b in breakers]
        rt.image.write_many([(n, float(v), 0) for n, v in items])
        for j, b in enumerate(breakers):  # the shunt-trip coil opens the modelled breaker
            if rt.engine.outputs.get(f"{b}.shunt_trip") == 1.0 and j not in model.shunt_trips:
                model.shunt_trips[j] = t

    results = run_scans(rt, round(seconds / period), between=drive)
    for res in results:
        outputs.append(dict(res.outputs))
        for e in res.edges:
            if e.kind == "raised" and e.alarm.id not in raised:
                raised[e.alarm.id] = e.alarm.condition.code
                when[e.alarm.id] = (res.cycle - 1) * period
    rt.stop()
    model.first_raised = when  # type: ignore[attr-defined]
    model.outputs = outputs  # type: ignore[attr-defined]
    model.runtime = rt  # type: ignore[attr-defined]
    return raised, model


def test_normal_raises_nothing(make_runtime, run_scans):
    raised, _ = run_scenario(make_runtime, run_scans, "normal", 90, 1000)
    assert raised == {}


def test_training_spike_trips_the_overloaded_breaker_and_records_transients(
        make_runtime, run_scans):
    raised, model = run_scenario(make_runtime, run_scans, "training-spike", 40, 100)
    assert raised["trip-a1:trip"] == "BG-TRIP-OC"
    assert raised["transients-a1:event"] == "BG-TRANSIENT"
    assert 30.0 <= model.first_raised["transients-a1:event"] < 30.5  # the job start's inrush
    assert model.shunt_trips[0] < 30 + 2 + SCENARIOS["training-spike"].overcurrent_delay_s
    assert "trip-a2:trip" not in raised


def test_training_load_above_80_percent_of_ampacity_raises_load_alarms(make_runtime, run_scans):
    raised, _ = run_scenario(make_runtime, run_scans, "training-spike", 110, 1000)
    loads = {k for k, code in raised.items() if code == "BG-LOAD-80"}
    assert loads and "pq-a1:load" not in loads  # its breaker tripped at once


def test_thd_rise_raises_thd_alarms(make_runtime, run_scans):
    raised, _ = run_scenario(make_runtime, run_scans, "thd-rise", 130, 1000)
    assert raised["pq-a1:thd-v"] == "BG-THD-V"
    assert raised["thd-relay:limit"] == "BG-THD"
    assert not any(k.endswith(":trip") for k in raised)


def test_thermal_runaway_warns_ahead_then_trips_0xcf(make_runtime, run_scans):
    raised, model = run_scenario(make_runtime, run_scans, "thermal-runaway", 400, 1000)
    assert raised["thermal-a1:warn"] == "BG-TEMP-WARN"
    assert raised["thermal-a1:ttt"] == "BG-TEMP-TTT"
    assert raised["thermal-a1:trip"] == "0xCF"
    assert raised["trip-a1:trip"] == "0xCF"
    assert 0 in model.shunt_trips
    # one interlock per tap-off: the other joints raise nothing, and nothing disagrees
    assert not any(k.startswith("thermal-") and not k.startswith("thermal-a1") for k in raised)


def test_comm_loss_raises_errno_110_and_latency(make_runtime, run_scans):
    raised, _ = run_scenario(make_runtime, run_scans, "comm-loss", 40, 1000)
    assert raised["comm:timeout:pqm-a2"] == "errno 110"
    assert raised["comm:latency:pqm-a3"] == "BG-COMM-LATENCY"
    assert raised["comm:poll:pqm-a3"] == "BG-POLL-RATIO"
    assert raised["pq-a2:input"] == "BG-INPUT"
    assert not any(k.endswith(":trip") for k in raised)


def test_ground_fault_trips_the_second_breaker(make_runtime, run_scans):
    raised, model = run_scenario(make_runtime, run_scans, "ground-fault", 22, 100)
    assert raised["trip-a2:trip"] in ("BG-TRIP-RCM", "BG-TRIP-GF")
    assert "trip-a1:trip" not in raised and 1 in model.shunt_trips


def test_rs485_noise_raises_signal_integrity_alarms(make_runtime, run_scans):
    raised, _ = run_scenario(make_runtime, run_scans, "rs485-noise", 25, 1000)
    rtu = [m["name"] for m in tomllib.loads(BUNDLED.read_text())["meter"]
           if m.get("driver") == "modbus_rtu"]
    assert rtu
    for m in rtu:
        assert raised[f"comm:errors:{m}"] == "BG-RS485-ERRORS"
    assert not any(k.startswith("comm:errors:pqm-a") for k in raised)


def test_cyclic_overload_trips_brk_a1_through_the_integrator(make_runtime, run_scans):
    raised, model = run_scenario(make_runtime, run_scans, "cyclic-overload", 60, 100)
    assert raised["trip-a1:trip"] == "BG-TRIP-OC"
    trip = model.runtime.alarms.alarms["trip-a1:trip"].condition.values
    assert trip["cause"] == "overcurrent"
    sc = SCENARIOS["cyclic-overload"]
    cycle = sc.cyclic_high_s + sc.cyclic_low_s
    # not in the first overload (4 s < the 6.5 s operate time at 1.3x rating), but within a
    # few cycles: the dips only take part of the integrator back
    assert sc.cyclic_start_s + cycle < model.shunt_trips[0] < sc.cyclic_start_s + 6 * cycle
    assert "trip-a2:trip" not in raised


def test_cyclic_overload_is_forgotten_with_an_instantaneous_reset(make_runtime, run_scans,
                                                                  monkeypatch):
    original = bundled_as_memory_site

    def instantaneous(period_ms):
        text, info = original(period_ms)
        return text.replace('reset = "inverse"', 'reset = "instantaneous"'), info

    monkeypatch.setitem(globals(), "bundled_as_memory_site", instantaneous)
    raised, model = run_scenario(make_runtime, run_scans, "cyclic-overload", 60, 100)
    assert "trip-a1:trip" not in raised and 0 not in model.shunt_trips
    assert raised["trip-a1:oc-pickup"] == "BG-OC-PICKUP"  # it saw every overload


def test_thermal_runaway_horn_stays_on_until_acknowledged(make_runtime, run_scans):
    raised, model = run_scenario(make_runtime, run_scans, "thermal-runaway", 400, 1000)
    horn = [o["relay.critical"] for o in model.outputs]
    first = horn.index(1.0)
    assert raised["thermal-a1:trip"] == "0xCF"
    # the joint cools after the trip and 0xCF's level clears, but the horn holds: the alarm
    # is latched and nobody has acknowledged it
    assert set(horn[first:]) == {1.0}
    rt = model.runtime
    assert not rt.alarms.alarms["thermal-a1:trip"].active  # cooled: latched only
    assert model.outputs[-1]["relay.alarm"] == 1.0  # the beacon too (latched, unacked)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_has_a_test(name):
    tests = Path(__file__).read_text()
    assert f'"{name}"' in tests.split("def test_every_scenario_has_a_test")[0]
