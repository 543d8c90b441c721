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

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from busguard.config import dropins
from busguard.config.document import (  # re-exported: callers import them from here too
    MAX_SITE_BYTES,
    MAX_SITE_DEPTH,
    Document,
    read_document,
    read_site_toml,
)
from busguard.config.model import (
    PATHS_PARAMS,
    BlockConfig,
    DeviceConfig,
    PublisherConfig,
    ScanConfig,
    SiteConfig,
)
from busguard.config.tables import Tables
from busguard.errors import ConfigError, ConfigProblem
from busguard.registry import TypeRegistry

# the site's model lives in busguard.config.model; callers import it from here as well
__all__ = ["MAX_SITE_BYTES", "MAX_SITE_DEPTH", "PATHS_PARAMS", "BlockConfig", "DeviceConfig",
           "Document", "PublisherConfig",
           "ScanConfig", "SiteConfig", "disabled_plugins", "load_site", "parse_document",
           "parse_site", "read_document", "read_site_toml", "scan_options"]


def load_site(path: str | Path | Document, registry: TypeRegistry) -> SiteConfig:
    """Read and validate a site file. Raises :class:`ConfigError` with every problem found
    (the size, syntax and nesting ones from :func:`read_site_toml`)."""
    return parse_document(path if isinstance(path, Document) else read_document(path),
                          registry)


def parse_document(doc: Document, registry: TypeRegistry) -> SiteConfig:
    """:func:`parse_site` of a read document; one too deep or too large to validate is a
    :class:`ConfigError` naming the file, never a traceback."""
    try:
        return parse_site(doc.data, registry, file=doc.file, base_dir=doc.base_dir,
                          config_hash=doc.config_hash)
    except ConfigError as exc:
        if doc.provenance is None:
            raise
        raise dropins.relabel(exc, doc.provenance) from None
    except (RecursionError, MemoryError) as exc:
        raise ConfigError([ConfigProblem(doc.file, "(file)", f"cannot be validated: "
                                         f"{type(exc).__name__}")]) from exc


def disabled_plugins(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``[plugins] disabled`` of a parsed file, before any plugin is loaded (a malformed
    table gives none here; :func:`parse_site` reports it)."""
    t = Tables(data, "", [])
    return tuple(t.plugins()["disabled"] or ())


def scan_options(data: Mapping[str, Any]) -> ScanConfig:
    """``[scan]`` of a parsed file, validated (problems ignored: :func:`parse_site` reports
    them), before any plugin is loaded: whether the site wants an I/O process."""
    return Tables(data, "", []).scan()


def parse_site(data: Mapping[str, Any], registry: TypeRegistry, file: str = "site.toml",
               base_dir: Path | None = None, config_hash: str = "") -> SiteConfig:
    """Validate an already parsed TOML document (see :func:`load_site`): one reader per
    table, then the points the devices declare and every reference between them."""
    problems: list[ConfigProblem] = []
    t = Tables(data, file, problems, registry)
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
    t.check_map_capacity(devices, serves_map="modbus_server" in publishers)
    site = SiteConfig(
        file=file, base_dir=base, name=site_vals["name"] or "unnamed",
        description=site_vals["description"] or "", scan=scan,
        state_dir=_resolve(base, paths["state_dir"]),
        fault_log=_resolve(base, paths["fault_log"]),
        disabled_plugins=tuple(plugins["disabled"] or ()), devices=tuple(devices),
        blocks=tuple(blocks), publishers=MappingProxyType(publishers),
        sections=MappingProxyType(sections), points=(), config_hash=config_hash,
        raw=MappingProxyType(dict(data)),
        nominal_voltage_ll_v=site_vals["nominal_voltage_ll_v"],
        nominal_hz=site_vals["nominal_hz"], fault_log_format=paths["fault_log_format"])
    points = t.declared_points(site)
    t.check_references(points)
    if problems:
        raise ConfigError(problems)
    return replace(site, points=tuple(points))


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p
