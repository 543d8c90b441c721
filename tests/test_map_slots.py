"""Map v2's stable slots (issue 15): no edit of the site moves an existing point's address;
the slots live in {state_dir}/map.lock; check/apply/map show the diff and refuse a move."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from busguard.cli import main
from busguard.commands.apply import apply
from busguard.errors import ConfigError
from busguard.image import PointSpec
from busguard.northbound import mapdef, slots
from busguard.runtime import Runtime

KINDS = {"meter": ("voltage_l1_n_v", "current_l1_a", "power_l2_kw", "comm_ok"),
         "probe": ("temp_c",), "breaker": ("led",)}


def specs_of(devices: list[tuple[str, str]], vendor: set[str]) -> list[PointSpec]:
    out = [PointSpec("scan.cycles", "scan"), PointSpec("cmd.ack_alarms", "cmd", command=True,
                                                       minval=0, maxval=65535)]
    for kind, name in devices:
        out += [PointSpec(f"{name}.{q}", name) for q in KINDS[kind]]
        if name in vendor:  # a quantity outside the standard list: an extra point
            out.append(PointSpec(f"{name}.vendor_x", name))
    return out


def addresses(m: mapdef.RegisterMap) -> dict[str, int]:
    """Every point, device header word and record of the map by name (names left out)."""
    return {f.name: f.address for f in m.fields() if f.area != "name"}


def test_random_edits_never_move_an_existing_point():
    """A bounded, seeded property test: 300 random add / remove / reorder / rename edits of
    meters, probes and breakers (with vendor quantities that land in the extra area), each
    laid out against the lock the previous one left: no point that exists before and after
    an edit changes address, the fingerprint changes exactly when the address table does,
    and the lock never gives two records one slot."""
    rng = random.Random(15)
    counter = 0
    devices: list[tuple[str, str]] = []
    vendor: set[str] = set()
    lock: dict[str, dict[str, int]] = {}
    before: dict[str, int] = {}
    fp_before = None
    for _step in range(300):
        op = rng.choice(("add", "add", "remove", "reorder", "rename"))
        if op == "add" or not devices:
            kind = rng.choice(tuple(KINDS))
            counter += 1
            name = f"{kind[0]}{counter}"
            devices.insert(rng.randrange(len(devices) + 1), (kind, name))
            if kind == "meter" and rng.random() < 0.3:
                vendor.add(name)
        elif op == "remove":
            devices.pop(rng.randrange(len(devices)))
        elif op == "reorder":
            rng.shuffle(devices)
        else:
            i = rng.randrange(len(devices))
            counter += 1
            devices[i] = (devices[i][0], f"{devices[i][0][0]}{counter}")
        m = mapdef.RegisterMap.build(specs_of(devices, vendor), devices, [],
                                     inputs=mapdef.MapInputs(lock))
        a = m.assignment
        assert a is not None and not a.moved
        after = addresses(m)
        for name in before.keys() & after.keys():
            assert before[name] == after[name], f"{op}: {name} moved"
        if fp_before is not None:
            assert (m.fingerprint == fp_before) == (after == before)
        for area, table in a.lock.items():
            assert len(set(table.values())) == len(table), area
        lock = {k: dict(v) for k, v in a.lock.items()}
        before, fp_before = after, m.fingerprint


def test_a_device_keeps_its_slot_when_removed_and_added_back():
    devs = [("meter", "a"), ("meter", "b"), ("meter", "c")]
    m1 = mapdef.RegisterMap.build(specs_of(devs, set()), devs, [])
    lock = m1.assignment.lock
    m2 = mapdef.RegisterMap.build(specs_of(devs[1:], set()), devs[1:], [],
                                  inputs=mapdef.MapInputs(lock))
    assert [d.slot for d in m2.devices] == [1, 2]
    new = [("meter", "d"), *devs[1:]]
    m3 = mapdef.RegisterMap.build(specs_of(new, set()), new, [],
                                  inputs=mapdef.MapInputs(m2.assignment.lock))
    assert {d.name: d.slot for d in m3.devices} == {"b": 1, "c": 2, "d": 3}  # a's kept
    m4 = mapdef.RegisterMap.build(specs_of(devs, set()), devs, [],
                                  inputs=mapdef.MapInputs(m3.assignment.lock))
    assert {d.name: d.slot for d in m4.devices} == {"a": 0, "b": 1, "c": 2}


SITE = """
[site]
name = "slots"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

{devices}

[modbus_server]
port = 0
"""


def meters(*names: str, slots_: dict[str, int] | None = None) -> str:
    out = []
    for n in names:
        slot = f"\nslot = {slots_[n]}" if slots_ and n in slots_ else ""
        out.append(f'[[meter]]\nname = "{n}"\ndriver = "memory"\n'
                   f'points = ["current_l1_a", "power_l1_kw"]{slot}\n')
    return "\n".join(out)


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def started_lock(path: Path) -> dict:
    """Start and stop a runtime on the site: the publisher records the slots."""
    rt = Runtime.from_file(path)
    rt.start()
    rt.stop()
    return json.loads((path.parent / "state" / "map.lock").read_text())


def test_the_runtime_records_slots_and_the_lock_keeps_them(tmp_path):
    site = write(tmp_path, SITE.format(devices=meters("m1", "m2", "m3")))
    lock = started_lock(site)
    assert lock["slots"]["meter"] == {"m1": 0, "m2": 1, "m3": 2}
    site.write_text(SITE.format(devices=meters("m0", "m3", "m1")))  # m2 gone, m0 new, reorder
    rt = Runtime.from_file(site)
    m = mapdef.for_runtime(rt)
    assert {d.name: d.slot for d in m.devices} == {"m0": 3, "m1": 0, "m3": 2}
    assert m.record_of("m3.current_l1_a").address == 1000 + 2 * 256 + 8 + 6 * 4


@pytest.mark.parametrize(("entry", "message"), [
    ("slot = 128", "meter[0].slot: got 128; expected an integer >= 0 and <= 127"),
    ("unit_id = 1", "meter[0].unit_id: got 1; expected an integer >= 2 and <= 254"),
])
def test_explicit_slot_and_unit_id_are_validated(tmp_path, entry, message):
    site = write(tmp_path, SITE.format(devices=meters("m1") + entry + "\n"))
    with pytest.raises(ConfigError) as exc:
        Runtime.from_file(site)
    assert message in str(exc.value) and str(site) in str(exc.value)


def test_duplicate_slots_and_unit_ids_name_both_entries(tmp_path):
    text = meters("m1", "m2", slots_={"m1": 5, "m2": 5})
    text += '\n[[probe]]\nname = "p1"\ndriver = "memory"\npoints = ["temp_c"]\nunit_id = 9\n'
    text += '\n[[breaker]]\nname = "b1"\ndriver = "memory"\npoints = ["led"]\nunit_id = 9\n'
    site = write(tmp_path, SITE.format(devices=text))
    with pytest.raises(ConfigError) as exc:
        Runtime.from_file(site)
    msg = str(exc.value)
    assert "meter[1].slot: slot 5 is already meter[0] ('m1'); valid: a slot no other meter " \
           "has, 0 to 127" in msg
    assert "breaker[0].unit_id: unit id 9 is already probe[0] ('p1')" in msg


def test_a_corrupt_lock_is_a_clear_error(tmp_path, capsys):
    site = write(tmp_path, SITE.format(devices=meters("m1")))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "map.lock").write_text('{"format": 1, "slots": {"meter": {"m1": ')
    assert main(["check", str(site)]) == 1
    err = capsys.readouterr().err
    assert "map.lock: corrupt map lock (not JSON" in err and "move it aside" in err
    with pytest.raises(slots.MapLockError):
        started_lock(site)


def test_check_prints_the_diff_and_refuses_a_move(tmp_path, capsys):
    site = write(tmp_path, SITE.format(devices=meters("m1", "m2")))
    started_lock(site)
    site.write_text(SITE.format(devices=meters("m1", "m2", "m3")))
    assert main(["check", str(site)]) == 0
    out = capsys.readouterr().out
    assert "added meter m3: slot 2 (address 1512)" in out
    site.write_text(SITE.format(devices=meters("m1", "m2", slots_={"m2": 0})))
    assert main(["check", str(site)]) == 2
    cap = capsys.readouterr()
    assert "MOVED meter m2: slot 1 (address 1256) -> slot 0 (address 1000)" in cap.out
    assert "MOVED meter m1: slot 0 (address 1000) -> slot 1 (address 1256)" in cap.out
    assert "refused: this change moves 2 record(s)" in cap.err
    assert main(["check", str(site), "--accept-map-change"]) == 0


def test_apply_refuses_a_moving_change_with_the_diff(tmp_path, capsys):
    site = write(tmp_path, SITE.format(devices=meters("m1", "m2")))
    started_lock(site)
    before = site.read_bytes()
    new = write(tmp_path, SITE.format(devices=meters("m1", "m2", slots_={"m1": 1})), "new.toml")
    assert main(["apply", str(new), "--site", str(site), "--no-reload"]) == 2
    out = capsys.readouterr().out
    assert "MOVED meter m1: slot 0 (address 1000) -> slot 1 (address 1256)" in out
    assert "refused" in out
    assert site.read_bytes() == before  # nothing changed
    assert not list(tmp_path.glob("site.toml.*.bak"))
    res = apply(site, new.read_bytes(), reload=False, say=None, accept_map_change=True)
    assert res["ok"] and res["action"] == "replaced"
    assert any(c.startswith("MOVED meter m1") for c in res["map_changes"])
    grow = write(tmp_path, SITE.format(devices=meters("m1", "m2", "m4", slots_={"m1": 1})),
                 "grow.toml")
    assert started_lock(site)["slots"]["meter"] == {"m2": 0, "m1": 1}  # swapped
    res = apply(site, grow.read_bytes(), reload=False, say=None)
    assert res["ok"] and res["map_changes"] == ["added meter m4: slot 2 (address 1512)"]


def test_map_diff_against_an_old_json(tmp_path, capsys):
    site = write(tmp_path, SITE.format(devices=meters("m1", "m2")))
    assert main(["map", str(site), "--format", "json", "-o", str(tmp_path / "old.json")]) == 0
    assert main(["map", str(site), "--diff", str(tmp_path / "old.json")]) == 0
    assert "0 moved, 0 added, 0 removed" in capsys.readouterr().out
    site.write_text(SITE.format(devices=meters("m1", "m2", slots_={"m2": 7})))
    assert main(["map", str(site), "--diff", str(tmp_path / "old.json")]) == 1
    out = capsys.readouterr().out
    assert "MOVED m2.current_l1_a: 1288 -> 2824" in out
    (tmp_path / "bad.json").write_text("[1]")
    assert main(["map", str(site), "--diff", str(tmp_path / "bad.json")]) == 1
    assert "not a `busguard map --format json` output" in capsys.readouterr().err


def test_the_io_process_builds_the_same_map_from_the_layout(tmp_path):
    """With [scan] io = "process" the I/O process lays the map out from the Layout message
    (it builds no blocks): same slots, unit ids, reset-command words and fingerprint."""
    import importlib.util

    from busguard.ioproc.frames import Layout
    from test_retained_restart import PLUGIN_SRC

    mod_path = tmp_path / "bgplug_layout.py"
    mod_path.write_text(PLUGIN_SRC)
    spec = importlib.util.spec_from_file_location("bgplug_layout", mod_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = SITE.format(devices=meters("m1", "m2", slots_={"m2": 9}) + """
[[breaker]]
name = "cb1"
driver = "memory"
points = ["led"]
unit_id = 200

[[block]]
name = "trip"
type = "latch_trip"
point = "m1.current_l1_a"
breaker = "cb1"
above = 1000.0
""")
    site = write(tmp_path, text)
    (tmp_path / "state").mkdir()
    slots.write_lock(tmp_path / "state" / "map.lock", {"meter": {"old": 0}})
    rt = Runtime.from_file(site, extra=[mod])
    here = mapdef.for_runtime(rt)
    lay = Layout.from_bytes(Layout.of(rt).to_bytes())
    there = mapdef.RegisterMap.build(lay.specs, lay.devices, lay.block_outputs,
                                     inputs=lay.map_inputs)
    assert {d.name: (d.slot, d.unit_id) for d in there.devices} == {
        "m1": (1, 3), "m2": (9, 11), "cb1": (0, 200)}
    assert there.reset_command("cb1") is not None
    assert there.fingerprint == here.fingerprint
    assert [f.as_dict() for f in there.fields()] == [f.as_dict() for f in here.fields()]


def test_a_site_over_the_map_capacity_is_refused_naming_the_limit(tmp_path, capsys):
    devs = [("meter", f"m{i}") for i in range(mapdef.CAPACITY["meter"] + 1)]
    with pytest.raises(slots.MapLockError, match="holds at most 128 meter record"):
        mapdef.RegisterMap.build(specs_of(devs, set()), devs, [])
    # the site file is refused before any map is built: a configuration error naming the
    # file, the first entry over the limit and the limit (exit 2); 128 meters pass
    site = write(tmp_path, SITE.format(devices=meters(*(f"m{i}" for i in range(129)))))
    assert main(["check", str(site)]) == 2
    assert f"{site}: meter[128]: 129 meters: one unit holds at most 128 meters" in \
        capsys.readouterr().err
    site.write_text(SITE.format(devices=meters(*(f"m{i}" for i in range(128)))))
    assert main(["check", str(site)]) == 0


def test_the_map_capacity_binds_only_a_site_that_serves_the_map(tmp_path, capsys):
    # a unit that serves no map (local interlocks and relays only; every outward interface
    # needs [modbus_server]) is bounded by its scan, not by the map's 128 meter slots
    text = SITE.format(devices=meters(*(f"m{i}" for i in range(256))))
    site = write(tmp_path, text.replace("[modbus_server]\nport = 0\n", ""))
    assert main(["check", str(site)]) == 0, capsys.readouterr().err
    site.write_text(text)
    assert main(["check", str(site)]) == 2
    assert "meter[128]: 256 meters: one unit holds at most 128 meters" in capsys.readouterr().err
