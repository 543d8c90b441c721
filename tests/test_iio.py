"""PT100 probes through a MAX31865 on Linux IIO, on a real file tree with the
/sys/bus/iio/devices layout: conversion, a thermal interlock driven to 0xCF through the
runtime, the fault register, open RTD, vanished and returning devices, out-of-range and stuck
values, look-up by label and name, configuration errors."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from busguard.driver import DriverContext
from busguard.errors import ConfigError
from busguard.iio.driver import IioBus
from busguard.iio.rtd import code_of, resistance_ohm, temperature_of_code
from busguard.iio.tree import find_device, write_abi_device
from busguard.image import Quality
from busguard.runtime import check_site

SITE = """
[site]
name = "iio-test"
[scan]
period_ms = 100
[iio]
base_dir = "iio/devices"
[[probe]]
name = "tap-a1"
driver = "iio"
device = "busbar-a1"
poll_ms = 1000
stuck_s = 30
[[probe]]
name = "tap-a2"
driver = "iio"
device = "busbar-a2"
poll_ms = 1000
[[block]]
name = "busbar-a"
type = "thermal_interlock"
probes = ["tap-a1", "tap-a2"]
output = "relay.thermal_trip"
"""


@pytest.fixture
def probes(iio_tree, make_runtime, fake_clock):
    """A built runtime whose IIO folder is read when the test says (no thread)."""
    iio_tree.max31865(0, 41.0, label="busbar-a1")
    iio_tree.max31865(1, 40.5, label="busbar-a2")
    rt = make_runtime(SITE)
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, fake_clock, loop, rt.site)
    base = iio_tree.base_dir
    bus = ctx.shared(f"iio.bus:{base}", lambda: IioBus(base, rt.image, fake_clock,
                                                       threaded=False))
    for drv in rt.drivers:
        drv.start(ctx)
    yield rt, bus, iio_tree
    for drv in rt.drivers:
        drv.stop()
    loop.close()


def point(rt, name):
    return rt.image.snapshot()[name]


def test_the_code_is_the_datasheet_s_and_converts_back_exactly():
    # MAX31865 datasheet, PT100 with a 400 ohm reference: 0 C -> 8192, 100 C -> 11346
    assert code_of(0.0, r_ref_ohm=400.0) == 8192
    assert code_of(100.0, r_ref_ohm=400.0) == 11346
    assert resistance_ohm(100.0) == pytest.approx(138.5055, abs=1e-3)  # IEC 60751 table
    assert resistance_ohm(-100.0) == pytest.approx(60.2558, abs=1e-3)
    for t in (-40.0, 0.0, 25.0, 90.0, 150.0):
        assert temperature_of_code(code_of(t)) == pytest.approx(t, abs=0.02)  # 15-bit step


def test_the_tree_has_the_kernel_layout(iio_tree):
    d = iio_tree.max31865(3, 25.0, label="tap-b1")
    assert d.name == "iio:device3"
    assert (d / "name").read_text() == "max31865\n"
    assert (d / "in_temp_scale").read_text() == "31.250000\n"
    assert int((d / "in_temp_raw").read_text()) == code_of(25.0)
    assert (d / "fault_ovuv").read_text() == "0\n"
    assert find_device(iio_tree.base_dir, "tap-b1") == (d, "")
    assert find_device(iio_tree.base_dir, "max31865") == (d, "")  # the only one: by name
    assert find_device(iio_tree.base_dir, "iio:device3") == (d, "")


def test_a_hot_busbar_drives_the_thermal_interlock_to_0xcf(probes, run_scans, fake_clock):
    rt, bus, tree = probes
    bus.poll_once(force=True)
    (res,) = run_scans(rt, 1)
    assert point(rt, "tap-a1.temp_c").value == pytest.approx(41.0, abs=0.02)
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    assert res.outputs["relay.thermal_trip"] == 0.0
    for temp in (60.0, 75.0, 85.0, 95.0):  # the joint heats up, read every second
        tree.max31865(0, temp, label="busbar-a1")
        tree.max31865(1, temp - 3.0, label="busbar-a2")
        fake_clock.advance(1.0)
        bus.poll_once(force=True)
        run_scans(rt, 10)
    active = {a.condition.code: a for a in rt.alarms.active()}
    assert "0xCF" in active, sorted(active)
    cf = active["0xCF"]
    assert cf.condition.severity.word == "critical" and cf.condition.device == "tap-a1"
    assert "Thermal-Critical (0xCF)" in cf.condition.message
    assert rt.last_result.outputs["relay.thermal_trip"] == 1.0


def test_fault_register_and_open_rtd_are_bad_and_keep_the_last_value(probes, run_scans):
    rt, bus, tree = probes
    bus.poll_once(force=True)
    tree.max31865(0, 99.0, label="busbar-a1", fault=True)
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.BAD and p.value == pytest.approx(41.0, abs=0.02)
    tree.max31865(0, 42.0, label="busbar-a1")
    tree.raw_code(0, 32767)  # open RTD: the code runs to full scale
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    tree.raw_code(0, 0)  # shorted RTD
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    # a read the kernel refuses (EIO on a real tree): an unreadable in_temp_raw here
    raw = tree.base_dir / "iio:device0" / "in_temp_raw"
    raw.unlink()
    raw.mkdir()
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    raw.rmdir()
    tree.max31865(0, 42.5, label="busbar-a1")
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.GOOD and p.value == pytest.approx(42.5, abs=0.02)
    assert rt.drivers[0].stats()["faults"] == 4
    (res,) = run_scans(rt, 1)  # a BAD probe never trips: it is left out (BG-INPUT)
    assert res.outputs["relay.thermal_trip"] == 0.0


def test_a_vanished_device_is_not_connected_and_found_again(probes, caplog):
    rt, bus, tree = probes
    bus.poll_once(force=True)
    tree.remove(0)
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.NOT_CONNECTED and p.value == pytest.approx(41.0, abs=0.02)
    assert "not-connected" in caplog.text
    tree.max31865(4, 44.0, label="busbar-a1")  # re-probed under another number
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.GOOD and p.value == pytest.approx(44.0, abs=0.02)
    assert rt.drivers[0].stats()["folder"] == "iio:device4"
    shutil.rmtree(tree.base_dir.parent)  # the whole IIO folder gone
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.NOT_CONNECTED
    assert "no IIO devices folder" in caplog.text


def test_out_of_range_and_stuck_values_are_bad(probes, fake_clock):
    rt, bus, tree = probes
    tree.max31865(0, 260.0, label="busbar-a1")  # above max_c (250)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    tree.max31865(0, 50.0, label="busbar-a1")
    for k in range(3):  # the same code for 20 s: still fine
        if k:
            fake_clock.advance(10.0)
        bus.poll_once(force=True)
        assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    fake_clock.advance(10.0)  # 30 s unchanged (stuck_s = 30)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    assert rt.drivers[0].stats()["stuck"] == 1
    tree.max31865(0, 50.05, label="busbar-a1")  # moves again
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    assert rt.drivers[1].stats()["stuck"] == 0  # stuck_s defaults to 600 s


def test_two_devices_with_one_name_and_no_label_say_what_to_do(iio_tree):
    iio_tree.max31865(0, 20.0)
    iio_tree.max31865(1, 21.0)
    folder, why = find_device(iio_tree.base_dir, "max31865")
    assert folder is None and "2 IIO devices are named 'max31865'" in why and "label" in why


def test_a_generic_iio_channel_follows_the_abi(iio_tree, make_runtime, fake_clock):
    # e.g. a board sensor: (raw + offset) * scale in milli-degrees C
    write_abi_device(iio_tree.base_dir, 0, "tmp117", raw=3200, scale=7.8125, offset=0)
    write_abi_device(iio_tree.base_dir, 1, "lm75", raw=1000, scale=125.0, offset=-900,
                     channel="temp0")
    rt = make_runtime('[site]\nname = "t"\n[iio]\nbase_dir = "iio/devices"\n'
                      '[[probe]]\nname = "a"\ndriver = "iio"\ndevice = "tmp117"\n'
                      '[[probe]]\nname = "b"\ndriver = "iio"\ndevice = "lm75"\n'
                      'channel = "temp0"\nconversion = "abi"\n')
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, fake_clock, loop, rt.site)
    base = iio_tree.base_dir
    bus = ctx.shared(f"iio.bus:{base}", lambda: IioBus(base, rt.image, fake_clock,
                                                       threaded=False))
    for drv in rt.drivers:
        drv.start(ctx)
    bus.poll_once(force=True)
    assert point(rt, "a.temp_c").value == 25.0
    assert point(rt, "b.temp_c").value == 12.5
    for drv in rt.drivers:
        drv.stop()
    loop.close()


def test_threaded_reads_in_a_running_runtime(iio_tree, make_runtime):
    iio_tree.max31865(0, 55.0, label="busbar-a1")
    iio_tree.max31865(1, 56.0, label="busbar-a2")
    rt = make_runtime(SITE.replace("poll_ms = 1000", "poll_ms = 20"), start=True)
    bus = rt.drivers[0].bus
    assert bus is rt.drivers[1].bus  # one thread per IIO folder
    for _ in range(250):  # bounded: 5 s at most
        if point(rt, "tap-a2.temp_c").quality is Quality.GOOD:
            break
        time.sleep(0.02)
    assert point(rt, "tap-a1.temp_c").value == pytest.approx(55.0, abs=0.02)
    assert point(rt, "tap-a2.temp_c").value == pytest.approx(56.0, abs=0.02)
    rt.stop()


@pytest.mark.parametrize(("options", "message"), [
    ('conversion = "linear"', "conversion: got 'linear'; expected one of 'auto', 'rtd', 'abi'"),
    ('r_ref_ohm = 0', "r_ref_ohm: got 0; expected a number > 0"),
    ("stuck_s = -1", "stuck_s: got -1; expected a number >= 0"),
])
def test_config_errors_name_the_option(site_file, options, message):
    path = site_file(f'[site]\nname = "t"\n[[probe]]\nname = "p1"\ndriver = "iio"\n'
                     f'device = "busbar-a1"\n{options}\n')
    with pytest.raises(ConfigError) as err:
        check_site(path)
    text = str(err.value)
    assert "probe[0]." in text and message in text, text


SIM_SITE = """
[site]
name = "sim-iio"
[scan]
period_ms = 10
[paths]
state_dir = "var/state"
fault_log = "var/log/fault.log"
[onewire]
base_dir = "var/sim/w1/devices"
[iio]
base_dir = "var/sim/iio/devices"
[[probe]]
name = "tap-w1"
sensor_id = "28-00000a1c0001"
poll_ms = 200
[[probe]]
name = "tap-pt100"
driver = "iio"
device = "busbar-a1"
poll_ms = 200
"""


def test_the_simulator_writes_iio_probes_the_runtime_reads(tmp_path):
    from busguard.runtime import Runtime
    from busguard.sim.runner import Simulator, load_site_for_sim

    path = tmp_path / "site.toml"
    path.write_text(SIM_SITE, encoding="utf-8")
    sim = Simulator(load_site_for_sim(path), "thermal-runaway", speed=1.0, seed=3)
    sim.start()
    rt = None
    try:
        base = tmp_path / "var/sim/iio/devices"
        folder, _ = find_device(base, "busbar-a1")
        assert folder is not None and (folder / "name").read_text() == "max31865\n"
        rt = Runtime.from_file(path)
        rt.start()
        for _ in range(250):  # bounded: 5 s
            snap = rt.image.snapshot()
            if snap["tap-pt100.temp_c"].quality is Quality.GOOD:
                break
            time.sleep(0.02)
        snap = rt.image.snapshot()
        assert snap["tap-pt100.temp_c"].quality is Quality.GOOD
        # the second probe of the site: the model's probe 1, through the RTD code and back
        assert snap["tap-pt100.temp_c"].value == pytest.approx(
            sim.model.probe(1, sim.model_time()), abs=1.0)
    finally:
        if rt is not None:
            rt.stop()
        sim.stop()
    assert find_device(base, "busbar-a1")[0] is None  # the simulator cleans up
