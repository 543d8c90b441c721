"""Injected time (gpiozero's ticks idea): the scan never calls time.* directly.

`MonotonicClock` is the real one. `FakeClock` is advanced by tests and by replay, so scan logic
runs faster than real time with no sleeps and gives the same result every run.
"""

from __future__ import annotations

import time
from typing import Protocol


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
    """The real clock: time.monotonic for scheduling, time.time for UTC stamps."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep_until(self, deadline: float) -> None:
        # time.sleep to an absolute deadline: p99 wake-up lateness ~0.16 ms idle on the
        # reference machine, against ~0.35 ms for asyncio.sleep (see docs/benchmarks.md).
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)


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
