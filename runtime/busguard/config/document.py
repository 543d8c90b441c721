"""Reading a site file (and its drop-ins) into a parsed :class:`Document`, before validation.

A module of its own, importing nothing heavy, because ``busguard run`` reads the site first
thing to serve the retained register image (:mod:`busguard.northbound.earlyserve`) before the
plugins, drivers and pymodbus are imported; :mod:`busguard.config.site` validates it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from busguard.config import dropins
from busguard.config.dropins import Provenance
from busguard.errors import ConfigError, ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib


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
