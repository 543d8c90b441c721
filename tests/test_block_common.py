"""Shared block helpers: the start-up grace of BG-INPUT, UTC from a snapshot, timers."""

from __future__ import annotations

import math

import pytest

from busguard.clock import FakeClock
from busguard.errors import ConfigError
from busguard.image import PointSpec, ProcessImage, Quality
from busguard.inputwatch import InputWatch, OnDelay
from busguard_blocks._common import HighLimit, iso_utc, wall_utc


def test_input_alarm_grace_and_debounce():
    w = InputWatch(grace_s=5.0, raise_s=2.0, clear_s=2.0)
    w.tick(100.0)
    nc, stale = {"a.x": "not-connected"}, {"a.x": "stale"}
    assert w.alarm(nc, 101.0, "held") is None        # start-up grace
    assert w.alarm(stale, 101.0, "held") is None     # counts, but 2 s to raise
    assert w.alarm(stale, 102.9, "held") is None
    assert w.alarm(stale, 103.0, "held").code == "BG-INPUT"
    assert w.alarm({}, 103.5, "held").values["lost"] == stale  # clear hold-off
    assert w.alarm(stale, 104.0, "held") is not None  # a flicker back: still one alarm
    assert w.alarm({}, 104.5, "held") is not None
    assert w.alarm({}, 106.5, "held") is None        # good for 2 s: cleared
    assert w.alarm(nc, 200.0, "held") is None and w.alarm(nc, 202.0, "held") is not None


def test_wall_utc_from_point_stamps():
    clock = FakeClock(start=50.0, wall_start=1_767_225_600.0)
    image = ProcessImage([PointSpec("m.a", "m"), PointSpec("m.b", "m")], clock)
    assert math.isnan(wall_utc(image.snapshot(), 50.0))
    image.write("m.a", 1.0)
    clock.advance(2.5)
    snap = image.snapshot()
    assert wall_utc(snap, snap.now) == 1_767_225_602.5
    assert wall_utc(snap, snap.now, prefer=("m.b", "m.a")) == 1_767_225_602.5
    image.write("m.b", 1.0, Quality.BAD)
    assert iso_utc(1_767_225_602.5) == "2026-01-01T00:00:02.500Z" and iso_utc(math.nan) == ""


def test_on_delay_and_high_limit_hysteresis():
    t = OnDelay(1.0)
    assert [t.update(c, now) for c, now in ((True, 0.0), (True, 0.9), (True, 1.0),
                                            (False, 1.1), (True, 1.2))] == [
        False, False, True, False, False]
    lim = HighLimit(10.0, 1.0)
    assert [lim.update(v, 0.0) for v in (10.0, 10.1, 9.5, 9.0, 10.0)] == [
        False, True, True, False, False]


def test_options_out_of_order_are_config_errors(make_runtime):
    site = """
[site]
name = "order"
[[probe]]
name = "bb1"
driver = "memory"
points = ["temp_c"]
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1"]
warn_c = 85.0
alarm_c = 80.0
[[block]]
name = "pc"
type = "predictive_cooling"
min_job_pct = 60.0
max_pct = 50.0
"""
    with pytest.raises(ConfigError) as exc:
        make_runtime(site)
    text = str(exc.value)
    assert "block[0].warn_c: got 85; must be below alarm_c (80)" in text
    assert "block[1].min_job_pct: got 60; must be at most max_pct (50)" in text
