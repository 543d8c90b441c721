"""The simulator's file-backed hardware: the 1-Wire and IIO sysfs trees and the mock GPIO lines.

They use the production modules' own writers, so the runtime reads them through its real code
paths: :func:`busguard.w1.tree.write_sensor_file` (the kernel's ``w1_slave`` format, CRC and
all), :func:`busguard.iio.tree.write_max31865` (a MAX31865 RTD converter under
``[iio] base_dir``, labelled with the probe's ``device``) and
:func:`busguard.gpio.mock.write_line` (one file per line under ``[gpio] mock_dir``).
The LED blink timing comes from :func:`busguard.gpio.led.pattern_level`, on wall time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from busguard.gpio.led import pattern_level
from busguard.gpio.mock import line_path, read_line, write_line
from busguard.iio.tree import remove_device, write_max31865
from busguard.w1.tree import remove_sensor, write_sensor_file


@dataclass(frozen=True)
class ProbeFile:
    name: str
    sensor_id: str  # w1: kernel folder name, e.g. "28-0000075a3c1f"; iio: the device label
    kind: str = "w1"  # or "iio"


@dataclass(frozen=True)
class LedLine:
    breaker: str
    offset: int  # the LED line the runtime reads
    active_low: bool = False


@dataclass(frozen=True)
class ShuntLine:
    breaker: str
    offset: int  # the shunt-trip output line the runtime drives
    active_low: bool = False


@dataclass
class W1Tree:
    """Probes as ``<base_dir>/<sensor_id>/w1_slave`` files."""

    base_dir: Path
    probes: Sequence[ProbeFile]
    written: int = 0

    def update(self, temps: Callable[[int], float]) -> None:
        """Write every probe's temperature (``temps(i)`` for the i-th probe)."""
        for i, p in enumerate(self.probes):
            if p.kind == "w1":
                write_sensor_file(self.base_dir, p.sensor_id, temps(i))
                self.written += 1

    def remove(self) -> None:
        for p in self.probes:
            if p.kind == "w1":
                remove_sensor(self.base_dir, p.sensor_id)


@dataclass
class IioTree:
    """PT100 probes as MAX31865 devices ``<base_dir>/iio:deviceN``, labelled like the probe's
    ``device`` option (N counts the IIO probes in site order)."""

    base_dir: Path
    probes: Sequence[ProbeFile]
    written: int = 0

    def update(self, temps: Callable[[int], float]) -> None:
        n = 0
        for i, p in enumerate(self.probes):
            if p.kind == "iio":
                write_max31865(self.base_dir, n, temps(i), label=p.sensor_id)
                n += 1
                self.written += 1

    def remove(self) -> None:
        n = sum(p.kind == "iio" for p in self.probes)
        for k in range(n):
            remove_device(self.base_dir, k)


@dataclass
class GpioLines:
    """Breaker LEDs the simulator lights, shunt-trip lines it watches."""

    mock_dir: Path
    leds: Sequence[LedLine]
    shunts: Sequence[ShuntLine] = ()
    levels: dict[int, int] = field(default_factory=dict)

    def update_leds(self, codes: Callable[[int], int], wall_s: float) -> None:
        """Write each LED line's level for its breaker's pattern code at wall time ``wall_s``;
        only changed levels are written."""
        for i, led in enumerate(self.leds):
            level = pattern_level(codes(i), wall_s) ^ (1 if led.active_low else 0)
            if self.levels.get(led.offset) != level:
                write_line(self.mock_dir, led.offset, level)
                self.levels[led.offset] = level

    def shunt_active(self) -> list[int]:
        """Indexes (into ``shunts``) of the shunt-trip lines the runtime drives active."""
        out = []
        for i, s in enumerate(self.shunts):
            level = read_line(self.mock_dir, s.offset, default=1 if s.active_low else 0)
            if level ^ (1 if s.active_low else 0):
                out.append(i)
        return out

    def remove(self) -> None:
        for led in self.leds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(line_path(self.mock_dir, led.offset))
