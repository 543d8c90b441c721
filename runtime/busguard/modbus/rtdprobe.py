"""The probe driver ``modbus_rtd``: one channel of an RTD input module on RS-485 as a probe.

Why a probe and not a meter: the thermal blocks take ``[[probe]]`` devices and read
``{probe}.temp_c``. An IPC without SPI reads its PT100s through a Modbus RTD module (e.g.
Advantech ADAM-4015, profile ``adam-4015``); each ``[[probe]] driver = "modbus_rtd"`` names the
module's line, unit and ``channel``, and publishes that channel as ``{probe}.temp_c``, so a
thermal interlock takes 1-Wire, IIO and Modbus probes alike. Everything else (requests
serialised on the shared line, timeouts as errno 110, exception 0x02, backoff, comm points,
calibration) is the ``modbus_rtu`` meter driver's own code.

Quality: a module reports an open (burnt-out) or out-of-range RTD as the end of its scale
(0xFFFF, or 0x0000 below the range). Those counts are BAD here, never a temperature: an open
PT100 must raise BG-INPUT, not trip the busway at "200 C".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from busguard import calibration as calib
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.errors import ConfigProblem
from busguard.image import PointSpec, Quality
from busguard.modbus.driver import CompiledBlock, ModbusRtuMeter
from busguard.modbus.planner import ReadBlock
from busguard.modbus.profiles import Profile

SCALE_ENDS = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF)}


@dataclass(frozen=True)
class EndsBlock(CompiledBlock):
    """A compiled read whose points are BAD when their raw count is at an end of the scale."""

    # per point: (register offset, low end, high end); ends None for types without them
    ends: tuple[tuple[int, int | None, int | None], ...] = ()

    def items(self, regs: list[int]) -> list[tuple[str, float, Quality]]:
        out = super().items(regs)
        for i, (off, low, high) in enumerate(self.ends):
            if low is None or high is None:
                continue
            raw = regs[off]
            if low < 0 and raw >= 0x8000:
                raw -= 0x10000
            if raw in (low, high):
                name, value, _q = out[i]
                out[i] = (name, value, Quality.BAD)
        return out


class ModbusRtdProbe(ModbusRtuMeter):
    """Channel ``channel`` of an RTD input module on an ``[[rs485]]`` line: ``{probe}.temp_c``."""

    type_name = "modbus_rtd"
    kind = "probe"
    io_process_ok = True
    default_poll_ms = 1000.0
    params: ClassVar[Mapping[str, Param]] = {
        **ModbusRtuMeter.params,
        "profile": Param(str, default="adam-4015",
                         doc="the module's profile (bundled name or .toml path); its points "
                             "are ch<N>_temp_c"),
        "channel": Param(int, default=0, minval=0, maxval=63, doc="input channel of the module"),
    }

    @staticmethod
    def selected(profile: Profile, params: Mapping[str, Any]) -> list:
        name = f"ch{params['channel']}_temp_c"
        return [profile.point(name)] if name in profile else []

    @classmethod
    def check(cls, config: DeviceConfig, site: SiteConfig, profile: Profile
              ) -> list[ConfigProblem]:
        out = super().check(config, site, profile)
        ch = config.params["channel"]
        if f"ch{ch}_temp_c" not in profile:
            chans = [n for n in profile.names if n.startswith("ch") and n.endswith("_temp_c")]
            out.append(config.problem("channel",
                                      f"got {ch}; profile {profile.name!r} has "
                                      + (f"channels {chans[0][2:-7]}..{chans[-1][2:-7]}"
                                         if chans else "no ch<N>_temp_c points")))
        return out

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        specs = super().declare_points(config, site)
        point = f"{config.name}.ch{config.params['channel']}_temp_c"
        return [PointSpec(f"{config.name}.temp_c", source=s.source, unit="degC",
                          max_age_s=s.max_age_s, doc=f"probe temperature (module channel "
                          f"{config.params['channel']})") if s.name == point else s
                for s in specs]

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.full = {pd.name: f"{self.name}.temp_c" for pd in self.points}

    def _compile(self, block: ReadBlock, cal: Mapping[str, calib.Calibration]) -> CompiledBlock:
        c = super()._compile(block, cal)
        if isinstance(c, EndsBlock):
            return c
        ends = tuple((pd.address - block.address, *SCALE_ENDS.get(pd.type, (None, None)))
                     for pd in block.points)
        wrapped = EndsBlock(c.block, c.decoder, c.names, c.factors, c.pf4q, c.quadrant,
                            ends=ends)
        self._compiled[id(block)] = wrapped
        return wrapped
