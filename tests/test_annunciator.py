"""Annunciator outputs (`follows = "alarms"`): a horn or beacon follows the alarm table,
through a real runtime (memory devices, fake clock) and replay (blocktrace)."""

from __future__ import annotations

import pytest

from blocktrace import run_trace, site

DEVICES = """
[[probe]]
name = "bb1"
driver = "memory"
poll_ms = 100
points = ["temp_c"]
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["thd"]
[[output]]
name = "horn"
driver = "memory"
outputs = ["relay.horn"]
follows = "alarms"
severity = "critical"
unacked_only = true
[[output]]
name = "beacon"
driver = "memory"
outputs = ["relay.beacon"]
follows = "alarms"
severity = "major"
[[output]]
name = "thd-lamp"
driver = "memory"
outputs = ["relay.thd"]
follows = "alarms"
severity = "warning"
codes = ["BG-THD"]
[[output]]
name = "hot-lamp"
driver = "memory"
outputs = ["relay.hot"]
follows = "alarms"
codes = ["0xCF"]
latched_unacked = false
"""
BLOCKS = """
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1"]
rate_alarm_c_per_min = 0.0
ttt_alarm_s = 0.0
[[block]]
name = "thd"
type = "threshold_alarm"
point = "m1.thd"
high = 5.0
code = "BG-THD"
"""
ACK = "cmd.ack_alarms"


def relays(views, name):
    return [v.outputs[f"relay.{name}"] for v in views]


def test_horn_holds_a_latched_0xcf_until_acknowledged(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50.0, "m1.thd": 2.0, ACK: 0.0},
            {"bb1.temp_c": 91.0},  # 1: 0xCF (critical, latched)
            {"bb1.temp_c": 60.0},  # 2: cooled: the level clears, the alarm stays latched
            {}, {},
            {ACK: 1.0},            # 5: acknowledged: latched alarm cleared, horn silent
            {}]
    _rt, views = run_trace(make_runtime, tmp_path, site(BLOCKS, DEVICES), rows)
    assert relays(views, "horn") == [0, 1, 1, 1, 1, 0, 0]
    assert relays(views, "beacon") == [0, 1, 1, 1, 1, 0, 0]
    assert not views[3].alarms["th:trip"]["active"]  # latched only, and the horn held


def test_horn_silenced_by_ack_while_the_beacon_follows_the_condition(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50.0, "m1.thd": 2.0, ACK: 0.0},
            {"bb1.temp_c": 92.0},  # 0xCF active
            {ACK: 1.0},            # acknowledged while still hot: the horn stops
            {},
            {"bb1.temp_c": 60.0},  # cooled: the acknowledged alarm clears
            {}]
    _rt, views = run_trace(make_runtime, tmp_path, site(BLOCKS, DEVICES), rows)
    assert relays(views, "horn") == [0, 1, 0, 0, 0, 0]
    assert relays(views, "beacon") == [0, 1, 1, 1, 0, 0]


def test_codes_filter_and_latched_unacked_off(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 50.0, "m1.thd": 2.0, ACK: 0.0},
            {"m1.thd": 6.0},          # 1: BG-THD (warning): the THD lamp only
            {"m1.thd": 2.0},          # 2: gone
            {"bb1.temp_c": 75.0},     # 3: BG-TEMP-WARN: another code, the THD lamp stays off
            {"bb1.temp_c": 92.0},     # 4: 0xCF
            {"bb1.temp_c": 60.0},     # 5: cooled: latched, unacknowledged
            {}]
    _rt, views = run_trace(make_runtime, tmp_path, site(BLOCKS, DEVICES), rows)
    assert relays(views, "thd") == [0, 1, 0, 0, 0, 0, 0]
    # latched_unacked = false: the lamp shows the condition, the horn the acknowledgement
    assert relays(views, "hot") == [0, 0, 0, 0, 1, 0, 0]
    assert relays(views, "horn") == [0, 0, 0, 0, 1, 1, 1]


def test_annunciator_is_built_after_the_blocks_and_named_in_the_map(make_runtime):
    rt = make_runtime(site(BLOCKS, DEVICES))
    names = [b.name for b in rt.blocks]
    assert names[:2] == ["th", "thd"]
    assert set(names[2:]) == {"horn", "beacon", "thd-lamp", "hot-lamp"}
    assert rt.engine.failsafe["relay.horn"] == 0.0


@pytest.mark.parametrize(("line", "bad"), [('severity = "major"', 'severity = "loud"'),
                                         ('name = "beacon"\ndriver = "memory"\noutputs = '
                                          '["relay.beacon"]\nfollows = "alarms"',
                                          'name = "beacon"\ndriver = "memory"\noutputs = '
                                          '["relay.beacon"]\nfollows = "inputs"')])
def test_bad_annunciator_options_name_the_key(make_runtime, line, bad):
    from busguard.errors import ConfigError
    assert line in DEVICES
    with pytest.raises(ConfigError) as exc:
        make_runtime(site(BLOCKS, DEVICES.replace(line, bad)))
    key = bad.rsplit("\n", 1)[-1].split()[0]
    assert f"output[1].{key}: got" in str(exc.value) and "expected one of" in str(exc.value)
