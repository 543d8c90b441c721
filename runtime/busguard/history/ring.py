"""The two fixed-size ring files of the on-box history (docs/history.md).

Both files start with the same header: a magic, the geometry and the point names (JSON), padded
to a 4 KiB page, written once when the file is made (temporary file, fsync, rename), so a torn
write can never damage it. After the header come fixed-size slots addressed by time modulo the
ring's length; each slot carries its own time stamp, so a slot from an earlier lap, a slot never
written and a torn slot all read as "no data" instead of as a wrong value.

- ``seconds.ring`` (in RAM: /run or tmpfs): one slot per second, ``t`` (int64 UTC seconds), then
  one float32 value per point, then one quality byte per point. Written through ``mmap``: no
  system call per second, no flash wear.
- ``minutes.ring`` (on flash, in ``{state_dir}/history``): one slot per *batch* of
  ``batch_min`` minutes; inside it, point-major rows (``batch_min`` x min/avg/max float32, then
  ``batch_min`` quality bytes), each deflated when that is smaller (a constant or absent
  point shrinks to a few bytes), so reading one point over 30 days is one small read per
  batch, and writing a batch is one ``pwrite`` of contiguous pages plus one ``fdatasync``. A
  slot header holds the batch's first minute, then per row its CRC32, offset and length: a
  torn write fails the CRC (or the minute) and loses that batch only.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from busguard.errors import BusguardError

PAGE = 4096
HEADER = struct.Struct("<8sIIII")  # magic, version, slots, points, batch (minutes; 0: seconds)
SEC_MAGIC = b"BGHSEC1\0"
MIN_MAGIC = b"BGHMIN1\0"
VERSION = 1
SEC_STAMP = struct.Struct("<q")
MIN_SLOT = struct.Struct("<IqH")  # slot magic, first minute (UTC minutes), minutes
MIN_SLOT_MAGIC = 0x42474D31
MIN_SLOT_HEAD = 32  # MIN_SLOT padded
ROW_ENTRY = struct.Struct("<III")  # per point: crc32 of the stored row, offset, length|DEFLATED
DEFLATED = 1 << 31
NO_TIME = -1


class Geometry(NamedTuple):
    """What a ring file holds: its kind, point names, number of slots and batch length."""

    magic: bytes
    points: tuple[str, ...]
    slots: int
    batch: int
    header_len: int

    @property
    def slot_len(self) -> int:
        n = len(self.points)
        if self.magic == SEC_MAGIC:
            return SEC_STAMP.size + 5 * n
        return MIN_SLOT_HEAD + ROW_ENTRY.size * n + self.row_len * n

    @property
    def row_len(self) -> int:
        return 13 * self.batch

    def slot_offset(self, slot: int) -> int:
        return self.header_len + slot * self.slot_len

    @property
    def size(self) -> int:
        return self.header_len + self.slots * self.slot_len


class HistoryFileError(BusguardError):
    """A ring file that is not one, or not of this version."""


def _header_bytes(magic: bytes, points: Sequence[str], slots: int, batch: int) -> bytes:
    names = json.dumps(list(points)).encode()
    raw = HEADER.pack(magic, VERSION, slots, len(points), batch) + struct.pack("<I", len(names))
    raw += names
    return raw + b"\0" * (-len(raw) % PAGE)


def read_geometry(fd: int, path: Path) -> Geometry:
    head = os.pread(fd, HEADER.size + 4, 0)
    if len(head) < HEADER.size + 4:
        raise HistoryFileError(f"{path}: too short for a history file ({len(head)} bytes)")
    magic, version, slots, npoints, batch = HEADER.unpack_from(head)
    if magic not in (SEC_MAGIC, MIN_MAGIC):
        raise HistoryFileError(f"{path}: not a busguard history file (magic {magic!r})")
    if version != VERSION:
        raise HistoryFileError(f"{path}: history format version {version}, this busguard "
                               f"reads version {VERSION}")
    (nlen,) = struct.unpack_from("<I", head, HEADER.size)
    raw = os.pread(fd, nlen, HEADER.size + 4)
    try:
        points = tuple(json.loads(raw.decode()))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HistoryFileError(f"{path}: damaged point list in the header ({exc})") from exc
    if len(points) != npoints or slots <= 0:
        raise HistoryFileError(f"{path}: header says {npoints} points, {slots} slots; lists "
                               f"{len(points)} names")
    hlen = HEADER.size + 4 + nlen
    hlen += -hlen % PAGE
    geo = Geometry(magic, points, slots, batch, hlen)
    if os.fstat(fd).st_size < geo.size:
        raise HistoryFileError(f"{path}: {os.fstat(fd).st_size} bytes, its header says "
                               f"{geo.size}")
    return geo


def create(path: Path, magic: bytes, points: Sequence[str], slots: int, batch: int) -> None:
    """Make a new, empty ring file at ``path`` atomically (the old one, if any, is replaced
    only once the new header is on disk). The slot area is a hole until written."""
    tmp = path.with_name(path.name + ".new")
    head = _header_bytes(magic, points, slots, batch)
    geo = Geometry(magic, tuple(points), slots, batch, len(head))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, head)
        os.ftruncate(fd, geo.size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def open_matching(path: Path, magic: bytes, points: Sequence[str], slots: int,
                  batch: int) -> tuple[int, Geometry, str]:
    """Open ``path`` for writing if it has this geometry, else start a new file (the old one
    kept as ``NAME.prev``). Returns the fd, the geometry and why a new file was made ('')."""
    why = ""
    if path.exists():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise HistoryFileError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            geo = read_geometry(fd, path)
            if geo.magic == magic and geo.points == tuple(points) and geo.slots == slots \
                    and geo.batch == batch:
                return fd, geo, ""
            why = "the site's points or the retention changed"
        except HistoryFileError as exc:
            why = str(exc)
        os.close(fd)
        os.replace(path, path.with_name(path.name + ".prev"))
    path.parent.mkdir(parents=True, exist_ok=True)
    create(path, magic, points, slots, batch)
    fd = os.open(path, os.O_RDWR)
    return fd, read_geometry(fd, path), why or "new"


class SecondsWriter:
    """Writes one slot per second into the seconds ring through a shared mapping."""

    def __init__(self, fd: int, geo: Geometry) -> None:
        self.geo = geo
        self.map = mmap.mmap(fd, geo.size)
        os.close(fd)
        n = len(geo.points)
        self._vals = struct.Struct(f"<{n}f")
        self._qual = struct.Struct(f"<{n}B")

    def write(self, t: int, values: Sequence[float], qualities: Sequence[int]) -> None:
        g = self.geo
        off = g.header_len + (t % g.slots) * g.slot_len
        SEC_STAMP.pack_into(self.map, off, NO_TIME)  # a reader never sees a half-written slot
        self._vals.pack_into(self.map, off + SEC_STAMP.size, *values)
        self._qual.pack_into(self.map, off + SEC_STAMP.size + 4 * len(g.points), *qualities)
        SEC_STAMP.pack_into(self.map, off, t)

    def close(self) -> None:
        self.map.close()


class MinutesWriter:
    """Writes whole batches into the minutes ring: one pwrite, one fdatasync."""

    def __init__(self, fd: int, geo: Geometry) -> None:
        self.fd = fd
        self.geo = geo
        self.bytes_written = 0
        self.batches = 0

    def write(self, first_minute: int, rows: Sequence[bytes]) -> None:
        """``rows``: one per point, ``batch`` x (min, avg, max) float32 then ``batch``
        quality bytes (:func:`pack_row`)."""
        g = self.geo
        table = []
        stored = []
        at = MIN_SLOT_HEAD + ROW_ENTRY.size * len(rows)
        for r in rows:
            z = zlib.compress(r, 6)
            data, flag = (z, DEFLATED) if len(z) < len(r) else (r, 0)
            table.append(ROW_ENTRY.pack(zlib.crc32(data), at, len(data) | flag))
            stored.append(data)
            at += len(data)
        payload = b"".join(table) + b"".join(stored)
        head = MIN_SLOT.pack(MIN_SLOT_MAGIC, first_minute, g.batch)
        head += b"\0" * (MIN_SLOT_HEAD - len(head))
        off = g.slot_offset((first_minute // g.batch) % g.slots)
        os.pwrite(self.fd, head + payload, off)
        os.fdatasync(self.fd)
        self.bytes_written += len(head) + len(payload)
        self.batches += 1

    def close(self) -> None:
        os.close(self.fd)


def read_row(fd: int, geo: Geometry, first_minute: int, point: int) -> bytes | None:
    """``point``'s row of the batch that starts at ``first_minute``, or None when that slot
    holds another batch, was never written or fails its CRC (a torn write)."""
    base = geo.slot_offset((first_minute // geo.batch) % geo.slots)
    head = os.pread(fd, MIN_SLOT.size, base)
    if len(head) < MIN_SLOT.size:
        return None
    magic, first, nmin = MIN_SLOT.unpack(head)
    if magic != MIN_SLOT_MAGIC or first != first_minute or nmin != geo.batch:
        return None
    ent = os.pread(fd, ROW_ENTRY.size, base + MIN_SLOT_HEAD + ROW_ENTRY.size * point)
    if len(ent) < ROW_ENTRY.size:
        return None
    crc, at, length = ROW_ENTRY.unpack(ent)
    size = length & ~DEFLATED
    if at + size > geo.slot_len:
        return None
    data = os.pread(fd, size, base + at)
    if len(data) != size or zlib.crc32(data) != crc:
        return None
    if length & DEFLATED:
        try:
            data = zlib.decompress(data)
        except zlib.error:
            return None
    return data if len(data) == geo.row_len else None


def pack_row(batch: int, mins: Sequence[float], avgs: Sequence[float], maxs: Sequence[float],
             quals: Sequence[int]) -> bytes:
    """One point's row of a batch (``batch`` entries each)."""
    trip = []
    for i in range(batch):
        trip += (mins[i], avgs[i], maxs[i])
    return struct.pack(f"<{3 * batch}f{batch}B", *trip, *quals)
