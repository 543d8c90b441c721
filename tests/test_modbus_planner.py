"""Read planning: fewest requests, <= 125 registers, configurable gap, per function."""

from __future__ import annotations

import pytest

from busguard.modbus import load_profile
from busguard.modbus.planner import plan_reads
from busguard.modbus.profiles import PointDef


def pt(name, address, dtype="float32", function="holding"):
    return PointDef(name, address, dtype, function=function)


def test_contiguous_points_make_one_read():
    plan = plan_reads([pt("a", 0), pt("b", 2), pt("c", 4, "uint16")])
    assert [(b.address, b.count) for b in plan] == [(0, 5)]
    assert [p.name for p in plan[0].points] == ["a", "b", "c"]


def test_gap_within_max_gap_merges_beyond_splits():
    pts = [pt("a", 0), pt("b", 10), pt("c", 30)]
    assert [(b.address, b.count) for b in plan_reads(pts, max_gap=8)] == [(0, 12), (30, 2)]
    assert [(b.address, b.count) for b in plan_reads(pts, max_gap=0)] == \
        [(0, 2), (10, 2), (30, 2)]
    assert len(plan_reads(pts, max_gap=18)) == 1


def test_reads_never_exceed_125_registers_and_functions_split():
    pts = [pt(f"p{i}", i * 2) for i in range(100)]  # 200 registers
    plan = plan_reads(pts)
    assert all(b.count <= 125 for b in plan)
    assert len(plan) == 2 and sum(len(b.points) for b in plan) == 100
    assert all(p.end <= b.end for b in plan for p in b.points)  # no point split across reads
    mixed = plan_reads([pt("h", 0), pt("i", 0, function="input")])
    assert sorted(b.function for b in mixed) == ["holding", "input"]
    assert len(plan_reads(pts, max_registers=10)) == 20
    with pytest.raises(ValueError):
        plan_reads(pts, max_registers=126)


def test_overlapping_points_and_unsorted_input():
    plan = plan_reads([pt("hi", 2, "uint16"), pt("whole", 1, "uint32"), pt("x", 0, "int16")])
    assert [(b.address, b.count) for b in plan] == [(0, 3)]
    regs = [0x0005, 0x0001, 0x0002]
    vals = {p.name: p.decode(plan[0].slice(regs, p)) for p in plan[0].points}
    assert vals == {"x": 5, "whole": 0x00010002, "hi": 2}


def test_bundled_profiles_plan():
    gen = plan_reads(load_profile("generic-pqm").points)
    assert [(b.function, b.address, b.count) for b in gen] == \
        [("holding", 100, 86), ("input", 100, 4)]  # 100..185 since issue 15
    pm = plan_reads(load_profile("pm5000").points)
    # energy 2700 | current+voltage 3000..3033 | power 3060.. | THD 21300..: gaps split them
    assert len(pm) <= 8 and all(b.count <= 125 for b in pm)
