"""Deadline scheduling on an injected clock: no drift, overruns counted, lateness measured."""

from __future__ import annotations

import pytest

from busguard.clock import FakeClock
from busguard.scan import ScanLoop
from busguard.stats import LatenessRecorder


def test_an_hour_of_10ms_scans_does_not_drift():
    clock = FakeClock(start=0.0)
    starts: list[float] = []
    loop = ScanLoop(lambda now, late: starts.append(now), 0.010, clock, LatenessRecorder(6000, 10))
    n = 360_000  # one hour at 10 ms
    assert loop.run(max_cycles=n) == n
    assert starts[-1] == pytest.approx((n - 1) * 0.010, abs=1e-9)  # t0 + k*period, not summed
    assert loop.stats.overruns == 0 and loop.stats.max_s == 0.0


def test_overrun_is_counted_and_the_loop_stays_on_the_grid():
    clock = FakeClock(start=0.0)
    starts: list[float] = []

    def cycle(now: float, late: float) -> None:
        starts.append(now)
        if len(starts) == 3:
            clock.advance(0.025)  # this cycle takes 25 ms of a 10 ms period

    stats = LatenessRecorder(100, 10)
    ScanLoop(cycle, 0.010, clock, stats).run(max_cycles=5)
    # cycle 3 starts at 20 ms and ends at 45 ms: the 30 and 40 ms slots are missed
    assert starts == pytest.approx([0.0, 0.010, 0.020, 0.050, 0.060])
    assert stats.overruns == 2


def test_lateness_statistics():
    rec = LatenessRecorder(window=100, period_ms=10)
    for i in range(100):
        rec.add(0.0001 if i < 98 else 0.002)
    st = rec.snapshot()
    assert st.cycles == 100
    assert st.lateness_p50_ms == pytest.approx(0.1)
    assert st.lateness_p99_ms == pytest.approx(2.0)
    assert st.lateness_max_ms == pytest.approx(2.0)


def test_lateness_is_measured_from_the_deadline():
    class LateClock(FakeClock):
        def sleep_until(self, deadline: float) -> None:
            super().sleep_until(deadline)
            self.advance(0.0003)  # wakes 0.3 ms late, as a real kernel does

    clock = LateClock(start=0.0)
    stats = LatenessRecorder(100, 10)
    ScanLoop(lambda now, late: None, 0.010, clock, stats).run(max_cycles=10)
    assert stats.snapshot().lateness_p99_ms == pytest.approx(0.3)
    assert stats.overruns == 0


def test_stop_ends_the_loop():
    clock = FakeClock()
    loop: ScanLoop

    def cycle(now: float, late: float) -> None:
        if loop.stats.cycles == 7:
            loop.stop()

    loop = ScanLoop(cycle, 0.01, clock, LatenessRecorder(100, 10))
    assert loop.run() == 7
