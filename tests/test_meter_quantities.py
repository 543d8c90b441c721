"""Issue 15's electrical quantities: the profiles decode their meters' real encodings (the
simulator's Modbus TCP meter on 127.0.0.1 serving the registers as the meters do: Schneider's
four-quadrant PF floats, int64 Wh counters, Janitza's W/var floats), busguard's demand over
a scripted power trace (fake clock, no sleeps), and the simulator's consistency."""

from __future__ import annotations

import math
import struct

import pytest

from busguard.image import Quality
from busguard.modbus import load_profile
from busguard.modbus.codec import decode_pf_4q, encode_pf_4q, quadrant_of
from busguard.modbus.demand import DemandWindow
from busguard.sim.model import MeterSpec, SiteModel
from busguard.sim.scenarios import NO_FAULTS, SCENARIOS
from busguard.testing import point, wait_until


def f32(value: float) -> list[int]:
    """Registers of an IEEE-754 float32, high word first (written out, not via the codec)."""
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def i64(value: int) -> list[int]:
    return list(struct.unpack(">4H", struct.pack(">q", value)))


def site(port: int, profile: str, tmp: str) -> str:
    return (f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp}"\n\n[[meter]]\nname = "m1"\n'
            f'host = "127.0.0.1"\nport = {port}\npoll_ms = 50\ntimeout_ms = 300\n'
            f'profile = "{profile}"\n')


def good(rt, name: str) -> float | None:
    v, q = point(rt, name)
    return v if q == Quality.GOOD else None


# -- the four-quadrant PF encoding -------------------------------------------------------------
@pytest.mark.parametrize(("register", "pf", "quadrant"), [
    (0.95, 0.95, 1),     # importing, lagging
    (1.05, 0.95, 4),     # importing, leading: never published as 1.05
    (-1.05, -0.95, 2),   # exporting, leading
    (-0.95, -0.95, 3),   # exporting, lagging
    (1.0, 1.0, 1), (2.0, 0.0, 4), (-2.0, 0.0, 2),
])
def test_pf_4q_decodes_to_the_iec_sign_and_quadrant(register, pf, quadrant):
    assert decode_pf_4q(register) == (pytest.approx(pf), quadrant)
    assert decode_pf_4q(encode_pf_4q(pf, quadrant)) == (pytest.approx(pf), quadrant)


def test_pf_4q_out_of_range_is_not_a_power_factor():
    for bad in (2.5, -2.01, math.nan, math.inf):
        pf, quadrant = decode_pf_4q(bad)
        assert math.isnan(pf) and quadrant == 0
    assert [quadrant_of(p, q) for p, q in ((5, 1), (-5, 1), (-5, -1), (5, -1))] == [1, 2, 3, 4]


# -- profiles against a meter serving the meters' real encodings --------------------------------
def test_pm5000_four_quadrant_pf_and_int64_energy(modbus_meter, make_runtime, tmp_path):
    prof = load_profile("pm5000")
    unit = modbus_meter(prof, {p.name: 0.5 for p in prof.points})  # every register answers
    unit.fill_gaps(0)
    regs = {  # documented 1-based register numbers -> registers as the meter serves them
        3054: f32(40.5), 3056: f32(41.25), 3058: f32(-2.0),      # kW, phase C exporting
        3060: f32(79.75), 3068: f32(-6.5), 3076: f32(84.0),     # P, Q (leading), S totals
        3078: f32(0.97), 3080: f32(1.10), 3082: f32(-1.2),      # PF A Q1, B Q4, C Q2
        3084: f32(1.05),                                       # PF total: leading 0.95
        3204: i64(12_345_678_901_234), 3208: i64(7),            # Wh: beyond float32 and 2^32
        3220: i64(2**40 + 3), 3224: i64(999_999_999_999),       # varh
    }
    for register, words in regs.items():
        unit.set_registers(register - 1, words)  # wire address = register number - 1
    rt = make_runtime(site(unit.port, "pm5000", str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.power_factor_quadrant") is not None, what="first poll")
    assert good(rt, "m1.power_factor") == pytest.approx(0.95, abs=1e-6)
    assert good(rt, "m1.power_factor_quadrant") == 4
    assert good(rt, "m1.power_factor_l1") == pytest.approx(0.97, abs=1e-6)
    assert good(rt, "m1.power_factor_l2") == pytest.approx(0.90, abs=1e-6)
    assert good(rt, "m1.power_factor_l3") == pytest.approx(-0.80, abs=1e-6)
    assert good(rt, "m1.power_l3_kw") == -2.0 and good(rt, "m1.reactive_power_kvar") == -6.5
    assert good(rt, "m1.energy_import_wh") == 12_345_678_901_234  # exact (float64 image)
    assert good(rt, "m1.energy_export_wh") == 7
    assert good(rt, "m1.energy_import_varh") == 2**40 + 3
    assert good(rt, "m1.energy_export_varh") == 999_999_999_999
    assert good(rt, "m1.energy_kwh") == pytest.approx(12_345_678_901.234)
    assert good(rt, "m1.neutral_measured") == 1.0
    assert good(rt, "m1.demand_kw") == pytest.approx(79.75)  # constant power: its mean
    assert point(rt, "m1.demand_peak_kw")[1] == Quality.STALE  # no full 15-min window yet


def test_janitza_per_phase_power_cos_phi_and_computed_neutral(modbus_meter, make_runtime,
                                                              tmp_path):
    prof = load_profile("umg96rm")
    unit = modbus_meter(prof, {p.name: 1.0 for p in prof.points})
    unit.fill_gaps(0)
    regs = {19020: f32(40_500.0), 19022: f32(41_000.0), 19024: f32(-1_500.0),  # W
            19028: f32(42_000.0), 19036: f32(9_000.0), 19040: f32(-300.0),       # VA, var
            19042: f32(17_700.0), 19044: f32(0.964), 19046: f32(0.97),
            19048: f32(-0.98), 19018: f32(12.5),                               # cos phi, IN
            19068: f32(8_388_608.0), 19076: f32(1234.0)}                       # Wh
    for address, words in regs.items():
        unit.set_registers(address, words)  # Janitza lists protocol addresses
    rt = make_runtime(site(unit.port, "umg96rm", str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.neutral_measured") is not None and
               good(rt, "m1.power_l1_kw") is not None, what="first poll")
    assert good(rt, "m1.power_l1_kw") == pytest.approx(40.5)
    assert good(rt, "m1.power_l3_kw") == pytest.approx(-1.5)
    assert good(rt, "m1.apparent_power_l1_kva") == pytest.approx(42.0)
    assert good(rt, "m1.reactive_power_l1_kvar") == pytest.approx(9.0)
    assert good(rt, "m1.reactive_power_l3_kvar") == pytest.approx(-0.3)
    assert good(rt, "m1.reactive_power_kvar") == pytest.approx(17.7)
    assert good(rt, "m1.power_factor") == pytest.approx(0.964, abs=1e-6)  # cos phi L1
    assert good(rt, "m1.power_factor_l3") == pytest.approx(-0.98, abs=1e-6)
    assert good(rt, "m1.energy_import_wh") == 8_388_608.0
    assert good(rt, "m1.energy_export_wh") == 1234.0
    assert good(rt, "m1.current_n_a") == 12.5
    assert good(rt, "m1.neutral_measured") == 0.0  # a vector sum, and the map says so
    specs = {s.name: s for s in rt.image.specs}
    assert "displacement" in specs["m1.power_factor"].doc
    assert "m1.power_factor_quadrant" not in specs  # not invented: Janitza has no register
    assert "m1.energy_import_varh" not in specs  # inductive/capacitive is not import/export


def test_generic_pqm_new_quantities_with_uint64_counters(modbus_meter, make_runtime, tmp_path):
    prof = load_profile("generic-pqm")
    values = {p.name: 10.0 + i for i, p in enumerate(prof.points)}
    values.update({"power_factor": -0.93, "power_factor_l2": -0.91, "power_factor_quadrant": 3,
                   "power_kw": -120.25, "energy_import_wh": 2**53 - 1,
                   "energy_export_wh": 2**33 + 5, "energy_import_varh": 0,
                   "energy_export_varh": 123_456_789_012})
    meter = modbus_meter(prof, values)
    meter.fill_gaps(0)
    rt = make_runtime(site(meter.port, "generic-pqm", str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.demand_kw") is not None, what="first poll")
    for name, v in values.items():
        assert good(rt, f"m1.{name}") == pytest.approx(v), name
    assert good(rt, "m1.energy_import_wh") == 2**53 - 1  # exact to the last Wh
    assert good(rt, "m1.neutral_measured") == 1.0
    assert good(rt, "m1.demand_kw") == pytest.approx(-120.25)


# -- demand ---------------------------------------------------------------------------------------
def test_demand_is_the_mean_of_the_last_15_minutes_of_a_scripted_trace():
    window = DemandWindow()
    trace = []  # (t, kW): 40 minutes at 10 s, steps and a ramp, on a fake clock
    for k in range(240):
        t = 1000.0 + 10.0 * k
        kw = 100.0 if k < 60 else (250.0 if k < 120 else 50.0 + k)
        trace.append((t, kw))
    peaks = []
    for i, (t, kw) in enumerate(trace):
        demand, peak = window.add(t, kw)
        inside = [p for (ts, p) in trace[:i + 1] if ts > t - 900.0]
        assert demand == pytest.approx(sum(inside) / len(inside)), t
        if t - trace[0][0] >= 899.0:
            peaks.append(demand)
            assert peak == pytest.approx(max(peaks))
        else:
            assert math.isnan(peak)  # no full window yet
    assert window.demand_kw == pytest.approx(sum(p for _, p in trace[-90:]) / 90)
    window.reset_peak()
    assert math.isnan(window.peak_kw)


def test_demand_ignores_bad_samples_and_time_going_back():
    window = DemandWindow(window_s=60.0)
    assert window.add(0.0, 10.0) == (10.0, pytest.approx(math.nan, nan_ok=True))
    window.add(1.0, 30.0)
    window.add(0.5, 1000.0)  # older than the newest sample: ignored
    window.add(1.5, math.nan)  # not a reading: ignored
    assert window.add(2.0, 20.0)[0] == pytest.approx(20.0)
    assert window.add(100.0, 40.0)[0] == 40.0  # the old samples left the window
    with pytest.raises(ValueError):
        DemandWindow(window_s=0.0)


# -- the simulator ------------------------------------------------------------------------------
def sim() -> SiteModel:
    return SiteModel([MeterSpec("pqm-0"), MeterSpec("pqm-1", rated_a=250.0)],
                     scenario=SCENARIOS["training-spike"], seed=3)


def test_simulated_meter_quantities_are_consistent():
    m = sim()
    for t in (5.0, 37.5, 61.0, 400.0):
        for i in (0, 1):
            v = m.meter(i, t)
            assert sum(v[f"power_l{p}_kw"] for p in (1, 2, 3)) == pytest.approx(v["power_kw"])
            assert sum(v[f"reactive_power_l{p}_kvar"] for p in (1, 2, 3)) == \
                pytest.approx(v["reactive_power_kvar"])
            for p in (1, 2, 3):
                s = v[f"voltage_l{p}_n_v"] * v[f"current_l{p}_a"] / 1000.0
                assert v[f"apparent_power_l{p}_kva"] == pytest.approx(s)
                assert v[f"power_l{p}_kw"] == pytest.approx(s * v[f"power_factor_l{p}"])
                assert v[f"power_l{p}_kw"] ** 2 + v[f"reactive_power_l{p}_kvar"] ** 2 == \
                    pytest.approx(s * s)
            assert v["power_factor"] == pytest.approx(v["power_kw"] / v["apparent_power_kva"])
            assert v["power_factor_quadrant"] == 1  # PFC supplies: importing, lagging
            assert v["energy_export_wh"] == 0 and v["energy_export_varh"] == 0
            assert v["energy_kwh"] == pytest.approx(v["energy_import_wh"] / 1000.0)


def test_simulated_energy_grows_with_power_times_time():
    m = sim()
    t1, t2 = 100.0, 1300.0
    e1, e2 = m.meter(0, t1), m.meter(0, t2)
    # an independent integral: power sampled every second (midpoint rule)
    wh = sum(m.meter(0, t1 + k + 0.5)["power_kw"] for k in range(int(t2 - t1))) / 3.6
    varh = sum(m.meter(0, t1 + k + 0.5)["reactive_power_kvar"]
               for k in range(int(t2 - t1))) / 3.6
    assert e2["energy_import_wh"] - e1["energy_import_wh"] == pytest.approx(wh, rel=0.01)
    assert e2["energy_import_varh"] - e1["energy_import_varh"] == pytest.approx(varh, rel=0.01)
    assert e2["energy_import_wh"] > e1["energy_import_wh"]
    # the counters never go back, whatever the order of the calls
    fresh = sim()
    assert fresh.meter(0, t2)["energy_import_wh"] == e2["energy_import_wh"]
    assert fresh.meter(0, t1)["energy_import_wh"] == e1["energy_import_wh"]


@pytest.fixture
def sim_loop():
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.mark.parametrize("profile", ["generic-pqm", "pm5000"])
def test_simulator_serves_every_new_quantity_in_the_profiles_encoding(sim_loop, profile):
    """The simulator's Modbus server encodes the model's values as the meter would (uint64
    counters, four-quadrant PF registers); decoding them gives the model's values back."""
    from pymodbus.client import ModbusTcpClient

    from busguard.sim.serve import SimUnit, TcpMeterServer

    prof = load_profile(profile)
    model = SiteModel([MeterSpec("pqm-0")], seed=7)
    expected = model.meter(0, 250.0)
    unit = SimUnit("pqm-0", 1, prof, lambda: (expected, NO_FAULTS), seed=7)
    srv = TcpMeterServer(unit, "127.0.0.1", 0)
    sim_loop(srv.start())
    client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=2, retries=0)
    try:
        assert client.connect()
        new = [p for p in prof.points if p.name.startswith(("power_l", "reactive_", "energy_i",
                                                             "energy_e", "apparent_power_l",
                                                             "power_factor"))]
        assert len(new) >= 17
        for p in new:
            fn = client.read_holding_registers if p.function == "holding" else \
                client.read_input_registers
            rr = fn(p.address, count=p.count, device_id=1)
            assert not rr.isError(), (p.name, rr)
            got = p.decode(rr.registers)
            want = expected[p.name]
            tol = 0.5 * abs(p.scale) if p.type.endswith("64") else 1e-5 * abs(want)
            assert got == pytest.approx(want, abs=max(tol, 1e-6)), p.name
        if profile == "pm5000":  # the raw register is the 4Q encoding of a lagging import
            p = prof.point("power_factor")
            raw = client.read_holding_registers(p.address, count=2, device_id=1).registers
            assert 0 < struct.unpack(">f", struct.pack(">HH", *raw))[0] <= 1.0
    finally:
        client.close()
        sim_loop(srv.stop())


def test_profile_encoding_and_neutral_errors_name_the_key_and_the_choices():
    from busguard.errors import ConfigError
    from busguard.modbus.profiles import parse_profile

    with pytest.raises(ConfigError) as exc:
        parse_profile({"profile": {"name": "x", "neutral_measured": "yes"},
                       "points": {"power_factor": {"address": 1, "encoding": "pf5q"}}},
                      "mine.toml")
    text = str(exc.value)
    assert "mine.toml: points.power_factor.encoding: got 'pf5q'" in text and "'pf4q'" in text
    assert "mine.toml: profile.neutral_measured:" in text
