"""The Block API's input watch: which inputs a block lost in this scan, and the debounced
``BG-INPUT`` alarm that says so (one raise and one clear per real loss). Every built-in
block uses it; a third-party block gets the same through :meth:`busguard.block.Block.begin_scan`
and ``self.input_watch``.

Pure (a function of the snapshot, ``now`` and the watch's own state), so a block built on it
stays replayable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from busguard.alarms import AlarmCondition, Severity
from busguard.image import Quality, Snapshot


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


def input_code(what: str = "an input", lost: str = "stale, bad or not connected",
               severity: Severity = Severity.WARNING) -> dict[str, str]:
    """The ``BG-INPUT`` entry of a block's :attr:`busguard.block.Block.codes`, worded once:
    ``{severity}: {what} is {lost}``, with :class:`InputWatch`'s severity unless the block
    raises it with another one. Every block that watches its inputs declares it
    (``codes = {..., **input_code("a probe")}``), so the code's severity and wording in
    docs/blocks.md match what the alarm says."""
    return {"BG-INPUT": f"{severity.word}: {what} is {lost}"}


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
