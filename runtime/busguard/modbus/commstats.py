"""Per-device communication statistics: latency percentiles, packet loss, CRC/framing errors.

Outcomes of the last ``window`` request attempts are kept in a ring, so the percentages
describe the recent link (they recover as a link heals) while the counters keep totals.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

OK = "ok"
TIMEOUT = "timeout"          # no answer in time: packet loss (errno 110)
DISCONNECT = "disconnect"    # connection refused/reset: packet loss too
CRC = "crc"                  # bytes came back but no valid frame (CRC/framing/garbage)
EXCEPTION = "exception"      # the device answered with a Modbus exception

LOSS_KINDS = (TIMEOUT, DISCONNECT)


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of unsorted samples; NaN when there are none."""
    if not samples:
        return math.nan
    s = sorted(samples)
    return s[max(1, math.ceil(pct / 100.0 * len(s))) - 1]


class CommStats:
    def __init__(self, window: int = 500) -> None:
        self.latency_s: deque[float] = deque(maxlen=window)
        self.poll_s: deque[float] = deque(maxlen=window)
        self.late_s: deque[float] = deque(maxlen=window)  # poll start after its slot
        self.outcomes: deque[str] = deque(maxlen=window)
        self.counts = {OK: 0, TIMEOUT: 0, DISCONNECT: 0, CRC: 0, EXCEPTION: 0}
        self.polls = 0
        self.missed_polls = 0
        self.reconnects = 0
        self.consecutive_lost = 0

    def record(self, outcome: str, latency_s: float | None = None) -> None:
        self.outcomes.append(outcome)
        self.counts[outcome] += 1
        if latency_s is not None and outcome in (OK, EXCEPTION):
            self.latency_s.append(latency_s)
        if outcome in (OK, EXCEPTION):
            self.consecutive_lost = 0
        else:
            self.consecutive_lost += 1

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def _pct_of(self, kinds: tuple[str, ...]) -> float:
        if not self.outcomes:
            return 0.0
        return 100.0 * sum(1 for o in self.outcomes if o in kinds) / len(self.outcomes)

    def loss_pct(self) -> float:
        return self._pct_of(LOSS_KINDS)

    def error_pct(self) -> float:
        return self._pct_of((CRC,))

    def latency_ms(self, pct: float) -> float:
        return percentile(list(self.latency_s), pct) * 1e3

    def poll_latency_ms(self, pct: float) -> float:
        return percentile(list(self.poll_s), pct) * 1e3

    def late_ms(self, pct: float) -> float:
        return percentile(list(self.late_s), pct) * 1e3

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
