"""Small pieces the built-in blocks share: UTC time from a snapshot, input checks, timers.

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

from busguard.alarms import AlarmCondition, Severity
from busguard.errors import ConfigError
from busguard.image import Quality, Snapshot

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


def lost_inputs(snap: Snapshot, points: Iterable[str]) -> dict[str, str]:
    """Points that are not good, with their quality word (stale, bad, not-connected)."""
    out = {}
    for p in points:
        q = snap.quality[snap.index[p]]
        if q != Quality.GOOD:
            out[p] = Quality(q).word
    return out


def input_alarm(lost: dict[str, str], what: str, device: str = "",
                severity: Severity = Severity.WARNING) -> AlarmCondition:
    """One ``BG-INPUT`` alarm naming every lost input and what the block does about it."""
    listed = ", ".join(f"{p} {q}" for p, q in sorted(lost.items()))
    return AlarmCondition("input", severity, "BG-INPUT", f"input lost: {listed}; {what}",
                          device=device, values={"lost": dict(sorted(lost.items()))})


STARTUP_GRACE_S = 5.0
INPUT_RAISE_S = 2.0
INPUT_CLEAR_S = 2.0


class InputWatch:
    """The ``BG-INPUT`` alarm of a block, debounced so the fault log gets one raise and one
    clear per real loss, not one per flicker of a point's quality:

    - raised once inputs have been lost for ``raise_s`` (2 s) without a break; cleared once
      every input has been good again for ``clear_s`` (2 s). While raised, the alarm names the
      inputs lost now (or, in the clear hold-off, the last ones).
    - a start-up grace: in the first ``grace_s`` (5 s) after the block's first scan, inputs that
      are only *not connected yet* (drivers on their first poll, an LED decoder timing its
      first pattern) do not count, so a restart writes no burst of input alarms.

    Only the alarm is debounced: the block's decisions use the inputs' quality of this scan.
    Pure: it runs on the scan's ``now``.
    """

    def __init__(self, grace_s: float = STARTUP_GRACE_S, raise_s: float = INPUT_RAISE_S,
                 clear_s: float = INPUT_CLEAR_S) -> None:
        self.grace_s = grace_s
        self.t0: float | None = None
        self._raise = OnDelay(raise_s)
        self._clear = OnDelay(clear_s)
        self.active = False
        self._last: dict[str, str] = {}

    def tick(self, now: float) -> None:
        """Call at the start of every scan: the grace counts from the first one."""
        if self.t0 is None:
            self.t0 = now

    def alarm(self, lost: dict[str, str], now: float, what: str, device: str = "",
              severity: Severity = Severity.WARNING) -> AlarmCondition | None:
        self.tick(now)
        assert self.t0 is not None
        if now - self.t0 < self.grace_s and lost and \
                all(q == "not-connected" for q in lost.values()):
            lost = {}
        if self.active:
            if self._clear.update(not lost, now):
                self.active = False
                self._raise.update(False, now)
                return None
        elif self._raise.update(bool(lost), now):
            self.active = True
            self._clear.update(False, now)
        if not self.active:
            return None
        if lost:
            self._last = lost
        return input_alarm(self._last, what, device, severity)


def rnd(x: float, nd: int = 3) -> float | None:
    """A value rounded for alarm records (None for NaN, so the record stays valid JSON)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


@dataclass
class OnDelay:
    """True once ``cond`` has held for ``delay_s`` (a TON timer on the scan's clock)."""

    delay_s: float
    since: float | None = None

    def update(self, cond: bool, now: float) -> bool:
        if not cond:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.delay_s - 1e-9  # scan times are sums of floats


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
