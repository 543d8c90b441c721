"""Retained state: file format, atomic saves (kill -9 mid-write), corrupt files, restore."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from busguard.image import Quality
from busguard.retained import (
    CHUNK_ITEMS,
    PLUGIN_NAME,
    CorruptState,
    decode_state,
    encode_state,
    json_pieces,
    load_newest,
    read_state,
)
from busguard.testing import run_scans
from test_northbound_helpers import read, wait_for
from test_retained_restart import PLUGIN_SRC

SITE = """
[site]
name = "ret"

[scan]
period_ms = 10

[retained]
interval_s = {interval}

[[meter]]
name = "pqm-a1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "voltage_l1_n_v"]

[[breaker]]
name = "cb-a1-01"
driver = "memory"
points = ["led"]

[[block]]
name = "trip-a1"
type = "latch_trip"
point = "pqm-a1.current_l1_a"
breaker = "cb-a1-01"
above = 1000.0

[modbus_server]
port = 0
"""


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "bgtestplug_inproc.py"
    path.write_text(PLUGIN_SRC, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("bgtestplug_inproc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def unit(make_runtime, plugin, tmp_path):
    site = tmp_path / "site.toml"

    def make(interval: float = 3600.0):
        site.write_text(SITE.format(interval=interval), encoding="utf-8")
        return make_runtime(site, extra=[plugin], start=True, retained=True)

    return make


def state_file(rt) -> Path:
    return rt.site.state_dir / "retained.json"


def newest(rt) -> dict | None:
    """The newest valid generation of the two slots (retained.json, retained.json.b)."""
    return load_newest(state_file(rt)).body


def newest_slot(rt) -> Path:
    return load_newest(state_file(rt)).source


def test_round_trip_and_damage_is_detected():
    body = {"points": {"names": ["a"], "values": [1.5]}, "n": 3}
    data = encode_state(body)
    assert decode_state(data) == body
    with pytest.raises(CorruptState, match="truncated"):
        decode_state(data[:-5])
    with pytest.raises(CorruptState, match="no header"):
        decode_state(data[:20])
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    with pytest.raises(CorruptState, match="checksum"):
        decode_state(bytes(flipped))
    with pytest.raises(CorruptState):
        decode_state(b"\x00\xff garbage\n{}")


def test_the_body_is_encoded_in_bounded_pieces_as_json_dumps_would_write_it():
    """Saves run beside the scan: no single encoding call may take a long list whole."""
    n = CHUNK_ITEMS * 5 + 7
    body = {"points": {"names": [f"m{i}.v" for i in range(n)], "values": [i / 7 for i in range(n)],
                       "quality": list(range(n)), "t_utc": tuple(1.7e9 + i for i in range(n))},
            "alarms": [{"code": "BG-X", "n": i, "tags": ["a", "b"]} for i in range(n)],
            "blocks": {}, "empty": [], "odd keys": {1: "int key", 2: None}, "z": "\u00e9\u2028",
            "short": [1.5, None, True]}
    pieces = list(json_pieces(body))
    assert "".join(pieces) == json.dumps(body, separators=(",", ":"), sort_keys=True)
    assert len(pieces) > 6 * 5  # every long list came in slices
    longest = max(len(p) for p in pieces)
    assert longest < len(json.dumps(body["alarms"])) / 4
    assert decode_state(encode_state(body)) == json.loads(json.dumps(body))


def test_latch_is_saved_at_once_and_restored_with_last_values(unit):
    rt = unit()
    rt.image.write_many([("pqm-a1.current_l1_a", 1500.0, Quality.GOOD),
                         ("pqm-a1.voltage_l1_n_v", 277.25, Quality.GOOD)])
    run_scans(rt, 2)  # the latch sets: an alarm edge and a state change, saved now
    wait_for(lambda: newest(rt) and newest(rt)["blocks"]["trip-a1"]["state"]["latched"],
             what="the latch saved without waiting for the interval")
    rt.image.write("pqm-a1.current_l1_a", 410.0)
    run_scans(rt, 1)
    rt.stop()  # clean stop: one more save with the newest values
    body = newest(rt)
    vals = dict(zip(body["points"]["names"], body["points"]["values"], strict=True))
    assert vals["pqm-a1.current_l1_a"] == 410.0 and vals["pqm-a1.voltage_l1_n_v"] == 277.25

    rt2 = unit()
    snap = rt2.image.snapshot()
    cur = snap["pqm-a1.current_l1_a"]
    assert cur.value == 410.0 and cur.quality is Quality.STALE  # served at once, stale
    assert rt2.restored
    port = rt2.publishers[0].server.port()
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        head = read(s, 0, 64)
        assert head[3] == 1 and head[4] == 0 and head[5] == 2 and head[21] == 2
        (res,) = run_scans(rt2, 1)
    assert res.outputs["cb-a1-01.shunt_trip"] == 1.0  # the latched trip survived
    alarms = {a.id: a for a in rt2.alarms.active()}
    assert alarms["trip-a1:trip"].condition.code == "BG-TEST-TRIP"
    assert not res.edges  # restored alarm is not raised a second time


def test_command_counters_continue_after_a_restart(unit):
    rt = unit()
    rt.image.write("cb-a1-01.cmd_reset", 7.0)
    run_scans(rt, 1)
    rt.stop()
    rt2 = unit()
    pv = rt2.image.snapshot()["cb-a1-01.cmd_reset"]
    assert pv.value == 7.0 and pv.quality is Quality.GOOD  # the baseline, not a command


def damage_file(path: Path, damage: str) -> None:
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 not a state file")
    else:  # within the body: the file is zero-padded to whole 4 KiB blocks
        head = data.split(b"\n", 1)[0]
        end = len(head) + 1 + json.loads(head)["length"]
        if damage == "truncated":
            path.write_bytes(data[: end // 2])
        else:
            b = bytearray(data)
            b[end - 10] ^= 0x20
            path.write_bytes(bytes(b))


def latched_then_saved_again(unit):
    """A unit whose trip latched (saved at once), then one more save: the trip is in both
    slots, the newest generation and the one before it."""
    rt = unit()
    rt.image.write("pqm-a1.current_l1_a", 1500.0)
    run_scans(rt, 1)
    rt.image.write("pqm-a1.current_l1_a", 400.0)
    run_scans(rt, 1)
    rt.stop()  # the clean stop's save: generation 2 in slot B, the latch's 1 in slot A
    return rt


def other_slot(path: Path) -> Path:
    a, b = path.parent / "retained.json", path.parent / "retained.json.b"
    return b if path == a else a


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_current_file_falls_back_to_the_previous_generation_with_the_trip(
        unit, damage, caplog):
    rt = latched_then_saved_again(unit)
    loaded = load_newest(state_file(rt))
    assert [g for g, _p, _b in loaded.found] == [2, 1]
    current, prev = loaded.source, other_slot(loaded.source)
    assert read_state(prev)["blocks"]["trip-a1"]["state"]["latched"]
    damage_file(current, damage)
    rt2 = unit()
    obs = rt2.pm.get_plugin(PLUGIN_NAME)
    assert obs.status == "corrupt" and obs.restored_from == prev and obs.generation == 1
    (aside,) = list(current.parent.glob(current.name + ".corrupt-*"))
    assert aside.read_bytes() != b""
    assert "BG-RETAINED-CORRUPT" in caplog.text and "restored generation 1" in caplog.text
    alarm = next(a for a in rt2.alarms.active() if a.block == "retained-state")
    assert alarm.condition.latch and not alarm.active  # waits for acknowledgement
    assert prev.name in alarm.condition.message
    (res,) = run_scans(rt2, 1)
    assert res.outputs["cb-a1-01.shunt_trip"] == 1.0  # the trip came back from the other slot
    assert rt2.restored
    port = rt2.publishers[0].server.port()
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        head = read(s, 0, 5)
        assert head[4] == 2  # header: retained_status = corrupt file set aside
        assert head[3] == 1  # ... and values RESTORED (from the previous generation)
    rt2.stop()
    faults = rt2.site.fault_log.read_text()
    assert "BG-RETAINED-CORRUPT" in faults and "restored generation 1" in faults
    assert newest(rt2)["blocks"]["trip-a1"]["state"]["latched"]  # good again
    assert len(load_newest(state_file(rt2)).found) == 2  # the damaged slot written again


def test_a_damaged_older_slot_loses_nothing_and_raises_no_alarm(unit, caplog):
    rt = latched_then_saved_again(unit)
    damage_file(other_slot(newest_slot(rt)), "flipped")
    rt2 = unit()
    obs = rt2.pm.get_plugin(PLUGIN_NAME)
    assert obs.status == "loaded" and obs.generation == 2
    assert not any(a.block == "retained-state" for a in rt2.alarms.active())
    assert "the newer generation 2 was restored" in caplog.text
    rt2.stop()


def test_both_generations_corrupt_starts_cold_and_says_so(unit, caplog):
    rt = latched_then_saved_again(unit)
    path = state_file(rt)
    damage_file(path, "flipped")
    damage_file(other_slot(path), "truncated")
    rt2 = unit()
    obs = rt2.pm.get_plugin(PLUGIN_NAME)
    assert obs.status == "corrupt" and obs.restored_from is None
    assert "no good generation left" in caplog.text
    (res,) = run_scans(rt2, 1)
    assert res.outputs["cb-a1-01.shunt_trip"] == 0.0  # started cold, and said so
    rt2.stop()


def test_a_valid_file_that_cannot_be_applied_is_not_half_restored(unit, caplog):
    """Checksum fine, content wrong: no value, no alarm, no block state of that generation
    is taken; the previous generation is used instead."""
    from busguard.statefile import decode_generation

    rt = latched_then_saved_again(unit)
    current = newest_slot(rt)
    gen, body = decode_generation(current.read_bytes())
    prev_body = read_state(other_slot(current))
    body["points"]["values"] = [9999.0 for _ in body["points"]["values"]]
    body["alarms"].append({"id": "trip-a1:x", "block": "trip-a1", "key": "x",
                           "severity": "critical", "code": "BG-X", "message": "m"})
    body["blocks"]["trip-a1"]["state"] = []  # not a table
    current.write_bytes(encode_state(body, gen))
    rt3 = unit()
    obs = rt3.pm.get_plugin(PLUGIN_NAME)
    assert obs.restored_from == other_slot(current)
    snap = rt3.image.snapshot()
    assert snap["pqm-a1.current_l1_a"].value != 9999.0
    assert not any(a.id == "trip-a1:x" for a in rt3.alarms.active())
    assert "cannot be applied" in caplog.text and "Traceback" not in caplog.text
    assert rt3.blocks[0].latched == prev_body["blocks"]["trip-a1"]["state"]["latched"]
    rt3.stop()


def test_save_failure_is_reported_not_fatal(make_runtime, plugin, tmp_path, caplog):
    (tmp_path / "blocker").write_text("a file where the state folder should be")
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(interval=0.05) + '\n[paths]\nstate_dir = "blocker/state"\n',
                    encoding="utf-8")
    rt = make_runtime(site, extra=[plugin], start=True, retained=True)
    run_scans(rt, 3)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    wait_for(lambda: obs.status == "error", what="save error reported")
    rt.stop()
    assert "BG-RETAINED-SAVE" in caplog.text


def test_disabled_retained_state_writes_nothing(make_runtime, plugin, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(interval=0.05).replace("[retained]", "[retained]\nenabled = "
                                                        "false"), encoding="utf-8")
    rt = make_runtime(site, extra=[plugin], start=True, retained=True)
    run_scans(rt, 3)
    rt.stop()
    assert not (rt.site.state_dir / "retained.json").exists()
    assert not (rt.site.state_dir / "retained.json.b").exists()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from busguard.retained import encode_state, write_atomic
    path = Path(sys.argv[1])
    bodies = [encode_state({"gen": g, "pad": [g] * 200000}) for g in (0, 1)]
    n = 0
    while True:
        write_atomic(path, bodies[n % 2])
        n += 1
        print(n, flush=True)
""")


def test_kill_9_during_writes_leaves_the_old_or_the_new_file_never_a_torn_one(tmp_path):
    path = tmp_path / "state" / "retained.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)],
                                stdout=subprocess.PIPE, text=True)
        for _ in range(2 + round_):  # a different moment each round, always mid-loop
            assert proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        body = read_state(path)  # raises CorruptState on a torn file
        assert body is not None and body["gen"] in (0, 1)
        assert body["pad"] == [body["gen"]] * 200000


SLOT_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from busguard.statefile import Slots, encode_state
    slots = Slots(Path(sys.argv[1]))
    pad = os.urandom(150000).hex()  # incompressible: each save is ~300 KB, many syscalls
    gen = 0
    while True:
        gen += 1
        slots.write(encode_state({"gen": gen, "pad": pad}, gen))
        print(gen, flush=True)
""")


def test_kill_9_during_slot_writes_keeps_every_completed_generation(tmp_path):
    """Killed at random moments while overwriting a slot in place: the newest generation
    whose write completed (printed) is always there, or a newer one; never a torn body."""
    import random

    path = tmp_path / "state" / "retained.json"
    script = tmp_path / "slot_writer.py"
    script.write_text(SLOT_WRITER, encoding="utf-8")
    rng = random.Random(7)
    for _round in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)],
                                stdout=subprocess.PIPE, text=True)
        done = 0
        for _ in range(rng.randint(1, 6)):
            done = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        loaded = load_newest(path)
        gen, _src, body = loaded.found[0]
        assert gen >= done and body["gen"] == gen
        path.unlink(missing_ok=True)
        path.with_name("retained.json.b").unlink(missing_ok=True)


def test_no_nan_or_inf_in_the_file(unit):
    rt = unit()
    rt.image.write("pqm-a1.current_l1_a", math.inf)
    run_scans(rt, 1)
    rt.stop()
    import zlib

    data = newest_slot(rt).read_bytes()
    head = json.loads(data.split(b"\n", 1)[0])
    raw = zlib.decompress(data.split(b"\n", 1)[1][:head["length"]])
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_saves_at_a_bounded_interval_without_edges(unit):
    rt = unit(interval=1.0)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    rt.image.write("pqm-a1.current_l1_a", 400.0)
    run_scans(rt, 1)  # the first scan always saves
    wait_for(lambda: obs.saves == 1, what="first save")
    for k in range(3):
        rt.image.write("pqm-a1.current_l1_a", 401.0 + k)
        run_scans(rt, 99)  # 0.99 s of scans: no edge, no state change, not due yet
        assert obs.saves == 1 + k
        run_scans(rt, 1)  # 1.0 s since the last save: due
        wait_for(lambda k=k: obs.saves == 2 + k, what="interval save")
    body = newest(rt)
    vals = dict(zip(body["points"]["names"], body["points"]["values"], strict=True))
    assert vals["pqm-a1.current_l1_a"] == 403.0


def test_a_burst_of_state_changes_is_coalesced_never_lost(unit):
    rt = unit(interval=3600.0)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    run_scans(rt, 1)
    wait_for(lambda: obs.saves == 1, what="first save")
    block = rt.blocks[0]
    for k in range(30):  # the latch flips every scan for 0.3 s
        rt.image.write("pqm-a1.current_l1_a", 1500.0 if k % 2 == 0 else 10.0)
        if k % 2:
            block.latched = False  # as a reset would
        run_scans(rt, 1)
    assert 2 <= obs.queued - 1 <= 4  # about one save per 100 ms, not one per scan
    run_scans(rt, 10)  # the last change is saved within 100 ms
    wait_for(lambda: newest(rt)["blocks"]["trip-a1"]["state"]["latched"]
             is block.latched, what="the newest state saved")


SHUNT_SITE = """
[site]
name = "shunt-ret"

[scan]
period_ms = 10

[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a", "current_l3_a", "residual_current_ma"]

[[breaker]]
name = "cb1"
driver = "memory"
poll_ms = 100
points = ["led"]

[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
pickup_a = 1000.0
delay_s = 0.0

[modbus_server]
port = 0
"""
# SHUNT_SITE's inputs at a normal load: no trip
SHUNT_NORMAL = [("m1.current_l1_a", 500.0, Quality.GOOD), ("m1.current_l2_a", 510.0, Quality.GOOD),
                ("m1.current_l3_a", 490.0, Quality.GOOD),
                ("m1.residual_current_ma", 20.0, Quality.GOOD), ("cb1.led", 0.0, Quality.GOOD)]


def test_the_shunt_trip_blocks_latch_survives_a_restart(make_runtime, tmp_path):
    site = tmp_path / "shunt.toml"
    site.write_text(SHUNT_SITE, encoding="utf-8")
    try:
        rt = make_runtime(site, start=True, retained=True)
    except Exception as exc:  # the block's options belong to its owner
        pytest.skip(f"shunt_trip options changed: {exc}")
    normal = SHUNT_NORMAL
    rt.image.write_many(normal)
    run_scans(rt, 1)
    rt.image.write("m1.current_l2_a", 1500.0)
    run_scans(rt, 3)
    assert rt.last_result.outputs["cb1.shunt_trip"] == 1.0
    rt.image.write_many(normal)
    run_scans(rt, 3)
    assert rt.last_result.outputs["cb1.shunt_trip"] == 1.0  # latched
    rt.stop()
    rt2 = make_runtime(site, start=True, retained=True)
    rt2.image.write_many(normal)
    (res,) = run_scans(rt2, 1)
    assert res.outputs["cb1.shunt_trip"] == 1.0  # still tripped after the restart
    port = rt2.publishers[0].server.port()
    import socket

    m = rt2.publishers[0].map
    dev = next(d for d in m.devices if d.name == "cb1")
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        assert read(s, dev.address, 4)[3] & 3 == 3  # shunt trip commanded and latched


def test_the_thermal_replica_survives_a_restart_through_retained_state(make_runtime, tmp_path,
                                                                        fake_clock):
    """IEC 60255-149 thermal memory: theta is saved with the retained state on stop and
    loaded before the first scan after a restart; the downtime (wall clock) cools it with the
    cooling time constant: theta' = theta * exp(-downtime / tau)."""
    site = tmp_path / "thermal.toml"
    site.write_text(SHUNT_SITE.replace("pickup_a = 1000.0\ndelay_s = 0.0",
                                       "thermal_ib_a = 1000.0\nthermal_tau_s = 60.0"),
                    encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    amps = [("m1.current_l1_a", 900.0, Quality.GOOD), ("m1.current_l2_a", 900.0, Quality.GOOD),
            ("m1.current_l3_a", 900.0, Quality.GOOD),
            ("m1.residual_current_ma", 20.0, Quality.GOOD), ("cb1.led", 0.0, Quality.GOOD)]
    # 30 scans 1 s apart at 900 A, tau 60 s: the first scan sees the current, the 29
    # intervals after it heat: theta = 0.81 * (1 - exp(-29 / 60))
    for _ in range(30):
        fake_clock.advance(1.0)
        rt.image.write_many(amps)
        run_scans(rt, 1)
    theta = rt.blocks[0].state()["thermal"]["theta"]
    assert theta == pytest.approx(0.81 * (1 - math.exp(-29 / 60)), rel=1e-6)
    rt.stop()
    fake_clock.advance(60.0)  # one tau down
    rt2 = make_runtime(site, start=True, retained=True)
    rt2.image.write_many([(n, 0.0 if "current" in n else v, q) for n, v, q in amps])
    (res,) = run_scans(rt2, 1)
    assert res.outputs["st.thermal_pct"] == pytest.approx(100 * theta * math.exp(-1.0),
                                                          rel=0.02)


def test_a_block_that_refuses_its_state_is_rolled_back_not_half_restored(make_runtime,
                                                                       tmp_path, caplog):
    from busguard.statefile import decode_generation, encode_state

    site = tmp_path / "shunt.toml"
    site.write_text(SHUNT_SITE, encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    run_scans(rt, 2)
    rt.stop()
    path = rt.site.state_dir / "retained.json"
    for p in (path, path.with_name("retained.json.b")):
        gen, body = decode_generation(p.read_bytes())
        # shunt_trip.restore sets latched, then fails on the trip record: half a state
        body["blocks"]["st"]["state"] = {"latched": True, "trip": 5}
        body["points"]["values"] = [1234.5 for _ in body["points"]["values"]]
        p.write_bytes(encode_state(body, gen))
    rt2 = make_runtime(site, start=True, retained=True)
    obs = rt2.pm.get_plugin(PLUGIN_NAME)
    assert obs.status == "corrupt" and obs.restored_from is None
    assert rt2.blocks[0].state()["latched"] is False  # rolled back, not half-restored
    assert rt2.image.snapshot()["m1.current_l1_a"].value != 1234.5
    assert "refused its state" in caplog.text and "Traceback" not in caplog.text
    rt2.stop()


def test_nothing_is_written_while_nothing_changes_and_values_wait_for_their_slot(unit):
    rt = unit(interval=3600.0)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    assert obs.values_every_s == 3600.0  # interval_s: the former name of values_every_s
    rt.image.write("pqm-a1.current_l1_a", 400.0)
    run_scans(rt, 1)  # the first scan saves (a start is a change)
    wait_for(lambda: obs.saves == 1, what="first save")
    before = newest_slot(rt).stat().st_mtime_ns
    for k in range(5):
        rt.image.write("pqm-a1.current_l1_a", 401.0 + k)  # values change: not due yet
        run_scans(rt, 100)
    assert obs.saves == 1 and obs.queued == 1
    assert newest_slot(rt).stat().st_mtime_ns == before
    assert not (state_file(rt).parent / "retained.json.b").exists()  # one save: one slot
    rt.image.write("pqm-a1.current_l1_a", 1500.0)  # the trip latches: saved at once
    run_scans(rt, 1)
    wait_for(lambda: obs.saves == 2, what="the latch saved at once")
    assert obs.reasons["change"] == 2 and obs.reasons["values"] == 0
    rt.stop()


def test_values_every_s_saves_only_changed_values(make_runtime, plugin, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(interval=1.0).replace("interval_s = 1.0",
                                                      "values_every_s = 0.5"),
                    encoding="utf-8")
    rt = make_runtime(site, extra=[plugin], start=True, retained=True)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    rt.image.write("pqm-a1.current_l1_a", 400.0)
    run_scans(rt, 1)
    wait_for(lambda: obs.saves == 1, what="first save")
    run_scans(rt, 300)  # 3 s, six slots, the same values: nothing written
    assert obs.saves == 1
    rt.image.write("pqm-a1.current_l1_a", 401.0)
    run_scans(rt, 60)  # within one slot
    wait_for(lambda: obs.saves == 2, what="the changed value saved in its slot")
    assert obs.reasons["values"] == 1
    run_scans(rt, 300)
    assert obs.saves == 2
    rt.stop()


def test_the_restart_image_of_a_save_shows_that_saves_acknowledgement(make_runtime, tmp_path,
                                                                     fake_clock):
    """The acknowledgement of a latched trip is saved at once, and the restart image written
    with that save (what the next start serves before it builds anything) shows it too.
    Before, the map's alarm view was refreshed only on edges or every 10 scans: an ack (no
    edge) saved within those scans left an image with the alarm unacknowledged, which a
    restart then served (CI: test_retained_kill9, round 0)."""
    from busguard.northbound import restartimage as ri
    from busguard.retained import PLUGIN_NAME

    site = tmp_path / "shunt.toml"
    site.write_text(SHUNT_SITE, encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    obs = rt.pm.get_plugin(PLUGIN_NAME)
    normal = SHUNT_NORMAL
    rt.image.write_many(normal)
    run_scans(rt, 1)
    rt.image.write("m1.current_l2_a", 1500.0)
    run_scans(rt, 1)  # the trip: an edge, the alarm view refreshed at this scan
    rt.image.write_many(normal)
    run_scans(rt, 12)  # the view refreshed 10 scans after the trip; the last save 120 ms ago
    path = ri.path_in(rt.site.state_dir)

    def header() -> list[int]:
        img = ri.read(path).image
        return [int.from_bytes(img[2 * i:2 * i + 2], "big") for i in range(32)]

    wait_for(lambda: path.exists() and header()[17] == 1, what="the trip unacknowledged")
    for n in (1, 2):  # the first write is the baseline, the change acknowledges
        rt.image.write("cmd.ack_alarms", float(n))
        gen = obs.generation
        fake_clock.advance(0.5)  # past the 100 ms between change saves: saved at this scan
        run_scans(rt, 1)  # 2-3 scans after the view's last refresh
    assert not rt.alarms.alarms or all(a.acked for a in rt.alarms.alarms.values())
    wait_for(lambda: obs.generation > gen and ri.read(path).generation == obs.generation,
             what="the acknowledgement saved with its restart image")
    h = header()
    assert h[16] >= 1 and h[17] == 0, f"image: alarms {h[16]}, unacknowledged {h[17]}"
