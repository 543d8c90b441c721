"""Small pieces the built-in blocks share: UTC time from a snapshot, limits, command counters,
option order checks (the input watch is the Block API's: :mod:`busguard.inputwatch`).

Everything here is pure (a function of the snapshot, ``now`` and the caller's own state), so
blocks built on it stay replayable.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from busguard.alarms import Severity
from busguard.errors import ConfigError
from busguard.image import Snapshot
from busguard.inputwatch import OnDelay

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig

SEVERITIES = tuple(s.word for s in Severity)


def wall_utc(snap: Snapshot, now: float, prefer: Iterable[str] = ()) -> float:
    """The UTC time of this scan, derived from the snapshot alone (no clock read).

    Every point write carries a monotonic and a UTC stamp taken together, so
    ``t_utc + (now - t_mono)`` of the most recently written point is the scan's UTC time.
    Points in ``prefer`` (e.g. the input that caused a trip) are tried first, which saves
    scanning the whole image. Returns NaN when nothing was ever written.
    """
    for name in prefer:
        i = snap.index.get(name)
        if i is not None and snap.t_utc[i] > 0.0 and math.isfinite(snap.t_mono[i]) \
                and snap.t_mono[i] <= now:
            return snap.t_utc[i] + (now - snap.t_mono[i])
    best = -math.inf
    best_i = -1
    t_mono = snap.t_mono
    for i in range(len(t_mono)):
        tm = t_mono[i]
        if tm > best and snap.t_utc[i] > 0.0 and tm <= now:
            best = tm
            best_i = i
    if best_i < 0:
        return math.nan
    return snap.t_utc[best_i] + (now - best)


def iso_utc(t: float) -> str:
    """``2026-01-01T00:00:00.000Z`` for a UTC epoch time ('' when unknown)."""
    if not math.isfinite(t):
        return ""
    whole = math.floor(t)
    ms = round((t - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def rnd(x: float, nd: int = 3) -> float | None:
    """A value rounded for alarm records (None for NaN, so the record stays valid JSON)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


@dataclass
class HighLimit:
    """A high limit with an on-delay and hysteresis: raises above ``limit`` after ``delay_s``,
    clears once the value is back at or below ``limit - hysteresis``."""

    limit: float
    hysteresis: float = 0.0
    delay_s: float = 0.0
    active: bool = False

    def __post_init__(self) -> None:
        self._timer = OnDelay(self.delay_s)

    def update(self, value: float, now: float) -> bool:
        return self._judge(value, self.limit, now)

    def _judge(self, value: float, limit: float, now: float) -> bool:
        if self.active:
            if value <= limit - self.hysteresis:
                self.active = False
                self._timer.since = None
        elif self._timer.update(value > limit, now):
            self.active = True
        return self.active


@dataclass
class LowLimit(HighLimit):
    """Mirror of :class:`HighLimit` for values that must stay above a limit: the same rule
    on the negated value and limit."""

    def update(self, value: float, now: float) -> bool:
        return self._judge(-value, -self.limit, now)


class CommandCounter:
    """A command point is a counter: a change to a new good value fires once.

    The first good value seen is the baseline (a restart never replays an old command).
    """

    def __init__(self, point: str) -> None:
        self.point = point
        self.last: float | None = None

    def fired(self, snap: Snapshot) -> bool:
        if self.point not in snap.index or not snap.is_good(self.point):
            return False
        value = snap.values[snap.index[self.point]]
        last, self.last = self.last, value
        return last is not None and value != last


def check_order(config: BlockConfig, *chain: str, strict: bool = True) -> None:
    """Options that must increase along ``chain`` (e.g. warn_c < alarm_c < trip_c); raises one
    :class:`ConfigError` naming each pair out of order, in the site file's error format."""
    problems = []
    p = config.params
    for lo, hi in itertools.pairwise(chain):
        a, b = p[lo], p[hi]
        if a is None or b is None:
            continue
        if a > b or (strict and a == b):
            rel = "below" if strict else "at most"
            problems.append(config.problem(f"{lo}",
                                           f"got {a:g}; must be {rel} {hi} ({b:g})"))
    if problems:
        raise ConfigError(problems)
