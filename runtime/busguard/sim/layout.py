"""What a site file asks the simulator to bring to life: read from the validated SiteConfig.

- ``modbus_tcp`` meters: a TCP server on their host:port; ``modbus_rtu`` meters: a unit on
  their ``[[rs485]]`` line, whose ``port`` path becomes a pty symlink.
- ``w1`` probes: a sensor folder under ``[onewire] base_dir``.
- ``iio`` probes: a MAX31865 device folder under ``[iio] base_dir``, labelled ``device``.
- ``gpio`` breakers: their ``led_line`` under ``[gpio] mock_dir`` (lit by the model) and their
  ``shunt_trip_line`` (or a ``gpio_relay`` output named ``{breaker}.shunt_trip``), which the
  simulator watches: the runtime driving it opens the breaker in the model.
- ``modbus_write`` outputs: a unit with writable holding registers at their address (the BMS);
  a written cooling demand (``*.demand_pct``) cools the model's probes.
Devices of other drivers (``memory``...) are left alone. The physical wiring the model needs
(which rack heats which probe, which breaker feeds which rack) follows site.toml order:
probe i sits on rack i mod the number of meters, breaker j feeds rack j.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from busguard.config.site import DeviceConfig, SiteConfig
from busguard.sim.files import LedLine, ProbeFile, ShuntLine

DEFAULT_PROFILE = "generic-pqm"


@dataclass(frozen=True)
class SimMeter:
    name: str
    bus: str  # "tcp" or "rtu"
    profile: str
    unit_id: int = 1
    host: str = "127.0.0.1"
    port: int = 502
    line: str = ""  # the [[rs485]] name for RTU meters
    rated_a: float = 400.0


@dataclass(frozen=True)
class SimSetpoint:
    """A ``modbus_write`` target (e.g. the BMS cooling set point) the simulator stands in for:
    a unit with writable holding registers; what the runtime writes there acts on the model."""

    name: str
    output: str
    bus: str  # "tcp" or "rtu"
    unit_id: int
    address: int  # wire (0-based) address
    type: str
    word_order: str
    scale: float
    host: str = "127.0.0.1"
    port: int = 502
    line: str = ""


@dataclass(frozen=True)
class SimLine:
    name: str
    port: Path
    baudrate: int = 19200


@dataclass
class SimLayout:
    base_dir: Path
    meters: list[SimMeter] = field(default_factory=list)
    lines: dict[str, SimLine] = field(default_factory=dict)
    probes: list[ProbeFile] = field(default_factory=list)
    onewire_dir: Path | None = None
    iio_dir: Path | None = None
    gpio_dir: Path | None = None
    breakers: list[str] = field(default_factory=list)
    leds: list[LedLine] = field(default_factory=list)
    shunts: list[ShuntLine] = field(default_factory=list)
    setpoints: list[SimSetpoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"tcp_meters": {m.name: f"{m.host}:{m.port}" for m in self.meters
                               if m.bus == "tcp"},
                "rtu_meters": {m.name: f"{m.line}#{m.unit_id}" for m in self.meters
                               if m.bus == "rtu"},
                "rs485_lines": {n: str(line.port) for n, line in self.lines.items()},
                "probes": [p.name for p in self.probes],
                "onewire_dir": str(self.onewire_dir) if self.onewire_dir else None,
                "iio_dir": str(self.iio_dir) if self.iio_dir else None,
                "gpio_dir": str(self.gpio_dir) if self.gpio_dir else None,
                "setpoints": {sp.name: sp.output for sp in self.setpoints},
                "breakers": self.breakers, "skipped": self.skipped}


def _first(params: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if params.get(k) not in (None, ""):
            return params[k]
    return default


def _section(site: SiteConfig, name: str) -> Any:
    return site.sections.get(name)


def _meter(dev: DeviceConfig) -> SimMeter | None:
    p = dev.params
    profile = str(_first(p, "profile", default=DEFAULT_PROFILE))
    unit = int(_first(p, "unit", "unit_id", "slave", default=1))
    rated = float(_first(p, "rated_a", default=400.0))
    if dev.driver == "modbus_tcp":
        return SimMeter(dev.name, "tcp", profile, unit, str(_first(p, "host", default="127.0.0.1")),
                        int(_first(p, "port", default=502)), rated_a=rated)
    if dev.driver == "modbus_rtu":
        return SimMeter(dev.name, "rtu", profile, unit,
                        line=str(_first(p, "line", "rs485", "bus", default="")), rated_a=rated)
    return None


def layout_of(site: SiteConfig) -> SimLayout:
    lay = SimLayout(site.base_dir)
    for dev in site.devices_of("meter"):
        m = _meter(dev)
        if m is None:
            lay.skipped.append(f"{dev.name} ({dev.driver})")
        else:
            lay.meters.append(m)
    for dev in site.devices_of("output"):
        if dev.driver == "modbus_write":
            p = dev.params
            lay.setpoints.append(SimSetpoint(
                dev.name, str(p["output"]), "rtu" if p.get("line") else "tcp", int(p["unit"]),
                int(p["address"]) - int(p.get("address_base") or 0), str(p["type"]),
                str(p["word_order"]), float(p["scale"]), str(p.get("host") or "127.0.0.1"),
                int(p.get("port") or 502), str(p.get("line") or "")))
    used_lines = {m.line for m in lay.meters} | {s.line for s in lay.setpoints}
    for entry in _section(site, "rs485") or ():
        name = entry.get("name")
        if name and name in used_lines:
            lay.lines[name] = SimLine(name, site.resolve(str(entry["port"])),
                                      int(entry.get("baudrate") or 19200))
    ow = _section(site, "onewire")
    if ow is not None:
        lay.onewire_dir = site.resolve(str(ow.get("base_dir") or "/sys/bus/w1/devices"))
    iio = _section(site, "iio")
    if iio is not None:
        lay.iio_dir = site.resolve(str(iio.get("base_dir") or "/sys/bus/iio/devices"))
    for dev in site.devices_of("probe"):
        sid = _first(dev.params, "sensor_id", "id", "sensor", "serial")
        if dev.driver == "w1" and sid:
            lay.probes.append(ProbeFile(dev.name, str(sid)))
        elif dev.driver == "iio" and lay.iio_dir is not None:
            lay.probes.append(ProbeFile(dev.name, str(dev.params["device"]), kind="iio"))
        else:
            lay.skipped.append(f"{dev.name} ({dev.driver})")
    gp = _section(site, "gpio")
    if gp is not None and gp.get("backend") == "mock" and gp.get("mock_dir"):
        lay.gpio_dir = site.resolve(str(gp["mock_dir"]))
    for j, dev in enumerate(site.devices_of("breaker")):
        lay.breakers.append(dev.name)
        if dev.driver != "gpio":
            continue
        p = dev.params
        lay.leds.append(LedLine(dev.name, int(p["led_line"]), bool(p.get("led_active_low"))))
        if p.get("shunt_trip_line") is not None:
            lay.shunts.append(ShuntLine(dev.name, int(p["shunt_trip_line"]),
                                        bool(p.get("shunt_trip_active_low"))))
        if p.get("rating_a") and lay.meters:  # breaker j feeds rack j: size the rack to it
            k = j % len(lay.meters)
            lay.meters[k] = replace(lay.meters[k], rated_a=float(p["rating_a"]))
    for dev in site.devices_of("output"):  # a shunt-trip coil wired as a plain relay output
        out = str(dev.params.get("output", ""))
        name = out[: -len(".shunt_trip")]
        if dev.driver == "gpio_relay" and out.endswith(".shunt_trip") and name in lay.breakers \
                and all(s.breaker != name for s in lay.shunts):
            lay.shunts.append(ShuntLine(name, int(dev.params["line"]),
                                        bool(dev.params.get("active_low"))))
    return lay
