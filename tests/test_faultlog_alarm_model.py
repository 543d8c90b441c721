"""The one alarm model the blocks share: edges, latch, acknowledge (all or by id), priority."""

from __future__ import annotations

from busguard.alarms import AlarmCondition, AlarmTable, Severity


def cond(key, sev=Severity.WARNING, latch=False, code="BG-X"):
    return AlarmCondition(key, sev, code, f"{key} holds", device="dev", latch=latch)


def test_edges_not_per_scan():
    t = AlarmTable()
    assert [e.kind for e in t.update("b", [cond("a")], 1.0)] == ["raised"]
    for i in range(5):
        assert t.update("b", [cond("a")], 2.0 + i) == []
    assert [e.kind for e in t.update("b", [], 9.0)] == ["cleared"]


def test_latch_needs_acknowledge_by_id_and_ack_never_clears_a_present_condition():
    t = AlarmTable()
    t.update("b", [cond("x", latch=True), cond("y", latch=True)], 1.0)
    assert t.update("b", [cond("y", latch=True)], 2.0) == []  # x latched, condition gone
    assert t.acknowledge(3.0, "b:y") == []  # y still present: acknowledged, not cleared
    assert t.alarms["b:y"].acked and t.alarms["b:x"].active is False
    edges = t.acknowledge(4.0, "b:x")
    assert [(e.kind, e.alarm.id) for e in edges] == [("cleared", "b:x")]
    assert list(t.alarms) == ["b:y"]


def test_priority_order():
    t = AlarmTable()
    t.update("b", [cond("warn-old")], 1.0)
    t.update("c", [cond("crit", Severity.CRITICAL, code="0xCF")], 2.0)
    t.update("d", [cond("major-acked", Severity.MAJOR)], 3.0)
    t.acknowledge(3.5, "d:major-acked")
    t.update("e", [cond("major-new", Severity.MAJOR)], 4.0)
    t.update("f", [cond("warn-new")], 5.0)
    assert [a.id for a in t.by_priority()] == ["c:crit", "e:major-new", "d:major-acked",
                                               "b:warn-old", "f:warn-new"]
