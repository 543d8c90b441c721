"""Process image: qualities, stale ageing against the poll period, min/max windows, and
consistent snapshots while drivers write from other threads."""

from __future__ import annotations

import math
import threading

from busguard.clock import FakeClock
from busguard.image import PointSpec, ProcessImage, Quality


def make(clock: FakeClock, max_age_s: float = 0.3) -> ProcessImage:
    return ProcessImage([PointSpec("m.a", "m", max_age_s=max_age_s),
                         PointSpec("m.b", "m", max_age_s=max_age_s)], clock)


def test_unwritten_points_are_not_connected():
    img = make(FakeClock())
    pv = img.snapshot()["m.a"]
    assert pv.quality is Quality.NOT_CONNECTED and math.isnan(pv.value)


def test_point_goes_stale_by_age_against_its_poll_period():
    clock = FakeClock()
    img = make(clock, max_age_s=0.3)  # poll 100 ms x stale_after_polls 3
    img.write("m.a", 5.0)
    t_written = clock.monotonic()
    clock.advance(0.3)
    assert img.snapshot()["m.a"].quality is Quality.GOOD  # exactly at the limit: still good
    clock.advance(0.001)
    snap = img.snapshot()
    assert snap["m.a"].quality is Quality.STALE
    assert snap["m.a"].value == 5.0  # the last value is kept for operators
    assert snap["m.a"].t_mono == t_written
    assert snap.value("m.a", default=-1.0) == -1.0  # but blocks do not use it as good
    img.write("m.a", 6.0)
    assert img.snapshot()["m.a"].quality is Quality.GOOD


def test_stamps_carry_monotonic_and_utc_time():
    clock = FakeClock(start=50.0, wall_start=1_800_000_000.0)
    img = make(clock)
    clock.advance(2.0)
    img.write("m.a", 1.0)
    pv = img.snapshot()["m.a"]
    assert pv.t_mono == 52.0 and pv.t_utc == 1_800_000_002.0 and pv.source == "m"


def test_bad_quality_keeps_last_good_value():
    img = make(FakeClock())
    img.write("m.a", 7.0)
    img.write("m.a", 999.0, Quality.BAD)
    pv = img.snapshot()["m.a"]
    assert pv.quality is Quality.BAD and pv.value == 7.0


def test_set_quality_marks_a_device_without_a_value():
    img = make(FakeClock())
    img.write_many([("m.a", 1.0, Quality.GOOD), ("m.b", 2.0, Quality.GOOD)])
    img.set_quality(["m.a", "m.b"], Quality.NOT_CONNECTED)
    snap = img.snapshot()
    assert {snap[n].quality for n in ("m.a", "m.b")} == {Quality.NOT_CONNECTED}


def test_spike_between_two_scans_is_kept_in_the_window():
    img = make(FakeClock())
    img.write("m.a", 400.0)
    img.snapshot()
    for v in (410.0, 1250.0, 420.0):  # a training-job inrush between two scans
        img.write("m.a", v)
    snap = img.snapshot()
    assert snap["m.a"].value == 420.0
    assert snap.peak("m.a") == 1250.0 and snap["m.a"].vmin == 410.0
    assert img.snapshot().peak("m.a") == 420.0  # the next window starts fresh


def test_snapshot_is_consistent_under_concurrent_writers():
    """Two writers each store (a, b) pairs that are equal; no snapshot may see them differ."""
    clock = FakeClock()
    img = make(clock, max_age_s=math.inf)
    stop = threading.Event()

    def writer(base: int) -> None:
        i = 0
        while not stop.is_set() and i < 200_000:
            v = float(base + i)
            img.write_many([("m.a", v, Quality.GOOD), ("m.b", v, Quality.GOOD)])
            i += 1

    threads = [threading.Thread(target=writer, args=(k * 1_000_000,)) for k in range(2)]
    for t in threads:
        t.start()
    torn = 0
    try:
        for _ in range(5000):
            snap = img.snapshot()
            if snap.values[0] != snap.values[1]:
                torn += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert torn == 0
    assert img.snapshot().values[0] == img.snapshot().values[1]


def test_ageing_by_runs_equals_the_point_by_point_rule():
    """Ageing skips a device whose oldest point is fresh; the outcome must be exactly the rule
    'good and now - t_mono > max_age' applied to every point, whatever the mix of devices,
    ages (finite, infinite), qualities and stamps (never written, restored, fresh, old)."""
    import random

    rng = random.Random(11)
    ages = [0.3] * 5 + [math.inf] * 2 + [0.3] * 3 + [1.5] * 4 + [0.05]
    specs = [PointSpec(f"d{i}.p", f"d{i // 3}", max_age_s=a) for i, a in enumerate(ages)]
    for trial in range(600):
        clock = FakeClock()
        clock.advance(rng.uniform(0.0, 5.0))
        img = ProcessImage(specs, clock)
        # half the trials as devices write: a device's points share one stamp (the whole
        # run ages at once), the other half with a stamp per point
        device_stamp: dict[str, float] = {}
        for s in specs:
            r = rng.random()
            if r < 0.15:
                continue  # never written
            if r < 0.25:
                img.restore(s.name, 1.0, 0.0)  # stale, t_mono never set
                continue
            back = rng.choice([0.0, 0.05, 0.3, 0.3000001, 1.0, 1.5, 4.0])
            if trial % 2:
                back = device_stamp.setdefault(s.source, back)
            t = clock.monotonic() - back
            q = rng.choice([Quality.GOOD] * 4 + [Quality.BAD, Quality.NOT_CONNECTED])
            img.write(s.name, 2.0, q, t_mono=t)
        now = clock.monotonic()
        want = [Quality.STALE if q == 0 and now - t > a else Quality(q)
                for q, t, a in zip(img.quality, img.t_mono, img.max_age, strict=True)]
        live = list(img.quality)
        snap = img.snapshot(now)
        assert [snap[s.name].quality for s in specs] == want
        assert list(img.quality) == live  # ageing marks the snapshot, not the drivers' image
