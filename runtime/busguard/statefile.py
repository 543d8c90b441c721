"""The retained-state file on disk: format, two slots written in place, durable writes.

Why a module of its own: the rules that make a state file survive power cuts, kill -9 and
flash faults, and that keep it from wearing the flash out, are independent of what the runtime
keeps in it, and they are easier to test alone.

Format (``busguard-retained/2``): one JSON header line (format, generation, encoding, length,
SHA-256 of the body as stored) then the body, JSON compressed with zlib (the demo site's
15.7 KB of JSON becomes ~3.7 KB: one 4 KiB block), then zero padding to a whole number of
4 KiB blocks. ``busguard-retained/1`` files (plain JSON body, no generation) are still read.

Two slots, ``<file>`` and ``<file>.b``, written alternately *in place*: each save overwrites
the slot that does not hold the newest generation (``pwrite`` at offset 0, the same size as
before, then ``fdatasync``), so the other slot holds the previous good generation at every
instant. Why in place and not temp file + rename: on ext4 a rename-based save allocates an
inode and blocks and rewrites the folder each time; measured on a 4 KiB-block ext4, 67 KiB of
device writes per save (journal included) against 14 KiB in place, for the same 3.7 KB of
state (docs/operations.md, "Bytes written per day"). A torn slot (power cut in the middle of
its write) fails its checksum, and :func:`load_newest` returns the newest *valid* generation
of the two.

``write_atomic`` is the project's one durable atomic writer for files that are replaced whole
(temp file in the same folder, fsync, rename, fsync of the folder); other modules that write
files which must survive a power cut (calibration, apply's site.toml) should use it.
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
SLOT_B_SUFFIX = ".b"
BLOCK = 4096


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
    length = h.get("length")
    if not isinstance(length, int) or length < 0 or length > len(raw) or \
            (h.get("format") == FORMAT_V1 and length != len(raw)):
        raise CorruptState(f"body is {len(raw)} bytes, header says {length} (truncated?)")
    raw = raw[:length]  # then zero padding to whole blocks
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


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Temp file in the same folder, fsync, rename over ``path``, fsync the folder.
    ``mode``: permission bits of the new file (default: umask)."""
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


def slot_paths(path: Path) -> tuple[Path, Path]:
    """The two slots of a state file: ``<file>`` and ``<file>.b``."""
    path = Path(path)
    return path, path.with_name(path.name + SLOT_B_SUFFIX)


class Slots:
    """Writes generations alternately into the two slots, in place."""

    def __init__(self, path: Path) -> None:
        self.paths = slot_paths(path)
        self.next = 0  # index of the slot the next save overwrites
        self.bytes_written = 0  # bytes handed to the kernel, padding included
        self._lock = threading.Lock()  # the writer thread and a stop's last save

    def after_load(self, newest: Path | None) -> None:
        """The next save must not overwrite the slot holding the newest valid generation."""
        self.next = 1 if newest == self.paths[0] else 0

    def write(self, data: bytes) -> Path:
        with self._lock:
            return self._write(data)

    def _write(self, data: bytes) -> Path:
        path = self.paths[self.next]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            size = os.fstat(fd).st_size
            created = size == 0
            # whole blocks, never shorter than the file: the size (metadata) stays put
            want = max(size, -(-len(data) // BLOCK) * BLOCK)
            buf = data + bytes(want - len(data))
            done = 0
            while done < len(buf):
                done += os.pwrite(fd, buf[done:], done)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)
        self.bytes_written += len(buf)
        self.next ^= 1
        return path


@dataclass
class Loaded:
    """What :func:`load_newest` found: every valid generation, newest first, and the slots
    that were there but damaged (path, why, their generation when the header was readable)."""

    found: list[tuple[int, Path, dict[str, Any]]] = field(default_factory=list)
    damaged: list[tuple[Path, str, int | None]] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any] | None:
        return self.found[0][2] if self.found else None

    @property
    def source(self) -> Path | None:
        return self.found[0][1] if self.found else None


def _header_generation(data: bytes) -> int | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        h = json.loads(data.partition(b"\n")[0])
        if isinstance(h, dict) and isinstance(h.get("generation"), int):
            return int(h["generation"])
    return None


def load_newest(path: Path) -> Loaded:
    """Both slots read; ``found`` holds the valid generations, newest first."""
    out = Loaded()
    for cand in slot_paths(path):
        try:
            data = cand.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            out.damaged.append((cand, str(exc), None))
            continue
        try:
            gen, body = decode_generation(data)
        except CorruptState as exc:
            out.damaged.append((cand, str(exc), _header_generation(data)))
            continue
        out.found.append((gen, cand, body))
    out.found.sort(key=lambda f: -f[0])  # stable: slot A first on a tie
    return out


def newest_valid(path: Path) -> tuple[int, Path] | None:
    """(generation, slot) of the newest slot whose header and checksum are valid, or None;
    the body is not decoded (a reload only needs to know where the next save goes)."""
    best: tuple[int, Path] | None = None
    for cand in slot_paths(path):
        try:
            h, _raw = decode_header(cand.read_bytes())
        except (OSError, CorruptState):
            continue
        gen = h.get("generation", 0)
        gen = gen if isinstance(gen, int) else 0
        if best is None or gen > best[0]:
            best = (gen, cand)
    return best
