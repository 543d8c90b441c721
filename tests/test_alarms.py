"""The alarm table: edges not levels, latching, acknowledgement, escalation."""

from __future__ import annotations

from busguard.alarms import AlarmCondition, AlarmTable, Severity


def cond(sev=Severity.WARNING, code="BG-T", latch=False):
    return AlarmCondition("temp", sev, code, "hot", device="tap-a1", latch=latch)


def kinds(edges):
    return [(e.kind, e.alarm.condition.code) for e in edges]


def test_raise_once_then_clear_once():
    t = AlarmTable()
    assert kinds(t.update("b", [cond()], 1.0)) == [("raised", "BG-T")]
    assert t.update("b", [cond()], 2.0) == []  # held: no edge per scan
    assert kinds(t.update("b", [], 3.0)) == [("cleared", "BG-T")]
    assert t.count() == 0


def test_latched_alarm_waits_for_acknowledgement():
    t = AlarmTable()
    t.update("b", [cond(latch=True)], 1.0)
    assert t.update("b", [], 2.0) == []
    assert t.count() == 1 and not t.active()[0].active
    assert kinds(t.acknowledge(3.0)) == [("cleared", "BG-T")]


def test_acknowledge_does_not_clear_a_present_condition():
    t = AlarmTable()
    t.update("b", [cond(latch=True)], 1.0)
    assert t.acknowledge(2.0) == []
    assert t.count() == 1 and t.active()[0].acked
    assert kinds(t.update("b", [], 3.0)) == [("cleared", "BG-T")]


def test_escalation_under_the_same_key_is_a_new_event():
    t = AlarmTable()
    t.update("b", [cond()], 1.0)
    edges = t.update("b", [cond(Severity.CRITICAL, "0xCF")], 2.0)
    assert kinds(edges) == [("cleared", "BG-T"), ("raised", "0xCF")]
    assert t.active()[0].raised_utc == 2.0


def test_adopted_alarm_clears_when_its_block_no_longer_reports_it():
    """An alarm restored from retained state (or kept across a reload) belongs to its block:
    the block's next scan without the condition clears it, other blocks' scans never do."""
    from busguard.alarms import AlarmState

    t = AlarmTable()
    t.adopt(AlarmState("b:temp", "b", cond(), 0.5))
    t.update("b2", [cond()], 0.9)
    assert t.update("other", [], 1.0) == []
    assert t.count() == 2
    assert t.update("b", [cond()], 2.0) == []  # still present: no new raise
    assert kinds(t.update("b", [], 3.0)) == [("cleared", "BG-T")]
    assert [a.id for a in t.active()] == ["b2:temp"]


def test_a_condition_reported_again_as_the_same_object_makes_no_edge_until_it_changes():
    """Blocks keep and report the same condition object while an alarm holds (the table's
    fast path); every transition around it must still give exactly its edges."""

    t = AlarmTable()
    held = AlarmCondition("input", Severity.WARNING, "BG-INPUT", "x is stale")
    latched = AlarmCondition("trip", Severity.CRITICAL, "BG-TRIP", "tripped", latch=True)

    def kinds(edges):
        return [(e.kind, e.alarm.id) for e in edges]

    assert kinds(t.update("b", [held], 1.0)) == [("raised", "b:input")]
    assert t.update("b", [held], 2.0) == []
    assert t.update("b", [held], 3.0) == []
    assert kinds(t.update("b", [], 4.0)) == [("cleared", "b:input")]
    assert kinds(t.update("b", [held], 5.0)) == [("raised", "b:input")]  # raised anew
    t.acknowledge(6.0)
    assert t.update("b", [held], 7.0) == []  # acknowledged, still holding: no edge
    assert kinds(t.update("b", [], 8.0)) == [("cleared", "b:input")]

    assert kinds(t.update("c", [latched], 9.0)) == [("raised", "c:trip")]
    assert t.update("c", [latched], 10.0) == []
    assert t.update("c", [], 11.0) == []  # latched: kept, inactive, until acknowledged
    assert not t.alarms["c:trip"].active
    assert kinds(t.update("c", [latched], 12.0)) == [("raised", "c:trip")]  # back: raised
    assert t.alarms["c:trip"].active and t.alarms["c:trip"].raised_utc == 12.0
    escalated = AlarmCondition("trip", Severity.MAJOR, "BG-TRIP", "tripped", latch=True)
    assert kinds(t.update("c", [escalated], 13.0)) == [("cleared", "c:trip"),
                                                       ("raised", "c:trip")]
    assert t.update("c", [escalated], 14.0) == []
    assert t.alarms["c:trip"].condition is escalated
