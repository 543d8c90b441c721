"""The probe driver ``iio``: an RTD (PT100/PT1000) or other temperature channel through Linux IIO.

For an IPC or a Raspberry Pi with a MAX31865 on SPI (kernel driver ``max31865``, device tree
overlay), or any IIO temperature sensor. A read of ``in_temp_raw`` starts a conversion in the
kernel (about 60-75 ms for the MAX31865), so probes are read in one worker thread per IIO
folder (``[iio] base_dir``), never in the scan. The point is ``{probe}.temp_c``, like a 1-Wire
probe's, so every thermal block takes either kind.

Quality, as for 1-Wire probes:

- device folder gone (driver unbound, board unplugged) or never found: NOT_CONNECTED, and it
  is looked up again (by label or name) on every poll until it is back;
- fault: the MAX31865's fault register (``fault_ovuv``), an RTD code at 0 or full scale (a
  shorted or open RTD), or a read the kernel refuses (EIO): BAD, the last value kept;
- out of range (``min_c``..``max_c``): BAD;
- stuck: the very same raw code for ``stuck_s`` seconds (a 15-bit converter on a live busbar
  always moves by a count or two): BAD until it moves again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from busguard.clock import Clock
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.iio.rtd import FULL_SCALE, temperature_of_code
from busguard.iio.tree import find_device, read_attr
from busguard.image import ImageWriter, Quality
from busguard.probebus import BusProbe, ProbeBus, ProbeState, folder_section

log = logging.getLogger("busguard.iio")

DEFAULT_BASE_DIR = "/sys/bus/iio/devices"
IIO_SECTION_PARAMS = folder_section(DEFAULT_BASE_DIR, "IIO devices", "var/sim/iio/devices")
CONVERSION_S = 0.1  # a MAX31865 one-shot conversion with the 50 Hz filter: 75 ms


class IioReader(ProbeState):
    """One probe: where its device is, how to convert, and what it read last."""

    log = log

    def __init__(self, name: str, point: str, params: Mapping[str, Any], poll_s: float,
                 base_dir: Path) -> None:
        self.name = name
        self.point = point
        self.device = str(params["device"])
        self.channel = str(params["channel"])
        self.conversion = str(params["conversion"])
        self.r_ref = float(params["r_ref_ohm"])
        self.r0 = float(params["r0_ohm"])
        self.min_c = float(params["min_c"])
        self.max_c = float(params["max_c"])
        self.stuck_s = float(params["stuck_s"])
        self.poll_s = poll_s
        self.base_dir = base_dir
        self.folder: Path | None = None
        self.next_due = -math.inf
        self._raw: str | None = None
        self._raw_since = 0.0
        self.counts = {"reads": 0, "good": 0, "faults": 0, "not_connected": 0,
                       "out_of_range": 0, "stuck": 0}

    def where(self) -> str:
        return f"IIO {self.device}"

    def _bad(self, image: ImageWriter, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        image.set_quality((self.point,), Quality.BAD)
        self._set_state(f"bad ({kind.replace('_', ' ')})", detail)

    def _gone(self, image: ImageWriter, why: str) -> None:
        self.folder = None
        self._raw = None
        self.counts["not_connected"] += 1
        image.set_quality((self.point,), Quality.NOT_CONNECTED)
        self._set_state("not-connected", why)

    def read(self, image: ImageWriter, clock: Clock) -> None:
        """One read (blocks for a conversion on real hardware: worker thread only)."""
        self.counts["reads"] += 1
        if self.folder is None or not self.folder.is_dir():
            self.folder, why = find_device(self.base_dir, self.device)
            if self.folder is None:
                self._gone(image, why)
                return
        folder = self.folder
        ch = self.channel
        try:
            raw = read_attr(folder, f"in_{ch}_raw")
            if raw is None:
                milli = read_attr(folder, f"in_{ch}_input")
                if milli is None:
                    if not folder.is_dir():
                        raise FileNotFoundError(folder)
                    self._bad(image, "faults", f"{folder.name} has no in_{ch}_raw or "
                                               f"in_{ch}_input: not a temperature channel")
                    return
                raw_key, temp = milli, float(milli) / 1000.0
            else:
                raw_key, temp = raw, self._convert(folder, raw)
            fault = read_attr(folder, "fault_ovuv")
        except FileNotFoundError:
            self._gone(image, "device folder gone (driver unbound or board removed)")
            return
        except (OSError, ValueError) as exc:
            self._bad(image, "faults", f"read refused: {exc}")
            return
        now = clock.monotonic()
        if fault not in (None, "0"):
            self._bad(image, "faults", "MAX31865 fault register set (over/under-voltage)")
            return
        if temp is None:
            self._bad(image, "faults", f"RTD code {raw} at the end of the scale: open or "
                                       f"shorted RTD")
            return
        if not self.min_c <= temp <= self.max_c:  # NaN fails too
            self._bad(image, "out_of_range", f"{temp:.2f} C outside {self.min_c:g}.."
                                             f"{self.max_c:g} C")
            return
        if raw_key != self._raw:
            self._raw, self._raw_since = raw_key, now
        elif self.stuck_s > 0 and now - self._raw_since >= self.stuck_s:
            self._bad(image, "stuck", f"raw value {raw_key} unchanged for "
                                      f"{now - self._raw_since:.0f} s")
            return
        self.counts["good"] += 1
        image.write(self.point, temp, Quality.GOOD, t_mono=now)
        self._set_state("good")

    def _convert(self, folder: Path, raw: str) -> float | None:
        """Degrees C from the raw text; None for a MAX31865 code at either end of its scale."""
        conv = self.conversion
        offset = read_attr(folder, f"in_{self.channel}_offset")
        if conv == "auto":
            conv = "rtd" if offset is None and read_attr(folder, "name") == "max31865" \
                else "abi"
        if conv == "rtd":
            code = int(raw)
            if code <= 0 or code >= FULL_SCALE - 1:
                return None
            return temperature_of_code(code, self.r_ref, self.r0)
        scale = float(read_attr(folder, f"in_{self.channel}_scale") or 1.0)
        return (float(raw) + float(offset or 0.0)) * scale / 1000.0

    def stats(self) -> dict[str, Any]:
        return {"device": self.device, "folder": self.folder.name if self.folder else None,
                "state": self.state, **self.counts}


class IioBus(ProbeBus):
    """One worker thread reading every IIO probe under one base folder, each on its period."""

    label = "IIO folder"
    thread_prefix = "busguard-iio"

    def poll_once(self, now: float | None = None, force: bool = False) -> float:
        """Read every due probe (all with ``force``); returns the next deadline."""
        now = time.monotonic() if now is None else now
        with self._lock:
            readers = list(self.readers)
        for r in readers:
            if force or now >= r.next_due:
                r.next_due = now + r.poll_s
                r.read(self.image, self.clock)
        self.passes += 1
        return min((r.next_due for r in readers), default=now + 1.0)


class IioProbe(BusProbe):
    """A temperature channel of a Linux IIO device (MAX31865 RTD): point ``{probe}.temp_c``."""

    type_name = "iio"
    bus_class = IioBus
    bus_key = "iio.bus"
    conversion_s = CONVERSION_S
    point_doc = "probe temperature (IIO)"
    params: ClassVar[Mapping[str, Param]] = {
        "device": Param(str, doc="the IIO device's label (device tree), its name (e.g. "
                                 "'max31865', when it is the only one) or folder "
                                 "('iio:device0')"),
        "channel": Param(str, default="temp", doc="channel files in_<channel>_raw/_scale/"
                                                  "_offset (e.g. 'temp0')"),
        "conversion": Param(str, default="auto", choices=("auto", "rtd", "abi"),
                            doc="rtd: MAX31865 code to degC by the IEC 60751 curve; abi: "
                                "(raw + offset) * scale m°C; auto: rtd for a max31865 "
                                "without in_temp_offset"),
        "r_ref_ohm": Param(float, default=430.0, above=0.0, unit="ohm",
                           doc="the board's reference resistor (430 for PT100, 4300 for "
                               "PT1000 on common boards)"),
        "r0_ohm": Param(float, default=100.0, above=0.0, unit="ohm",
                        doc="RTD resistance at 0 degC (100: PT100, 1000: PT1000)"),
        "min_c": Param(float, default=-50.0, unit="degC", doc="below: BAD (out of range)"),
        "max_c": Param(float, default=250.0, unit="degC", doc="above: BAD (out of range)"),
        "stuck_s": Param(float, default=600.0, minval=0.0, unit="s",
                         doc="the same raw value this long: BAD (stuck); 0 disables"),
    }

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.base_dir = site.resolve(site.sections["iio"]["base_dir"])
        self.reader = IioReader(self.name, f"{self.name}.temp_c", config.params,
                                config.poll_s, self.base_dir)


def register_types(registry: Any) -> None:
    """Probe driver ``iio`` and its table [iio]."""
    registry.add_driver(IioProbe)
    registry.add_section("iio", IIO_SECTION_PARAMS,
                         doc="Linux IIO: base_dir of the IIO devices folder")
