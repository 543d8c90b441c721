"""PT100s through an RS-485 RTD input module (Advantech ADAM-4015, profile ``adam-4015``): the
simulator's RTU line on a real pty (``modbus_line``, raw registers) serves the module's own
encoding (holding registers 40001..40006, an unsigned count over the 0-200 C range of type code
0x22), computed here from the manual, not from the profile. Read as a meter (all channels) and
as probes feeding a thermal interlock."""

from __future__ import annotations

import pytest

from busguard.errors import ConfigError
from busguard.image import Quality
from busguard.modbus import load_profile
from busguard.runtime import check_site
from busguard.testing import point, wait_until

UNIT = 5


def adam_count(temp_c: float) -> int:
    """ADAM-4015, type code 0x22 (Pt100 IEC, 0 ~ 200 C): 0x0000..0xFFFF over the range."""
    return round(temp_c / 200.0 * 0xFFFF)


@pytest.fixture
def line(modbus_line):
    """(the module: a unit served by raw registers, the line's port path)."""
    sim = modbus_line()
    return sim.meter(UNIT, None), sim.path


def serve(module, temps: dict[int, float]) -> None:
    # 40001 + channel is holding register number 1 + channel: wire address = channel
    module.set_registers(0, [adam_count(temps.get(ch, 25.0)) for ch in range(6)])


def site(path: str, tmp: str, body: str) -> str:
    return (f'[site]\nname = "rtd"\n[scan]\nperiod_ms = 10\n[paths]\nstate_dir = "{tmp}"\n'
            f'[[rs485]]\nname = "bus1"\nport = "{path}"\nbaudrate = 115200\nparity = "N"\n'
            f'timeout_ms = 80\n{body}')


def test_profile_matches_the_manual():
    prof = load_profile("adam-4015")
    ch0, ch5 = prof.point("ch0_temp_c"), prof.point("ch5_temp_c")
    assert (ch0.register, ch0.address, ch0.type, ch0.function) == (1, 0, "uint16", "holding")
    assert ch5.address == 5
    assert prof.decode("ch0_temp_c", [0xFFFF]) == pytest.approx(200.0)
    assert prof.decode("ch0_temp_c", [adam_count(90.0)]) == pytest.approx(90.0, abs=0.002)


def test_module_read_as_a_meter_gives_every_channel(line, make_runtime, tmp_path):
    module, path = line
    serve(module, {0: 41.0, 1: 95.5, 5: 150.25})
    rt = make_runtime(site(path, str(tmp_path), f'[[meter]]\nname = "rtd-mod"\n'
                                                f'driver = "modbus_rtu"\nline = "bus1"\n'
                                                f'unit = {UNIT}\nprofile = "adam-4015"\n'
                                                f'poll_ms = 50\n'), start=True)
    wait_until(lambda: point(rt, "rtd-mod.ch5_temp_c")[1] == Quality.GOOD, what="module read")
    assert point(rt, "rtd-mod.ch0_temp_c")[0] == pytest.approx(41.0, abs=0.002)
    assert point(rt, "rtd-mod.ch1_temp_c")[0] == pytest.approx(95.5, abs=0.002)
    assert point(rt, "rtd-mod.ch5_temp_c")[0] == pytest.approx(150.25, abs=0.002)
    rt.stop()


PROBES = """
[[probe]]
name = "tap-a1"
driver = "modbus_rtd"
line = "bus1"
unit = 5
channel = 0
poll_ms = 50
loss_limit = 2
[[probe]]
name = "tap-a2"
driver = "modbus_rtd"
line = "bus1"
unit = 5
channel = 1
poll_ms = 50
[[block]]
name = "busbar-a"
type = "thermal_interlock"
probes = ["tap-a1", "tap-a2"]
disagreement_c = 0
output = "relay.thermal_trip"
"""


def test_module_channels_as_probes_drive_a_thermal_interlock_to_0xcf(line, make_runtime,
                                                                     tmp_path, run_scans):
    module, path = line
    serve(module, {0: 40.0, 1: 41.0})
    rt = make_runtime(site(path, str(tmp_path), PROBES), start=True)
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == point(rt, "tap-a2.temp_c")[1]
               == Quality.GOOD, what="probes read")
    assert point(rt, "tap-a1.temp_c")[0] == pytest.approx(40.0, abs=0.002)
    (res,) = run_scans(rt, 1)
    assert res.outputs["relay.thermal_trip"] == 0.0
    serve(module, {0: 96.0, 1: 91.0})
    wait_until(lambda: point(rt, "tap-a1.temp_c")[0] > 95.9, what="the hot reading")
    run_scans(rt, 5)
    codes = {a.condition.code for a in rt.alarms.active()}
    assert "0xCF" in codes
    assert rt.last_result.outputs["relay.thermal_trip"] == 1.0
    rt.stop()


def test_burn_out_and_under_range_are_bad_not_a_temperature(line, make_runtime, tmp_path,
                                                            run_scans):
    module, path = line
    serve(module, {0: 40.0, 1: 41.0})
    rt = make_runtime(site(path, str(tmp_path), PROBES), start=True)
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == point(rt, "tap-a2.temp_c")[1]
               == Quality.GOOD, what="probes read")
    module.set_registers(0, [0xFFFF])  # channel 0 open: the module reads full scale
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == Quality.BAD, what="burn-out BAD")
    assert point(rt, "tap-a2.temp_c")[1] == Quality.GOOD  # the other channel goes on
    run_scans(rt, 3)
    assert rt.last_result.outputs["relay.thermal_trip"] == 0.0  # an open RTD never trips
    module.set_registers(0, [adam_count(45.0)])
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == Quality.GOOD, what="back")
    module.set_registers(0, [0x0000])  # below the range
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == Quality.BAD, what="under-range BAD")
    assert point(rt, "tap-a1.temp_c")[0] != 0.0  # the last good value is kept for operators
    module.faults(drop_pct=100.0)  # the module stops answering: errno 110, not-connected
    wait_until(lambda: point(rt, "tap-a1.temp_c")[1] == Quality.NOT_CONNECTED,
               what="not connected")
    rt.stop()


def test_a_channel_the_profile_lacks_is_a_config_error(site_file):
    path = site_file(site("/dev/null", "/tmp", '[[probe]]\nname = "p"\ndriver = "modbus_rtd"\n'
                                               'line = "bus1"\nchannel = 7\n'))
    with pytest.raises(ConfigError) as err:
        check_site(path)
    assert "probe[0].channel: got 7; profile 'adam-4015' has channels 0..5" in str(err.value)
