"""comm_health: errno 110, 0x02, packet loss, latency, RS-485 errors, poll ratio per meter."""

from __future__ import annotations

import pytest

from blocktrace import QUIET, run_trace, site
from busguard.image import Quality

COMM = ["comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms", "comm_loss_pct",
        "comm_error_pct", "comm_poll_ms"]
DEVICES = f"""
[[meter]]
name = "pqm-a1"
driver = "memory"
poll_ms = 100
points = {[*COMM, "current_l1_a", "thd_v_l1_pct"]!r}
[[meter]]
name = "pqm-b1"
driver = "memory"
poll_ms = 100
points = {COMM!r}
[[meter]]
name = "nocomm"
driver = "memory"
poll_ms = 100
points = ["current_l1_a"]
"""
BLOCK = """
[[block]]
name = "ch"
type = "comm_health"
delay_s = 0.2
"""


def healthy(m):
    return {f"{m}.comm_ok": 1, f"{m}.comm_latency_p50_ms": 4.0, f"{m}.comm_latency_p99_ms": 9.0,
            f"{m}.comm_loss_pct": 0.0, f"{m}.comm_error_pct": 0.0, f"{m}.comm_poll_ms": 100.0}


NORMAL = {**healthy("pqm-a1"), **healthy("pqm-b1"), "pqm-a1.current_l1_a": 500.0,
          "pqm-a1.thd_v_l1_pct": 2.0, "nocomm.current_l1_a": 1.0}


def trace(make_runtime, tmp_path, rows):
    return run_trace(make_runtime, tmp_path, site(BLOCK, DEVICES), [NORMAL, *rows])


# (name, rows, alarm id, code, expected active per scan after the normal one)
CASES = [
    ("meter stops answering: errno 110",
     [{"pqm-b1.comm_ok": 0}, {"pqm-b1.comm_ok": 1}],
     "ch:timeout:pqm-b1", "errno 110", [True, False]),
    ("answers but a register block is refused: 0x02",
     [{"pqm-a1.thd_v_l1_pct": (0.0, Quality.BAD)}, {"pqm-a1.thd_v_l1_pct": 2.0}],
     "ch:address:pqm-a1", "0x02", [True, False]),
    ("packet loss above 1% after the delay, clears below 0.8%",
     [{"pqm-a1.comm_loss_pct": 2.0}, {}, {}, {"pqm-a1.comm_loss_pct": 0.9},
      {"pqm-a1.comm_loss_pct": 0.7}],
     "ch:loss:pqm-a1", "BG-COMM-LOSS", [False, False, True, True, False]),
    ("latency above 100 ms",
     [{"pqm-b1.comm_latency_p50_ms": 150.0, "pqm-b1.comm_poll_ms": 1000.0}, {}, {}],
     "ch:latency:pqm-b1", "BG-COMM-LATENCY", [False, False, True]),
    ("RS-485 error rate over 0.1%",
     [{"pqm-a1.comm_error_pct": 0.12}, {}, {}],
     "ch:errors:pqm-a1", "BG-RS485-ERRORS", [False, False, True]),
    ("RS-485 error rate at 0.1% is fine",
     [{"pqm-a1.comm_error_pct": 0.1}, {}, {}],
     "ch:errors:pqm-a1", "BG-RS485-ERRORS", [False, False, False]),
    ("poll period under 3x latency",
     [{"pqm-a1.comm_latency_p50_ms": 40.0}, {}, {}],
     "ch:poll:pqm-a1", "BG-POLL-RATIO", [False, False, True]),
]


@pytest.mark.parametrize(("rows", "alarm", "code", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_comm_table(make_runtime, tmp_path, rows, alarm, code, expect):
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert not views[0].alarms
    assert [alarm in v.alarms for v in views[1:]] == expect
    hits = [v.alarms[alarm] for v in views if alarm in v.alarms]
    for a in hits:
        assert a["code"] == code and a["device"] == alarm.rsplit(":", 1)[1]


def test_seed_words_are_in_the_messages(make_runtime, tmp_path):
    rows = [{"pqm-b1.comm_ok": 0, "pqm-a1.current_l1_a": (0.0, Quality.BAD)}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert "Connection Timeout (Errno 110)" in views[1].alarms["ch:timeout:pqm-b1"]["message"]
    msg = views[1].alarms["ch:address:pqm-a1"]["message"]
    assert "0x80 (Illegal Data Address)" in msg and "pqm-a1.current_l1_a" in msg


def test_meters_without_comm_points_are_left_out(make_runtime):
    rt = make_runtime(site(BLOCK, DEVICES))
    assert set(rt.blocks[0].meters) == {"pqm-a1", "pqm-b1"}


def test_stale_comm_points_hold_and_say_so(make_runtime, tmp_path):
    quiet = {f"pqm-b1.{c}": QUIET for c in COMM}
    rows = [{"pqm-b1.comm_loss_pct": 5.0}, {}, {}, quiet, {"dt": 1.0}, {"dt": 2.5}]
    _rt, views = trace(make_runtime, tmp_path, rows)
    assert "ch:loss:pqm-b1" in views[-1].alarms  # held, not cleared by the silence
    assert views[-1].alarms["ch:input"]["values"]["lost"]["pqm-b1.comm_ok"] == "stale"


def test_the_timeout_advice_follows_the_meters_bus(make_runtime, run_scans, tmp_path):
    """errno 110 on an RS-485 meter points at the line (wiring, termination, settings), on a
    Modbus TCP meter at the RJ45 jack and the edge switch: the seed's words for each bus."""
    text = """
[site]
name = "buses"
[[rs485]]
name = "line-1"
port = "/nonexistent/ttyRS485-1"
[[meter]]
name = "rtu-1"
driver = "modbus_rtu"
line = "line-1"
unit = 3
[[meter]]
name = "tcp-1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = 1
[[block]]
name = "comm"
type = "comm_health"
delay_s = 0.0
"""
    rt = make_runtime(text)  # not started: the test is the only writer of the image
    rt.image.write_many([(f"{m}.{c}", 0.0 if c == "comm_ok" else 1.0, 0)
                         for m in ("rtu-1", "tcp-1")
                         for c in ("comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms",
                                   "comm_loss_pct", "comm_error_pct", "comm_poll_ms")])
    run_scans(rt, 1)
    msgs = {a.condition.device: a.condition.message for a in rt.alarms.active()
            if a.condition.code == "errno 110"}
    assert "check the RS-485 line: A/B wiring" in msgs["rtu-1"] and "RJ45" not in msgs["rtu-1"]
    assert "check the RJ45 jack on the PIU and the edge switch" in msgs["tcp-1"]
