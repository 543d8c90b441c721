"""The real clock's sleep: never back before the deadline, with or without the spin margin,
and the margin is spent awake (busy-waiting), not asleep."""

from __future__ import annotations

import time

import pytest

from busguard.clock import SPIN_PAD_S, SPIN_TARGET_S, SPIN_WINDOW, MonotonicClock
from busguard.runtime import Runtime


@pytest.mark.parametrize("spin_s", [0.0, 0.0005, 0.002])
def test_sleep_until_never_returns_before_the_deadline(spin_s):
    clock = MonotonicClock(spin_s=spin_s)
    for k in range(20):
        deadline = clock.monotonic() + 0.001 * (k % 4)
        clock.sleep_until(deadline)
        assert clock.monotonic() >= deadline


def test_the_spin_margin_is_cut_from_the_sleep(monkeypatch):
    asked: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(s: float) -> None:
        asked.append(s)
        real_sleep(s)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    clock = MonotonicClock(spin_s=0.004)
    deadline = clock.monotonic() + 0.020
    clock.sleep_until(deadline)
    assert clock.monotonic() >= deadline
    assert len(asked) == 1 and asked[0] <= 0.016  # woke 4 ms early, spun the rest
    asked.clear()
    clock.sleep_until(clock.monotonic() + 0.002)  # inside the margin: no sleep at all
    assert asked == []


def test_a_past_deadline_returns_at_once_and_a_negative_margin_is_refused():
    clock = MonotonicClock(spin_s=0.001)
    clock.sleep_until(clock.monotonic() - 1.0)
    with pytest.raises(ValueError, match="negative"):
        MonotonicClock(spin_s=-0.001)


def test_the_margin_follows_how_late_this_machine_wakes(monkeypatch):
    """Prompt wake-ups shrink the margin (little CPU spent spinning); late ones keep it at
    the allowance. Time is faked (each sleep wakes exactly ``late`` after its target), so
    the result does not depend on how busy the test machine is."""

    class FakeTime:
        def __init__(self) -> None:
            self.t = 1000.0
            self.late = 0.0

        def monotonic(self) -> float:
            self.t += 1e-6  # every reading takes a microsecond: the spin loop ends
            return self.t

        def sleep(self, s: float) -> None:
            self.t += s + self.late

    ft = FakeTime()
    monkeypatch.setattr(time, "monotonic", ft.monotonic)
    monkeypatch.setattr(time, "sleep", ft.sleep)
    clock = MonotonicClock(spin_s=0.0015)
    assert clock.margin_s == 0.0015  # the whole allowance until a window is measured
    for _ in range(SPIN_WINDOW):  # wakes on time: the margin drops to the pad
        clock.sleep_until(clock.monotonic() + 0.002)
    assert clock.margin_s == SPIN_PAD_S
    ft.late = 0.002  # every sleep wakes 2 ms late
    for _ in range(SPIN_WINDOW):
        clock.sleep_until(clock.monotonic() + 0.0021)
    assert clock.margin_s == 0.0015  # capped at the allowance
    ft.late = 0.0008  # 0.8 ms late: the margin is that less the 0.25 ms aim
    for _ in range(SPIN_WINDOW):
        clock.sleep_until(clock.monotonic() + 0.0021)
    assert clock.margin_s == pytest.approx(0.0008 - SPIN_TARGET_S, abs=1e-5)


@pytest.mark.parametrize(("scan", "spin_ms"), [
    ("spin_ms = 0.5", 0.5),   # what the site says reaches the clock
    ("period_ms = 1", 0.25),  # the 1 ms default cut to a quarter of a short period
    ("", 1.0),
])
def test_the_site_spin_ms_reaches_the_runtime_clock(site_file, scan, spin_ms):
    site = site_file(f"""
[site]
name = "t"
[scan]
{scan}
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a"]
""")
    rt = Runtime.from_file(site)
    assert rt.site.scan.spin_ms == pytest.approx(spin_ms)
    assert isinstance(rt.clock, MonotonicClock)
    assert rt.clock.spin_s == pytest.approx(spin_ms / 1000.0)
