"""The breaker-LED decoder on synthetic edge timings, with jitter: off, solid, N-blink,
glitches, malformed and disagreeing patterns, transitions, and no flapping mid-pattern."""

from __future__ import annotations

import random

import pytest

from busguard.gpio.led import LedDecoder, LedTiming, pattern_edges, pattern_level


def sample(decoder, edges, end, dt=0.01, start=0.0):
    """Sample a piecewise-constant signal every ``dt`` (as the GPIO thread does); return
    the sequence of distinct labels the decoder gave."""
    labels = []
    k, level, t = 0, edges[0][1], start
    while t < end:
        while k < len(edges) and edges[k][0] <= t:
            level = edges[k][1]
            k += 1
        decoder.feed(t, level)
        label = decoder.classify(t).label
        if not labels or labels[-1] != label:
            labels.append(label)
        t += dt
    return labels


def jittered(edges, jitter, seed):
    rnd = random.Random(seed)
    out = [edges[0]]
    for t, lvl in edges[1:]:
        out.append((t + rnd.uniform(-jitter, jitter), lvl))
    out.sort()
    return out


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(4))
def test_patterns_with_jitter(code, seed):
    """Every blink edge moved by up to +-80 ms (a third of a 250 ms blink)."""
    edges = jittered(pattern_edges(code, 0.0, 20.0), 0.08, seed)
    labels = sample(LedDecoder(), edges, 20.0)
    want = {0: "off", 1: "solid"}.get(code, f"{code}-blink")
    assert labels == ["pending", want]


def test_other_timings_within_the_bands():
    # a slower LED: 400 ms on, 400 ms off, 2.5 s between groups
    edges = pattern_edges(3, 0.0, 25.0, on_s=0.4, off_s=0.4, group_gap_s=2.5)
    assert sample(LedDecoder(), edges, 25.0) == ["pending", "3-blink"]
    # a fast one: 100/100 ms, 1.2 s gap
    edges = pattern_edges(2, 0.0, 10.0, on_s=0.1, off_s=0.1, group_gap_s=1.2)
    assert sample(LedDecoder(), edges, 10.0) == ["pending", "2-blink"]


def test_glitches_are_ignored():
    edges = pattern_edges(2, 0.0, 15.0)
    # 10 ms flickers in the dark gaps and 10 ms dropouts in the lit pulses
    noisy = sorted([*edges, (1.6, 1), (1.61, 0), (4.05, 0), (4.06, 1), (7.3, 1), (7.31, 0)])
    assert sample(LedDecoder(), noisy, 15.0) == ["pending", "2-blink"]


def test_classification_holds_steady_through_the_pattern():
    dec = LedDecoder()
    edges = pattern_edges(2, 0.0, 30.0)
    labels = sample(dec, edges, 30.0, dt=0.013)
    assert labels == ["pending", "2-blink"]  # never flaps while the groups go by


def test_transitions_blink_solid_off_blink():
    edges = ([*pattern_edges(2, 0.0, 8.0), (8.0, 1), (12.0, 0), *pattern_edges(3, 17.0, 30.0)])
    labels = sample(LedDecoder(), edges, 30.0)
    assert labels == ["pending", "2-blink", "solid", "off", "3-blink"]


def test_malformed_pulse_is_bad():
    # pulses of 1 s: too long for a blink, too short for solid
    edges = [(0.0, 0)]
    for k in range(6):
        edges += [(2.0 + 2.5 * k, 1), (3.0 + 2.5 * k, 0)]
    dec = LedDecoder()
    labels = sample(dec, edges, 17.0)
    assert labels[-1] == "bad"
    assert dec.classify(17.0).code is None
    assert "too long for a blink" in dec.classify(17.0).why


def test_dark_between_the_bands_is_bad():
    # blinks 0.25 s apart by 0.85 s: neither a gap inside a group nor between groups
    edges = [(0.0, 0)]
    t = 1.0
    for _ in range(10):
        edges += [(t, 1), (t + 0.25, 0)]
        t += 1.1
    assert sample(LedDecoder(), edges, t)[-1] == "bad"


def test_groups_that_disagree_are_bad():
    edges = [(0.0, 0)]
    t = 1.5
    for n in (2, 3, 2, 3, 2, 3):
        for _ in range(n):
            edges += [(t, 1), (t + 0.25, 0)]
            t += 0.5
        t += 1.5
    dec = LedDecoder()
    labels = sample(dec, edges, t)
    assert labels[-1] == "bad" and "disagree" in dec.classify(t).why


def test_single_blink_has_no_code():
    edges = pattern_edges(1, 0.0, 1.0)
    assert edges == [(0.0, 1)]
    edges = [(0.0, 0)]
    for k in range(8):
        edges += [(1.5 + 1.75 * k, 1), (1.75 + 1.75 * k, 0)]
    dec = LedDecoder()
    sample(dec, edges, 15.0)
    reading = dec.classify(15.0)
    assert reading.label == "1-blink" and reading.code is None


def test_too_many_blinks_is_bad():
    edges = [(0.0, 0)]
    t = 1.5
    for _ in range(12):  # a flicker that never pauses
        edges += [(t, 1), (t + 0.2, 0)]
        t += 0.4
    assert sample(LedDecoder(), edges, t)[-1] == "bad"


def test_confirm_one_group_is_faster():
    edges = pattern_edges(2, 0.0, 10.0)
    fast, slow = LedDecoder(LedTiming(confirm_groups=1)), LedDecoder()

    def first(dec):
        k, level = 0, edges[0][1]
        for i in range(1000):
            t = i * 0.01
            while k < len(edges) and edges[k][0] <= t:
                level = edges[k][1]
                k += 1
            dec.feed(t, level)
            if dec.classify(t).label == "2-blink":
                return t
        return None

    t_fast, t_slow = first(fast), first(slow)
    assert t_fast is not None and t_slow is not None and t_fast < t_slow


def test_timing_bands_are_checked():
    assert LedTiming().problems() == []
    assert LedTiming(pulse_max_s=2.0).problems() == [
        "expected glitch_ms < pulse_max_ms < solid_ms"]
    assert LedTiming(group_gap_s=0.5).problems() == [
        "expected glitch_ms < gap_max_ms < group_gap_ms < off_ms"]


def test_pattern_level_matches_pattern_edges():
    edges = pattern_edges(3, 0.0, 6.0)
    k, level = 0, None
    for i in range(600):
        t = i * 0.01 + 0.005
        while k < len(edges) and edges[k][0] <= t:
            level = edges[k][1]
            k += 1
        assert pattern_level(3, t) == level, t
    assert pattern_level(0, 5.0) == 0 and pattern_level(1, 5.0) == 1


def test_one_hiccup_costs_seconds_not_a_minute():
    """A sampling stall stretches one blink to 1 s: BAD, then 2-blink again two groups later."""
    edges = [e for e in pattern_edges(2, 0.0, 40.0) if not 10.0 < e[0] < 11.2]
    edges = sorted([*edges, (10.25, 1), (11.25, 0)])
    dec = LedDecoder()
    k, level, seen = 0, 0, []
    for i in range(4000):
        t = i * 0.01
        while k < len(edges) and edges[k][0] <= t:
            level = edges[k][1]
            k += 1
        dec.feed(t, level)
        label = dec.classify(t).label
        if not seen or seen[-1][1] != label:
            seen.append((t, label))
    labels = [lbl for _t, lbl in seen]
    assert labels == ["pending", "2-blink", "bad", "2-blink"]
    t_bad, t_back = seen[2][0], seen[3][0]
    assert t_back - t_bad < 6.0
