"""The validated site as frozen objects (SiteConfig and its parts) and the core tables'
options; :mod:`busguard.config.site` reads a file into them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.clock import SPIN_TARGET_S
from busguard.config.params import Param
from busguard.errors import ConfigProblem
from busguard.image import PointSpec
from busguard.registry import DEVICE_KINDS

NAME = Param(str, doc="unique name; letters, digits, '-', '_' and '.'")

SITE_PARAMS = {
    "name": Param(str, doc="site name shown in status views"),
    "description": Param(str, default=""),
    "nominal_voltage_ll_v": Param(float, default=None, minval=100.0, maxval=1000.0, unit="V",
                                  doc="nominal line-to-line voltage of the busway (e.g. 415 or "
                                      "480); required by blocks that judge voltage "
                                      "(power_quality) and used by the simulator"),
    "nominal_hz": Param(float, default=None, choices=(50.0, 60.0), unit="Hz",
                        doc="nominal frequency; required by blocks that judge frequency "
                            "(power_quality) and used by the simulator"),
}
SCAN_PARAMS = {
    "period_ms": Param(float, default=10.0, minval=1.0, maxval=1000.0, unit="ms",
                       doc="fixed scan period"),
    "stale_after_polls": Param(float, default=3.0, minval=1.0, maxval=100.0,
                               doc="a point is stale once older than this many poll periods"),
    "stats_window": Param(int, default=6000, minval=100, maxval=1_000_000,
                          doc="scans kept for the lateness percentiles"),
    "spin_ms": Param(float, default=1.0, minval=0.0, maxval=5.0, unit="ms",
                     doc="wake up to this long before each deadline and busy-wait the rest, "
                         "as long as this machine's recent wake-ups need for a p99 lateness "
                         f"of {SPIN_TARGET_S * 1000:g} ms: "
                         "keeps a halted CPU's wake-up delay out of the scan's lateness (VMs, "
                         "deep C-states) for up to this much CPU per cycle; see "
                         "docs/benchmarks.md"),
    "io": Param(str, default="thread", choices=("thread", "process"),
                doc="where the input drivers and the DCIM server run: threads beside the "
                    "scan, or their own process (for heavy I/O; see docs/architecture.md)"),
}
PATHS_PARAMS = {
    "state_dir": Param(str, default="var/lib/busguard", doc="retained state directory"),
    "fault_log": Param(str, default="var/log/power/distribution_fault.log",
                       doc="the greppable fault log, one line per raise and clear"),
    "fault_log_format": Param(str, default="text", choices=("text", "json"),
                              doc="text: the greppable line; json: one JSON object per line "
                                  "(the same fields, for Loki, Vector or jq)"),
}
PLUGINS_PARAMS = {"disabled": Param(list, item=str, default=(),
                                    doc="entry-point names of plugins not to load")}
CORE_TABLES = ("site", "scan", "paths", "plugins", "block", *DEVICE_KINDS)


@dataclass(frozen=True)
class ScanConfig:
    """The ``[scan]`` table's values, read from :data:`SCAN_PARAMS` (their defaults are
    declared there, once)."""

    period_ms: float
    stale_after_polls: float
    stats_window: int
    io: str
    spin_ms: float

    @property
    def period_s(self) -> float:
        return self.period_ms / 1000.0


class Entry:
    """What a table entry of the site (a device, a block) says about itself: its ``path``
    (e.g. ``meter[2]``) in ``file``, so a problem with one of its options names both."""

    path: str
    file: str

    def problem(self, option: str, message: str) -> ConfigProblem:
        """A problem with ``option`` of this entry (``meter[2].backoff_max_ms: ...``)."""
        return ConfigProblem(self.file, f"{self.path}.{option}", message)


@dataclass(frozen=True)
class DeviceConfig(Entry):
    """One [[meter]], [[probe]], [[breaker]] or [[output]] entry."""

    kind: str
    index: int
    name: str
    driver: str
    poll_ms: float
    params: Mapping[str, Any]
    path: str
    file: str
    slot: int | None = None  # register map slot (`slot`); None: assigned (map.lock)
    unit_id: int | None = None  # Modbus unit id of its own view (`unit_id`); None: default

    @property
    def poll_s(self) -> float:
        return self.poll_ms / 1000.0


@dataclass(frozen=True)
class BlockConfig(Entry):
    """One [[block]] entry."""

    index: int
    name: str
    type: str
    params: Mapping[str, Any]
    path: str
    file: str


@dataclass(frozen=True)
class PublisherConfig:
    section: str
    params: Mapping[str, Any]
    file: str


@dataclass(frozen=True)
class SiteConfig:
    """A validated site: everything the runtime needs, nothing mutable."""

    file: str
    base_dir: Path
    name: str
    description: str
    scan: ScanConfig
    state_dir: Path
    fault_log: Path
    disabled_plugins: tuple[str, ...]
    devices: tuple[DeviceConfig, ...]
    blocks: tuple[BlockConfig, ...]
    publishers: Mapping[str, PublisherConfig]
    sections: Mapping[str, Any]
    points: tuple[PointSpec, ...]
    config_hash: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # the site's electrical nominals ([site]); None when the file does not say
    nominal_voltage_ll_v: float | None = None
    nominal_hz: float | None = None
    fault_log_format: str = "text"  # [paths] fault_log_format

    def devices_of(self, kind: str) -> tuple[DeviceConfig, ...]:
        return tuple(d for d in self.devices if d.kind == kind)

    def device(self, name: str) -> DeviceConfig:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the site file's folder unless absolute."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def summary(self) -> dict[str, Any]:
        kinds = {k: [d.name for d in self.devices_of(k)] for k in DEVICE_KINDS}
        return {"file": self.file, "site": self.name, "period_ms": self.scan.period_ms,
                **{f"{k}s": v for k, v in kinds.items()},
                "blocks": [f"{b.name} ({b.type})" for b in self.blocks],
                "publishers": sorted(self.publishers), "points": len(self.points),
                "config_hash": self.config_hash}
