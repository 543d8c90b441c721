"""Per-device communication statistics: latency percentiles, packet loss, CRC/framing errors.

Outcomes of the last ``window`` request attempts are kept in a ring, so the percentages
describe the recent link (they recover as a link heals) while the counters keep totals.

The ``comm_*`` health points are written after every poll, so the figures are kept ready
rather than computed from the ring each time: the loss and error shares are running counts
over the window, and each latency window keeps its samples sorted as they arrive (one
``bisect`` insert and one removal per sample), so a percentile is one index. Sorting 500
samples per poll was the largest single cost of a meter poll.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from typing import Any

from busguard.config.params import Param

OK = "ok"
TIMEOUT = "timeout"          # no answer in time: packet loss (errno 110)
DISCONNECT = "disconnect"    # connection refused/reset: packet loss too
CRC = "crc"                  # bytes came back but no valid frame (CRC/framing/garbage)
EXCEPTION = "exception"      # the device answered with a Modbus exception

LOSS_KINDS = (TIMEOUT, DISCONNECT)
# the option of every polled device (a meter, a peer busguard) that turns lost requests in a
# row (CommStats.consecutive_lost) into not-connected points
LOSS_LIMIT = Param(int, default=3, minval=1, maxval=1000,
                   doc="lost requests in a row before the points go not-connected")
_ANSWERED = frozenset((OK, EXCEPTION))


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of unsorted samples; NaN when there are none."""
    if not samples:
        return math.nan
    return _rank(sorted(samples), pct)


def _rank(s: list[float], pct: float) -> float:
    """Nearest-rank percentile of the sorted, non-empty list ``s``."""
    return s[max(1, math.ceil(pct / 100.0 * len(s))) - 1]


class SampleWindow:
    """The last ``maxlen`` samples in arrival order and, beside them, sorted.

    Behaves like the ``deque(maxlen=...)`` it replaces (``append``, ``len``, iteration in
    arrival order); :meth:`percentile` is the nearest-rank percentile without a sort. NaN
    samples (never produced by the driver) are kept out of the sorted list so the order
    stays valid; they count as missing.
    """

    __slots__ = ("_ring", "_sorted")

    def __init__(self, maxlen: int) -> None:
        self._ring: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] = []

    def append(self, x: float) -> None:
        ring = self._ring
        if len(ring) == ring.maxlen:
            old = ring[0]
            if old == old:  # not NaN: it is in the sorted list
                s = self._sorted
                del s[bisect_left(s, old)]
        ring.append(x)
        if x == x:
            insort(self._sorted, x)

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self) -> Iterator[float]:
        return iter(self._ring)

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile of the samples; NaN when there are none."""
        s = self._sorted
        return _rank(s, pct) if s else math.nan


class CommStats:
    def __init__(self, window: int = 500) -> None:
        self.latency_s = SampleWindow(window)
        self.poll_s = SampleWindow(window)
        self.late_s = SampleWindow(window)  # poll start after its slot
        self.outcomes: deque[str] = deque(maxlen=window)
        self.counts = {OK: 0, TIMEOUT: 0, DISCONNECT: 0, CRC: 0, EXCEPTION: 0}
        self._in_window = {OK: 0, TIMEOUT: 0, DISCONNECT: 0, CRC: 0, EXCEPTION: 0}
        self.polls = 0
        self.missed_polls = 0
        self.reconnects = 0
        self.consecutive_lost = 0

    def record(self, outcome: str, latency_s: float | None = None) -> None:
        outcomes = self.outcomes
        window = self._in_window
        if len(outcomes) == outcomes.maxlen:
            window[outcomes[0]] -= 1
        outcomes.append(outcome)
        window[outcome] += 1
        self.counts[outcome] += 1
        if outcome in _ANSWERED:
            if latency_s is not None:
                self.latency_s.append(latency_s)
            self.consecutive_lost = 0
        else:
            self.consecutive_lost += 1

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def _pct_of(self, kinds: tuple[str, ...]) -> float:
        n = len(self.outcomes)
        if not n:
            return 0.0
        window = self._in_window
        return 100.0 * sum(window[k] for k in kinds) / n

    def loss_pct(self) -> float:
        return self._pct_of(LOSS_KINDS)

    def error_pct(self) -> float:
        return self._pct_of((CRC,))

    def latency_ms(self, pct: float) -> float:
        return self.latency_s.percentile(pct) * 1e3

    def poll_latency_ms(self, pct: float) -> float:
        return self.poll_s.percentile(pct) * 1e3

    def late_ms(self, pct: float) -> float:
        return self.late_s.percentile(pct) * 1e3

    def as_dict(self) -> dict[str, Any]:
        """Counters and figures; None where there is nothing measured yet (JSON-safe)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self._raw().items()}

    def _raw(self) -> dict[str, Any]:
        return {"requests": self.requests, **{f"{k}_count": v for k, v in self.counts.items()},
                "polls": self.polls, "missed_polls": self.missed_polls,
                "reconnects": self.reconnects, "consecutive_lost": self.consecutive_lost,
                "latency_p50_ms": self.latency_ms(50), "latency_p99_ms": self.latency_ms(99),
                "poll_latency_p50_ms": self.poll_latency_ms(50),
                "loss_pct": self.loss_pct(), "error_pct": self.error_pct()}
