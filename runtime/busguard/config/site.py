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

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from busguard.config import dropins
from busguard.config.dropins import Provenance
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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

# the site's model lives in busguard.config.model; callers import it from here as well
__all__ = ["PATHS_PARAMS", "BlockConfig", "DeviceConfig", "Document", "PublisherConfig",
           "ScanConfig", "SiteConfig", "disabled_plugins", "load_site", "parse_document",
           "parse_site", "read_document", "read_site_toml", "scan_options"]


@dataclass(frozen=True)
class Document:
    """A site file read and parsed once, with its drop-ins (``site.d/*.toml``) merged: its
    TOML data, where it lives, the SHA-256 of what was read (the site file's bytes alone
    when it has no drop-ins), the drop-in files and where each part came from."""

    file: str
    data: Mapping[str, Any]
    base_dir: Path
    config_hash: str
    dropins: tuple[str, ...] = ()
    provenance: Provenance | None = field(default=None, repr=False, compare=False)


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


def read_document(path: str | Path) -> Document:
    """Read and parse a site file once (:func:`read_site_toml`: its size, syntax and nesting
    checked) and merge its drop-ins (:mod:`busguard.config.dropins`, each read the same
    way); :func:`parse_document` validates the whole."""
    data, digest = read_site_toml(path)
    extra = dropins.read_all(path, read_site_toml)
    if not extra:
        return Document(str(path), MappingProxyType(data), Path(path).resolve().parent, digest)
    merged, prov = dropins.merge(data, str(path), [(f, d) for f, d, _h in extra])
    combined = hashlib.sha256(digest.encode() + b"".join(
        f"\n{Path(f).name}:{h}".encode() for f, _d, h in extra)).hexdigest()
    return Document(str(path), MappingProxyType(merged), Path(path).resolve().parent,
                    combined, tuple(f for f, _d, _h in extra), prov)


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
