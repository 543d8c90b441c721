"""The fault log: one line per raise and clear, greppable severities and seed codes,
rotation by copytruncate and by rename + reopen (SIGHUP)."""

from __future__ import annotations

import json
import re
import subprocess

from blocktrace import run_trace, site
from busguard.faultlog import FaultLog, get_fault_log, reopen
from busguard.image import Quality

DEVICES = """
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms",
          "comm_loss_pct", "comm_error_pct", "comm_poll_ms"]
[[probe]]
name = "bb1"
driver = "memory"
poll_ms = 100
points = ["temp_c"]
[[breaker]]
name = "cb1"
driver = "memory"
poll_ms = 100
points = ["led"]
"""
BLOCKS = """
[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
probes = ["bb1"]
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1"]
[[block]]
name = "ch"
type = "comm_health"
"""
NORMAL = {"m1.current_l1_a": 100.0, "m1.comm_ok": 1, "m1.comm_latency_p50_ms": 3.0,
          "m1.comm_latency_p99_ms": 6.0, "m1.comm_loss_pct": 0.0, "m1.comm_error_pct": 0.0,
          "m1.comm_poll_ms": 100.0, "bb1.temp_c": 50.0, "cb1.led": 0}
# The line, strictly: time, severity, event, then logfmt pairs, each value a bare word
# (printable ASCII without space, quote, '=' or backslash) or a double-quoted string whose
# only escapes are JSON's (what logfmt parsers -- go-logfmt, Loki, Vector -- undo).
_Q = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_V = rf'(?:[!#-<>-\[\]-~]+|{_Q})'
LINE = re.compile(rf"^(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z) (\w+) "
                  rf"(raised|cleared|fault|command) code=({_V}) device=({_V}) alarm=({_V}) "
                  rf"msg=({_Q}) values=({_Q})$")


def run(make_runtime, tmp_path, rows):
    rt, views = run_trace(make_runtime, tmp_path, site(BLOCKS, DEVICES), [NORMAL, *rows])
    text = (tmp_path / "fault.log").read_text(encoding="utf-8")
    return rt, views, text.splitlines()


def test_one_line_per_edge_with_time_severity_code_device_values(make_runtime, tmp_path):
    rows = [{"bb1.temp_c": 91.0}, {}, {}, {}, {"m1.comm_ok": 0}, {}, {}, {"m1.comm_ok": 1}]
    _rt, _views, lines = run(make_runtime, tmp_path, rows)
    parsed = [LINE.match(ln) for ln in lines]
    assert all(parsed), lines
    events = [(m.group(2), m.group(3), m.group(4), m.group(5)) for m in parsed]
    assert events == [
        ("critical", "raised", "0xCF", "cb1"),          # the shunt trip, latched
        ("critical", "raised", "0xCF", "bb1"),          # thermal interlock at trip level
        ("major", "raised", '"errno 110"', "m1"),
        ("major", "cleared", '"errno 110"', "m1"),
    ]
    first = parsed[0]
    assert first.group(1) == "2026-01-01T00:00:00.100Z"
    values = json.loads(json.loads(first.group(8)))  # a logfmt string holding JSON
    assert values["cause"] == "thermal-critical" and values["values"]["temps_c"]["bb1.temp_c"] == 91
    assert "breaker-trip" in first.group(7)


def test_grep_critical_isolates_trips_and_thermal_critical(make_runtime, tmp_path):
    rows = [{"cb1.led": 2}, {"m1.comm_ok": 0}, {"bb1.temp_c": 75.0}, {"bb1.temp_c": 92.0}]
    run(make_runtime, tmp_path, rows)
    out = subprocess.run(["grep", "-i", "critical", str(tmp_path / "fault.log")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2
    assert "code=BG-TRIP-GF" in out[0] and "breaker-trip" in out[0]
    assert "code=0xCF" in out[1] and "Thermal-Critical (0xCF)" in out[1]
    allout = (tmp_path / "fault.log").read_text()
    assert "Connection Timeout (Errno 110)" in allout and "BG-TEMP-WARN" in allout


def test_seed_code_0x02_line(make_runtime, tmp_path):
    _rt, _views, lines = run(make_runtime, tmp_path, [{"m1.current_l1_a": (0.0, Quality.BAD)}])
    (line,) = [ln for ln in lines if "code=0x02" in ln]
    assert "0x80 (Illegal Data Address)" in line and "device=m1" in line


def test_no_line_per_scan(make_runtime, tmp_path):
    # a jump to 72 C held for 5 s of scans: the warning, and (the jump is a 660 C/min rise
    # between the first two readings 2 s apart) the rate and time-to-trip alarms: each once
    _rt, _views, lines = run(make_runtime, tmp_path, [{"bb1.temp_c": 72.0}] + [{}] * 50)
    codes = [ln.split(" code=")[1].split()[0] for ln in lines]
    assert sorted(codes) == ["BG-TEMP-RATE", "BG-TEMP-TTT", "BG-TEMP-WARN"]
    assert all(" raised " in ln for ln in lines)


def test_copytruncate_keeps_appending_at_the_new_end(tmp_path):
    path = tmp_path / "log" / "distribution_fault.log"
    fl = FaultLog(path)
    for i in range(3):
        fl.write(f"line {i}")
    assert fl.flush()
    # logrotate copytruncate: copy the file, then truncate it in place
    (tmp_path / "rotated.1").write_bytes(path.read_bytes())
    with open(path, "r+b") as fh:
        fh.truncate(0)
    fl.write("after truncate")
    assert fl.flush()
    assert path.read_bytes() == b"after truncate\n"  # no hole of NULs before it
    assert (tmp_path / "rotated.1").read_text().splitlines() == ["line 0", "line 1", "line 2"]
    fl.close()


def test_rename_then_reopen(make_runtime, tmp_path):
    rt2 = make_runtime(site(BLOCKS, DEVICES))
    fl = get_fault_log(rt2)
    fl.write("before rotation")
    assert fl.flush()
    path = rt2.site.fault_log
    path.rename(path.with_name("fault.log.1"))
    fl.write("still to the renamed file")  # as with any daemon until it is told
    assert fl.flush()
    reopen(rt2)  # what the service does on SIGHUP
    fl.write("to the new file")
    assert fl.flush()
    assert path.read_text() == "to the new file\n"
    old = path.with_name("fault.log.1").read_text().splitlines()
    assert old[-2:] == ["before rotation", "still to the renamed file"]
    fl.close()


def test_unwritable_log_never_stops_the_scan(make_runtime, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    text = site(BLOCKS, DEVICES).replace('fault_log = "fault.log"',
                                         'fault_log = "not-a-dir/fault.log"')
    _rt, views = run_trace(make_runtime, tmp_path, text, [NORMAL, {"cb1.led": 2}])
    assert views[-1].outputs["cb1.shunt_trip"] == 1.0


def test_packaged_default_path():
    from busguard.config.site import PATHS_PARAMS
    assert PATHS_PARAMS["fault_log"].default.endswith("log/power/distribution_fault.log")


def test_a_clear_line_says_the_condition_is_over(make_runtime, tmp_path):
    """The cleared line quotes the ended condition marked `over:`, so a reader of that line
    alone does not take "input lost: ..." for a new loss."""
    rows = [{"bb1.temp_c": 72.0}, *[{}] * 25, {"bb1.temp_c": 50.0}, *[{}] * 5]
    _rt, _views, lines = run(make_runtime, tmp_path, rows)
    raised = next(ln for ln in lines if " raised code=BG-TEMP-WARN " in ln)
    cleared = next(ln for ln in lines if " cleared code=BG-TEMP-WARN " in ln)
    assert 'msg="bb1.temp_c at 72.0 C' in raised
    assert 'msg="over: bb1.temp_c at 72.0 C' in cleared


def test_json_format_writes_one_object_per_line_with_the_same_fields(make_runtime, tmp_path):
    """`[paths] fault_log_format = "json"`: every entry one JSON object (Loki, Vector, jq),
    the same fields as the text line."""
    import json as _json

    text = site(BLOCKS, DEVICES).replace('fault_log = "fault.log"',
                                          'fault_log = "fault.log"\nfault_log_format = "json"')
    _rt, _views = run_trace(make_runtime, tmp_path, text, [NORMAL, {"bb1.temp_c": 91.0}, {}])
    lines = (tmp_path / "fault.log").read_text().splitlines()  # stop() flushed it
    entries = [_json.loads(ln) for ln in lines]
    crit = next(e for e in entries if e["code"] == "0xCF" and e["device"] == "bb1")
    assert crit["severity"] == "critical" and crit["event"] == "raised"
    assert crit["device"] == "bb1" and crit["time"].endswith("Z")
    assert "Thermal-Critical (0xCF)" in crit["msg"] and crit["values"]["temp_c"] == 91.0


def _logfmt(text: str) -> dict[str, str]:
    """A logfmt reader written from go-logfmt's grammar (key: no space, '=' or '"'; value:
    bare up to the next space, or a quoted string with JSON escapes), independent of busguard's
    own :func:`busguard.faultlog.parse_line`: what Loki's ``| logfmt`` does with the line."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] not in ' ="':
            j += 1
        key = text[i:j]
        assert key and j < len(text) and text[j] == "=", f"garbage at {i}: {text[i:i + 20]!r}"
        j += 1
        if j < len(text) and text[j] == '"':
            k = j + 1
            while text[k] != '"':
                k += 2 if text[k] == "\\" else 1
            out[key] = json.loads(text[j:k + 1])
            i = k + 1
        else:
            k = j
            while k < len(text) and text[k] != " ":
                assert text[k] not in '"=', f"unquoted {text[k]!r} in the value of {key}"
                k += 1
            out[key] = text[j:k]
            i = k
    return out


def test_text_line_is_logfmt_safe_for_hostile_values(tmp_path):
    """Quotes, '=', spaces, backslashes, newlines and non-ASCII in any field and in the values
    keep one line whose pairs a logfmt parser splits exactly into code, device, alarm, msg and
    values (values: JSON inside a quoted string), and parse_line reads back what was put in."""
    from busguard.faultlog import _line, format_command, parse_line

    nasty = 'a "quoted" x=1 \\ back\nslash\ttab ü 0xCF'
    values = {"text": nasty, "list": [1, 2.5, None], "nested": {"k=v": "a b", "q": '"'}}
    lines = [
        _line(1767225605.1, "critical", "raised", "0xCF", "bb 1", "st:trip", nasty, values,
              "text"),
        _line(1767225605.1, "major", "raised", "errno 110", "m=1", 'x"y', "", {}, "text"),
        _line(1767225605.1, "info", "cleared", "", "", "", "over", {"a": float("nan")}, "text"),
        format_command(1767225605.1, "brk-a2.cmd_reset", 3.0, "10.0.5.10"),
    ]
    for ln in lines:
        assert "\n" not in ln and LINE.match(ln), ln
        stamp, _sev, _ev, rest = ln.split(" ", 3)
        pairs = _logfmt(rest)
        assert list(pairs) == ["code", "device", "alarm", "msg", "values"], ln
        assert isinstance(json.loads(pairs["values"]), dict)
        back = parse_line(ln)
        assert back is not None and back["time"] == stamp
        assert back["values"] == json.loads(pairs["values"])
    first = parse_line(lines[0])
    assert first["msg"] == nasty and first["device"] == "bb 1" and first["code"] == "0xCF"
    assert first["values"] == values
    second = parse_line(lines[1])
    assert second["code"] == "errno 110" and second["device"] == "m=1" and second["alarm"] == 'x"y'
    assert parse_line(lines[3])["values"] == {"client": "10.0.5.10", "point": "brk-a2.cmd_reset",
                                              "value": 3.0}
    # a line of an older busguard (bare values={...}) still reads; garbage is None
    old = ('2026-01-01T00:00:05.100Z critical raised code=0xCF device=bb1 alarm=st:trip '
           'msg="hot" values={"temp_c":91.0}')
    assert parse_line(old)["values"] == {"temp_c": 91.0}
    assert parse_line("not a fault log line") is None
