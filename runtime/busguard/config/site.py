"""Reading site.toml into frozen, typed objects, with every problem reported at once.

Layout of a site file (see docs/configuration.md)::

    [site]            name, description
    [scan]            period_ms, stale_after_polls, stats_window, spin_ms, io
    [paths]           state_dir, fault_log (relative paths are relative to the site file)
    [plugins]         disabled = ["entry-point-name", ...]
    [[meter]] [[probe]] [[breaker]] [[output]]
                      devices: name, driver, poll_ms and the driver type's own options
    [[block]]         logic blocks, run in file order: name, type and the type's own options
    [<publisher>]     e.g. [modbus_server], owned by a publisher type
    [<shared>]        e.g. [gpio], [onewire], [[rs485]], owned by driver plugins

Key paths in messages are ``table[index].option`` with 0-based indexes, as in the file.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from busguard.clock import SPIN_TARGET_S
from busguard.config.params import REQUIRED, Param, Reference, Section, Values, bind_choices
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec
from busguard.registry import DEVICE_KINDS, TypeRegistry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

NAME = Param(str, doc="unique name; letters, digits, '-', '_' and '.'")

SITE_PARAMS = {"name": Param(str, doc="site name shown in status views"),
               "description": Param(str, default="")}
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
}
PLUGINS_PARAMS = {"disabled": Param(list, item=str, default=(),
                                    doc="entry-point names of plugins not to load")}
CORE_TABLES = ("site", "scan", "paths", "plugins", "block", *DEVICE_KINDS)


@dataclass(frozen=True)
class ScanConfig:
    period_ms: float = 10.0
    stale_after_polls: float = 3.0
    stats_window: int = 6000
    io: str = "thread"
    spin_ms: float = 1.0

    @property
    def period_s(self) -> float:
        return self.period_ms / 1000.0


@dataclass(frozen=True)
class DeviceConfig:
    """One [[meter]], [[probe]], [[breaker]] or [[output]] entry."""

    kind: str
    index: int
    name: str
    driver: str
    poll_ms: float
    params: Mapping[str, Any]
    path: str
    file: str

    @property
    def poll_s(self) -> float:
        return self.poll_ms / 1000.0


@dataclass(frozen=True)
class BlockConfig:
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


@dataclass(frozen=True)
class Document:
    """A site file read and parsed once: its TOML data, where it lives and its SHA-256."""

    file: str
    data: Mapping[str, Any]
    base_dir: Path
    config_hash: str


def read_document(path: str | Path) -> Document:
    """Read and parse a site file (TOML only; :func:`parse_site` validates it)."""
    file = str(path)
    try:
        raw_bytes = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"not UTF-8 text: {exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(syntax)", f"not valid TOML: {exc}")]) from exc
    return Document(file, MappingProxyType(data), Path(path).resolve().parent,
                    hashlib.sha256(raw_bytes).hexdigest())


def load_site(path: str | Path | Document, registry: TypeRegistry) -> SiteConfig:
    """Read and validate a site file. Raises :class:`ConfigError` with every problem found."""
    doc = path if isinstance(path, Document) else read_document(path)
    return parse_site(doc.data, registry, file=doc.file, base_dir=doc.base_dir,
                      config_hash=doc.config_hash)


def disabled_plugins(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``[plugins] disabled`` of a parsed file, before any plugin is loaded (a malformed
    table gives none here; :func:`parse_site` reports it)."""
    t = _Tables(data, "", [])
    return tuple(t.plugins()["disabled"] or ())


def scan_options(data: Mapping[str, Any]) -> ScanConfig:
    """``[scan]`` of a parsed file, validated (problems ignored: :func:`parse_site` reports
    them), before any plugin is loaded: whether the site wants an I/O process."""
    return _Tables(data, "", []).scan()


def parse_site(data: Mapping[str, Any], registry: TypeRegistry, file: str = "site.toml",
               base_dir: Path | None = None, config_hash: str = "") -> SiteConfig:
    """Validate an already parsed TOML document (see :func:`load_site`): one reader per
    table, then the points the devices declare and every reference between them."""
    problems: list[ConfigProblem] = []
    t = _Tables(data, file, problems, registry)
    base = base_dir or Path.cwd()
    t.unknown_tables()
    site_vals = t.site()
    scan = t.scan()
    paths = t.paths()
    plugins = t.plugins()
    sections = t.shared_sections()
    devices = t.devices()
    blocks = t.blocks()
    publishers = t.publishers()
    site = SiteConfig(
        file=file, base_dir=base, name=site_vals["name"] or "unnamed",
        description=site_vals["description"] or "", scan=scan,
        state_dir=_resolve(base, paths["state_dir"]),
        fault_log=_resolve(base, paths["fault_log"]),
        disabled_plugins=tuple(plugins["disabled"] or ()), devices=tuple(devices),
        blocks=tuple(blocks), publishers=MappingProxyType(publishers),
        sections=MappingProxyType(sections), points=(), config_hash=config_hash,
        raw=MappingProxyType(dict(data)))
    points = t.declared_points(site)
    t.check_references(points)
    if problems:
        raise ConfigError(problems)
    return replace(site, points=tuple(points))


class _Tables:
    """The readers of a site document's tables; every problem goes to ``problems``."""

    def __init__(self, data: Mapping[str, Any], file: str, problems: list[ConfigProblem],
                 registry: TypeRegistry | None = None) -> None:
        self.data = data
        self.file = file
        self.problems = problems
        self.registry = registry
        self.refs: list[Reference] = []
        self.names: dict[str, str] = {}
        self.devices_read: list[DeviceConfig] = []

    # -- helpers ---------------------------------------------------------------------------
    def problem(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, key, message))

    def table(self, name: str) -> Section:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, f"expected a table [{name}], got {type(value).__name__}")
            value = {}
        return Section(self.file, name, value, self.problems, self.refs)

    def entries(self, name: str) -> list[Section]:
        value = self.data.get(name, [])
        if isinstance(value, dict):
            self.problem(name, f"expected an array of tables [[{name}]], got a single table "
                               f"[{name}]")
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem(name, f"expected an array of tables [[{name}]]")
            return []
        return [Section(self.file, f"{name}[{i}]", v, self.problems, self.refs)
                for i, v in enumerate(value)]

    def bound(self, params: Mapping[str, Param]) -> Mapping[str, Param]:
        """``params`` with choices that plugins register (GPIO backends) filled in."""
        assert self.registry is not None
        return bind_choices(params, self.registry.choices)

    def claim_name(self, sec: Section, name: Any) -> bool:
        if not isinstance(name, str) or not name:
            return False
        bad = [ch for ch in name if not (ch.isalnum() or ch in "-_.")]
        if bad:
            sec.problem("name", f"got {name!r}; names may hold letters, digits, '-', '_' and "
                        f"'.' only")
            return False
        if name in self.names:
            sec.problem("name", f"duplicate name {name!r}; already used by {self.names[name]}")
            return False
        self.names[name] = sec.path
        return True

    # -- one reader per table --------------------------------------------------------------
    def unknown_tables(self) -> None:
        reg = self.registry
        assert reg is not None
        known = set(CORE_TABLES) | set(reg.publishers) | set(reg.sections)
        for key in self.data:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                self.problem(key, f"unknown table {key!r}" + (
                    f"; did you mean {hint[0]!r}?" if hint else
                    f"; valid tables: {', '.join(sorted(known))}"))

    def site(self) -> Values:
        """[site]: name, description."""
        s = self.table("site")
        if "site" not in self.data:
            self.problem("site", "missing table [site] with a `name`")
        vals = s.values(SITE_PARAMS)
        s.finish()
        return vals

    def scan(self) -> ScanConfig:
        """[scan]: the scan's period and timing; spin_ms follows a short period."""
        sc = self.table("scan")
        scan = ScanConfig(**sc.read(SCAN_PARAMS))
        sc.finish()
        given = self.data.get("scan")
        if scan.spin_ms > scan.period_ms / 2 and not (isinstance(given, dict)
                                                      and "spin_ms" in given):
            scan = replace(scan, spin_ms=scan.period_ms / 4)  # the default, on a short period
        elif scan.spin_ms > scan.period_ms / 2:
            self.problem("scan.spin_ms", f"{scan.spin_ms:g} ms would busy-wait more than half "
                         f"of the {scan.period_ms:g} ms period; valid: 0 to "
                         f"{scan.period_ms / 2:g}")
        return scan

    def paths(self) -> Values:
        """[paths]: state_dir, fault_log."""
        pa = self.table("paths")
        vals = pa.values(PATHS_PARAMS)
        pa.finish()
        return vals

    def plugins(self) -> Values:
        """[plugins]: disabled."""
        pl = self.table("plugins")
        vals = pl.values(PLUGINS_PARAMS)
        pl.finish()
        return vals

    def shared_sections(self) -> dict[str, Any]:
        """The tables driver plugins own ([gpio], [onewire], [[rs485]]...)."""
        assert self.registry is not None
        sections: dict[str, Any] = {}
        for sname, shared in self.registry.sections.items():
            params = self.bound(shared.params)
            if not shared.many:
                sec = self.table(sname)
                sections[sname] = sec.values(params)
                sec.finish()
                continue
            vals = []
            seen: dict[str, str] = {}
            for sec in self.entries(sname):
                v = sec.read(params)
                if shared.keyed:
                    n = sec.get("name", NAME)
                    if n in seen:
                        sec.problem("name", f"duplicate name {n!r}; already used by {seen[n]}")
                    elif n:
                        seen[n] = sec.path
                    v["name"] = n
                sec.finish()
                vals.append(Values(v))
            sections[sname] = tuple(vals)
        return sections

    def devices(self) -> list[DeviceConfig]:
        """[[meter]], [[probe]], [[breaker]], [[output]]: name, driver, poll_ms and the driver
        type's own options."""
        reg = self.registry
        assert reg is not None
        devices: list[DeviceConfig] = []
        for kind in DEVICE_KINDS:
            types = reg.drivers[kind]
            default = reg.default_drivers.get(kind)
            for i, sec in enumerate(self.entries(kind)):
                name = sec.get("name", NAME)
                self.claim_name(sec, name)
                drv_param = Param(str, default=default if default else REQUIRED,
                                  choices=tuple(sorted(types)) or ("(none registered)",))
                driver = sec.get("driver", drv_param)
                if sec.has("driver") and sec.data["driver"] != driver:
                    driver = None  # a wrong name is reported; it must not become the default
                cls = types.get(driver) if driver else None
                poll = sec.get("poll_ms", Param(float, default=cls.default_poll_ms if cls
                                                else 1000.0, minval=1.0, maxval=3_600_000.0,
                                                unit="ms"))
                params = sec.values(self.bound(cls.params)) if cls else Values()
                sec.finish(extra_known=("name", "driver", "poll_ms"))
                if name and cls:
                    devices.append(DeviceConfig(kind, i, name, driver, poll, params, sec.path,
                                                self.file))
        self.devices_read = devices
        return devices

    def blocks(self) -> list[BlockConfig]:
        """[[block]]: name, type and the block type's own options, in scan order."""
        reg = self.registry
        assert reg is not None
        blocks: list[BlockConfig] = []
        for i, sec in enumerate(self.entries("block")):
            name = sec.get("name", NAME)
            self.claim_name(sec, name)
            btype = sec.get("type", Param(str, choices=tuple(sorted(reg.blocks)) or
                                          ("(none registered)",)))
            bcls = reg.blocks.get(btype) if btype else None
            params = sec.values(self.bound(bcls.params)) if bcls else Values()
            sec.finish(extra_known=("name", "type"))
            if name and bcls:
                blocks.append(BlockConfig(i, name, btype, params, sec.path, self.file))
        return blocks

    def publishers(self) -> dict[str, PublisherConfig]:
        """[modbus_server] and every other publisher's table the file has."""
        assert self.registry is not None
        publishers: dict[str, PublisherConfig] = {}
        for pname, pcls in self.registry.publishers.items():
            if pname in self.data:
                sec = self.table(pname)
                publishers[pname] = PublisherConfig(pname, sec.values(self.bound(pcls.params)),
                                                    self.file)
                sec.finish()
        return publishers

    # -- across tables ---------------------------------------------------------------------
    def declared_points(self, site: SiteConfig) -> list[PointSpec]:
        """The input points every device declares (each name once)."""
        assert self.registry is not None
        points: list[PointSpec] = []
        owner: dict[str, str] = {}
        for dev in self.devices_read:
            cls = self.registry.drivers[dev.kind][dev.driver]
            try:
                declared = cls.declare_points(dev, site)
            except ConfigError as exc:
                self.problems.extend(exc.problems)
                continue
            for spec in declared:
                if spec.name in owner:
                    self.problem(dev.path, f"point {spec.name!r} is already declared by "
                                           f"{owner[spec.name]}")
                    continue
                owner[spec.name] = dev.path
                points.append(spec)
        return points

    def check_references(self, points: list[PointSpec]) -> None:
        """Every option that names a device or a point names one the site has."""
        devices = self.devices_read
        by_kind = {k: {d.name for d in devices if d.kind == k} for k in DEVICE_KINDS}
        by_kind["device"] = {d.name for d in devices}
        point_names = {p.name for p in points}
        for ref in self.refs:
            if ref.kind == "point":
                pool = point_names
            elif ref.kind in by_kind:
                pool = by_kind[ref.kind]
            else:
                continue
            if ref.name in pool:
                continue
            hint = difflib.get_close_matches(ref.name, sorted(pool), n=1, cutoff=0.6)
            what = "input point" if ref.kind == "point" else ref.kind
            msg = f"no {what} named {ref.name!r}"
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            elif pool and len(pool) <= 12:
                msg += f"; known: {', '.join(sorted(pool))}"
            elif not pool:
                msg += f"; the site declares no {what}s"
            self.problem(ref.key, msg)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p
