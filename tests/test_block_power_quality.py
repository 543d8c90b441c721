"""power_quality: THD-V (seed and IEEE 519 presets), TDD, load, voltage window, imbalance,
frequency; table-driven traces replayed through busguard.replay."""

from __future__ import annotations

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.errors import ConfigError
from busguard_blocks.power_quality import imbalance_pct, tdd_limit_pct

POINTS = [*(f"thd_v_l{n}_pct" for n in (1, 2, 3)), *(f"thd_i_l{n}_pct" for n in (1, 2, 3)),
          *(f"current_l{n}_a" for n in (1, 2, 3)), "voltage_l1_l2_v", "voltage_l2_l3_v",
          "voltage_l3_l1_v", "frequency_hz", "h5_pct"]
DEVICES = f"""
[[meter]]
name = "pq"
driver = "memory"
poll_ms = 1000
points = {POINTS!r}
"""
BLOCK = """
[[block]]
name = "pqa"
type = "power_quality"
meter = "pq"
delay_s = 2.0
{extra}
"""
NORMAL = {"pq.thd_v_l1_pct": 2.0, "pq.thd_v_l2_pct": 2.1, "pq.thd_v_l3_pct": 1.9,
          "pq.thd_i_l1_pct": 10.0, "pq.thd_i_l2_pct": 10.0, "pq.thd_i_l3_pct": 10.0,
          "pq.current_l1_a": 1000.0, "pq.current_l2_a": 1010.0, "pq.current_l3_a": 990.0,
          "pq.voltage_l1_l2_v": 480.0, "pq.voltage_l2_l3_v": 479.0, "pq.voltage_l3_l1_v": 481.0,
          "pq.frequency_hz": 60.0, "pq.h5_pct": 1.0}


def trace(make_runtime, tmp_path, rows, extra="", **site_kw):
    return run_trace(make_runtime, tmp_path,
                     site(BLOCK.format(extra=extra), DEVICES, period_ms=1000, **site_kw),
                     [NORMAL, *rows])


# (name, extra params, rows after a normal scan, alarm key, expected active per scan)
CASES = [
    ("THD-V above the seed's 5% after the delay", "",
     [{"pq.thd_v_l2_pct": 5.5}, {}, {}, {"pq.thd_v_l2_pct": 4.9}, {"pq.thd_v_l2_pct": 4.7}],
     "pqa:thd-v", [False, False, False, True, True, False]),
    ("6% THD-V is fine under the IEEE 519 LV preset", 'preset = "ieee519-2014-lv"',
     [{"pq.thd_v_l1_pct": 6.0}, {}, {}, {"pq.thd_v_l1_pct": 8.5}, {}, {}],
     "pqa:thd-v", [False, False, False, False, False, False, True]),
    ("explicit THD limit wins over the preset", 'thd_v_limit_pct = 3.0',
     [{"pq.thd_v_l1_pct": 3.5}, {}, {}], "pqa:thd-v", [False, False, False, True]),
    ("individual harmonic 5% under the IEEE preset",
     'preset = "ieee519-2014-lv"\nharmonic_points = ["pq.h5_pct"]',
     [{"pq.h5_pct": 5.5}, {}, {}], "pqa:harmonic", [False, False, False, True]),
    ("TDD above the Isc/IL 50-100 limit of 12%", "isc_a = 80000.0\nil_a = 1000.0",
     [{"pq.thd_i_l1_pct": 13.0}, {}, {}], "pqa:tdd", [False, False, False, True]),
    ("load above 80% of rated ampacity for the delay",
     "rated_ampacity_a = 1500.0\nload_delay_s = 3.0",
     [{"pq.current_l1_a": 1250.0}, {}, {}, {}, {"pq.current_l1_a": 1100.0}],
     "pqa:load", [False, False, False, False, True, False]),
    ("voltage over 5% above the 480 V nominal: a warning", "",
     [{"pq.voltage_l1_l2_v": 506.0, "pq.voltage_l2_l3_v": 505.0, "pq.voltage_l3_l1_v": 505.0},
      {}, {}], "pqa:voltage-high-warn", [False, False, False, True]),
    ("voltage over 10% above the nominal: the alarm alone, not the warning too", "",
     [{"pq.voltage_l1_l2_v": 530.0, "pq.voltage_l2_l3_v": 529.0, "pq.voltage_l3_l1_v": 531.0},
      {}, {}], "pqa:voltage-high", [False, False, False, True]),
    ("voltage over 10% below the nominal", "",
     [{"pq.voltage_l1_l2_v": 425.0, "pq.voltage_l2_l3_v": 426.0, "pq.voltage_l3_l1_v": 424.0},
      {}, {}], "pqa:voltage-low", [False, False, False, True]),
    ("voltage unbalance above 2%", "",
     [{"pq.voltage_l1_l2_v": 495.0, "pq.voltage_l2_l3_v": 470.0}, {}, {}],
     "pqa:imbalance-v", [False, False, False, True]),
    ("current unbalance above 20%", "",
     [{"pq.current_l1_a": 1400.0, "pq.current_l3_a": 700.0}, {}, {}],
     "pqa:imbalance-i", [False, False, False, True]),
    ("frequency off by more than 0.5 Hz", "",
     [{"pq.frequency_hz": 59.3}, {}, {}], "pqa:frequency", [False, False, False, True]),
    ("a stale THD point neither raises nor clears", "",
     [{"pq.thd_v_l1_pct": 6.0, "pq.thd_v_l2_pct": QUIET, "pq.thd_v_l3_pct": QUIET}, {}, {},
      {"pq.thd_v_l1_pct": QUIET}, {"dt": 5}],
     "pqa:thd-v", [False, False, False, True, True, True]),
]


@pytest.mark.parametrize(("extra", "rows", "key", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_pq_table(make_runtime, tmp_path, extra, rows, key, expect):
    _rt, views = trace(make_runtime, tmp_path, rows, extra=extra)
    assert [key in v.alarms for v in views] == expect
    others = {k for v in views for k in v.alarms} - {key, "pqa:input"}
    assert not others, f"unexpected alarms {others}"


def test_alarm_carries_values_and_seed_words(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{"pq.thd_v_l3_pct": 7.0}, {}, {}])
    alarm = views[-1].alarms["pqa:thd-v"]
    assert alarm["code"] == "BG-THD-V" and alarm["device"] == "pq"
    assert alarm["values"]["figure"] == 7.0 and alarm["values"]["limit"] == 5.0
    assert "harmonic" in alarm["message"]


def test_stale_input_alarm_names_the_points(make_runtime, tmp_path):
    _rt, views = trace(make_runtime, tmp_path, [{"pq.frequency_hz": QUIET}, {"dt": 5}, {"dt": 2}])
    assert views[-1].alarms["pqa:input"]["values"]["lost"] == {"pq.frequency_hz": "stale"}


@pytest.mark.parametrize(("isc", "il", "limit"), [
    (10000, 1000, 5.0), (20000, 1000, 8.0), (49000, 1000, 8.0), (50000, 1000, 12.0),
    (500000, 1000, 15.0), (2000000, 1000, 20.0)])
def test_ieee519_tdd_table(isc, il, limit):
    assert tdd_limit_pct(isc, il) == limit


def test_imbalance_formula():
    assert imbalance_pct([480, 480, 480]) == 0.0
    assert imbalance_pct([495, 470, 480]) == pytest.approx((495 - 481.6667) / 481.6667 * 100,
                                                       rel=1e-4)


def test_bad_preset_is_a_config_error(make_runtime):
    with pytest.raises(ConfigError) as exc:
        make_runtime(site(BLOCK.format(extra='preset = "ieee519"'), DEVICES))
    assert "block[0].preset: got 'ieee519'; expected one of 'seed', 'ieee519-2014-lv'" \
        in str(exc.value)


def test_voltage_bands_follow_the_site_nominal(make_runtime, tmp_path):
    # 470 V is 2% under a 480 V busway (fine) but 13% over a 415 V one (alarm); 0.1's fixed
    # 415-480 V window alarmed only outside 394-504 V on either
    rows = [{"pq.voltage_l1_l2_v": 470.0, "pq.voltage_l2_l3_v": 471.0,
             "pq.voltage_l3_l1_v": 469.0}, {}, {}]
    _rt, on480 = trace(make_runtime, tmp_path, rows)
    assert not {k for k in on480[-1].alarms if "voltage" in k}
    _rt, on415 = trace(make_runtime, tmp_path, [{k: v * 415 / 480 for k, v in NORMAL.items()
                                                 if "voltage" in k}, *rows],
                       nominals="nominal_voltage_ll_v = 415.0\nnominal_hz = 60.0\n")
    alarm = on415[-1].alarms["pqa:voltage-high"]
    assert alarm["code"] == "BG-VOLTAGE-HIGH" and alarm["values"]["limit"] == 456.5
    assert "nominal 415 V + 10%" in alarm["message"]


def test_a_50_hz_site_does_not_alarm_at_50_hz(make_runtime, tmp_path):
    fifty = "nominal_voltage_ll_v = 400.0\nnominal_hz = 50.0\n"
    volts = {"pq.voltage_l1_l2_v": 400.0, "pq.voltage_l2_l3_v": 401.0,
             "pq.voltage_l3_l1_v": 399.0}
    _rt, views = trace(make_runtime, tmp_path, [{**volts, "pq.frequency_hz": 50.0}, {}, {},
                                                {"pq.frequency_hz": 49.3}, {}, {}],
                       nominals=fifty)
    assert [bool(v.alarms) for v in views] == [False, False, False, False, False, False, True]
    assert views[-1].alarms["pqa:frequency"]["values"]["nominal_hz"] == 50.0


def test_a_site_without_its_nominals_fails_check_naming_the_key(make_runtime):
    with pytest.raises(ConfigError) as exc:
        make_runtime(site(BLOCK.format(extra=""), DEVICES, nominals=""))
    text = str(exc.value)
    assert "site.nominal_hz: missing; block[0] (pqa, power_quality) needs it for its " \
           "frequency check; valid: 50 or 60" in text
    assert "site.nominal_voltage_ll_v: missing; block[0] (pqa, power_quality) needs it" in text
    # without the checks that need them, no nominal is needed
    make_runtime(site(BLOCK.format(extra='checks = ["thd_v", "imbalance"]'), DEVICES,
                      nominals=""))


def test_a_bad_nominal_names_file_key_and_valid_values(make_runtime):
    with pytest.raises(ConfigError) as exc:
        make_runtime(site(BLOCK.format(extra=""), DEVICES,
                          nominals="nominal_voltage_ll_v = 480.0\nnominal_hz = 55.0\n"))
    assert "site.nominal_hz: got 55.0; expected one of 50.0, 60.0" in str(exc.value)
