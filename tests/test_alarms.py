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
