"""Injected time (gpiozero's ticks idea): the scan never calls time.* directly.

`MonotonicClock` is the real one. `FakeClock` is advanced by tests and by replay, so scan logic
runs faster than real time with no sleeps and gives the same result every run.
"""

from __future__ import annotations

import time
from array import array
from typing import Protocol

SPIN_WINDOW = 500  # wake-ups per margin update (5 s at a 10 ms period)
SPIN_TARGET_S = 0.00025  # p99 wake-up lateness the margin aims for (the floor is 1 ms)
SPIN_PAD_S = 0.00005  # the least margin while spinning is allowed


class Clock(Protocol):
    """What the scan loop and blocks need from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for scheduling and ages."""
        ...

    def wall(self) -> float:
        """UTC seconds since the epoch; only for what a person reads."""
        ...

    def sleep_until(self, deadline: float) -> None:
        """Block until ``monotonic() >= deadline`` (returns at once if already past)."""
        ...


class MonotonicClock:
    """The real clock: time.monotonic for scheduling, time.time for UTC stamps.

    ``spin_s`` (``[scan] spin_ms``): wake up to that long before each deadline and busy-wait
    the rest. A CPU that halts while the scan sleeps can take a millisecond or more to run it
    again (a virtual CPU the hypervisor must reschedule, a deep C-state); spinning keeps the
    CPU awake through the end of the period. The margin follows the machine: a sleep that
    wakes L late leaves the scan max(0, L - margin) late, so the margin is the p99 of how late
    the last ``SPIN_WINDOW`` sleeps woke, less ``SPIN_TARGET_S``, at least ``SPIN_PAD_S`` and
    never more than ``spin_s``. A machine that wakes on time spins for microseconds; one that
    does not pays up to ``spin_s`` of CPU per cycle, every microsecond of which takes a core
    from the I/O process (see docs/benchmarks.md for what it gave and cost).
    """

    def __init__(self, spin_s: float = 0.0) -> None:
        if spin_s < 0:
            raise ValueError("spin_s cannot be negative")
        self.spin_s = spin_s
        self.margin_s = spin_s  # until a window of wake-ups is measured: the whole allowance
        self._late = array("d", bytes(8 * SPIN_WINDOW))
        self._n = 0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep_until(self, deadline: float) -> None:
        # time.sleep to an absolute deadline: p99 wake-up lateness ~0.16 ms idle on the
        # reference machine, against ~0.35 ms for asyncio.sleep (see docs/benchmarks.md).
        now = time.monotonic
        target = deadline - self.margin_s
        delay = target - now()
        if delay > 0:
            time.sleep(delay)
            if self.spin_s:
                self._woke(now() - target)
        if self.spin_s:
            while now() < deadline:
                pass

    def _woke(self, late_s: float) -> None:
        """Keep how late a sleep woke; at the end of each window, set the margin from it."""
        self._late[self._n] = late_s
        self._n += 1
        if self._n == SPIN_WINDOW:
            self._n = 0
            p99 = sorted(self._late)[int(SPIN_WINDOW * 0.99)]
            self.margin_s = min(self.spin_s, max(SPIN_PAD_S, p99 - SPIN_TARGET_S))


class FakeClock:
    """A clock that only moves when told to; ``sleep_until`` jumps straight to the deadline."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._mono = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self.sleeps = 0

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._mono += seconds

    def sleep_until(self, deadline: float) -> None:
        self.sleeps += 1
        if deadline > self._mono:
            self._mono = deadline
