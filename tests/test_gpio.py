"""GPIO: the mock backend (files, across processes), backend selection and its errors, the
breaker driver end to end through the mock backend (LED in, shunt trip out), gpio_relay
(change-only writes, refresh, read-back verification) and a cross-process run with the real
GPIO thread."""

from __future__ import annotations

import asyncio
import errno
import re
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from busguard.driver import DriverContext
from busguard.errors import ConfigError, DriverError
from busguard.gpio import (
    MockBackend,
    MockLines,
    level_for,
    pattern_level,
    read_line,
    stick_line,
    unstick_line,
    write_line,
)
from busguard.gpio.backends import (
    GpiodBackend,
    RpiGpioBackend,
    is_raspberry_pi_5,
    make_backend,
    raspberry_pi_model,
)
from busguard.gpio.drivers import SERVICE_KEY
from busguard.gpio.service import GpioService
from busguard.image import Quality
from busguard.runtime import check_site

# -- mock backend ------------------------------------------------------------------------------


def test_mock_input_drive_and_history(tmp_path):
    b = MockBackend(mock_dir=tmp_path)
    line = b.open_input(17)
    assert line.read() == 0  # no file yet: pulled low
    b.line(17).drive_high()
    assert line.read() == 1
    b.line(17).drive_low()
    line.read()
    b.line(17).assert_states([0, 1, 0])
    low = b.open_input(18, active_low=True)
    assert low.read() == 1  # physical 0 on an active-low line: active
    with pytest.raises(TypeError):
        low.write(1)
    with pytest.raises(ValueError, match="already in use"):
        b.open_output(17)


def test_mock_output_writes_physical_levels(tmp_path):
    b = MockBackend(mock_dir=tmp_path)
    hi = b.open_output(22)
    lo = b.open_output(23, active_low=True)
    assert (tmp_path / "22").read_text() == "0\n"
    assert read_line(tmp_path, 23) == 1  # inactive on an active-low line is high
    hi.write(1)
    lo.write(1)
    assert read_line(tmp_path, 22) == 1 and read_line(tmp_path, 23) == 0
    assert hi.read() == 1 and lo.read() == 1
    b.line(22).assert_states([0, 1])
    stick_line(tmp_path, 22, 0)
    hi.write(1)
    assert hi.read() == 0  # stuck: the write does not show
    unstick_line(tmp_path, 22)
    assert hi.read() == 1


def test_mock_lines_cross_processes(tmp_path):
    b = MockBackend(mock_dir=tmp_path)
    led = b.open_input(17)
    relay = b.open_output(22)
    relay.write(1)
    code = textwrap.dedent(f"""
        from busguard.gpio import MockLines
        lines = MockLines({str(tmp_path)!r})
        assert lines.read(22) == 1, "the runtime's output is visible here"
        lines.write_logical(17, 1, active_low=False)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert led.read() == 1


def test_mock_writes_are_atomic(tmp_path):
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            write_line(tmp_path, 5, i & 1)
            i += 1

    write_line(tmp_path, 5, 0)
    th = threading.Thread(target=writer)
    th.start()
    try:
        seen = {(tmp_path / "5").read_text() for _ in range(3000)}
    finally:
        stop.set()
        th.join()
    assert seen <= {"0\n", "1\n"}
    assert not list(tmp_path.glob(".*tmp"))


def test_mock_lines_helpers(tmp_path):
    lines = MockLines(tmp_path / "gpio")
    lines.write_logical(4, 1, active_low=True)
    assert lines.read(4) == 0 and lines.read_logical(4, active_low=True) == 1
    lines.stick(4, 1)
    assert lines.read(4) == 1
    lines.unstick(4)
    assert level_for(1, True) == 0 and level_for(0, True) == 1


# -- backend selection and errors -----------------------------------------------------------


def test_make_backend_mock_resolves_relative_dir(tmp_path):
    b = make_backend({"backend": "mock", "mock_dir": "sim/gpio"}, lambda p: tmp_path / p)
    assert isinstance(b, MockBackend) and b.dir == tmp_path / "sim" / "gpio"


def test_gpiod_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(DriverError, match=r"pip install 'busguard\[gpiod\]'"):
        GpiodBackend("/dev/gpiochip0")


def test_gpiod_v1_bindings_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", types.ModuleType("gpiod"))
    with pytest.raises(DriverError, match=re.escape("libgpiod v1 API; install gpiod>=2.2")):
        GpiodBackend("/dev/gpiochip0")


def test_gpiod_missing_chip(tmp_path):
    pytest.importorskip("gpiod")
    with pytest.raises(DriverError, match="no such GPIO chip"):
        GpiodBackend(str(tmp_path / "gpiochip9"))


def test_gpiod_backend_requests_lines_with_kernel_active_low(tmp_path, monkeypatch):
    """The real gpiod package, with only request_lines stood in (there is no GPIO chip
    here): settings go to the kernel (active_low, output_value), values are logical."""
    gpiod = pytest.importorskip("gpiod")
    from gpiod.line import Direction, Value

    requested: dict[int, object] = {}
    values: dict[int, object] = {}

    class Request:
        def __init__(self, offset):
            self.offset = offset

        def get_value(self, offset):
            return values[offset]

        def set_value(self, offset, value):
            values[offset] = value

        def release(self):
            requested.pop(self.offset, None)

    def request_lines(path, config, consumer=None, **kw):
        (offset, settings), = config.items()
        if offset == 99:
            raise OSError(errno.EBUSY, "Device or resource busy")
        requested[offset] = settings
        values[offset] = settings.output_value
        return Request(offset)

    monkeypatch.setattr(gpiod, "request_lines", request_lines)
    chip = tmp_path / "gpiochip0"
    chip.touch()
    b = GpiodBackend(str(chip))
    out = b.open_output(17, active_low=True)
    inp = b.open_input(4)
    assert requested[17].direction == Direction.OUTPUT and requested[17].active_low
    assert requested[17].output_value == Value.INACTIVE
    assert requested[4].direction == Direction.INPUT
    out.write(1)
    assert values[17] == Value.ACTIVE and out.read() == 1
    values[4] = Value.ACTIVE
    assert inp.read() == 1
    with pytest.raises(DriverError, match="line 99 is busy"):
        b.open_input(99)
    b.close()
    assert requested == {}


def _device_tree(root: Path, model: str, compatible: str = "",
                 where: str = "proc/device-tree") -> Path:
    dt = root / where
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(model.encode() + b"\0")
    if compatible:
        (dt / "compatible").write_bytes(compatible.encode())
    return root


def test_rpigpio_refuses_a_raspberry_pi_5(tmp_path):
    root = _device_tree(tmp_path, "Raspberry Pi 5 Model B Rev 1.0",
                        "raspberrypi,5-model-b\0brcm,bcm2712\0")
    assert is_raspberry_pi_5(root)
    with pytest.raises(DriverError) as err:
        RpiGpioBackend(root=root)
    assert "does not work on a Raspberry Pi 5" in str(err.value)
    assert 'backend = "cdev"' in str(err.value)


def test_the_model_is_read_from_sysfs_where_the_unit_hides_proc(tmp_path):
    """The unit's ProcSubset=pid hides /proc/device-tree; /sys/firmware/devicetree/base is
    read first (and wins when both exist)."""
    root = _device_tree(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", "brcm,bcm2712\0",
                        where="sys/firmware/devicetree/base")
    assert is_raspberry_pi_5(root)
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B\0")
    assert "Raspberry Pi 5" in raspberry_pi_model(root)


def test_pi5_detected_from_compatible_alone(tmp_path):
    root = _device_tree(tmp_path, "Some board", "vendor,board\0brcm,bcm2712\0")
    assert is_raspberry_pi_5(root) and "BCM2712" in raspberry_pi_model(root)
    other = _device_tree(tmp_path / "pi4", "Raspberry Pi 4 Model B Rev 1.5",
                         "raspberrypi,4-model-b\0brcm,bcm2711\0")
    assert not is_raspberry_pi_5(other)


def test_rpigpio_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "RPi", None)
    with pytest.raises(DriverError, match=r"apt install python3-rpi.gpio"):
        RpiGpioBackend(root=tmp_path)


def test_rpigpio_off_a_pi_says_so(tmp_path, monkeypatch):
    pkg = tmp_path / "fake" / "RPi"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "GPIO.py").write_text(
        'raise RuntimeError("This module can only be run on a Raspberry Pi!")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    for mod in ("RPi", "RPi.GPIO"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    with pytest.raises(DriverError, match="can only be run on a Raspberry Pi"):
        RpiGpioBackend(root=tmp_path)


def test_rpigpio_backend_applies_active_low(tmp_path, monkeypatch):
    """With a stand-in for the RPi.GPIO module (the hardware library itself)."""
    levels: dict[int, int] = {}
    fake = types.ModuleType("RPi.GPIO")
    fake.BCM, fake.IN, fake.OUT, fake.HIGH, fake.LOW = "BCM", "IN", "OUT", 1, 0
    fake.setwarnings = lambda flag: None
    fake.setmode = lambda mode: None
    fake.setup = lambda pin, mode, initial=0: levels.__setitem__(pin, initial)
    fake.input = lambda pin: levels.get(pin, 0)
    fake.output = lambda pin, level: levels.__setitem__(pin, level)
    fake.cleanup = lambda pin: levels.pop(pin, None)
    pkg = types.ModuleType("RPi")
    pkg.GPIO = fake
    monkeypatch.setitem(sys.modules, "RPi", pkg)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", fake)
    b = RpiGpioBackend(root=tmp_path)
    out = b.open_output(22, active_low=True)
    assert levels[22] == 1  # inactive, active-low: high
    out.write(1)
    assert levels[22] == 0 and out.read() == 1
    b.close()
    assert 22 not in levels


# -- breaker and relay drivers, end to end through the mock backend --------------------------

FAST_LED = """
pulse_max_ms = 250
gap_max_ms = 250
group_gap_ms = 380
solid_ms = 700
off_ms = 1200
glitch_ms = 20
"""

SITE = """
[site]
name = "gpio-test"
[gpio]
backend = "mock"
mock_dir = "gpio"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
initial = {{ current_l1_a = 900.0 }}
[[breaker]]
name = "brk-a1"
led_line = 17
shunt_trip_line = 27
shunt_refresh_ms = 500
rating_a = 800
patterns = {{ solid = "overcurrent trip", "2-blink" = "ground fault", "3-blink" = "test" }}
{led}
[[breaker]]
name = "brk-a2"
driver = "gpio"
led_line = 18
led_active_low = true
{led}
[[output]]
name = "alarm-relay"
driver = "gpio_relay"
line = 22
output = "relay.alarm"
refresh_ms = 1000
[[output]]
name = "horn"
driver = "gpio_relay"
line = 23
output = "relay.critical"
active_low = true
[[output]]
name = "fan"
driver = "gpio_relay"
line = 24
output = "relay.fan"
feedback_line = 30
feedback_settle_ms = 50
[[block]]
name = "overload"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 800.0
output = "relay.alarm"
"""


@pytest.fixture
def gpio_site(tmp_path, make_runtime):
    """A built runtime whose GPIO service is stepped by the test at synthetic times."""
    rt = make_runtime(SITE.format(led=""))
    backend = MockBackend(mock_dir=tmp_path / "gpio")
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, rt.clock, loop, rt.site)
    svc = ctx.shared(SERVICE_KEY, lambda: GpioService(backend, threaded=False))
    for drv in rt.drivers:
        drv.start(ctx)
    yield rt, svc, tmp_path / "gpio"
    for drv in rt.drivers:
        drv.stop()
    loop.close()


def drive(svc, mock_dir, line, code, t0, t1, dt=0.01, active_low=False):
    """Play an LED pattern on a mock line (as the simulator does) while the service samples."""
    t, last = t0, None
    while t < t1:
        level = level_for(pattern_level(code, t - t0), active_low)
        if level != last:  # the simulator writes on change
            write_line(mock_dir, line, level)
            last = level
        svc.step(t)
        t += dt
    return t


def led(rt, name="brk-a1"):
    p = rt.image.snapshot()[f"{name}.led"]
    return p.value, p.quality


def test_breaker_led_codes_through_the_mock_backend(gpio_site):
    rt, svc, gdir = gpio_site
    brk = rt.drivers[1]
    t = drive(svc, gdir, 17, 2, 0.0, 8.0)
    assert led(rt) == (2.0, Quality.GOOD)
    assert brk.stats()["meaning"] == "ground fault"
    t = drive(svc, gdir, 17, 1, t, t + 2.0)
    assert led(rt) == (1.0, Quality.GOOD)
    assert brk.stats()["meaning"] == "overcurrent trip"
    t = drive(svc, gdir, 17, 0, t, t + 3.5)
    assert led(rt) == (0.0, Quality.GOOD)
    t = drive(svc, gdir, 17, 3, t, t + 12.0)
    assert led(rt) == (3.0, Quality.GOOD) and brk.stats()["meaning"] == "test"


def test_active_low_led_line(gpio_site):
    rt, svc, gdir = gpio_site
    drive(svc, gdir, 18, 2, 0.0, 8.0, active_low=True)
    assert led(rt, "brk-a2") == (2.0, Quality.GOOD)


def test_unclassifiable_led_is_bad(gpio_site):
    rt, svc, gdir = gpio_site
    t = drive(svc, gdir, 17, 1, 0.0, 2.0)
    assert led(rt) == (1.0, Quality.GOOD)
    for _ in range(4):  # 1 s pulses: neither blink nor solid
        for level, span in ((0, 1.5), (1, 1.0)):
            end = t + span
            write_line(gdir, 17, level)
            while t < end:
                svc.step(t)
                t += 0.01
    value, quality = led(rt)
    assert quality is Quality.BAD and value == 1.0  # last good value kept
    assert "too long for a blink" in rt.drivers[1].stats()["why"]


def test_shunt_trip_apply_is_queued_written_verified(gpio_site):
    rt, svc, gdir = gpio_site
    brk = rt.drivers[1]
    assert brk.consumes() == ("brk-a1.shunt_trip",)
    assert rt.drivers[2].consumes() == ()  # no shunt-trip line on brk-a2
    svc.step(0.0)
    assert read_line(gdir, 27) == 0
    brk.apply({"brk-a1.shunt_trip": 1.0})
    assert read_line(gdir, 27) == 0  # apply returned without touching the line
    svc.step(0.01)
    assert read_line(gdir, 27) == 1
    p = rt.image.snapshot()["brk-a1.shunt_trip_state"]
    assert (p.value, p.quality) == (1.0, Quality.GOOD)
    st = brk.stats()["shunt_trip"]
    assert (st["writes"], st["mismatches"]) == (2, 0)  # initial 0, then the trip


def test_relay_change_only_writes_refresh_and_readback(gpio_site, run_scans):
    rt, svc, gdir = gpio_site
    relay = rt.drivers[3]
    svc.step(0.0)
    run_scans(rt, 5)  # the block sees 900 A > 800 A: relay.alarm = 1 every scan
    for k in range(5):
        svc.step(0.1 + k * 0.1)
    assert read_line(gdir, 22) == 1
    st = relay.stats()
    assert (st["writes"], st["refreshes"]) == (2, 0)  # 0 at start, 1 once: change-only
    write_line(gdir, 22, 0)  # something else resets the line (simulator, a glitch)
    svc.step(1.2)  # refresh due (1000 ms after the write at 0.1 s)
    assert read_line(gdir, 22) == 1 and relay.stats()["refreshes"] == 1
    stick_line(gdir, 22, 0)  # a welded contact / dead driver stage
    svc.step(2.3)
    assert rt.image.snapshot()["alarm-relay.state"].quality is Quality.BAD
    assert (relay.stats()["readback"], relay.stats()["mismatches"]) == (0, 1)
    unstick_line(gdir, 22)
    svc.step(3.4)
    p = rt.image.snapshot()["alarm-relay.state"]
    assert (p.value, p.quality) == (1.0, Quality.GOOD)
    svc.backend.line(22).assert_states([0, 1, 0, 1])


def test_active_low_relay(gpio_site):
    rt, svc, gdir = gpio_site
    horn = rt.drivers[4]
    svc.step(0.0)
    assert read_line(gdir, 23) == 1  # inactive
    horn.apply({"relay.critical": 1.0})
    svc.step(0.01)
    assert read_line(gdir, 23) == 0
    assert rt.image.snapshot()["horn.state"].value == 1.0


@pytest.mark.parametrize(("options", "message"), [
    ('led_line = 5\npatterns = { "1-blink" = "x" }',
     "breaker[0].patterns.1-blink: N-blink needs 2 <= N <= max_blinks (9)"),
    ('led_line = 5\npatterns = { flash = "x" }', "breaker[0].patterns.flash: unknown pattern"),
    ("led_line = 5\nshunt_trip_line = 5", "breaker[0].shunt_trip_line: got 5; it is also the "
     "led_line"),
    ("led_line = 5\nsolid_ms = 500", "breaker[0].led_timing: expected glitch_ms < "
     "pulse_max_ms < solid_ms"),
    ("led_line = -1", "breaker[0].led_line: got -1; expected an integer >= 0 and <= 1023"),
    ("", "breaker[0].led_line: missing required option"),
])
def test_breaker_config_errors(site_file, options, message):
    path = site_file(f'[site]\nname = "t"\n[[breaker]]\nname = "b1"\n{options}\n')
    with pytest.raises(ConfigError) as err:
        check_site(path)
    assert message in str(err.value), str(err.value)


def test_gpio_table_is_checked(site_file):
    path = site_file('[site]\nname = "t"\n[gpio]\nbackend = "wiringpi"\n')
    with pytest.raises(ConfigError, match=re.escape("gpio.backend: got 'wiringpi'; expected "
                                                    "one of 'cdev', 'gpiod', 'rpigpio', 'mock'")):
        check_site(path)


def test_start_with_a_missing_chip_is_a_clear_error(make_runtime, tmp_path):
    rt = make_runtime(f'[site]\nname = "t"\n[gpio]\nchip = "{tmp_path}/gpiochip7"\n'
                      f'[[breaker]]\nname = "b1"\nled_line = 4\n')
    with pytest.raises(DriverError, match="no such GPIO chip"):
        rt.start()
    rt.stop()


def test_two_devices_on_one_line(make_runtime):
    rt = make_runtime('[site]\nname = "t"\n[gpio]\nbackend = "mock"\nmock_dir = "g"\n'
                      '[[breaker]]\nname = "b1"\nled_line = 4\n'
                      '[[output]]\nname = "r"\ndriver = "gpio_relay"\nline = 4\n'
                      'output = "relay.alarm"\n')
    with pytest.raises(DriverError, match=r"output\[0\]: mock line 4 is already in use"):
        rt.start()
    rt.stop()  # the breaker had started: its GPIO thread ends with it


# -- across processes, with the real GPIO thread ----------------------------------------------

SIMULATOR = """
import sys, time
from busguard.gpio import MockLines, pattern_level
lines = MockLines(sys.argv[1])
t0 = time.monotonic()
while time.monotonic() - t0 < float(sys.argv[2]):
    t = time.monotonic() - t0
    lines.write(17, pattern_level(2, t, on_s=0.1, off_s=0.1, group_gap_s=0.5))
    lines.write(18, 0)  # brk-a2 is active-low: physical 0 = lit = solid
    time.sleep(0.005)
"""


def wait_until(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_simulator_process_drives_leds_runtime_drives_relays(make_runtime, tmp_path,
                                                              run_scans):
    rt = make_runtime(SITE.format(led=FAST_LED), start=True)
    gdir = tmp_path / "gpio"
    sim = subprocess.Popen([sys.executable, "-c", SIMULATOR, str(gdir), "20"])
    try:
        assert wait_until(lambda: led(rt) == (2.0, Quality.GOOD)), rt.drivers[1].stats()
        assert wait_until(lambda: led(rt, "brk-a2") == (1.0, Quality.GOOD)), \
            rt.drivers[2].stats()
        run_scans(rt, 3)  # 900 A over 800 A: the block sets relay.alarm
        assert wait_until(lambda: read_line(gdir, 22) == 1)
        assert wait_until(lambda: rt.image.snapshot()["alarm-relay.state"].quality
                          is Quality.GOOD)
        assert sum(t.name == "busguard-gpio" for t in threading.enumerate()) == 1
    finally:
        sim.kill()
        sim.wait()
    rt.stop()
    assert not any(t.name == "busguard-gpio" for t in threading.enumerate())


def test_service_thread_restarts_after_the_last_owner_left(tmp_path):
    """A reload stops every GPIO driver, then starts new ones: the thread comes back."""
    svc = GpioService(MockBackend(mock_dir=tmp_path))
    for owner in ("old", "new"):
        got: list[int | None] = []
        svc.add_input(owner, 1, False, 0.01, lambda t, level, got=got: got.append(level))
        svc.start()
        assert wait_until(lambda got=got: len(got) >= 3, timeout=5.0)
        assert svc.remove_owner(owner)  # nobody left: thread stopped, backend closed
        assert not any(t.name == "busguard-gpio" for t in threading.enumerate())


def test_stop_writes_the_failsafe_values_before_releasing_lines(make_runtime, tmp_path,
                                                                run_scans):
    rt = make_runtime(SITE.format(led=""), start=True)
    gdir = tmp_path / "gpio"
    run_scans(rt, 2)  # 900 A > 800 A: relay.alarm = 1
    assert wait_until(lambda: read_line(gdir, 22) == 1)
    rt.stop()  # fail-safe: the block's output_failsafe (0), written before the line goes
    assert read_line(gdir, 22) == 0


def test_reload_handover_keeps_output_levels(make_runtime, tmp_path, run_scans):
    """stop(failsafe=False) then a new runtime on the same lines: no drop in between."""
    old = make_runtime(SITE.format(led=""), start=True)
    gdir = tmp_path / "gpio"
    run_scans(old, 2)
    assert wait_until(lambda: read_line(gdir, 22) == 1)
    old.stop(failsafe=False)
    assert read_line(gdir, 22) == 1
    new = make_runtime(SITE.format(led=""), start=True)
    assert read_line(gdir, 22) == 1  # requested without being driven inactive
    relay = new.drivers[3]
    assert relay._chan.desired == 1
    run_scans(new, 2)
    assert wait_until(lambda: relay.stats()["readback"] == 1)
    relay._service.backend.line(22).assert_states([1])  # never went inactive
    new.stop()


def test_relay_verified_by_its_feedback_contact(gpio_site):
    rt, svc, gdir = gpio_site
    fan = rt.drivers[5]
    state = lambda: rt.image.snapshot()["fan.state"]  # noqa: E731
    svc.step(0.0)  # line written inactive; the contact is judged 50 ms later
    assert state().quality is Quality.NOT_CONNECTED
    svc.step(0.06)
    assert (state().value, state().quality) == (0.0, Quality.GOOD)
    fan.apply({"relay.fan": 1.0})
    svc.step(0.1)
    assert read_line(gdir, 24) == 1
    write_line(gdir, 30, 1)  # the contactor pulls in; its auxiliary contact closes
    svc.step(0.16)
    assert (state().value, state().quality) == (1.0, Quality.GOOD)
    fan.apply({"relay.fan": 0.0})
    svc.step(0.2)
    svc.step(0.26)  # the coil is off but the contact stays closed: welded
    assert state().quality is Quality.BAD
    assert fan.stats()["mismatches"] == 1 and fan.stats()["feedback_line"] == 30
    write_line(gdir, 30, 0)
    svc.step(1.3)  # refresh, then the verdict after settling
    svc.step(1.36)
    assert (state().value, state().quality) == (0.0, Quality.GOOD)


def test_feedback_line_must_differ_from_the_line(site_file):
    path = site_file('[site]\nname = "t"\n[[output]]\nname = "r"\ndriver = "gpio_relay"\n'
                     'line = 7\noutput = "relay.alarm"\nfeedback_line = 7\n')
    with pytest.raises(ConfigError, match=r"output\[0\]\.feedback_line: got 7; it is also "
                                          r"the line"):
        check_site(path)
