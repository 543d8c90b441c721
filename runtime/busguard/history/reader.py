"""Reading the on-box history: ``busguard history``, the web page's trends, tests.

A reader opens the files read-only and never locks them: the recorder writes a slot's time
stamp last (seconds) or a CRC per row (minutes), so a slot being written reads as missing,
never as a wrong value. Files replaced by the recorder (the site's points changed) are noticed
at the next call (inode check) and reopened.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from busguard.history import ring
from busguard.image import Quality

NO_DATA = 255  # quality byte of a minute without a single sample
SECONDS_SPAN_S = 3600.0  # "auto": up to this span, 1 s samples; beyond, 1 min
RESOLUTIONS = ("auto", "1s", "1min")


class Sample(NamedTuple):
    """One history sample; for 1 s samples min = avg = max = the value. ``quality`` is the
    worst :class:`busguard.image.Quality` code seen in the interval. NaN: no value."""

    t_utc: float
    min: float
    avg: float
    max: float
    quality: int


def history_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "history"


def seconds_path(state_dir: Path) -> Path:
    """Where the seconds ring is: ``history/seconds.path`` names it when it is elsewhere
    (in RAM), else ``history/seconds.ring``."""
    hdir = history_dir(state_dir)
    try:
        named = (hdir / "seconds.path").read_text().strip()
    except OSError:
        named = ""
    return Path(named) if named else hdir / "seconds.ring"


class _Ring:
    """One ring file opened read-only, reopened when the recorder replaces it."""

    def __init__(self, path: Path, magic: bytes) -> None:
        self.path = path
        self.magic = magic
        self.fd = -1
        self.ino = -1
        self.geo: ring.Geometry | None = None

    def current(self) -> ring.Geometry | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self.close()
            return None
        if st.st_ino != self.ino or self.geo is None:
            self.close()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                geo = ring.read_geometry(fd, self.path)
            except Exception:
                os.close(fd)
                raise
            if geo.magic != self.magic:
                os.close(fd)
                kind = "seconds" if self.magic == ring.SEC_MAGIC else "minutes"
                raise ring.HistoryFileError(f"{self.path}: not a {kind} ring")
            self.fd, self.ino, self.geo = fd, st.st_ino, geo
        return self.geo

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.ino, self.geo = -1, -1, None


class HistoryReader:
    """The history of one unit's points (:func:`open_reader`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._min = _Ring(history_dir(state_dir) / "minutes.ring", ring.MIN_MAGIC)
        self._sec = _Ring(seconds_path(state_dir), ring.SEC_MAGIC)

    def points(self) -> list[str]:
        """Every point either ring holds, in the site's order."""
        out: list[str] = []
        for r in (self._min, self._sec):
            geo = r.current()
            if geo is not None:
                out += [p for p in geo.points if p not in out]
        return out

    def query(self, point: str, since_s: float, until_s: float | None = None,
              resolution: str = "auto") -> list[Sample]:
        """Samples of ``point`` from ``since_s`` to ``until_s`` (UTC seconds; None: now),
        oldest first. ``resolution``: "1s" (the last hour only), "1min" (min/avg/max per
        minute) or "auto" (1 s up to an hour's span, 1 min beyond). Gaps are left out."""
        until = time.time() if until_s is None else float(until_s)
        since = float(since_s)
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution {resolution!r}: expected one of "
                             f"{', '.join(RESOLUTIONS)}")
        if math.isnan(since) or math.isnan(until):
            raise ValueError("since/until: not a number")
        if resolution == "auto":
            resolution = "1s" if until - since <= SECONDS_SPAN_S else "1min"
        if point not in self.points():
            raise LookupError(f"no history for point {point!r}")
        if resolution == "1s":
            return [Sample(float(t), v, v, v, q) for t, v, q in self._seconds(point, since, until)]
        return list(self._minutes(point, since, until))

    def _seconds(self, point: str, since: float, until: float) -> Iterator[tuple[int, float, int]]:
        geo = self._sec.current()
        if geo is None or point not in geo.points:
            return
        p = geo.points.index(point)
        t0 = max(math.ceil(since), math.floor(until) - geo.slots + 1)
        t1 = math.floor(until)
        if t1 < t0:
            return
        n = len(geo.points)
        stamp, f32 = ring.SEC_STAMP, struct.Struct("<f")
        for t, data, off in slots(self._sec.fd, geo, t0, t1):
            if stamp.unpack_from(data, off)[0] != t:
                continue
            (v,) = f32.unpack_from(data, off + 8 + 4 * p)
            yield t, v, data[off + 8 + 4 * n + p]

    def _minutes(self, point: str, since: float, until: float) -> Iterator[Sample]:
        geo = self._min.current()
        m0, m1 = math.floor(since / 60.0), math.floor(until / 60.0)
        if geo is not None and point in geo.points:
            batch = geo.batch
            m0 = max(m0, (m1 // batch - geo.slots + 1) * batch)
        else:
            batch = 10
        b = m0 // batch
        fill_from = None  # the first minute no flushed batch holds: from the seconds ring
        while b * batch <= m1:
            rows = self._batch(geo, point, b) if geo is not None else None
            if rows is None:
                fill_from = b * batch if fill_from is None else fill_from
            else:
                if fill_from is not None:
                    yield from self._from_seconds(point, fill_from, b * batch - 1, m0, m1)
                    fill_from = None
                yield from (s for s in rows if m0 * 60 <= s.t_utc <= m1 * 60)
            b += 1
        if fill_from is not None:
            yield from self._from_seconds(point, fill_from, m1, m0, m1)

    def _batch(self, geo: ring.Geometry | None, point: str, b: int) -> list[Sample] | None:
        if geo is None:
            return None
        row = ring.read_row(self._min.fd, geo, b * geo.batch, geo.points.index(point))
        if row is None:
            return None
        k = geo.batch
        vals = struct.unpack_from(f"<{3 * k}f", row)
        out = []
        for i in range(k):
            q = row[12 * k + i]
            if q != NO_DATA:
                out.append(Sample(float((b * k + i) * 60), vals[3 * i], vals[3 * i + 1],
                                  vals[3 * i + 2], q))
        return out

    def _from_seconds(self, point: str, first: int, last: int, m0: int,
                      m1: int) -> Iterator[Sample]:
        """Minutes ``first..last`` (clipped to ``m0..m1``) aggregated from 1 s samples: the
        batch not yet flushed to flash, or one lost to a torn write."""
        first, last = max(first, m0), min(last, m1)
        if last < first:
            return
        per_min: dict[int, list[tuple[float, int]]] = {}
        for t, v, q in self._seconds(point, first * 60, last * 60 + 59):
            per_min.setdefault(t // 60, []).append((v, q))
        for m in sorted(per_min):
            yield aggregate(m, per_min[m])

    def close(self) -> None:
        self._min.close()
        self._sec.close()


def slots(fd: int, geo: ring.Geometry, t0: int,
          t1: int) -> Iterator[tuple[int, bytes, int]]:
    """Seconds ring: ``(t, buffer, offset of t's slot)`` for t in ``t0..t1`` (at most one
    lap), read in at most two preads (the range may wrap around the ring's end)."""
    t0 = max(t0, t1 - geo.slots + 1)
    t = t0
    while t <= t1:
        s0 = t % geo.slots
        count = min(t1 - t + 1, geo.slots - s0)
        data = os.pread(fd, count * geo.slot_len, geo.header_len + s0 * geo.slot_len)
        for i in range(min(count, len(data) // geo.slot_len)):
            yield t + i, data, i * geo.slot_len
        t += count


def aggregate(minute: int, samples: list[tuple[float, int]]) -> Sample:
    """One minute's min/avg/max of its 1 s samples (NaN values left out) and worst quality."""
    vals = [v for v, _q in samples if not math.isnan(v)]
    q = max(q for _v, q in samples)
    if not vals:
        nan = float("nan")
        return Sample(float(minute * 60), nan, nan, nan, q)
    return Sample(float(minute * 60), min(vals), sum(vals) / len(vals), max(vals), q)


def open_reader(state_dir: Path) -> HistoryReader:
    """The history store of the unit whose ``[paths] state_dir`` is ``state_dir``. Raises
    :class:`busguard.history.ring.HistoryFileError` when it has none (no ``[history]``, or
    the runtime has not started yet) or the files are not a history store."""
    r = HistoryReader(state_dir)
    if not r.points():
        raise ring.HistoryFileError(
            f"no history in {history_dir(state_dir)} (is [history] in the site file, and has "
            f"`busguard run` started?)")
    return r


__all__ = ["HistoryReader", "Quality", "Sample", "aggregate", "open_reader"]
