"""The 1-Wire probe driver ``w1`` (DS18B20 family) through w1thermsensor.

Reading a DS18B20 takes up to 750 ms (a 12-bit conversion), so probes are read in a worker
thread, one per bus folder (``[onewire] base_dir``), never in the scan. Each read ends in one of:

- a temperature: GOOD;
- CRC failure (``crc=.. NO``) or an all-zero scratchpad (w1thermsensor's SensorNotReadyError):
  BAD, the last value is kept for operators;
- the sensor's folder or w1_slave gone (NoSensorFoundError): NOT_CONNECTED; it is found again
  as soon as it reappears (the path is re-checked on every poll);
- exactly 85.000 degC (w1thermsensor raises ResetValueError): the DS18B20 power-on value, *or*
  a hot busbar. It is taken as a real temperature when it follows from the previous readings
  (see :func:`plausible_85`), otherwise it is BAD. A sensor that just reappeared has no history:
  its first 85.0 is the power-on value.

The base folder: w1thermsensor builds each sensor's path from the class attribute
``W1ThermSensor.BASE_DIRECTORY``. Setting that attribute on the library class would be global
state shared by every bus (and every test), so each bus gets a subclass with its own
``BASE_DIRECTORY`` (:func:`sensor_class`); everything else is the library's own code path.

Importing w1thermsensor runs ``modprobe w1-gpio w1-therm`` unless
``W1THERMSENSOR_NO_KERNEL_MODULE=1``: the runtime sets it before the (lazy) import, so the driver
works where the modules are loaded by the OS, and where they are absent (tests, containers,
hardened units). Loading kernel modules is the OS's job (dtoverlay=w1-gpio, modules-load.d).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from busguard.clock import Clock
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.errors import ConfigError, DriverError
from busguard.image import ImageWriter, PointSpec, Quality
from busguard.probebus import BusProbe, ProbeBus, ProbeState, folder_section
from busguard.w1.tree import FAMILIES, POWER_ON_C, split_sensor_id

log = logging.getLogger("busguard.w1")

DEFAULT_BASE_DIR = "/sys/bus/w1/devices"
ONEWIRE_SECTION_PARAMS = folder_section(DEFAULT_BASE_DIR, "w1 sysfs devices",
                                        "var/sim/w1/devices")
CONVERSION_S = 0.75  # worst case 12-bit conversion
#: An 85.0 reading within this tolerance of what the previous reading allows is accepted.
TOLERANCE_C = 1.0


def load_w1thermsensor() -> ModuleType:
    """Import w1thermsensor without letting it run modprobe."""
    os.environ["W1THERMSENSOR_NO_KERNEL_MODULE"] = "1"
    try:
        import w1thermsensor
    except ImportError as exc:
        raise DriverError("the w1 probe driver needs w1thermsensor: pip install "
                          "'w1thermsensor>=2.3,<3'") from exc
    return w1thermsensor


def sensor_class(base_dir: Path) -> type:
    """A W1ThermSensor subclass that reads under ``base_dir`` (one per bus)."""
    w1 = load_w1thermsensor()
    return type("BusguardW1ThermSensor", (w1.W1ThermSensor,),
                {"BASE_DIRECTORY": Path(base_dir), "__module__": __name__})


def plausible_85(last_good: tuple[float, float] | None, now: float, max_rise_c_per_s: float,
                 window_s: float) -> bool:
    """Is an exact 85.000 degC reading a real temperature, given the last good reading?

    ``last_good`` is ``(value_c, t)``. Yes when that reading is recent (within ``window_s``)
    and 85 degC is reachable from it at ``max_rise_c_per_s`` (plus a 1 degC tolerance): a busbar
    at 84.9 degC that reads 85.0 is hot, not reset; a probe at 41 degC a second ago that reads
    85.0 has just been powered up. No history (first read, or just reappeared): not plausible.
    """
    if last_good is None:
        return False
    value, t = last_good
    dt = now - t
    if dt < 0 or dt > window_s:
        return False
    return abs(POWER_ON_C - value) <= max_rise_c_per_s * dt + TOLERANCE_C


def parse_sensor(sensor_id: str, sensor: str | None) -> tuple[int, str, list[str]]:
    """(family code, 12-hex serial, problems) from the ``sensor_id`` / ``sensor_type`` options."""
    problems: list[str] = []
    family = FAMILIES.get(sensor) if sensor else None
    serial = ""
    if "-" in sensor_id:
        try:
            fam, serial = split_sensor_id(sensor_id)
        except ValueError as exc:
            return 0, "", [str(exc)]
        known = {v: k for k, v in FAMILIES.items()}
        if fam not in known:
            problems.append(f"family code {fam:02x} of {sensor_id!r} is not a 1-Wire temperature "
                            f"sensor; known: " + ", ".join(f"{v:02x} ({k})"
                                                          for k, v in FAMILIES.items()))
        elif family is not None and family != fam:
            problems.append(f"{sensor_id!r} has family code {fam:02x} ({known[fam]}) but "
                            f"sensor_type = {sensor!r} (family {family:02x})")
        family = fam
    else:
        if len(sensor_id) != 12 or any(c not in "0123456789abcdefABCDEF" for c in sensor_id):
            problems.append(f"got {sensor_id!r}; expected the kernel's folder name "
                            f"'28-0000075a3c1f' (family-serial)")
        elif family is None:
            problems.append(f"{sensor_id!r} has no family code; write it as 'FF-{sensor_id}' "
                            f"or set sensor_type = 'DS18B20' (or another type)")
        serial = sensor_id.lower()
    return family or 0, serial, problems


def kernel_sensor_id(sensor_id: str, sensor_type: str | None = None) -> str:
    """The kernel's folder name for a probe's options (``"28-0000075a3c1f"``), e.g. for the
    simulator to create it; ValueError when the options do not name a sensor."""
    family, serial, problems = parse_sensor(sensor_id, sensor_type)
    if problems:
        raise ValueError("; ".join(problems))
    return f"{family:02x}-{serial}"


class ProbeReader(ProbeState):
    """One probe on a bus: its schedule, library object, history and counters."""

    log = log

    def __init__(self, name: str, point: str, family: int, serial: str, poll_s: float,
                 max_rise_c_per_s: float, resolution: int | None) -> None:
        self.name = name
        self.point = point
        self.family = family
        self.serial = serial
        self.sensor_id = f"{family:02x}-{serial}"
        self.poll_s = poll_s
        self.max_rise = max_rise_c_per_s
        self.window_s = max(10.0, 3 * poll_s)
        self.resolution = resolution
        self.next_due = -math.inf
        self.sensor: Any = None
        self.last_good: tuple[float, float] | None = None
        self.counts = {"reads": 0, "good": 0, "crc_errors": 0, "not_connected": 0,
                       "reset_rejected": 0, "reset_accepted": 0, "errors": 0}
        self.read_ms_last = 0.0
        self.read_ms_max = 0.0

    def where(self) -> str:
        return self.sensor_id

    def read(self, cls: type, w1: ModuleType, image: ImageWriter, clock: Clock,
             allow_resolution_write: bool) -> None:
        """One read (blocking up to a conversion time on real hardware; worker thread)."""
        self.counts["reads"] += 1
        t0 = time.perf_counter()
        try:
            if self.sensor is None:
                self.sensor = cls(w1.Sensor(self.family), self.serial)
                self._apply_resolution(w1, allow_resolution_write)
            value = float(self.sensor.get_temperature())
        except w1.ResetValueError:
            value = POWER_ON_C
        except w1.NoSensorFoundError:
            self._finish(t0)
            self.counts["not_connected"] += 1
            self.last_good = None  # when it comes back it has been powered up again
            image.set_quality((self.point,), Quality.NOT_CONNECTED)
            base = Path(cls.BASE_DIRECTORY)  # type: ignore[attr-defined]
            self._set_state("not-connected", "no w1_slave file (sensor gone from the bus)"
                            if base.is_dir() else f"no 1-Wire bus folder {base} (kernel modules "
                            f"w1-gpio/w1-therm not loaded? dtoverlay=w1-gpio on a Raspberry Pi)")
            return
        except w1.SensorNotReadyError:
            self._finish(t0)
            self.counts["crc_errors"] += 1
            image.set_quality((self.point,), Quality.BAD)
            self._set_state("bad", "CRC check failed or empty scratchpad")
            return
        except (w1.W1ThermSensorError, ValueError, IndexError, OSError) as exc:
            self._finish(t0)
            self.counts["errors"] += 1
            image.set_quality((self.point,), Quality.BAD)
            self._set_state("bad", f"unreadable: {exc}")
            return
        self._finish(t0)
        now = clock.monotonic()
        if value == POWER_ON_C:
            if plausible_85(self.last_good, now, self.max_rise, self.window_s):
                self.counts["reset_accepted"] += 1
            else:
                self.counts["reset_rejected"] += 1
                image.set_quality((self.point,), Quality.BAD)
                self._set_state("bad", "85.000 C power-on value (does not follow from the "
                                "previous readings)")
                return
        self.counts["good"] += 1
        self.last_good = (value, now)
        image.write(self.point, value, Quality.GOOD, t_mono=now)
        self._set_state("good")

    def _finish(self, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000.0
        self.read_ms_last = ms
        self.read_ms_max = max(self.read_ms_max, ms)

    def _apply_resolution(self, w1: ModuleType, allowed: bool) -> None:
        if self.resolution is None:
            return
        try:
            current = self.sensor.get_resolution()
        except (w1.W1ThermSensorError, ValueError, IndexError):
            return
        if current == self.resolution:
            return
        if not allowed:
            log.info("probe %s: resolution %d bit configured, sensor at %d; not written "
                     "(not a sysfs tree)", self.name, self.resolution, current)
            return
        try:
            self.sensor.set_resolution(self.resolution)
        except (w1.W1ThermSensorError, ValueError) as exc:
            log.warning("probe %s: cannot set resolution to %d bit: %s", self.name,
                        self.resolution, exc)

    def stats(self) -> dict[str, Any]:
        return {"sensor_id": self.sensor_id, "state": self.state, **self.counts,
                "read_ms_last": round(self.read_ms_last, 3),
                "read_ms_max": round(self.read_ms_max, 3)}


class W1Bus(ProbeBus):
    """One worker thread reading every probe under one base folder, each on its period."""

    label = "1-Wire bus"
    thread_prefix = "busguard-w1"

    def __init__(self, base_dir: Path, image: ImageWriter, clock: Clock,
                 threaded: bool = True) -> None:
        super().__init__(base_dir, image, clock, threaded)
        self.w1 = load_w1thermsensor()
        self.cls = sensor_class(self.base_dir)
        self.real_sysfs = str(self.base_dir.resolve()).startswith("/sys/")
        self.overruns = 0
        self.pass_ms_last = 0.0
        self.pass_ms_max = 0.0
        self._warned_slow = False
        self._passed = threading.Condition()

    def poll_once(self, now: float | None = None, force: bool = False) -> float:
        """Read every due probe (all with ``force``); returns the next deadline (ticks)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            readers = list(self.readers)
        t0 = time.perf_counter()
        n_read = 0
        for r in readers:
            if force or now >= r.next_due:
                late = r.next_due != -math.inf and now - r.next_due > r.poll_s
                if late:
                    self.overruns += 1
                r.next_due = now + r.poll_s if late or r.next_due == -math.inf \
                    else r.next_due + r.poll_s
                r.read(self.cls, self.w1, self.image, self.clock, self.real_sysfs)
                n_read += 1
        self.pass_ms_last = (time.perf_counter() - t0) * 1000.0
        self.pass_ms_max = max(self.pass_ms_max, self.pass_ms_last)
        shortest = min((r.poll_s for r in readers), default=math.inf)
        if self.pass_ms_last > shortest * 1000.0 and not self._warned_slow:
            self._warned_slow = True
            log.warning("1-Wire bus %s: reading %d probes took %.0f ms, longer than the "
                        "shortest poll_ms (%.0f): readings will come late and may go stale; "
                        "raise poll_ms or lower the resolution (a 12-bit conversion takes up "
                        "to 750 ms, 9-bit 94 ms)", self.base_dir, n_read, self.pass_ms_last,
                        shortest * 1000.0)
        with self._passed:
            self.passes += 1
            self._passed.notify_all()
        return min((r.next_due for r in readers), default=now + 1.0)

    def wait_passes(self, n: int, timeout: float = 5.0, since: int | None = None) -> bool:
        """Block until ``n`` passes more than ``since`` (default: now) have run (for tests of
        the threaded bus)."""
        with self._passed:
            target = (self.passes if since is None else since) + n
            return self._passed.wait_for(lambda: self.passes >= target, timeout)

    def stats(self) -> dict[str, Any]:
        return {"base_dir": str(self.base_dir), "passes": self.passes,
                "overruns": self.overruns, "probes": len(self.readers),
                "pass_ms_last": round(self.pass_ms_last, 3),
                "pass_ms_max": round(self.pass_ms_max, 3)}


class W1Probe(BusProbe):
    """A DS18B20-family probe on the Linux w1 bus: point ``{probe}.temp_c``."""

    type_name = "w1"
    bus_class = W1Bus
    bus_key = "w1.bus"
    conversion_s = CONVERSION_S
    params: ClassVar[Mapping[str, Param]] = {
        "sensor_id": Param(str, doc="the kernel's folder name, e.g. '28-0000075a3c1f'"),
        "sensor_type": Param(str, default=None, choices=tuple(FAMILIES),
                             doc="sensor type (default: from the family code of sensor_id)"),
        "resolution": Param(int, default=None, minval=9, maxval=12, unit="bit",
                            doc="set the conversion resolution at start (real sysfs only)"),
        "max_rise_c_per_s": Param(float, default=1.0, above=0.0, unit="degC/s",
                                  doc="fastest plausible rise; decides whether an exact "
                                      "85.000 degC is real or the power-on value"),
    }

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        p = config.params
        _fam, _serial, problems = parse_sensor(p["sensor_id"] or "", p["sensor_type"])
        if problems:
            raise ConfigError([config.problem("sensor_id", m)
                               for m in problems])
        return super().declare_points(config, site)

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        family, serial, _ = parse_sensor(p["sensor_id"], p["sensor_type"])
        self.reader = ProbeReader(self.name, f"{self.name}.temp_c", family, serial,
                                  config.poll_s, p["max_rise_c_per_s"], p["resolution"])
        self.base_dir = site.resolve(site.sections["onewire"]["base_dir"])

    def stats(self) -> dict[str, Any]:
        out = self.reader.stats()
        if self.bus is not None:
            out["bus"] = self.bus.stats()
        return out


def register_types(registry: Any) -> None:
    """Probe ``w1`` (the default probe driver) and the shared table [onewire]."""
    registry.add_driver(W1Probe, default=True)
    registry.add_section("onewire", ONEWIRE_SECTION_PARAMS,
                         doc="1-Wire bus: base_dir of the w1 sysfs devices folder")
