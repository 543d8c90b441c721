"""Breaker-handle LED patterns: a pure decoder from sampled levels, and the generator the
simulator uses to show them.

Codes (the ``{breaker}.led`` point): ``0`` off, ``1`` solid (overcurrent trip), ``N >= 2``
N-blink (``2`` = ground fault); unclassifiable patterns are BAD. A single slow blink has no
code of its own in that scheme (``1`` is solid), so it is reported as unclassifiable too.

The decoder works on debounced segments (lit or dark, with their durations) and tolerant
bands rather than exact timings, so jitter on a phototransistor or a slow sampler does not
change the answer:

- lit for ``solid_s`` without a break: solid; dark for ``off_s``: off (both reset the evidence);
- a blink is lit for at most ``pulse_max_s``; dark up to ``gap_max_s`` keeps a group together,
  dark for ``group_gap_s`` or more separates groups; anything between the bands is malformed;
- a group counts once dark separates it on both sides; ``confirm_groups`` consecutive complete
  groups with the same count give N-blink, differing counts give unclassifiable;
- until the evidence decides, the previous answer holds (no flapping mid-pattern).

Nothing here reads a clock: callers pass times (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from busguard.config.params import Param


@dataclass(frozen=True)
class LedTiming:
    """The decoder's bands in seconds; a [[breaker]] sets them in ms (:data:`TIMING_PARAMS`,
    whose defaults are these)."""

    glitch_s: float = 0.03
    pulse_max_s: float = 0.7
    gap_max_s: float = 0.7
    group_gap_s: float = 1.0
    solid_s: float = 1.5
    off_s: float = 3.0
    confirm_groups: int = 2
    max_blinks: int = 9

    def problems(self) -> list[str]:
        """What is inconsistent in these bands (empty when usable)."""
        out = []
        if not 0 <= self.glitch_s < self.pulse_max_s < self.solid_s:
            out.append("expected glitch_ms < pulse_max_ms < solid_ms")
        if not self.glitch_s < self.gap_max_s < self.group_gap_s < self.off_s:
            out.append("expected glitch_ms < gap_max_ms < group_gap_ms < off_ms")
        if self.confirm_groups < 1 or self.max_blinks < 2:
            out.append("expected confirm_groups >= 1 and max_blinks >= 2")
        return out

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> LedTiming:
        """From a [[breaker]]'s validated options (``glitch_ms``... in ms)."""
        return cls(**{f.name: p[f"{f.name[:-2]}_ms"] / 1000 if f.name.endswith("_s")
                      else p[f.name] for f in fields(cls)})


_DEFAULT = LedTiming()
# a [[breaker]]'s LED timing options: the bands above, in ms, defaults from LedTiming
TIMING_PARAMS: dict[str, Param] = {
    "glitch_ms": Param(float, default=_DEFAULT.glitch_s * 1000, minval=0.0, unit="ms"),
    "pulse_max_ms": Param(float, default=_DEFAULT.pulse_max_s * 1000, above=0.0, unit="ms",
                          doc="longest lit time of one blink"),
    "gap_max_ms": Param(float, default=_DEFAULT.gap_max_s * 1000, above=0.0, unit="ms",
                        doc="longest dark time between blinks of a group"),
    "group_gap_ms": Param(float, default=_DEFAULT.group_gap_s * 1000, above=0.0, unit="ms",
                          doc="shortest dark time between blink groups"),
    "solid_ms": Param(float, default=_DEFAULT.solid_s * 1000, above=0.0, unit="ms",
                      doc="lit this long without a break: solid"),
    "off_ms": Param(float, default=_DEFAULT.off_s * 1000, above=0.0, unit="ms",
                    doc="dark this long: off"),
    "confirm_groups": Param(int, default=_DEFAULT.confirm_groups, minval=1, maxval=5,
                            doc="equal blink groups in a row before N-blink is reported"),
    "max_blinks": Param(int, default=_DEFAULT.max_blinks, minval=2, maxval=20),
}


@dataclass(frozen=True)
class LedReading:
    """``kind`` is "off", "solid", "blink", "bad" or "pending" (not enough evidence yet)."""

    kind: str
    n: int = 0
    why: str = ""

    @property
    def code(self) -> int | None:
        """The ``{breaker}.led`` value, or None when the point must be BAD (or not yet set)."""
        if self.kind == "off":
            return 0
        if self.kind == "solid":
            return 1
        if self.kind == "blink" and self.n >= 2:
            return self.n
        return None

    @property
    def label(self) -> str:
        return f"{self.n}-blink" if self.kind == "blink" else self.kind


PENDING = LedReading("pending")


class LedDecoder:
    """Feed it samples (``feed``); ask it what the LED shows (``classify``)."""

    def __init__(self, timing: LedTiming | None = None) -> None:
        self.timing = timing or LedTiming()
        t = self.timing
        keep = 2 * (t.max_blinks + 2) * (t.confirm_groups + 2) + 8
        self._edges: deque[tuple[float, int]] = deque(maxlen=keep)  # (time, new level)
        self._level: int | None = None
        self.last: LedReading = PENDING

    def feed(self, t: float, level: int) -> None:
        """One sample: the logical LED level (1 lit) at time ``t``."""
        level = 1 if level else 0
        if level != self._level:
            self._edges.append((t, level))
            self._level = level

    def _segments(self, now: float) -> list[tuple[int, float, bool]]:
        """Debounced (level, duration, ongoing) segments, oldest first."""
        g = self.timing.glitch_s
        edges = list(self._edges)
        segs: list[list[float]] = []  # [level, start, end]
        for i, (t0, lvl) in enumerate(edges):
            t1 = edges[i + 1][0] if i + 1 < len(edges) else now
            segs.append([lvl, t0, max(t0, t1)])
        out: list[list[float]] = []
        for k, seg in enumerate(segs):
            ongoing = k == len(segs) - 1
            short = seg[2] - seg[1] < g
            if short and out:
                out[-1][2] = seg[2]  # a glitch: the previous level goes on
                continue
            if out and out[-1][0] == seg[0]:
                out[-1][2] = seg[2]
                continue
            if short and not ongoing and not out:
                continue  # a glitch at the very start: drop it
            out.append(seg)
        return [(int(s[0]), s[2] - s[1], i == len(out) - 1) for i, s in enumerate(out)]

    def classify(self, now: float) -> LedReading:
        reading = self._classify(now)
        if reading.kind != "pending":
            self.last = reading
        return self.last

    def _classify(self, now: float) -> LedReading:
        t = self.timing
        segs = self._segments(now)
        if not segs:
            return PENDING
        lvl, dur, _ = segs[-1]
        if lvl and dur >= t.solid_s:
            return LedReading("solid")
        if not lvl and dur >= t.off_s:
            return LedReading("off")
        # evidence starts after the last reset (a solid or an off period)
        start, sep_before = 0, False
        for i in range(len(segs) - 2, -1, -1):
            s_lvl, s_dur, _ = segs[i]
            if (s_lvl and s_dur >= t.solid_s) or (not s_lvl and s_dur >= t.off_s):
                start, sep_before = i + 1, not s_lvl
                break
        # A malformed spell makes the pattern unclassifiable until `confirm_groups` complete
        # groups after it agree again (one sampling hiccup costs a few seconds, not a minute).
        groups: list[int] = []  # pulse counts of complete groups
        count, in_group_since_sep = 0, sep_before
        bad = ""
        for i in range(start, len(segs)):
            s_lvl, s_dur, ongoing = segs[i]
            first_truncated = i == 0
            why = ""
            if s_lvl:
                if ongoing and s_dur > t.pulse_max_s:
                    return PENDING  # solid coming, or malformed: the next samples tell
                if s_dur <= t.pulse_max_s:
                    count += 1
                    if count > t.max_blinks:
                        why = f"more than {t.max_blinks} blinks in a group"
                elif not first_truncated:
                    why = f"lit {s_dur * 1000:.0f} ms: too long for a blink, too short for solid"
            elif s_dur >= t.group_gap_s:  # a separator (an ongoing one counts once long enough)
                if count and in_group_since_sep:
                    groups.append(count)
                count, in_group_since_sep = 0, True
            elif first_truncated:
                in_group_since_sep = False  # we did not see where this dark period began
            elif not (s_dur <= t.gap_max_s or ongoing):
                why = f"dark {s_dur * 1000:.0f} ms: between a blink gap and a group gap"
            if why:
                bad = why
                groups, count, in_group_since_sep = [], 0, False
        if len(groups) >= t.confirm_groups:
            recent = groups[-t.confirm_groups:]
            if len(set(recent)) != 1:
                return LedReading("bad", why=f"blink groups disagree: {recent}")
            return LedReading("blink", recent[0])
        return LedReading("bad", why=bad) if bad else PENDING


def pattern_level(code: int, t: float, on_s: float = 0.25, off_s: float = 0.25,
                  group_gap_s: float = 1.5) -> int:
    """The LED level (1 lit) a breaker shows at time ``t`` for a pattern code.

    ``0`` off, ``1`` solid, ``N >= 2`` groups of N blinks (``on_s`` lit, ``off_s`` dark)
    separated by ``group_gap_s`` dark. The simulator writes this to a mock line each tick.
    """
    if code <= 0:
        return 0
    if code == 1:
        return 1
    cycle = code * on_s + (code - 1) * off_s + group_gap_s
    phase = t % cycle
    k = int(phase // (on_s + off_s))
    return 1 if k < code and phase - k * (on_s + off_s) < on_s else 0


def pattern_edges(code: int, start: float, end: float, on_s: float = 0.25,
                  off_s: float = 0.25, group_gap_s: float = 1.5) -> list[tuple[float, int]]:
    """The (time, level) edges of a pattern between ``start`` and ``end`` (for tests)."""
    if code <= 1:
        return [(start, pattern_level(code, 0.0))]
    cycle = code * on_s + (code - 1) * off_s + group_gap_s
    edges: list[tuple[float, int]] = []
    t = start
    while t < end:
        for k in range(code):
            edges.append((t + k * (on_s + off_s), 1))
            edges.append((t + k * (on_s + off_s) + on_s, 0))
        t += cycle
    return [e for e in edges if e[0] < end]
