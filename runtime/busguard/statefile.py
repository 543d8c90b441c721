"""The retained-state file on disk: format, durable atomic writes and two generations.

Why a module of its own: the rules that make a state file survive power cuts and flash faults
are independent of what the runtime keeps in it, and they are easier to test alone.

Format (``busguard-retained/2``): one JSON header line (format, generation, encoding, length,
SHA-256 of the body as stored) then the body, JSON compressed with zlib. Compression is for the
flash: the demo site's 15.7 KB of JSON becomes ~3.5 KB, under one 4 KiB filesystem block, so a
periodic save costs one block, not four. ``busguard-retained/1`` files (plain JSON body, no
generation) are still read.

Generations: every save goes to a temp file (fsync), the current file is renamed to
``<file>.prev``, the temp file is renamed to ``<file>`` and the folder is fsynced. So at any
instant (kill -9, power cut) the folder holds the newest complete save (``<file>``, or a complete
temp file when the cut fell between the two renames) and the one before it (``<file>.prev``).
:func:`load_newest` reads every candidate and returns the valid one with the highest
generation, and says which were damaged: a corrupt current file falls back to the previous
generation instead of a cold start.

``write_atomic`` is the project's one durable atomic writer (temp file in the same folder,
fsync, rename, fsync of the folder). Other modules that write files which must survive a power
cut (calibration, apply's site.toml) should use it; ``keep_previous`` adds the ``.prev``
generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "busguard-retained/2"
FORMAT_V1 = "busguard-retained/1"
CHUNK_ITEMS = 128  # list items per json.dumps call in json_pieces (~0.2 ms of locked work)
PREV_SUFFIX = ".prev"


class CorruptState(Exception):
    """The state file exists but cannot be trusted (checksum, truncation, format)."""


def json_pieces(obj: Any) -> Iterator[str]:
    """The text ``json.dumps(obj, separators=(",", ":"), sort_keys=True)`` writes, in pieces.

    Why: the state is written beside the scan, and one ``json.dumps`` call holds the
    interpreter lock from start to end (3-9 ms for the 64-meter bench site), which the scan
    thread then waits for. Here objects with string keys are walked and lists longer than
    ``CHUNK_ITEMS`` are encoded a slice per call, so the lock changes hands between pieces."""
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        yield "{"
        for n, key in enumerate(sorted(obj)):
            yield ("," if n else "") + json.dumps(key) + ":"
            yield from json_pieces(obj[key])
        yield "}"
    elif isinstance(obj, (list, tuple)) and len(obj) > CHUNK_ITEMS:
        yield "["
        for i in range(0, len(obj), CHUNK_ITEMS):
            part = json.dumps(obj[i:i + CHUNK_ITEMS], separators=(",", ":"), sort_keys=True)
            yield ("," if i else "") + part[1:-1]
        yield "]"
    else:
        yield json.dumps(obj, separators=(",", ":"), sort_keys=True)


def encode_state(body: Mapping[str, Any], generation: int = 0) -> bytes:
    """Header line (format, generation, length and sha256 of the stored body) then the body,
    JSON compressed piece by piece (zlib releases the interpreter lock while it works)."""
    comp = zlib.compressobj(6)
    parts = [comp.compress(piece.encode("utf-8")) for piece in json_pieces(body)]
    parts.append(comp.flush())
    raw = b"".join(parts)
    head = json.dumps({"format": FORMAT, "generation": int(generation), "encoding": "zlib",
                       "length": len(raw), "sha256": hashlib.sha256(raw).hexdigest()},
                      sort_keys=True)
    return head.encode("ascii") + b"\n" + raw


def decode_header(data: bytes) -> tuple[dict[str, Any], bytes]:
    head, sep, raw = data.partition(b"\n")
    if not sep:
        raise CorruptState("no header line (truncated?)")
    try:
        h = json.loads(head)
    except ValueError as exc:
        raise CorruptState(f"unreadable header: {exc}") from exc
    if not isinstance(h, dict) or h.get("format") not in (FORMAT, FORMAT_V1):
        raise CorruptState(f"not a {FORMAT} file")
    if h.get("length") != len(raw):
        raise CorruptState(f"body is {len(raw)} bytes, header says {h.get('length')} "
                           f"(truncated?)")
    if hashlib.sha256(raw).hexdigest() != h.get("sha256"):
        raise CorruptState("checksum mismatch")
    return h, raw


def decode_state(data: bytes) -> dict[str, Any]:
    """The body of a state file (either format). Raises CorruptState."""
    return decode_generation(data)[1]


def decode_generation(data: bytes) -> tuple[int, dict[str, Any]]:
    """(generation, body) of a state file (a v1 file is generation 0). Raises CorruptState."""
    h, raw = decode_header(data)
    try:
        if h.get("encoding") == "zlib":
            raw = zlib.decompress(raw)
        body = json.loads(raw)
    except (zlib.error, ValueError) as exc:  # a checksum over bad content: a writer's bug
        raise CorruptState(f"unreadable body: {exc}") from exc
    if not isinstance(body, dict):
        raise CorruptState("body is not an object")
    gen = h.get("generation", 0)
    return (gen if isinstance(gen, int) else 0), body


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_atomic(path: Path, data: bytes, mode: int | None = None,
                 keep_previous: bool = False) -> None:
    """Temp file in the same folder, fsync, rename over ``path``, fsync the folder.

    ``keep_previous``: the file ``path`` held is kept as ``path.prev`` (renamed, so no extra
    bytes are written). ``mode``: permission bits of the new file (default: umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if keep_previous:
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, path.with_name(path.name + PREV_SUFFIX))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def read_state(path: Path) -> dict[str, Any] | None:
    """The body of one file, or None when there is no file. Raises CorruptState."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return decode_state(data)


@dataclass
class Loaded:
    """What :func:`load_newest` found: the newest valid body (or None), where it came from,
    and the candidates that were there but damaged (path, why)."""

    body: dict[str, Any] | None = None
    source: Path | None = None
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    others: list[tuple[int, Path, dict[str, Any]]] = field(default_factory=list)

    @property
    def current_damaged(self) -> bool:
        return any(not p.name.startswith(".") and not p.name.endswith(PREV_SUFFIX)
                   for p, _ in self.damaged)


def candidates(path: Path) -> list[Path]:
    """The current file, complete temp files left by an interrupted save, the previous one."""
    folder = path.parent
    tmps = sorted(folder.glob(f".{path.name}.tmp-*")) if folder.is_dir() else []
    return [path, *tmps, path.with_name(path.name + PREV_SUFFIX)]


def load_newest(path: Path) -> Loaded:
    """Every valid generation, newest first in ``others``; ``body`` is the newest."""
    out = Loaded()
    found: list[tuple[int, int, Path, dict[str, Any]]] = []
    for rank, cand in enumerate(candidates(Path(path))):
        try:
            gen, body = decode_generation(cand.read_bytes())
        except FileNotFoundError:
            continue
        except (CorruptState, OSError) as exc:
            out.damaged.append((cand, str(exc)))
            continue
        # newest generation first; on a tie the current file before a temp before .prev
        found.append((-gen, rank, cand, body))
    found.sort(key=lambda f: (f[0], f[1]))
    out.others = [(-g, p, b) for g, _r, p, b in found]
    if found:
        out.body, out.source = found[0][3], found[0][2]
    return out
