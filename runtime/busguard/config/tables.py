"""One reader per table of a site document (:func:`busguard.config.site.parse_site` runs them):
each validates its table against the declared options and records every problem."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from busguard.config.model import (
    CORE_TABLES,
    NAME,
    PATHS_PARAMS,
    PLUGINS_PARAMS,
    SCAN_PARAMS,
    SITE_PARAMS,
    BlockConfig,
    DeviceConfig,
    PublisherConfig,
    ScanConfig,
    SiteConfig,
)
from busguard.config.params import REQUIRED, Param, Reference, Section, Values, bind_choices
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec
from busguard.northbound.mapdef import CAPACITY, DEVICE_UNITS
from busguard.northbound.slots import DEVICE_AREAS
from busguard.registry import DEVICE_KINDS, TypeRegistry


class Tables:
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
                slot, unit = self.map_keys(sec, kind)
                sec.finish(extra_known=("name", "driver", "poll_ms"))
                if name and cls:
                    devices.append(DeviceConfig(kind, i, name, driver, poll, params, sec.path,
                                                self.file, slot, unit))
        self.devices_read = devices
        self.check_map_keys(devices)
        return devices

    def map_keys(self, sec: Section, kind: str) -> tuple[int | None, int | None]:
        """`slot` and `unit_id` of a meter, probe or breaker (docs/northbound.md)."""
        if kind not in DEVICE_AREAS:
            return None, None
        cap = CAPACITY[kind]
        slot = sec.get("slot", Param(int, default=None, minval=0, maxval=cap - 1,
                                     doc=f"register map slot, 0 to {cap - 1}"))
        lo, hi = DEVICE_UNITS
        unit = sec.get("unit_id", Param(int, default=None, minval=lo, maxval=hi,
                                        doc="Modbus unit id of the device's own view"))
        return slot, unit

    def check_map_keys(self, devices: list[DeviceConfig]) -> None:
        """Explicit slots unique per kind; explicit unit ids unique across kinds."""
        slots: dict[tuple[str, int], DeviceConfig] = {}
        units: dict[int, DeviceConfig] = {}
        for d in devices:
            if d.slot is not None:
                other = slots.setdefault((d.kind, d.slot), d)
                if other is not d:
                    self.problem(f"{d.path}.slot", f"slot {d.slot} is already "
                                 f"{other.path} ({other.name!r}); valid: a slot no other "
                                 f"{d.kind} has, 0 to {CAPACITY[d.kind] - 1}")
            if d.unit_id is not None:
                other = units.setdefault(d.unit_id, d)
                if other is not d:
                    self.problem(f"{d.path}.unit_id", f"unit id {d.unit_id} is already "
                                 f"{other.path} ({other.name!r}); valid: a unit id no other "
                                 f"device has, {DEVICE_UNITS[0]} to {DEVICE_UNITS[1]} (1, 0 "
                                 f"and 255 serve the whole-site map)")

    def check_map_capacity(self, devices: list[DeviceConfig], serves_map: bool) -> None:
        """No more devices of a kind than the register map has slots, when the site serves
        the map: every outward interface ([modbus_server] and, through its snapshot, [web],
        [snmp], [sparkplug], [history]) shares its stable slots. A site that serves no map
        (local interlocks and relays only) is bounded by its scan, not by the map."""
        if not serves_map:
            return
        for kind in DEVICE_AREAS:
            of_kind = [d for d in devices if d.kind == kind]
            if len(of_kind) > CAPACITY[kind]:
                self.problem(of_kind[CAPACITY[kind]].path,
                             f"{len(of_kind)} {kind}s: one unit holds at most {CAPACITY[kind]} "
                             f"{kind}s (the register map's stable slots, which every outward "
                             f"interface shares); valid: at most {CAPACITY[kind]} [[{kind}]] "
                             f"tables; a larger busway runs two units (docs/northbound.md)")

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
