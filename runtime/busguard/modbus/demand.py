"""Power demand computed by busguard: the sliding mean of a meter's ``power_kw``.

Most meters' own demand registers use fixed or rolling blocks configured on the device, and
many meters have none; busguard computes one demand the same way for every meter from the
``power_kw`` it reads, so a DCIM compares like with like (docs/meters.md):

- ``demand_kw``: the arithmetic mean of the ``power_kw`` samples read in the last
  ``window_s`` (15 minutes), sliding: samples older than the window drop out one bucket
  (``bucket_s``, 1 s) at a time. Polls that fail leave no sample (the mean is over what was
  read). During the first window after start it is the mean of what was read so far.
- ``demand_peak_kw``: the highest ``demand_kw`` since busguard started, counted from the first
  full window on (a start-up inrush alone does not set it); before that it is not known yet.

Memory is bounded: one (sum, count) per bucket, ``window_s / bucket_s`` buckets. Each sample
costs O(1): running totals, re-summed exactly once per window so rounding cannot drift.
"""

from __future__ import annotations

import math
from collections import deque

DEMAND_WINDOW_S = 900.0
DEMAND_BUCKET_S = 1.0


class DemandWindow:
    """The sliding mean of samples (``t`` in seconds on any monotonic clock, value in kW)."""

    def __init__(self, window_s: float = DEMAND_WINDOW_S,
                 bucket_s: float = DEMAND_BUCKET_S) -> None:
        if not (window_s > 0 and 0 < bucket_s <= window_s):
            raise ValueError(f"window_s {window_s!r} and bucket_s {bucket_s!r}: expected "
                             f"0 < bucket_s <= window_s")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._span = max(1, round(window_s / bucket_s))  # buckets in one window
        self._buckets: deque[list[float]] = deque()  # [bucket index, sum, count]
        self._first: float | None = None
        self._last_t = -math.inf
        self._sum = 0.0
        self._count = 0
        self._since_resum = 0
        self.demand_kw = math.nan
        self.peak_kw = math.nan

    @property
    def full(self) -> bool:
        """True once samples have been taken for a whole window."""
        return bool(self._buckets) and self._first is not None and \
            self._buckets[-1][0] - self._first >= self._span - 1

    def add(self, t: float, kw: float) -> tuple[float, float]:
        """Take the sample ``kw`` at time ``t``; returns (demand_kw, peak_kw). A NaN or
        infinite sample, or one older than the newest, is ignored."""
        if not math.isfinite(kw) or not t >= self._last_t:
            return self.demand_kw, self.peak_kw
        self._last_t = t
        idx = math.floor(t / self.bucket_s)
        if self._first is None:
            self._first = idx
        if self._buckets and self._buckets[-1][0] == idx:
            self._buckets[-1][1] += kw
            self._buckets[-1][2] += 1
        else:
            self._buckets.append([idx, kw, 1])
        self._sum += kw
        self._count += 1
        oldest = idx - self._span + 1
        while self._buckets[0][0] < oldest:
            _i, old_sum, old_n = self._buckets.popleft()
            self._sum -= old_sum
            self._count -= int(old_n)
        self._since_resum += 1
        if self._since_resum >= self._span:  # exact totals again, once per window of samples
            self._since_resum = 0
            self._sum = math.fsum(b[1] for b in self._buckets)
            self._count = sum(int(b[2]) for b in self._buckets)
        self.demand_kw = self._sum / self._count
        if self.full:
            self.peak_kw = self.demand_kw if math.isnan(self.peak_kw) else \
                max(self.peak_kw, self.demand_kw)
        return self.demand_kw, self.peak_kw

    def reset_peak(self) -> None:
        """Forget the peak (it restarts from the next full window's demand)."""
        self.peak_kw = math.nan
