"""Scan lateness in fixed buckets, counted by the scan thread and, with ``[scan] io =
"process"``, shared with the I/O process that serves ``/metrics`` (no prometheus-client
here: the scan process imports only this)."""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import struct
from pathlib import Path

LATENESS_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 1.0)


class LatenessHistogram:
    """Scan lateness in fixed buckets; ``observe`` runs in the scan thread (cheap, no lock:
    a reader may see a count one scan ahead of the sum, never a torn bucket list).

    With ``[scan] io = "process"`` the web server runs in the I/O process: the scan side
    then mirrors the counts into a small shared-memory file (:meth:`share`, a seqlock'd
    struct every ``MIRROR_EVERY`` scans: no syscall, a few microseconds) that the I/O side
    reads (:class:`SharedLateness`)."""

    MIRROR_EVERY = 10

    def __init__(self, bounds: tuple[float, ...] = LATENESS_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self._mm: mmap.mmap | None = None
        self._n = 0
        self._seq = 0

    def observe(self, lateness_s: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, lateness_s)] += 1
        self.sum += lateness_s
        if self._mm is not None:
            self._n += 1
            if self._n >= self.MIRROR_EVERY:
                self._n = 0
                self.mirror()

    def share(self, path: Path) -> None:
        """Mirror the counts into ``path`` (created 0600, unlinked by :meth:`unshare`)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _SHARED.size)
            self._mm = mmap.mmap(fd, _SHARED.size)
        finally:
            os.close(fd)
        self.path = path
        self.mirror()

    def unshare(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def mirror(self) -> None:
        mm = self._mm
        if mm is None:
            return
        self._seq += 1  # odd: writing
        _SEQ.pack_into(mm, 0, self._seq)
        _SHARED.pack_into(mm, 0, self._seq, self.sum, *self.counts)
        self._seq += 1  # even: consistent
        _SEQ.pack_into(mm, 0, self._seq)

    def state(self) -> tuple[list[int], float]:
        return list(self.counts), self.sum

    def buckets(self) -> list[tuple[str, float]]:
        return cumulative(self.bounds, *self.state())[0]


_SHARED = struct.Struct(f"<Qd{len(LATENESS_BOUNDS_S) + 1}Q")
_SEQ = struct.Struct("<Q")


def cumulative(bounds: tuple[float, ...], counts: list[int], total: float
               ) -> tuple[list[tuple[str, float]], float]:
    out, acc = [], 0
    for b, c in zip((*map(repr, bounds), "+Inf"), counts, strict=True):
        acc += c
        out.append((b, float(acc)))
    return out, total


class SharedLateness:
    """The I/O process's view of the scan process's :class:`LatenessHistogram`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bounds = LATENESS_BOUNDS_S
        self._mm: mmap.mmap | None = None

    def state(self) -> tuple[list[int], float] | None:
        if self._mm is None:
            try:
                with open(self.path, "rb") as f:
                    self._mm = mmap.mmap(f.fileno(), _SHARED.size, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                return None  # not there (yet): the scan side creates it at its start
        for _ in range(100):
            seq = _SEQ.unpack_from(self._mm, 0)[0]
            if seq % 2 == 0:
                got = _SHARED.unpack_from(self._mm, 0)
                if got[0] == seq and _SEQ.unpack_from(self._mm, 0)[0] == seq:
                    return list(got[2:]), float(got[1])
        return None

    def buckets(self) -> list[tuple[str, float]]:
        st = self.state()
        return cumulative(self.bounds, *st)[0] if st else []

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
