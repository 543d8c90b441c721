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
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from busguard.config.params import REQUIRED, Param, Reference, Section
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec
from busguard.registry import DEVICE_KINDS, TypeRegistry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

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
                         "of 0.25 ms: "
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
    # the site's electrical nominals ([site]); None when the file does not say
    nominal_voltage_ll_v: float | None = None
    nominal_hz: float | None = None

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


MAX_SITE_BYTES = 1 << 20  # 1 MiB: a site of 256 meters and their blocks is ~150 kB
MAX_SITE_DEPTH = 32  # tables and arrays within each other; a real site nests 3-4 deep


def read_site_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """The parsed TOML of a site file and the SHA-256 of its bytes, or :class:`ConfigError`
    naming the file: unreadable, over :data:`MAX_SITE_BYTES` (refused before it is read),
    not UTF-8, not TOML, nested deeper than :data:`MAX_SITE_DEPTH`, or more than the parser
    can hold (its ``RecursionError`` or ``MemoryError``). Never another exception: a hostile
    file is a configuration error (exit 2), not a traceback."""
    file = str(path)

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError([ConfigProblem(file, key, message)])

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_SITE_BYTES:
                raise fail("(file)", f"{size} bytes; a site file may be at most "
                                     f"{MAX_SITE_BYTES} bytes (1 MiB)")
            raw_bytes = f.read(MAX_SITE_BYTES + 1)
    except OSError as exc:
        raise fail("(file)", f"cannot read: {exc.strerror}") from exc
    if len(raw_bytes) > MAX_SITE_BYTES:  # grew while we looked
        raise fail("(file)", f"more than {MAX_SITE_BYTES} bytes; a site file may be at "
                             f"most {MAX_SITE_BYTES} bytes (1 MiB)")
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise fail("(file)", f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise fail("(syntax)", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise fail("(syntax)", f"nested too deeply to parse (RecursionError); at most "
                               f"{MAX_SITE_DEPTH} levels of tables and arrays") from exc
    except MemoryError as exc:
        raise fail("(file)", "too large to parse in the memory available "
                             "(MemoryError)") from exc
    depth, where = _depth(data)
    if depth > MAX_SITE_DEPTH:
        raise fail(where, f"nested {depth} levels deep; at most {MAX_SITE_DEPTH} levels of "
                          f"tables and arrays")
    return data, hashlib.sha256(raw_bytes).hexdigest()


def _depth(data: Any) -> tuple[int, str]:
    """The deepest nesting of tables and arrays in ``data`` and the key path into it (a
    loop, not a recursion: the input may be as deep as the parser allowed)."""
    deepest, where = 0, "(file)"
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        obj, d, path = stack.pop()
        if d > deepest:
            deepest, where = d, path or "(file)"
            if d > MAX_SITE_DEPTH:
                break
        if isinstance(obj, dict):
            stack.extend((v, d + 1, f"{path}.{k}" if path else str(k))
                         for k, v in obj.items() if isinstance(v, (dict, list)))
        elif isinstance(obj, list):
            stack.extend((v, d + 1, f"{path}[{i}]") for i, v in enumerate(obj)
                         if isinstance(v, (dict, list)))
    if len(where) > 120:
        where = where[:117] + "..."
    return deepest, where


def load_site(path: str | Path, registry: TypeRegistry) -> SiteConfig:
    """Read and validate a site file. Raises :class:`ConfigError` with every problem found
    (the size, syntax and nesting ones from :func:`read_site_toml`)."""
    file = str(path)
    data, digest = read_site_toml(path)
    try:
        return parse_site(data, registry, file=file, base_dir=Path(path).resolve().parent,
                          config_hash=digest)
    except (RecursionError, MemoryError) as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot be validated: "
                                         f"{type(exc).__name__}")]) from exc


def parse_site(data: Mapping[str, Any], registry: TypeRegistry, file: str = "site.toml",
               base_dir: Path | None = None, config_hash: str = "") -> SiteConfig:
    """Validate an already parsed TOML document (see :func:`load_site`)."""
    problems: list[ConfigProblem] = []
    refs: list[Reference] = []
    base = base_dir or Path.cwd()

    def table(name: str) -> Section:
        value = data.get(name, {})
        if not isinstance(value, dict):
            problems.append(ConfigProblem(file, name, f"expected a table [{name}], got "
                                          f"{type(value).__name__}"))
            value = {}
        return Section(file, name, value, problems, refs)

    def entries(name: str) -> list[Section]:
        value = data.get(name, [])
        if isinstance(value, dict):
            problems.append(ConfigProblem(file, name, f"expected an array of tables "
                                          f"[[{name}]], got a single table [{name}]"))
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            problems.append(ConfigProblem(file, name, f"expected an array of tables [[{name}]]"))
            return []
        return [Section(file, f"{name}[{i}]", v, problems, refs) for i, v in enumerate(value)]

    known_tables = set(CORE_TABLES) | set(registry.publishers) | set(registry.sections)
    for key in data:
        if key not in known_tables:
            hint = difflib.get_close_matches(key, sorted(known_tables), n=1, cutoff=0.6)
            msg = f"unknown table {key!r}"
            msg += (f"; did you mean {hint[0]!r}?" if hint else
                    f"; valid tables: {', '.join(sorted(known_tables))}")
            problems.append(ConfigProblem(file, key, msg))

    s = table("site")
    if "site" not in data:
        problems.append(ConfigProblem(file, "site", "missing table [site] with a `name`"))
    site_vals = s.read(SITE_PARAMS)
    s.finish()
    sc = table("scan")
    scan = ScanConfig(**sc.read(SCAN_PARAMS))
    sc.finish()
    given = data.get("scan")
    if scan.spin_ms > scan.period_ms / 2 and not (isinstance(given, dict)
                                                  and "spin_ms" in given):
        scan = replace(scan, spin_ms=scan.period_ms / 4)  # the default, on a short period
    elif scan.spin_ms > scan.period_ms / 2:
        problems.append(ConfigProblem(
            file, "scan.spin_ms", f"{scan.spin_ms:g} ms would busy-wait more than half of the "
            f"{scan.period_ms:g} ms period; valid: 0 to {scan.period_ms / 2:g}"))
    pa = table("paths")
    paths = pa.read(PATHS_PARAMS)
    pa.finish()
    pl = table("plugins")
    plugins = pl.read(PLUGINS_PARAMS)
    pl.finish()

    names: dict[str, str] = {}

    def claim_name(sec: Section, name: Any) -> bool:
        if not isinstance(name, str) or not name:
            return False
        bad = [ch for ch in name if not (ch.isalnum() or ch in "-_.")]
        if bad:
            sec.problem("name", f"got {name!r}; names may hold letters, digits, '-', '_' and "
                        f"'.' only")
            return False
        if name in names:
            sec.problem("name", f"duplicate name {name!r}; already used by {names[name]}")
            return False
        names[name] = sec.path
        return True

    sections: dict[str, Any] = {}
    for sname, shared in registry.sections.items():
        if shared.many:
            vals = []
            seen: dict[str, str] = {}
            for sec in entries(sname):
                v = sec.read(shared.params)
                if shared.keyed:
                    n = sec.get("name", NAME)
                    if n in seen:
                        sec.problem("name", f"duplicate name {n!r}; already used by {seen[n]}")
                    elif n:
                        seen[n] = sec.path
                    v["name"] = n
                sec.finish()
                vals.append(MappingProxyType(v))
            sections[sname] = tuple(vals)
        else:
            sec = table(sname)
            sections[sname] = MappingProxyType(sec.read(shared.params))
            sec.finish()

    devices: list[DeviceConfig] = []
    for kind in DEVICE_KINDS:
        types = registry.drivers[kind]
        default = registry.default_drivers.get(kind)
        for i, sec in enumerate(entries(kind)):
            name = sec.get("name", NAME)
            claim_name(sec, name)
            drv_param = Param(str, default=default if default else REQUIRED,
                              choices=tuple(sorted(types)) or ("(none registered)",))
            driver = sec.get("driver", drv_param)
            if sec.has("driver") and sec.data["driver"] != driver:
                driver = None  # a wrong name is reported; it must not become the default
            cls = types.get(driver) if driver else None
            poll = sec.get("poll_ms", Param(float, default=cls.default_poll_ms if cls else 1000.0,
                                            minval=1.0, maxval=3_600_000.0, unit="ms"))
            params = sec.read(cls.params) if cls else {}
            sec.finish(extra_known=("name", "driver", "poll_ms"))
            if name and cls:
                devices.append(DeviceConfig(kind, i, name, driver, poll, MappingProxyType(params),
                                            sec.path, file))

    blocks: list[BlockConfig] = []
    for i, sec in enumerate(entries("block")):
        name = sec.get("name", NAME)
        claim_name(sec, name)
        btype = sec.get("type", Param(str, choices=tuple(sorted(registry.blocks)) or
                                      ("(none registered)",)))
        bcls = registry.blocks.get(btype) if btype else None
        params = sec.read(bcls.params) if bcls else {}
        sec.finish(extra_known=("name", "type"))
        if name and bcls:
            blocks.append(BlockConfig(i, name, btype, MappingProxyType(params), sec.path, file))

    publishers: dict[str, PublisherConfig] = {}
    for pname, pcls in registry.publishers.items():
        if pname in data:
            sec = table(pname)
            publishers[pname] = PublisherConfig(pname, MappingProxyType(sec.read(pcls.params)),
                                                file)
            sec.finish()

    site_name = site_vals.get("name") or "unnamed"
    site = SiteConfig(
        file=file, base_dir=base, name=site_name, description=site_vals.get("description", ""),
        scan=scan, state_dir=_resolve(base, paths["state_dir"]),
        fault_log=_resolve(base, paths["fault_log"]),
        disabled_plugins=tuple(plugins["disabled"] or ()), devices=tuple(devices),
        blocks=tuple(blocks), publishers=MappingProxyType(publishers),
        sections=MappingProxyType(sections), points=(), config_hash=config_hash,
        raw=MappingProxyType(dict(data)),
        nominal_voltage_ll_v=site_vals.get("nominal_voltage_ll_v"),
        nominal_hz=site_vals.get("nominal_hz"))

    points: list[PointSpec] = []
    point_owner: dict[str, str] = {}
    for dev in devices:
        cls = registry.drivers[dev.kind][dev.driver]
        try:
            declared = cls.declare_points(dev, site)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        for spec in declared:
            if spec.name in point_owner:
                problems.append(ConfigProblem(file, dev.path, f"point {spec.name!r} is already "
                                              f"declared by {point_owner[spec.name]}"))
                continue
            point_owner[spec.name] = dev.path
            points.append(spec)

    by_kind = {k: {d.name for d in devices if d.kind == k} for k in DEVICE_KINDS}
    by_kind["device"] = {d.name for d in devices}
    point_names = set(point_owner)
    for ref in refs:
        if ref.kind == "point":
            pool = point_names
        elif ref.kind in by_kind:
            pool = by_kind[ref.kind]
        else:
            continue
        if ref.name not in pool:
            hint = difflib.get_close_matches(ref.name, sorted(pool), n=1, cutoff=0.6)
            what = "input point" if ref.kind == "point" else ref.kind
            msg = f"no {what} named {ref.name!r}"
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            elif pool and len(pool) <= 12:
                msg += f"; known: {', '.join(sorted(pool))}"
            elif not pool:
                msg += f"; the site declares no {what}s"
            problems.append(ConfigProblem(file, ref.key, msg))

    if problems:
        raise ConfigError(problems)
    return replace(site, points=tuple(points))


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p
