"""The default GPIO backend ``cdev``: the kernel's GPIO character device (uAPI v2), in Python.

Why our own and not a library: the board must not download anything at install time, and the
one library that speaks uAPI v2, libgpiod's ``gpiod`` 2.x bindings, is a C extension that
Debian 12, Ubuntu 22.04 and Raspberry Pi OS only package in its v1 form (python3-libgpiod
1.6, another API). What busguard needs from a chip is four ioctls on ``/dev/gpiochipN``
(chip info, request a line, get values, set values), whose structures are fixed by the kernel
ABI (``include/uapi/linux/gpio.h``, Linux 5.10 and later) and laid out identically on amd64,
arm64 and armhf. So this module packs them with :mod:`struct` and calls :func:`fcntl.ioctl`:
no dependency, nothing compiled, the same file on every architecture.

Each line is requested on its own (one line fd each) with the kernel applying
``active_low``: reads and writes are logical values, as the other backends give them, and
``gpioinfo`` shows ``busguard`` as the consumer. An output's first level is set in the same
request (no glitch between request and first write).

The layout is checked against the real header by tests/test_gpio_cdev.py (compiled with the
system's C compiler where one is installed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from busguard.errors import DriverError
from busguard.gpio.base import Line, PinBackend

# -- the uAPI v2 ABI (include/uapi/linux/gpio.h) ----------------------------------------------
GPIO_MAX_NAME_SIZE = 32
GPIO_V2_LINES_MAX = 64
GPIO_V2_LINE_NUM_ATTRS_MAX = 10

FLAG_ACTIVE_LOW = 1 << 1
FLAG_INPUT = 1 << 2
FLAG_OUTPUT = 1 << 3
ATTR_ID_OUTPUT_VALUES = 2

CHIPINFO = struct.Struct("<32s32sI")  # struct gpiochip_info: 68 bytes
LINE_VALUES = struct.Struct("<QQ")  # struct gpio_v2_line_values: bits, mask
# struct gpio_v2_line_config: flags, num_attrs, padding[5], attrs[10] of
# (struct gpio_v2_line_attribute {id, padding, u64 value}, u64 mask)
_ATTR = "IIQQ"
LINE_CONFIG = struct.Struct("<QI5I" + _ATTR * GPIO_V2_LINE_NUM_ATTRS_MAX)  # 272 bytes
# struct gpio_v2_line_request: offsets[64], consumer[32], config, num_lines,
# event_buffer_size, padding[5], fd
LINE_REQUEST = struct.Struct(f"<{GPIO_V2_LINES_MAX}I{GPIO_MAX_NAME_SIZE}s"
                             f"{LINE_CONFIG.size}sII5Ii")  # 592 bytes
REQUEST_FD_OFFSET = LINE_REQUEST.size - 4


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xB4 << 8) | nr


IOC_READ, IOC_RW = 2, 3
GPIO_GET_CHIPINFO_IOCTL = _ioc(IOC_READ, 0x01, CHIPINFO.size)
GPIO_V2_GET_LINE_IOCTL = _ioc(IOC_RW, 0x07, LINE_REQUEST.size)
GPIO_V2_LINE_GET_VALUES_IOCTL = _ioc(IOC_RW, 0x0E, LINE_VALUES.size)
GPIO_V2_LINE_SET_VALUES_IOCTL = _ioc(IOC_RW, 0x0F, LINE_VALUES.size)

Ioctl = Callable[[int, int, bytearray], Any]


def line_config(output: bool, active_low: bool, initial: int | None) -> bytes:
    flags = (FLAG_OUTPUT if output else FLAG_INPUT) | (FLAG_ACTIVE_LOW if active_low else 0)
    attrs = [0] * (4 * GPIO_V2_LINE_NUM_ATTRS_MAX)
    num_attrs = 0
    if output:  # the first level, logical, set by the request itself
        attrs[0:4] = [ATTR_ID_OUTPUT_VALUES, 0, 1 if initial else 0, 1]
        num_attrs = 1
    return LINE_CONFIG.pack(flags, num_attrs, 0, 0, 0, 0, 0, *attrs)


def line_request(offset: int, consumer: str, output: bool, active_low: bool,
                 initial: int | None) -> bytearray:
    offsets = [offset] + [0] * (GPIO_V2_LINES_MAX - 1)
    return bytearray(LINE_REQUEST.pack(*offsets, consumer.encode()[:GPIO_MAX_NAME_SIZE - 1],
                                       line_config(output, active_low, initial), 1, 0,
                                       0, 0, 0, 0, 0, -1))


class CdevLine(Line):
    def __init__(self, fd: int, offset: int, output: bool, active_low: bool,
                 ioctl: Ioctl) -> None:
        super().__init__(offset, output, active_low)
        self._fd = fd
        self._ioctl = ioctl

    def read(self) -> int:
        buf = bytearray(LINE_VALUES.pack(0, 1))
        self._ioctl(self._fd, GPIO_V2_LINE_GET_VALUES_IOCTL, buf)
        return LINE_VALUES.unpack(buf)[0] & 1

    def _drive(self, value: int) -> None:
        buf = bytearray(LINE_VALUES.pack(value, 1))
        self._ioctl(self._fd, GPIO_V2_LINE_SET_VALUES_IOCTL, buf)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class CdevBackend(PinBackend):
    """GPIO lines of ``/dev/gpiochipN`` through the kernel's uAPI v2, no library needed."""

    name = "cdev"
    device_nodes = ("/dev/gpiochip*",)

    def __init__(self, chip: str = "/dev/gpiochip0", consumer: str = "busguard",
                 ioctl: Ioctl | None = None, opener: Callable[[str], int] | None = None
                 ) -> None:
        super().__init__(chip)
        self.consumer = consumer
        self._ioctl: Ioctl = ioctl or fcntl.ioctl
        open_chip = opener or (lambda p: os.open(p, os.O_RDWR | os.O_CLOEXEC))
        try:
            self._chip_fd = open_chip(chip)
        except FileNotFoundError as exc:
            chips = sorted(str(p) for p in Path("/dev").glob("gpiochip*"))
            raise DriverError(f"[gpio] chip = {chip!r}: no such GPIO chip; available: "
                              f"{', '.join(chips) or 'none'}") from exc
        except OSError as exc:
            raise DriverError(_error(chip, None, exc)) from exc
        info = bytearray(CHIPINFO.size)
        try:
            self._ioctl(self._chip_fd, GPIO_GET_CHIPINFO_IOCTL, info)
        except OSError as exc:
            os.close(self._chip_fd)
            raise DriverError(f"{chip} is not a GPIO character device (GPIO_GET_CHIPINFO "
                              f"failed: {exc.strerror or exc})") from exc
        name, label, lines = CHIPINFO.unpack(info)
        self.chip_name = name.rstrip(b"\0").decode("ascii", "replace")
        self.chip_label = label.rstrip(b"\0").decode("ascii", "replace")
        self.num_lines = lines

    def _request(self, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> Line:
        if not 0 <= offset < self.num_lines:
            raise DriverError(f"{self.chip} line {offset}: invalid line offset for this chip "
                              f"({self.chip_label or self.chip_name} has {self.num_lines} "
                              f"lines, 0..{self.num_lines - 1}; see `gpioinfo`)")
        req = line_request(offset, self.consumer, output, active_low, initial)
        try:
            self._ioctl(self._chip_fd, GPIO_V2_GET_LINE_IOCTL, req)
        except OSError as exc:
            raise DriverError(_error(self.chip, offset, exc)) from exc
        fd = struct.unpack_from("<i", req, REQUEST_FD_OFFSET)[0]
        return CdevLine(fd, offset, output, active_low, self._ioctl)

    def close(self) -> None:
        super().close()
        if self._chip_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._chip_fd)
            self._chip_fd = -1

    def describe(self) -> str:
        label = self.chip_label or self.chip_name
        return f"cdev backend (GPIO uAPI v2) on {self.chip} ({label}, {self.num_lines} lines)"


def _error(chip: str, offset: int | None, exc: OSError) -> str:
    where = f"{chip} line {offset}" if offset is not None else chip
    if exc.errno == errno.EBUSY:
        return f"{where} is busy: another program or a kernel driver holds it (see `gpioinfo`)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{chip}: permission denied; the busguard user must be in the 'gpio' group "
                f"(the package's udev rule gives /dev/gpiochip* to it) and the unit must "
                f"allow the device (DeviceAllow=char-gpiochip)")
    if exc.errno == errno.EINVAL:
        return f"{where}: invalid request for this chip (see `gpioinfo`)"
    if exc.errno == errno.ENOTTY:
        return (f"{where}: the kernel does not speak GPIO uAPI v2 (Linux 5.10 or later); "
                f"use backend = \"gpiod\" with libgpiod v2 or upgrade the kernel")
    return f"{where}: {exc.strerror or exc}"
