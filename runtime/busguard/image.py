"""The process image: every point's value, quality and timestamps at fixed offsets.

Drivers write into the live image from any thread; the scan takes one consistent
:class:`Snapshot` at the start of each cycle. Values, qualities and stamps are kept in flat
arrays indexed by point (not a dict of objects) so a snapshot is a handful of array copies under
one short lock, and the same layout can move to shared memory, the retained-state file and a
pre-encoded Modbus map.

Each point also keeps the min and max written since the last snapshot, so a spike that comes and
goes between two scans (a training job starting on thousands of GPUs) is not lost.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from busguard.clock import Clock

NAN = math.nan


class Quality(IntEnum):
    """Quality of a point value; the numeric codes are also what the Modbus map serves."""

    GOOD = 0
    STALE = 1
    BAD = 2
    NOT_CONNECTED = 3

    @property
    def word(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class PointSpec:
    """A point a driver or block declares: its name, unit and how old it may get.

    ``command`` points are written from outside (the DCIM, through the northbound command
    area) within ``[minval, maxval]``; they enter the image like any input, so they are
    recorded and replayed with the rest.

    ``mapped = False`` keeps a point out of the register map's extra area: a peer's points
    (:mod:`busguard.peer`) are thousands per hall and reach the DCIM through a summary block's
    outputs instead, not one extra record each.
    """

    name: str
    source: str
    unit: str = ""
    max_age_s: float = math.inf
    doc: str = ""
    retained: bool = True
    command: bool = False
    minval: float = -math.inf
    maxval: float = math.inf
    mapped: bool = True


@dataclass(frozen=True, slots=True)
class PointValue:
    """One point as the scan sees it."""

    name: str
    value: float
    quality: Quality
    t_mono: float
    t_utc: float
    source: str
    vmin: float = NAN
    vmax: float = NAN

    @property
    def good(self) -> bool:
        return self.quality is Quality.GOOD


class ImageWriter(Protocol):
    """What a driver may do with the image: write readings and qualities, ask whether a point
    is declared. :class:`ProcessImage` is one; with ``[scan] io = "process"`` the I/O process's
    drivers get :class:`busguard.ioproc.link.LinkImageWriter`, which sends the same calls over
    the link. Drivers never read the image."""

    def __contains__(self, name: object) -> bool: ...

    def write(self, name: str, value: float, quality: Quality = Quality.GOOD,
              t_mono: float | None = None, t_utc: float | None = None) -> None: ...

    def write_many(self, items: Iterable[tuple[str, float, Quality]],
                   t_mono: float | None = None, t_utc: float | None = None) -> None: ...

    def set_quality(self, names: Iterable[str], quality: Quality,
                    t_mono: float | None = None) -> None: ...


class PointWriter:
    """What both image writers share, :class:`ProcessImage` (the scan process's image) and
    :class:`busguard.ioproc.link.LinkImageWriter` (the I/O process's, over the link): the
    layout (``specs`` and ``index``), membership, the one-point :meth:`write` and the time
    stamps a write taken "now" gets. A subclass implements :meth:`write_many`."""

    specs: tuple[PointSpec, ...]
    index: dict[str, int]
    _clock: Clock

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __len__(self) -> int:
        return len(self.specs)

    def write(self, name: str, value: float, quality: Quality = Quality.GOOD,
              t_mono: float | None = None, t_utc: float | None = None) -> None:
        """Store one reading (value with its quality and the time it was taken)."""
        self.write_many(((name, value, quality),), t_mono, t_utc)

    def write_many(self, items: Iterable[tuple[str, float, Quality]],
                   t_mono: float | None = None, t_utc: float | None = None) -> None:
        raise NotImplementedError

    def stamps(self, t_mono: float | None, t_utc: float | None) -> tuple[float, float]:
        """A write's monotonic and UTC times: the given ones, else the clock's now."""
        return (self._clock.monotonic() if t_mono is None else t_mono,
                self._clock.wall() if t_utc is None else t_utc)


# quality code -> code after ageing a point past its max age: GOOD becomes STALE, others stay
_AGE_GOOD = bytes([Quality.STALE, *range(1, 256)])


class ProcessImage(PointWriter):
    """The live input image. Thread-safe for writers; snapshots are consistent."""

    def __init__(self, specs: Iterable[PointSpec], clock: Clock) -> None:
        self.specs: tuple[PointSpec, ...] = tuple(specs)
        self.index: dict[str, int] = {}
        for i, spec in enumerate(self.specs):
            if spec.name in self.index:
                raise ValueError(f"point {spec.name!r} declared twice")
            self.index[spec.name] = i
        n = len(self.specs)
        self._clock = clock
        self._lock = threading.Lock()
        self.values = array("d", [NAN]) * n
        self.quality = array("B", [Quality.NOT_CONNECTED]) * n
        self.t_mono = array("d", [-math.inf]) * n
        self.t_utc = array("d", [0.0]) * n
        self.vmin = array("d", [NAN]) * n
        self.vmax = array("d", [NAN]) * n
        self.max_age = array("d", [s.max_age_s for s in self.specs])
        # runs of consecutive points with the same finite max age (a device's points are
        # declared together): ageing checks a run's oldest stamp first and looks at its
        # points one by one only when that one is old enough to be stale
        self._age_runs: list[tuple[int, int, float]] = []
        for i, age in enumerate(self.max_age):
            if math.isinf(age):
                continue
            if self._age_runs and self._age_runs[-1][1] == i and self._age_runs[-1][2] == age:
                a, _b, _ = self._age_runs[-1]
                self._age_runs[-1] = (a, i + 1, age)
            else:
                self._age_runs.append((i, i + 1, age))

    def write_many(self, items: Iterable[tuple[str, float, Quality]],
                   t_mono: float | None = None, t_utc: float | None = None) -> None:
        """Store several readings taken at the same instant, atomically for the scan."""
        tm, tw = self.stamps(t_mono, t_utc)
        idx = self.index
        good = Quality.GOOD
        with self._lock:
            # the arrays as locals, bound under the lock (snapshot() swaps vmin/vmax under it):
            # a meter poll writes ~30 points per call, many times a second per meter, and the
            # attribute lookups per point were most of this loop's cost
            quality, t_mono, t_utc = self.quality, self.t_mono, self.t_utc
            values, vmin, vmax = self.values, self.vmin, self.vmax
            for name, value, q in items:
                i = idx[name]
                v = float(value)
                quality[i] = q
                t_mono[i] = tm
                t_utc[i] = tw
                if q is good or q == 0:
                    values[i] = v
                    if not (vmin[i] <= v):  # NaN-safe: first value of the window
                        vmin[i] = v
                    if not (vmax[i] >= v):
                        vmax[i] = v

    def write_indexed(self, items: Iterable[tuple[int, float, int]], t_mono: float,
                      t_utc: float) -> None:
        """:meth:`write_many` by point index and quality code: the I/O process's writes,
        which arrive indexed by the layout. At 256 meters the scan process applies about
        77,000 points a second; by name (a dict lookup and a :class:`Quality` per point) that
        was most of a cycle's cost and, when a burst of them came in one cycle, its overruns
        (docs/benchmarks.md, the scale curve)."""
        with self._lock:
            quality, tmono, tutc = self.quality, self.t_mono, self.t_utc
            values, vmin, vmax = self.values, self.vmin, self.vmax
            for i, v, q in items:
                quality[i] = q
                tmono[i] = t_mono
                tutc[i] = t_utc
                if q == 0:
                    values[i] = v
                    if not (vmin[i] <= v):  # NaN-safe: first value of the window
                        vmin[i] = v
                    if not (vmax[i] >= v):
                        vmax[i] = v

    def set_quality_indexed(self, indices: Iterable[int], quality: int,
                            t_mono: float) -> None:
        """:meth:`set_quality` by point index (the I/O process's quality changes)."""
        with self._lock:
            q, tmono = self.quality, self.t_mono
            for i in indices:
                q[i] = quality
                tmono[i] = t_mono

    def set_quality(self, names: Iterable[str], quality: Quality,
                    t_mono: float | None = None) -> None:
        """Mark points (e.g. all of a device that stopped answering) without a new value.

        The last value is kept so operators see what it was; the quality says it is not current.
        """
        tm = self._clock.monotonic() if t_mono is None else t_mono
        with self._lock:
            for name in names:
                i = self.index[name]
                self.quality[i] = quality
                self.t_mono[i] = tm

    def restore(self, name: str, value: float, t_utc: float) -> None:
        """Load a retained value after a restart: served at once, marked stale."""
        with self._lock:
            i = self.index[name]
            self.values[i] = value
            self.quality[i] = Quality.STALE
            self.t_utc[i] = t_utc

    def held(self) -> tuple[array, array, array, array]:
        """Copies of (values, quality, t_mono, t_utc) as held now, for a state export
        (:mod:`busguard.statedoc`); unlike :meth:`snapshot` the min/max window goes on."""
        with self._lock:
            return self.values[:], self.quality[:], self.t_mono[:], self.t_utc[:]

    def adopt(self, items: Iterable[tuple[int, float, int, float, float]]) -> None:
        """Take over points as another image of this process held them (a reload): (index,
        value, quality code, t_utc, t_mono), the value kept whatever its quality."""
        with self._lock:
            for i, v, q, tu, tm in items:
                self.values[i] = v
                self.quality[i] = q
                self.t_utc[i] = tu
                self.t_mono[i] = tm

    def snapshot(self, now: float | None = None) -> Snapshot:
        """A consistent copy for one scan; starts a new min/max window."""
        now = self._clock.monotonic() if now is None else now
        n = len(self.specs)
        with self._lock:
            values = self.values[:]
            quality = self.quality[:]
            t_mono = self.t_mono[:]
            t_utc = self.t_utc[:]
            vmin = self.vmin[:]
            vmax = self.vmax[:]
            nan_row = array("d", [NAN]) * n
            self.vmin = nan_row
            self.vmax = nan_row[:]
        # Ageing, every scan over every point: per run of equal max age, the oldest stamp
        # first (min() runs in C). now - t only grows as t falls, so when the oldest point
        # of a run is not stale, none is: the common case costs one min() per device.
        # A device that stopped answering keeps its points GOOD in the live image (the
        # driver's word) with old stamps, so they age here every scan: when the newest stamp
        # of the run is stale too (the usual case: a device's points are written together),
        # the whole run is flagged by one bytes.translate in C instead of a Python loop per
        # point (that loop made a scan with a dead meter network ~5x dearer than a healthy one).
        stale = Quality.STALE  # a local: the Enum attribute lookup per stale point cost ~4x
        span_a = span_b = 0  # consecutive whole-stale runs, translated together
        for a, b, age in self._age_runs:
            stamps = t_mono[a:b]
            if not now - min(stamps) > age:
                continue
            if now - max(stamps) > age:
                if a != span_b:
                    if span_b > span_a:
                        quality[span_a:span_b] = array(
                            "B", quality[span_a:span_b].tobytes().translate(_AGE_GOOD))
                    span_a = a
                span_b = b
                continue
            for i in range(a, b):
                if quality[i] == 0 and now - t_mono[i] > age:
                    quality[i] = stale
        if span_b > span_a:
            quality[span_a:span_b] = array(
                "B", quality[span_a:span_b].tobytes().translate(_AGE_GOOD))
        return Snapshot(self.specs, self.index, now, values, quality, t_mono, t_utc, vmin, vmax)


_QUALITY = tuple(Quality)  # code -> member, without Enum.__call__ (hot path of every block)


class Snapshot(Mapping[str, PointValue]):
    """The frozen input image of one scan cycle, read by blocks."""

    __slots__ = ("index", "now", "quality", "specs", "t_mono", "t_utc", "values", "vmax", "vmin")

    def __init__(self, specs: tuple[PointSpec, ...], index: Mapping[str, int], now: float,
                 values: array, quality: array, t_mono: array, t_utc: array,
                 vmin: array, vmax: array) -> None:
        self.specs = specs
        self.index = index
        self.now = now
        self.values = values
        self.quality = quality
        self.t_mono = t_mono
        self.t_utc = t_utc
        self.vmin = vmin
        self.vmax = vmax

    def __getitem__(self, name: str) -> PointValue:
        i = self.index[name]
        return PointValue(name, self.values[i], _QUALITY[self.quality[i]], self.t_mono[i],
                          self.t_utc[i], self.specs[i].source, self.vmin[i], self.vmax[i])

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def value(self, name: str, default: float = NAN) -> float:
        """The value if the point is good, else ``default``."""
        i = self.index[name]
        return self.values[i] if self.quality[i] == 0 else default

    def peak(self, name: str) -> float:
        """Highest value written since the previous scan (the value itself if none was)."""
        i = self.index[name]
        hi = self.vmax[i]
        return self.values[i] if math.isnan(hi) else max(hi, self.values[i])

    def is_good(self, name: str) -> bool:
        return self.quality[self.index[name]] == 0

    def age_s(self, name: str) -> float:
        return self.now - self.t_mono[self.index[name]]
