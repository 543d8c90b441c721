"""One state export/import for restart and reload (busguard.statedoc): a file written by the
version before it still restores its latched trip, the document is plain JSON, and the two
uses differ only where the module says they do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from busguard.image import Quality
from busguard.reload import Reloader
from busguard.service import Service
from busguard.statedoc import VERSION, export_state, import_state
from busguard.statefile import load_newest
from busguard.testing import run_scans

DATA = Path(__file__).parent / "data" / "retained-2026-12-04"
NORMAL = [(f"{m}.{p}", v, Quality.GOOD) for m in ("m1", "m2")
          for p, v in (("current_l1_a", 500.0), ("current_l2_a", 510.0),
                       ("current_l3_a", 490.0), ("residual_current_ma", 20.0))]
NORMAL += [("cb1.led", 0.0, Quality.GOOD), ("cb2.led", 0.0, Quality.GOOD)]


@pytest.fixture
def field_unit(tmp_path: Path) -> Path:
    """The site and the retained state its busguard of main 590615e wrote (make_state.py):
    cb1 tripped on overcurrent, latched, its alarm acknowledged (cmd.ack_alarms = 1)."""
    shutil.copy(DATA / "site.toml", tmp_path / "site.toml")
    shutil.copytree(DATA / "state", tmp_path / "state")
    return tmp_path / "site.toml"


def test_a_unit_upgraded_in_the_field_restores_its_latched_trip_from_the_old_file(
        field_unit, make_runtime):
    rt = make_runtime(field_unit, start=True, retained=True)
    assert rt.restored and rt.starts == 2
    st1, st2 = rt.blocks[0], rt.blocks[1]
    assert st1.state()["latched"] is True and st1.state()["trip"]["cause"] == "overcurrent"
    assert st2.state()["latched"] is False
    img = rt.image.snapshot()
    assert img["m1.current_l2_a"].quality == Quality.STALE  # restored, not read yet
    assert img["cmd.ack_alarms"].value == 1.0 and img["cmd.ack_alarms"].good  # the baseline
    rt.image.write_many(NORMAL)
    (res,) = run_scans(rt, 1)
    assert res.outputs["cb1.shunt_trip"] == 1.0 and res.outputs["cb2.shunt_trip"] == 0.0
    (alarm,) = rt.alarms.active()
    assert (alarm.id, alarm.condition.code, alarm.acked) == ("st1:trip", "BG-TRIP-OC", True)
    assert not res.edges  # the acknowledgement is not replayed, the alarm not raised again
    rt.image.write("cb1.cmd_reset", 1.0)  # the authorised reset releases it
    (res,) = run_scans(rt, 1)
    assert res.outputs["cb1.shunt_trip"] == 0.0
    assert [(e.kind, rt.alarms.events.seq) for e in res.edges] == [("cleared", 2)]  # 1 was saved


def test_the_document_is_plain_json_and_versioned(field_unit, make_runtime):
    rt = make_runtime(field_unit, start=True, retained=True)
    rt.image.write_many(NORMAL)
    run_scans(rt, 2)
    for live in (False, True):
        doc = export_state(rt, live=live)
        assert doc["version"] == VERSION
        assert json.loads(json.dumps(doc, allow_nan=False)) == doc  # no NaN, no objects
        assert doc["blocks"]["st1"]["state"]["latched"] is True
    assert "live" not in export_state(rt, live=False)


def test_a_newer_document_is_refused_whole(field_unit, make_runtime):
    rt = make_runtime(field_unit, start=True)
    doc = load_newest(field_unit.parent / "state" / "retained.json").body
    with pytest.raises(ValueError, match="version 2"):
        import_state(rt, {**doc, "version": 2})
    assert rt.blocks[0].state()["latched"] is False and not rt.alarms.active()


EDITED = """
[[block]]
name = "st1"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
pickup_a = 2000.0
delay_s = 0.0
"""


@pytest.mark.parametrize("live", [False, True], ids=["restart", "reload"])
def test_the_same_partial_restore_rules_for_restart_and_reload(field_unit, make_runtime,
                                                                live, caplog):
    """A block whose params changed keeps its latched trip; a removed device's points and a
    removed block's state are dropped without an error, in both uses; a latched trip whose
    block is gone is said loudly, naming its breaker."""
    old = make_runtime(field_unit, start=True, retained=True)
    old.image.write_many(NORMAL)
    old.image.write("m2.current_l1_a", 1800.0)  # st2 trips too
    run_scans(old, 2)
    assert old.blocks[1].state()["latched"] is True
    doc = json.loads(json.dumps(export_state(old, live=live)))  # as plain as a file
    text = field_unit.read_text()
    # meter m2 replaced by m3, breaker cb2 and its block st2 removed, st1's pickup changed
    site = text[:text.index('[[breaker]]\nname = "cb2"')] + EDITED
    site = site.replace('[[meter]]\nname = "m2"', '[[meter]]\nname = "m3"')
    edited = field_unit.with_name("edited.toml")
    edited.write_text(site)
    new = make_runtime(edited)
    plan = import_state(new, doc, live=live)
    assert [b.name for b, _ in plan.blocks] == ["st1"]
    assert plan.lost_latches == ["cb2"]
    assert any(r.levelname == "ERROR" and "latched trip of breaker cb2 (block st2)" in
               r.getMessage() for r in caplog.records)
    assert new.blocks[0].p["pickup_a"] == 2000.0 and new.blocks[0].state()["latched"] is True
    assert [a.id for a in new.alarms.active()] == ["st1:trip"]
    assert "m3.current_l1_a" in new.image and not new.image.snapshot()["m3.current_l1_a"].good
    m1 = new.image.snapshot()["m1.current_l1_a"]
    # the one deliberate difference in values: a restart serves them STALE until read, a
    # reload keeps them as they were (GOOD, with their age)
    assert m1.value == 500.0 and m1.quality == (Quality.GOOD if live else Quality.STALE)
    assert new.restored is True  # the old runtime had restored, or this one just did


def test_a_reload_refuses_nothing_when_one_block_refuses_its_state(field_unit, make_runtime,
                                                                   caplog):
    old = make_runtime(field_unit, start=True, retained=True)
    doc = export_state(old, live=True)
    doc["blocks"]["st2"]["state"] = {"latched": True, "trips": "not a number"}
    new = make_runtime(field_unit)
    plan = import_state(new, doc, live=True)
    assert plan.refused == ["st2"] and new.blocks[0].state()["latched"] is True
    assert new.blocks[1].state()["latched"] is False  # rolled back to its own, not half set
    new2 = make_runtime(field_unit)
    with pytest.raises(ValueError, match="st2"):  # a restart falls back a generation instead
        import_state(new2, doc, live=False)
    assert new2.blocks[0].state()["latched"] is False


def test_a_reload_takes_the_state_from_memory_and_counts_cycles_once(field_unit,
                                                                     make_runtime,
                                                                     monkeypatch):
    """A reload imports the old runtime's state in memory and reads no retained body. Fixed
    with the one import: the retained file's cycles_total counted the cycles before a reload
    twice (the file's total, then the cycle counter that goes on)."""
    import busguard.retained

    old = make_runtime(field_unit, start=True, retained=True)
    old.image.write_many(NORMAL)
    run_scans(old, 7)
    state_dir = field_unit.parent / "state"
    reloader = Reloader(field_unit, old, service=Service({}))
    field_unit.write_text(field_unit.read_text().replace("pickup_a = 1000.0", "pickup_a = 1100.0",
                                                         1))

    def no_file_read(path):
        raise AssertionError("a reload read the retained file's body")

    monkeypatch.setattr(busguard.retained, "load_newest", no_file_read)
    assert reloader.prepare() is True
    reloader._swap()
    new = reloader.current
    assert new.state == "running" and new.blocks[0].p["pickup_a"] == 1100.0
    assert new.blocks[0].state()["latched"] is True  # carried in memory
    assert new.starts == old.starts + 1 == 3
    run_scans(new, 5)
    reloader.request_stop()
    new.stop()
    monkeypatch.undo()
    body = load_newest(state_dir / "retained.json").body
    # 11 cycles of the first run (make_state.py), 7 of the restarted one, 5 after the reload
    assert body["counters"] == {"starts": 3, "cycles_total": 11 + 7 + 5}
    assert body["cycle"] == 12


def test_a_block_moved_to_another_breaker_says_which_latch_it_left(field_unit, make_runtime,
                                                                  caplog):
    old = make_runtime(field_unit, start=True, retained=True)  # st1 latched on cb1
    doc = export_state(old, live=False)
    assert doc["blocks"]["st1"]["latched"] == ["cb1"] and "latched" not in doc["blocks"]["st2"]
    moved = field_unit.with_name("moved.toml")
    moved.write_text(field_unit.read_text().replace('breaker = "cb1"', 'breaker = "cbx"')
                     .replace('name = "cb1"', 'name = "cbx"'))
    new = make_runtime(moved)
    plan = import_state(new, doc)
    assert plan.lost_latches == ["cb1"] and new.blocks[0].state()["latched"] is True
    assert any("breaker cb1 (block st1)" in r.getMessage() and "no longer protects it" in
               r.getMessage() for r in caplog.records)


def test_a_reload_leaves_out_what_one_block_or_output_cannot_take(field_unit, make_runtime):
    old = make_runtime(field_unit, start=True, retained=True)
    old.image.write_many(NORMAL)
    run_scans(old, 1)
    doc = export_state(old, live=True)
    doc["blocks"]["st2"]["state"] = ["not", "a", "table"]
    doc["live"]["outputs"]["cb2.shunt_trip"] = None  # (an exported inf)
    new = make_runtime(field_unit)
    plan = import_state(new, doc, live=True)
    assert plan.refused == ["st2"] and new.blocks[0].state()["latched"] is True
    assert new.engine.outputs["cb1.shunt_trip"] == 1.0
    assert new.engine.outputs["cb2.shunt_trip"] == new.engine.failsafe["cb2.shunt_trip"]
    with pytest.raises(TypeError, match="st2"):  # a restart refuses that document
        import_state(make_runtime(field_unit), doc, live=False)
