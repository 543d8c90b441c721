"""The default GPIO backend ``cdev`` (GPIO character device, uAPI v2, pure Python).

- Its structures and ioctl numbers against the kernel's own header, compiled with the system's
  C compiler (linux/gpio.h from linux-libc-dev): sizes, field offsets, flag values.
- Its behaviour against a stand-in for the kernel's side of the ioctls (no GPIO chip exists on
  a CI machine); the stand-in decodes requests at the offsets the header check proved.
- The packaged unit allows every backend's device nodes (DevicePolicy=closed).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from busguard.errors import DriverError
from busguard.gpio import cdev
from busguard.gpio.backends import BACKENDS, GpiodBackend, RpiGpioBackend
from busguard.gpio.cdev import CdevBackend
from busguard.gpio.mock import MockBackend

TOP = Path(__file__).resolve().parent.parent
UNIT = TOP / "packaging" / "systemd" / "busguard.service"

C_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/gpio.h>
int main(void) {
    printf("chipinfo %zu\n", sizeof(struct gpiochip_info));
    printf("request %zu\n", sizeof(struct gpio_v2_line_request));
    printf("config %zu\n", sizeof(struct gpio_v2_line_config));
    printf("values %zu\n", sizeof(struct gpio_v2_line_values));
    printf("req_consumer %zu\n", offsetof(struct gpio_v2_line_request, consumer));
    printf("req_config %zu\n", offsetof(struct gpio_v2_line_request, config));
    printf("req_num_lines %zu\n", offsetof(struct gpio_v2_line_request, num_lines));
    printf("req_fd %zu\n", offsetof(struct gpio_v2_line_request, fd));
    printf("cfg_num_attrs %zu\n", offsetof(struct gpio_v2_line_config, num_attrs));
    printf("cfg_attrs %zu\n", offsetof(struct gpio_v2_line_config, attrs));
    printf("attr_size %zu\n", sizeof(struct gpio_v2_line_config_attribute));
    printf("attr_values %zu\n", offsetof(struct gpio_v2_line_config_attribute, attr.values));
    printf("attr_mask %zu\n", offsetof(struct gpio_v2_line_config_attribute, mask));
    printf("ioc_chipinfo %lu\n", (unsigned long)GPIO_GET_CHIPINFO_IOCTL);
    printf("ioc_get_line %lu\n", (unsigned long)GPIO_V2_GET_LINE_IOCTL);
    printf("ioc_get_values %lu\n", (unsigned long)GPIO_V2_LINE_GET_VALUES_IOCTL);
    printf("ioc_set_values %lu\n", (unsigned long)GPIO_V2_LINE_SET_VALUES_IOCTL);
    printf("flag_active_low %llu\n", (unsigned long long)GPIO_V2_LINE_FLAG_ACTIVE_LOW);
    printf("flag_input %llu\n", (unsigned long long)GPIO_V2_LINE_FLAG_INPUT);
    printf("flag_output %llu\n", (unsigned long long)GPIO_V2_LINE_FLAG_OUTPUT);
    printf("attr_output_values %d\n", (int)GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES);
    return 0;
}
"""

# where the kernel reads and writes struct gpio_v2_line_request (checked against the header
# below): the stand-in kernel decodes at these offsets, not through cdev's own structs
REQ_CONSUMER, REQ_CONFIG, REQ_NUM_LINES, REQ_FD = 256, 288, 560, 588
CFG_NUM_ATTRS, CFG_ATTRS, ATTR_SIZE = 8, 32, 24


def test_layout_and_ioctl_numbers_match_the_kernel_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/usr/include/linux/gpio.h").exists():
        pytest.skip("no C compiler or linux/gpio.h (linux-libc-dev) here")
    src = tmp_path / "probe.c"
    src.write_text(C_PROBE)
    exe = tmp_path / "probe"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True, capture_output=True,
                   timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                         timeout=10).stdout
    k = {name: int(v) for name, v in re.findall(r"^(\w+) (\d+)$", out, re.M)}
    assert k["chipinfo"] == cdev.CHIPINFO.size == 68
    assert k["request"] == cdev.LINE_REQUEST.size == 592
    assert k["config"] == cdev.LINE_CONFIG.size
    assert k["values"] == cdev.LINE_VALUES.size
    assert (k["req_consumer"], k["req_config"], k["req_num_lines"], k["req_fd"]) == \
        (REQ_CONSUMER, REQ_CONFIG, REQ_NUM_LINES, REQ_FD)
    assert k["req_fd"] == cdev.REQUEST_FD_OFFSET
    assert (k["cfg_num_attrs"], k["cfg_attrs"], k["attr_size"]) == \
        (CFG_NUM_ATTRS, CFG_ATTRS, ATTR_SIZE)
    assert (k["attr_values"], k["attr_mask"]) == (8, 16)
    assert k["ioc_chipinfo"] == cdev.GPIO_GET_CHIPINFO_IOCTL
    assert k["ioc_get_line"] == cdev.GPIO_V2_GET_LINE_IOCTL
    assert k["ioc_get_values"] == cdev.GPIO_V2_LINE_GET_VALUES_IOCTL
    assert k["ioc_set_values"] == cdev.GPIO_V2_LINE_SET_VALUES_IOCTL
    assert k["flag_active_low"] == cdev.FLAG_ACTIVE_LOW
    assert (k["flag_input"], k["flag_output"]) == (cdev.FLAG_INPUT, cdev.FLAG_OUTPUT)
    assert k["attr_output_values"] == cdev.ATTR_ID_OUTPUT_VALUES


class FakeKernel:
    """The kernel's side of the four ioctls for one chip of ``lines`` lines: physical levels,
    which lines are requested (EBUSY twice), active-low applied by 'the kernel'."""

    def __init__(self, lines: int = 32) -> None:
        self.lines = lines
        self.level = [0] * lines  # physical
        self.held: dict[int, dict] = {}  # line fd -> request
        self.chips: set[int] = set()
        self.calls: list[int] = []

    def open(self, path: str) -> int:
        fd = os.open(os.devnull, os.O_RDONLY)  # the backend closes it: a real fd
        self.chips.add(fd)
        return fd

    def ioctl(self, fd: int, req: int, buf: bytearray) -> int:
        self.calls.append(req)
        if req == cdev.GPIO_GET_CHIPINFO_IOCTL:
            assert fd in self.chips
            struct.pack_into("<32s32sI", buf, 0, b"gpiochip0", b"pinctrl-test", self.lines)
        elif req == cdev.GPIO_V2_GET_LINE_IOCTL:
            offset = struct.unpack_from("<I", buf, 0)[0]
            consumer = bytes(buf[REQ_CONSUMER:REQ_CONSUMER + 32]).rstrip(b"\0").decode()
            flags, nattrs = struct.unpack_from("<QI", buf, REQ_CONFIG)
            assert struct.unpack_from("<I", buf, REQ_NUM_LINES)[0] == 1
            if any(r["offset"] == offset for r in self.held.values()):
                raise OSError(errno.EBUSY, "Device or resource busy")
            low = bool(flags & cdev.FLAG_ACTIVE_LOW)
            if flags & cdev.FLAG_OUTPUT:
                for i in range(nattrs):
                    at = REQ_CONFIG + CFG_ATTRS + i * ATTR_SIZE
                    aid, _pad, value, mask = struct.unpack_from("<IIQQ", buf, at)
                    if aid == cdev.ATTR_ID_OUTPUT_VALUES and mask & 1:
                        self.level[offset] = (value & 1) ^ low
            line_fd = os.open(os.devnull, os.O_RDONLY)
            self.held[line_fd] = {"offset": offset, "low": low, "consumer": consumer,
                                  "output": bool(flags & cdev.FLAG_OUTPUT)}
            struct.pack_into("<i", buf, REQ_FD, line_fd)
        elif req in (cdev.GPIO_V2_LINE_GET_VALUES_IOCTL, cdev.GPIO_V2_LINE_SET_VALUES_IOCTL):
            r = self.held[fd]
            bits, mask = struct.unpack_from("<QQ", buf, 0)
            assert mask == 1
            if req == cdev.GPIO_V2_LINE_SET_VALUES_IOCTL:
                if not r["output"]:
                    raise OSError(errno.EPERM, "Operation not permitted")
                self.level[r["offset"]] = (bits & 1) ^ r["low"]
            else:
                struct.pack_into("<QQ", buf, 0, self.level[r["offset"]] ^ r["low"], mask)
        else:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        return 0

    def released(self) -> None:
        """Forget requests whose fd the backend closed."""
        for fd in list(self.held):
            try:
                os.fstat(fd)
            except OSError:
                del self.held[fd]


@pytest.fixture
def kernel():
    return FakeKernel()


def test_lines_read_and_write_logical_values_with_the_kernel_applying_active_low(kernel):
    be = CdevBackend("/dev/gpiochip0", ioctl=kernel.ioctl, opener=kernel.open)
    assert "pinctrl-test, 32 lines" in be.describe()
    led = be.open_input(4, active_low=True)
    assert led.read() == 1  # physical 0 on an active-low LED line: lit
    kernel.level[4] = 1
    assert led.read() == 0
    relay = be.open_output(17, active_low=True, initial=0)
    assert kernel.level[17] == 1  # inactive on an active-low line: high, from the request
    relay.write(1)
    assert kernel.level[17] == 0 and relay.read() == 1
    plain = be.open_output(27, initial=1)
    assert kernel.level[27] == 1  # the first level is part of the request: no glitch
    assert {r["consumer"] for r in kernel.held.values()} == {"busguard"}
    with pytest.raises(TypeError):
        led.write(1)
    be.release(relay)
    kernel.released()
    assert 17 not in {r["offset"] for r in kernel.held.values()}
    be.close()
    kernel.released()
    assert kernel.held == {}
    del plain


def test_errors_say_what_to_do(kernel, tmp_path):
    be = CdevBackend("/dev/gpiochip0", ioctl=kernel.ioctl, opener=kernel.open)
    with pytest.raises(DriverError, match=r"line 40: invalid line offset .* 0\.\.31"):
        be.open_input(40)
    other = CdevBackend("/dev/gpiochip0", ioctl=kernel.ioctl, opener=kernel.open)
    be.open_input(5)
    with pytest.raises(DriverError, match="busy: another program or a kernel driver holds it"):
        other.open_input(5)  # another process (here: another backend) holds the line
    with pytest.raises(DriverError, match="no such GPIO chip"):
        CdevBackend(str(tmp_path / "gpiochip9"))

    def denied(path: str) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    with pytest.raises(DriverError, match=r"'gpio' group .*DeviceAllow=char-gpiochip"):
        CdevBackend("/dev/gpiochip0", opener=denied)
    with pytest.raises(DriverError, match="not a GPIO character device"):
        CdevBackend(os.devnull)  # a real ioctl on a file that is no GPIO chip: ENOTTY
    be.close()
    other.close()


def test_a_real_chip_if_there_is_one():
    chips = sorted(Path("/dev").glob("gpiochip*"))
    if not chips or not os.access(chips[0], os.R_OK | os.W_OK):
        pytest.skip("no accessible /dev/gpiochip* on this machine")
    be = CdevBackend(str(chips[0]))
    assert be.num_lines > 0 and "uAPI v2" in be.describe()
    be.close()


# -- the packaged unit lets every backend reach its device nodes --------------------------------
def _device_allow() -> list[tuple[str, str]]:
    out = []
    for line in UNIT.read_text().splitlines():
        if line.startswith("DeviceAllow="):
            spec, _, access = line.split("=", 1)[1].partition(" ")
            out.append((spec, access.strip()))
    return out


# the character-device group each node belongs to, as the kernel names it in /proc/devices
KERNEL_GROUPS = {
    "/dev/gpiochip*": ("gpiochip",),  # gpiolib: GPIOCHIP_NAME
    "/dev/gpiomem": ("bcm2835-gpiomem", "rpi-gpiomem"),  # Raspberry Pi kernels, old and new
}


def allowed(node: str, rules: list[tuple[str, str]]) -> bool:
    for spec, access in rules:
        if "r" not in access or "w" not in access:
            continue
        if spec.startswith("/dev/") and (spec == node or Path(node).match(spec)):
            return True
        if spec.startswith("char-") and spec[5:] in KERNEL_GROUPS.get(node, ()):
            return True
    return False


def test_the_packaged_unit_allows_each_backends_device_nodes():
    text = UNIT.read_text()
    assert re.search(r"^DevicePolicy=closed$", text, re.M)
    rules = _device_allow()
    classes = {"cdev": CdevBackend, "gpiod": GpiodBackend, "rpigpio": RpiGpioBackend,
               "mock": MockBackend}
    assert set(classes) == set(BACKENDS)
    for name, cls in classes.items():
        for node in cls.device_nodes:
            assert allowed(node, rules), f"{name}: {node} not allowed by the unit"
    assert CdevBackend.device_nodes == ("/dev/gpiochip*",)
    assert RpiGpioBackend.device_nodes == ("/dev/gpiomem",)
    # /dev/gpiomem both as a path (the node exists at start) and by kernel group (either
    # Raspberry Pi kernel driver), so a unit started before udev renamed it still works
    assert ("/dev/gpiomem", "rw") in rules
    assert {("char-bcm2835-gpiomem", "rw"), ("char-rpi-gpiomem", "rw")} <= set(rules)
    assert not allowed("/dev/mem", rules)  # never the whole of memory
