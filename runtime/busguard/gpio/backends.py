"""The real GPIO backends (libgpiod v2, RPi.GPIO; the default ``cdev`` lives in
:mod:`busguard.gpio.cdev`) and the factory that picks one from [gpio].

Libraries are imported when a backend is built, not when busguard is imported, so a unit
without them still loads, checks and runs sites that do not use them. A missing or unusable
library is a :class:`DriverError` naming what to install or what to use instead.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from busguard.config.params import Param
from busguard.errors import DriverError
from busguard.gpio.base import Line, PinBackend
from busguard.gpio.cdev import CdevBackend
from busguard.gpio.mock import MockBackend

DEFAULT_CHIP = "/dev/gpiochip0"

GPIO_SECTION_PARAMS: Mapping[str, Param] = {
    "backend": Param(str, default="cdev", choices_from="gpio_backend",
                     doc="pin library: cdev (the kernel's GPIO character device, built in, "
                         "nothing to install), gpiod (libgpiod v2 bindings), RPi.GPIO (not on "
                         "a Pi 5) or mock (files, for tests and the simulator); a plugin may "
                         "register another"),
    "chip": Param(str, default=DEFAULT_CHIP,
                  doc="GPIO character device for cdev and gpiod (older Raspberry Pi 5 "
                      "kernels show the header on /dev/gpiochip4)"),
    "mock_dir": Param(str, default="var/sim/gpio",
                      doc="mock backend: folder with one file per line holding 0/1 "
                          "(relative to the site file)"),
}

CONSUMER = "busguard"


# -- libgpiod v2 -----------------------------------------------------------------------------
class GpiodLine(Line):
    def __init__(self, request: Any, value_cls: Any, offset: int, output: bool,
                 active_low: bool) -> None:
        super().__init__(offset, output, active_low)
        self._req = request
        self._value = value_cls

    def read(self) -> int:
        return 1 if self._req.get_value(self.offset) == self._value.ACTIVE else 0

    def _drive(self, value: int) -> None:
        self._req.set_value(self.offset, self._value.ACTIVE if value else self._value.INACTIVE)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already released (the chip went away)
            self._req.release()


class GpiodBackend(PinBackend):
    """libgpiod v2 through the ``gpiod`` Python package (``pip install 'busguard[gpiod]'``).

    Each line is its own request with the kernel applying ``active_low``, so read and write
    deal in logical values and the kernel shows ``busguard`` as the consumer (``gpioinfo``).
    """

    name = "gpiod"
    device_nodes = ("/dev/gpiochip*",)

    def __init__(self, chip: str = DEFAULT_CHIP) -> None:
        super().__init__(chip)
        try:
            import gpiod
        except ImportError as exc:
            raise DriverError("[gpio] backend = \"gpiod\" needs the libgpiod v2 Python "
                              "bindings: pip install 'busguard[gpiod]' (package gpiod>=2.2)"
                              ) from exc
        if not hasattr(gpiod, "request_lines"):
            raise DriverError(f"[gpio] backend = \"gpiod\": the installed gpiod module "
                              f"({getattr(gpiod, '__version__', 'v1')}) is the libgpiod v1 "
                              f"API; install gpiod>=2.2 (pip install 'busguard[gpiod]')")
        self._gpiod = gpiod
        if not Path(chip).exists():
            raise DriverError(f"[gpio] chip = {chip!r}: no such GPIO chip; available: "
                              f"{', '.join(available_chips()) or 'none'}")

    def _request(self, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> Line:
        gpiod = self._gpiod
        from gpiod.line import Direction, Value

        settings = gpiod.LineSettings(
            direction=Direction.OUTPUT if output else Direction.INPUT, active_low=active_low,
            output_value=Value.ACTIVE if initial else Value.INACTIVE)
        try:
            req = gpiod.request_lines(self.chip, consumer=CONSUMER, config={offset: settings})
        except OSError as exc:
            raise DriverError(_gpiod_error(self.chip, offset, exc)) from exc
        except ValueError as exc:  # offset out of range for this chip
            raise DriverError(f"{self.chip} line {offset}: {exc}") from exc
        return GpiodLine(req, Value, offset, output, active_low)


def _gpiod_error(chip: str, offset: int, exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return (f"{chip} line {offset} is busy: another program or a kernel driver holds it "
                f"(see `gpioinfo`)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{chip}: permission denied; add the busguard user to the 'gpio' group"
    if exc.errno == errno.EINVAL:
        return f"{chip} line {offset}: invalid line offset for this chip (see `gpioinfo`)"
    return f"{chip} line {offset}: {exc.strerror or exc}"


def available_chips() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("gpiochip*"))


# -- RPi.GPIO --------------------------------------------------------------------------------
def raspberry_pi_model(root: str | Path = "/") -> str:
    """The board model from the device tree ("" when not a Raspberry Pi / unknown). Read
    from /sys/firmware/devicetree/base first: the unit's ProcSubset=pid hides /proc's
    device-tree link."""
    base = Path(root) / "sys" / "firmware" / "devicetree" / "base"
    if not base.is_dir():
        base = Path(root) / "proc" / "device-tree"
    try:
        model = (base / "model").read_bytes().rstrip(b"\0").decode("ascii", "replace")
    except OSError:
        model = ""
    try:
        compat = (base / "compatible").read_bytes().decode("ascii", "replace").split("\0")
    except OSError:
        compat = []
    if "brcm,bcm2712" in compat and "Raspberry Pi 5" not in model:
        model = (model + " (BCM2712, Raspberry Pi 5 family)").strip()
    return model


def is_raspberry_pi_5(root: str | Path = "/") -> bool:
    model = raspberry_pi_model(root)
    return "Raspberry Pi 5" in model or "BCM2712" in model or "Compute Module 5" in model


class RpiGpioLine(Line):
    def __init__(self, gpio: Any, offset: int, output: bool, active_low: bool) -> None:
        super().__init__(offset, output, active_low)
        self._gpio = gpio
        self._invert = 1 if active_low else 0

    def read(self) -> int:
        return (1 if self._gpio.input(self.offset) else 0) ^ self._invert

    def _drive(self, value: int) -> None:
        self._gpio.output(self.offset, value ^ self._invert)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._gpio.cleanup(self.offset)


class RpiGpioBackend(PinBackend):
    """RPi.GPIO (``pip install 'busguard[rpigpio]'``), BCM numbering. Not on a Pi 5: its RP1
    I/O controller is not the BCM283x register block RPi.GPIO writes to; use gpiod there."""

    name = "rpigpio"
    device_nodes = ("/dev/gpiomem",)

    def __init__(self, chip: str = "bcm", root: str | Path = "/") -> None:
        super().__init__(chip)
        if is_raspberry_pi_5(root):
            raise DriverError(f"[gpio] backend = \"rpigpio\": RPi.GPIO does not work on a "
                              f"{raspberry_pi_model(root)} (its GPIO sit behind the RP1 chip); "
                              f"use backend = \"cdev\" (the default; or \"gpiod\") with chip "
                              f"/dev/gpiochip0 (/dev/gpiochip4 on older Pi 5 kernels)")
        try:
            import RPi.GPIO as gpio  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DriverError("[gpio] backend = \"rpigpio\" needs RPi.GPIO (Debian/Raspberry Pi "
                              "OS: apt install python3-rpi.gpio; or use the default backend = "
                              "\"cdev\", which needs nothing)") from exc
        except RuntimeError as exc:  # "This module can only be run on a Raspberry Pi!"
            raise DriverError(f"[gpio] backend = \"rpigpio\": {exc}; use backend = \"cdev\" "
                              f"or \"mock\"") from exc
        self._gpio = gpio
        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)

    def _request(self, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> Line:
        gpio = self._gpio
        try:
            if output:
                level = (1 if initial else 0) ^ (1 if active_low else 0)
                gpio.setup(offset, gpio.OUT, initial=gpio.HIGH if level else gpio.LOW)
            else:
                gpio.setup(offset, gpio.IN)
        except (RuntimeError, ValueError) as exc:
            raise DriverError(f"RPi.GPIO BCM {offset}: {exc}") from exc
        return RpiGpioLine(gpio, offset, output, active_low)


# -- factory ---------------------------------------------------------------------------------
# Each backend is built by a factory(section, resolve, ticks) that the "core" plugin registers
# (``registry.add_gpio_backend``), as a third-party plugin would register its own (lgpio...).
def mock_backend(section: Mapping[str, Any], resolve: Callable[[str], Path],
                 ticks: Callable[[], float]) -> PinBackend:
    return MockBackend("mock", resolve(section["mock_dir"]), ticks)


def rpigpio_backend(section: Mapping[str, Any], resolve: Callable[[str], Path],
                    ticks: Callable[[], float]) -> PinBackend:
    chip = section["chip"]
    return RpiGpioBackend(chip if chip != DEFAULT_CHIP else "bcm")


def gpiod_backend(section: Mapping[str, Any], resolve: Callable[[str], Path],
                  ticks: Callable[[], float]) -> PinBackend:
    return GpiodBackend(section["chip"])


def cdev_backend(section: Mapping[str, Any], resolve: Callable[[str], Path],
                 ticks: Callable[[], float]) -> PinBackend:
    return CdevBackend(section["chip"])


# in the order `[gpio] backend`'s error lists them (the default first)
BUILTIN_BACKENDS: Mapping[str, Callable[..., PinBackend]] = {
    "cdev": cdev_backend, "gpiod": gpiod_backend, "rpigpio": rpigpio_backend,
    "mock": mock_backend}
BACKENDS = tuple(BUILTIN_BACKENDS)  # the built-in backends' names


def make_backend(section: Mapping[str, Any], resolve: Callable[[str], Path],
                 ticks: Callable[[], float] = time.monotonic,
                 backends: Mapping[str, Callable[..., PinBackend]] = BUILTIN_BACKENDS
                 ) -> PinBackend:
    """The backend a site's validated [gpio] table asks for (``resolve``: the site's path
    resolver; ``backends``: the registered factories, by default the built-in ones)."""
    kind = section["backend"]
    factory = backends.get(kind)
    if factory is None:
        raise DriverError(f"[gpio] backend = {kind!r}: expected one of {', '.join(backends)}")
    return factory(section, resolve, ticks)
