"""Scan timing statistics: cycle count, overruns and lateness percentiles over a window.

Lateness is how long after its deadline a cycle started. Samples go into a fixed ring (no
allocation per scan); percentiles are computed on demand, not every cycle.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import asdict, dataclass


@dataclass
class Counts:
    """Event counters (int fields, each 0 at first) reported as one dict: the base of the
    northbound server's :class:`~busguard.northbound.access.Counters` and the simulator's
    per-unit :class:`~busguard.sim.serve.UnitStats`."""

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ScanStats:
    cycles: int
    overruns: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    window: int
    period_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def line(self) -> str:
        return (f"cycles={self.cycles} overruns={self.overruns} "
                f"lateness p50={self.lateness_p50_ms:.3f} ms p99={self.lateness_p99_ms:.3f} ms "
                f"max={self.lateness_max_ms:.3f} ms (last {self.window} scans, "
                f"period {self.period_ms:g} ms)")


class LatenessRecorder:
    """Keeps the last ``window`` lateness samples and the counters."""

    def __init__(self, window: int, period_ms: float) -> None:
        self._ring = array("d", [0.0]) * window
        self._window = window
        self._n = 0
        self.cycles = 0
        self.overruns = 0
        self.max_s = 0.0
        self.period_ms = period_ms

    def add(self, lateness_s: float) -> None:
        self._ring[self._n % self._window] = lateness_s
        self._n += 1
        self.cycles += 1
        if lateness_s > self.max_s:
            self.max_s = lateness_s

    def overrun(self, missed: int = 1) -> None:
        self.overruns += missed

    def snapshot(self) -> ScanStats:
        count = min(self._n, self._window)
        samples = sorted(self._ring[:count])
        return ScanStats(self.cycles, self.overruns, _pct(samples, 50) * 1e3,
                         _pct(samples, 99) * 1e3, self.max_s * 1e3, count, self.period_ms)


def _pct(sorted_samples: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no samples."""
    if not sorted_samples:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_samples)))
    return sorted_samples[rank - 1]
