"""`cmd.ack_code`: acknowledging the alarms of one code through the command area, scanned,
recorded and replayed like any input (run_trace replays every trace and compares)."""

from __future__ import annotations

from blocktrace import run_trace, site
from busguard.alarmcodes import OTHER, code_number
from busguard.northbound import mapdef as md

DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a"]
"""
BLOCKS = """
[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 1000.0
severity = "major"
code = "0x2A"
[[block]]
name = "hi2"
type = "threshold_alarm"
point = "m1.current_l2_a"
high = 1000.0
severity = "major"
code = "0x2A"
[[block]]
name = "lim"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 1200.0
[[block]]
name = "own"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 1100.0
code = "SITE-OWN"
"""
NORMAL = {"m1.current_l1_a": 400.0, "m1.current_l2_a": 400.0}
HIGH = {"m1.current_l1_a": 1500.0, "m1.current_l2_a": 1500.0}


def acked(view) -> dict[str, bool]:
    return {f"{a['block']}:{a['code']}": a["acked"] for a in view.alarms.values()}


def test_ack_code_acknowledges_that_code_on_every_device_and_nothing_else(make_runtime,
                                                                           tmp_path):
    n = code_number("0x2A")
    assert n == 0x2A and code_number("BG-LIMIT") == 0x0304 and code_number("SITE-OWN") == OTHER
    rows = [NORMAL, HIGH,
            {"cmd.ack_code": (1 << 16) | n},          # 0x2A on both blocks, only those
            {"cmd.ack_code": (1 << 16) | n},          # no change: fires nothing
            {"cmd.ack_code": (2 << 16) | OTHER},      # "other" names no one code: nothing
            {"cmd.ack_code": 0x0304},                 # the low word alone (FC6): BG-LIMIT
            NORMAL, HIGH,                             # raised again, unacknowledged
            {"cmd.ack_code": (3 << 16) | n},          # the same code again, next count
            {"cmd.ack_code": float("nan")}]           # not a number: nothing, no fault
    _rt, views = run_trace(make_runtime, tmp_path, site(BLOCKS, DEVICES), rows)
    assert acked(views[1]) == {"hi:0x2A": False, "hi2:0x2A": False, "lim:BG-LIMIT": False,
                               "own:SITE-OWN": False}
    assert acked(views[2]) == {"hi:0x2A": True, "hi2:0x2A": True, "lim:BG-LIMIT": False,
                               "own:SITE-OWN": False}
    assert acked(views[3]) == acked(views[2]) and acked(views[4]) == acked(views[2])
    assert acked(views[5]) == {"hi:0x2A": True, "hi2:0x2A": True, "lim:BG-LIMIT": True,
                               "own:SITE-OWN": False}
    assert acked(views[7]) == {k: False for k in acked(views[1])}
    assert acked(views[8]) == {"hi:0x2A": True, "hi2:0x2A": True, "lim:BG-LIMIT": False,
                               "own:SITE-OWN": False}
    assert acked(views[9]) == acked(views[8])


def test_ack_code_is_appended_to_the_command_area_and_moves_nothing(make_runtime, tmp_path):
    """The new command point takes the next command record; every other record keeps the
    address it had without it (a site without map.lock included)."""
    rt = make_runtime(site(BLOCKS, DEVICES))
    m = md.for_runtime(rt, use_lock=False)
    names = [c.name for c in m.commands]
    assert names[-1] == "cmd.ack_code" and names[:2] == ["cmd.ack_alarms", "cmd.reset_faults"]
    ack_code = m.commands[-1]
    assert ack_code.maxval == 0xFFFFFFFF and ack_code.address == m.bases["command"] + \
        (len(names) - 1) * md.COMMAND_WORDS
    specs = [s for s in rt.image.specs if s.name != "cmd.ack_code"]
    without = md.from_runtime_parts(specs, [(d.kind, d.name) for d in rt.site.devices],
                                    rt.blocks)
    old = {ln.split(" ", 2)[2]: ln for ln in without.address_table()[1:]}
    new = {ln.split(" ", 2)[2]: ln for ln in m.address_table()[1:]}
    assert {k: new[k] for k in old} == old
    assert set(new) - set(old) == {"cmd.ack_code"}
    assert m.fingerprint != without.fingerprint  # an addition is seen at one read
