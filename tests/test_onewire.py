"""1-Wire probes on a real file tree with the /sys/bus/w1/devices layout, read through
w1thermsensor: good readings, CRC failure, vanished and returning sensors, the 85.000 C
power-on value versus a hot busbar, configuration errors and the no-modprobe import."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from busguard.driver import DriverContext
from busguard.errors import ConfigError
from busguard.image import Quality
from busguard.runtime import check_site
from busguard.w1 import (
    crc8,
    list_sensors,
    remove_sensor,
    w1_slave_text,
    write_not_ready,
    write_power_on_value,
    write_sensor_file,
)
from busguard.w1.driver import (
    W1Bus,
    W1Probe,
    kernel_sensor_id,
    load_w1thermsensor,
    plausible_85,
)

A1 = "28-0000075a3c1f"
A2 = "28-0000075a3c20"
S20 = "10-000802b4c1d2"

SITE = """
[site]
name = "w1-test"
[onewire]
base_dir = "w1/devices"
[[probe]]
name = "tap-a1"
sensor_id = "28-0000075a3c1f"
poll_ms = 1000
[[probe]]
name = "tap-a2"
driver = "w1"
sensor_id = "28-0000075a3c20"
poll_ms = 1000
max_rise_c_per_s = 0.5
[[probe]]
name = "old-s20"
sensor_id = "000802b4c1d2"
sensor_type = "DS18S20"
"""


@pytest.fixture
def probes(tmp_path, make_runtime, fake_clock):
    """A built runtime whose w1 bus is stepped by the test (no thread), on the fake clock."""
    base = tmp_path / "w1" / "devices"
    base.mkdir(parents=True)
    rt = make_runtime(SITE)
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, fake_clock, loop, rt.site)
    bus = ctx.shared(f"w1.bus:{base}", lambda: W1Bus(base, rt.image, fake_clock, threaded=False))
    for drv in rt.drivers:
        drv.start(ctx)
    yield rt, bus, base
    for drv in rt.drivers:
        drv.stop()
    loop.close()


def point(rt, name):
    return rt.image.snapshot()[name]


def test_file_tree_matches_the_kernel_format(tmp_path):
    # a real DS18B20 dump: 23.125 C, CRC 0x57
    assert w1_slave_text(23.125) == ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
                                     "72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    assert crc8(bytes.fromhex("50054b467fff0c10")) == 0x1C  # the real power-on scratchpad
    write_power_on_value(tmp_path, A1)
    assert (tmp_path / A1 / "w1_slave").read_text().startswith("50 05 4b 46 7f ff 0c 10 1c")
    assert "crc=" in w1_slave_text(-10.5) and "t=-10500" in w1_slave_text(-10.5)
    assert w1_slave_text(20.0, crc_ok=False).split("\n")[0].endswith(" NO")
    write_sensor_file(tmp_path, A2, 30.0)
    assert list_sensors(tmp_path) == [A1, A2]
    remove_sensor(tmp_path, A1)
    assert list_sensors(tmp_path) == [A2]


def test_good_readings_through_w1thermsensor(probes):
    rt, bus, base = probes
    write_sensor_file(base, A1, 41.5)
    write_sensor_file(base, A2, -10.0625)
    write_sensor_file(base, S20, 23.5)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").value == 41.5
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    assert point(rt, "tap-a2.temp_c").value == -10.0625
    assert point(rt, "old-s20.temp_c").value == 23.5
    assert rt.drivers[0].stats()["good"] == 1


def test_crc_failure_is_bad_and_keeps_the_last_value(probes):
    rt, bus, base = probes
    write_sensor_file(base, A1, 41.5)
    bus.poll_once(force=True)
    write_sensor_file(base, A1, 99.0, crc_ok=False)
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.BAD and p.value == 41.5
    write_not_ready(base, A1)  # all-zero scratchpad
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    write_sensor_file(base, A1, 42.0)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").value == 42.0
    assert rt.drivers[0].stats()["crc_errors"] == 2


def test_vanished_sensor_is_not_connected_and_recovers(probes):
    rt, bus, base = probes
    # absent from the start: not connected, no exception, found once it appears
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.NOT_CONNECTED
    write_sensor_file(base, A1, 40.0)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    remove_sensor(base, A1)
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert p.quality is Quality.NOT_CONNECTED and p.value == 40.0
    write_sensor_file(base, A1, 40.5)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").value == 40.5
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD


def test_85_is_a_real_temperature_when_it_follows_from_the_previous_reading(probes,
                                                                              fake_clock):
    rt, bus, base = probes
    for temp in (83.5, 84.25, 84.9375):  # a busbar heating up
        write_sensor_file(base, A1, temp)
        bus.poll_once(force=True)
        fake_clock.advance(1.0)
    write_sensor_file(base, A1, 85.0)
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert (p.value, p.quality) == (85.0, Quality.GOOD)
    fake_clock.advance(1.0)
    bus.poll_once(force=True)  # steady at 85.0: still real (chained on the accepted value)
    assert point(rt, "tap-a1.temp_c").quality is Quality.GOOD
    assert rt.drivers[0].stats()["reset_accepted"] == 2


def test_85_after_a_jump_or_without_history_is_the_power_on_value(probes, fake_clock):
    rt, bus, base = probes
    write_power_on_value(base, A1)  # first reading ever: no history, so power-on value
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    write_sensor_file(base, A1, 41.0)
    bus.poll_once(force=True)
    fake_clock.advance(1.0)
    write_power_on_value(base, A1)  # 41 -> 85 in one second: a sensor reset
    bus.poll_once(force=True)
    p = point(rt, "tap-a1.temp_c")
    assert (p.value, p.quality) == (41.0, Quality.BAD)
    # vanished and back: it was powered up again, so its first 85.0 is not trusted
    write_sensor_file(base, A1, 84.5)
    bus.poll_once(force=True)
    remove_sensor(base, A1)
    bus.poll_once(force=True)
    write_power_on_value(base, A1)
    bus.poll_once(force=True)
    assert point(rt, "tap-a1.temp_c").quality is Quality.BAD
    assert rt.drivers[0].stats()["reset_rejected"] == 3


def test_plausibility_rule():
    assert plausible_85((84.9, 10.0), 11.0, 1.0, 10.0)
    assert plausible_85((80.0, 10.0), 14.0, 1.0, 10.0)  # 5 C in 4 s at 1 C/s (+1 C)
    assert not plausible_85((80.0, 10.0), 12.0, 1.0, 10.0)
    assert not plausible_85((84.9, 10.0), 30.0, 1.0, 10.0)  # history too old
    assert not plausible_85(None, 1.0, 1.0, 10.0)
    assert plausible_85((86.0, 10.0), 11.0, 1.0, 10.0)  # cooling through 85 is fine too


def test_threaded_bus_in_a_running_runtime(tmp_path, make_runtime):
    base = tmp_path / "w1" / "devices"
    for sid, temp in ((A1, 35.25), (A2, 36.5), (S20, 30.0)):
        write_sensor_file(base, sid, temp)
    rt = make_runtime(SITE.replace("poll_ms = 1000", "poll_ms = 20"), start=True)
    bus = rt.drivers[0].bus
    assert bus is rt.drivers[1].bus  # one thread per bus, not per sensor
    assert bus.wait_passes(3, timeout=5.0)
    assert point(rt, "tap-a1.temp_c").value == 35.25
    assert point(rt, "tap-a2.temp_c").value == 36.5
    threads = [t.name for t in threading.enumerate()]
    assert sum(n.startswith("busguard-w1") for n in threads) == 1
    rt.stop()
    assert not any(t.name.startswith("busguard-w1")
                   for t in threading.enumerate())


@pytest.mark.parametrize(("options", "message"), [
    ('sensor_id = "28-12345"', "is not 'FF-XXXXXXXXXXXX'"),
    ('sensor_id = "99-0000075a3c1f"', "family code 99 of '99-0000075a3c1f' is not a 1-Wire"),
    ('sensor_id = "0000075a3c1f"', "has no family code; write it as 'FF-0000075a3c1f'"),
    ('sensor_id = "28-0000075a3c1f"\nsensor_type = "DS1822"',
     "has family code 28 (DS18B20) but sensor_type = 'DS1822' (family 22)"),
    ('sensor_id = "28-0000075a3c1f"\nresolution = 13', "resolution: got 13; expected an "
     "integer >= 9 and <= 12"),
])
def test_config_errors_name_the_option(site_file, options, message):
    path = site_file(f'[site]\nname = "t"\n[[probe]]\nname = "p1"\n{options}\n')
    with pytest.raises(ConfigError) as err:
        check_site(path)
    text = str(err.value)
    assert "probe[0]." in text and message in text, text


def test_base_dir_is_relative_to_the_site_file(site_file, tmp_path):
    site = check_site(site_file(SITE))
    drv = W1Probe(site.device("tap-a1"), site)
    assert drv.base_dir == tmp_path / "w1" / "devices"


def test_import_never_runs_modprobe(tmp_path):
    """W1THERMSENSOR_NO_KERNEL_MODULE is set before the import, so a missing w1 bus (no
    /sys/bus/w1/devices here) does not make w1thermsensor run modprobe."""
    marker = tmp_path / "modprobe-ran"
    fake = tmp_path / "bin" / "modprobe"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "W1THERMSENSOR_NO_KERNEL_MODULE"}
    env["PATH"] = f"{fake.parent}:{env.get('PATH', '')}"
    code = textwrap.dedent("""
        from busguard.w1.driver import load_w1thermsensor
        w1 = load_w1thermsensor()
        print(w1.W1ThermSensor.BASE_DIRECTORY)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    if Path("/sys/bus/w1/devices").is_dir():
        return  # the module is loaded here: the control below would not call modprobe
    # control: the same import without the variable does call modprobe (then gives up)
    out = subprocess.run([sys.executable, "-c", "import w1thermsensor"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert marker.exists() and "w1-gpio" in marker.read_text()


def test_loader_sets_the_variable():
    load_w1thermsensor()
    assert os.environ["W1THERMSENSOR_NO_KERNEL_MODULE"] == "1"


def test_a_slow_conversion_never_blocks_the_scan(tmp_path, make_runtime, run_scans, caplog):
    """w1_slave as a FIFO blocks the reader like a conversion in progress does on sysfs."""
    base = tmp_path / "w1" / "devices"
    (base / A1).mkdir(parents=True)
    fifo = base / A1 / "w1_slave"
    os.mkfifo(fifo)
    rt = make_runtime('[site]\nname = "t"\n[onewire]\nbase_dir = "w1/devices"\n'
                      f'[[probe]]\nname = "tap-a1"\nsensor_id = "{A1}"\npoll_ms = 100\n',
                      start=True)
    bus = rt.drivers[0].bus
    run_scans(rt, 200)  # the worker is stuck in the "conversion"; the scan is not
    assert rt.last_result.cycle == 200
    assert point(rt, "tap-a1.temp_c").quality is Quality.NOT_CONNECTED
    time.sleep(0.15)  # the conversion takes longer than poll_ms
    before = bus.passes
    with open(fifo, "w") as f:  # ... and completes
        f.write(w1_slave_text(55.5))
    assert bus.wait_passes(1, since=before)
    assert point(rt, "tap-a1.temp_c").value == 55.5
    assert bus.stats()["pass_ms_last"] >= 150
    assert "longer than the shortest poll_ms (100)" in caplog.text
    # unblock a reader that may already wait on the FIFO, then leave a plain file behind
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    write_sensor_file(base, A1, 56.0)
    os.write(fd, w1_slave_text(56.0).encode())
    os.close(fd)
    rt.stop()
    assert not any(t.name.startswith("busguard-w1") for t in threading.enumerate())


def test_fixtures_for_plugin_authors(w1_tree, mock_gpio, make_runtime, run_scans):
    """The pytest11 fixtures fit a site file in tmp_path as written in the docs."""
    w1_tree.write(A1, 47.25)
    w1_tree.write(A2, 20.0, crc_ok=False)
    assert w1_tree.sensors() == [A1, A2]
    mock_gpio.write(4, 1)
    rt = make_runtime('[site]\nname = "t"\n[onewire]\nbase_dir = "w1/devices"\n'
                      '[gpio]\nbackend = "mock"\nmock_dir = "gpio"\n'
                      f'[[probe]]\nname = "p1"\nsensor_id = "{A1}"\npoll_ms = 20\n'
                      f'[[probe]]\nname = "p2"\nsensor_id = "{A2}"\npoll_ms = 20\n'
                      '[[breaker]]\nname = "b1"\nled_line = 4\n', start=True)
    assert rt.drivers[0].bus.wait_passes(2)
    assert point(rt, "p1.temp_c").value == 47.25
    assert point(rt, "p2.temp_c").quality is Quality.BAD
    rt.stop()


def test_missing_bus_folder_says_what_to_load(tmp_path, make_runtime, caplog):
    rt = make_runtime('[site]\nname = "t"\n[onewire]\nbase_dir = "nowhere"\n'
                      f'[[probe]]\nname = "p1"\nsensor_id = "{A1}"\n')
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, rt.clock, loop, rt.site)
    base = tmp_path / "nowhere"
    bus = ctx.shared(f"w1.bus:{base}", lambda: W1Bus(base, rt.image, rt.clock, threaded=False))
    rt.drivers[0].start(ctx)
    bus.poll_once(force=True)
    assert point(rt, "p1.temp_c").quality is Quality.NOT_CONNECTED
    assert "kernel modules w1-gpio/w1-therm not loaded?" in caplog.text
    rt.drivers[0].stop()
    loop.close()


def test_kernel_sensor_id():
    assert kernel_sensor_id("28-0000075A3C1F") == "28-0000075a3c1f"
    assert kernel_sensor_id("000802b4c1d2", "DS18S20") == "10-000802b4c1d2"
    with pytest.raises(ValueError, match="has no family code"):
        kernel_sensor_id("000802b4c1d2")
