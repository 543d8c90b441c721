"""Modbus TCP meters against the simulator's meter (``modbus_meter``) on 127.0.0.1: decode,
calibration, faults, stats."""

from __future__ import annotations

import logging
import os
import time

import pytest

from busguard.image import Quality
from busguard.modbus import load_profile
from busguard.sim.testing import SimMeter, distinct_values
from busguard.testing import point, wait_until

GEN, VALUES = distinct_values()

def meter_of(modbus_meter, *args, **kwargs):
    """The simulator's meter, reading the registers its profile leaves out as 0 (so a merged
    read over a gap answers, and the faults below are the only ones)."""
    meter = modbus_meter(*args, **kwargs)
    meter.fill_gaps(0)
    return meter


def site(port: int, extra: str = "", name: str = "m1", tmp: str = "",
         timeout_ms: int = 150) -> str:
    paths = f'[paths]\nstate_dir = "{tmp}"\n' if tmp else ""
    return (f'[site]\nname = "t"\n{paths}\n[[meter]]\nname = "{name}"\nhost = "127.0.0.1"\n'
            f'port = {port}\npoll_ms = 50\ntimeout_ms = {timeout_ms}\nbackoff_ms = 50\n'
            f'backoff_max_ms = 200\n{extra}\n')


def good(rt, name):
    v, q = point(rt, name)
    return v if q == Quality.GOOD else None


def test_values_decoded_with_comm_points(modbus_meter, make_runtime, tmp_path):
    port = meter_of(modbus_meter, GEN, VALUES).port
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.residual_current_ma") is not None, what="first poll")
    for name, v in VALUES.items():
        assert point(rt, f"m1.{name}") == (pytest.approx(v), Quality.GOOD)
    wait_until(lambda: rt.drivers[0].stats()["polls"] >= 3)
    assert good(rt, "m1.comm_ok") == 1.0
    assert good(rt, "m1.comm_poll_ms") == 50.0
    assert good(rt, "m1.comm_loss_pct") == 0.0 and good(rt, "m1.comm_error_pct") == 0.0
    assert good(rt, "m1.comm_latency_p50_ms") > 0
    st = rt.drivers[0].stats()
    assert st["reads_per_poll"] == 2 and st["state"] == "ok"
    assert st["latency_p99_ms"] >= st["latency_p50_ms"] > 0


def test_word_order_scale_and_int_types_from_a_site_profile(modbus_meter, make_runtime, tmp_path):
    prof_path = tmp_path / "mine.toml"
    prof_path.write_text('[profile]\nname = "mine"\nword_order = "CDAB"\n'
                         '[points.current_l1_a]\naddress = 0\nunit = "A"\n'
                         '[points.energy_kwh]\naddress = 2\ntype = "uint32"\nscale = 0.01\n'
                         'word_order = "DCBA"\n'
                         '[points.temp_c]\naddress = 4\ntype = "int16"\nscale = 0.1\n'
                         '[points.power_kw]\naddress = 0\ntype = "int32"\nfunction = "input"\n'
                         'word_order = "BADC"\nunit = "kW"\n', encoding="utf-8")
    prof = load_profile(str(prof_path))
    values = {"current_l1_a": 412.5, "energy_kwh": 123456.78, "temp_c": -12.3,
              "power_kw": -250}
    port = meter_of(modbus_meter, prof, values, unit_id=3).port
    rt = make_runtime(site(port, 'unit = 3\nprofile = "mine.toml"', tmp=str(tmp_path)),
                      start=True)
    wait_until(lambda: good(rt, "m1.power_kw") is not None)
    for name, v in values.items():
        assert good(rt, f"m1.{name}") == pytest.approx(v, abs=1e-6)


def test_calibration_site_then_file_reloaded_on_change(modbus_meter, make_runtime, tmp_path):
    port = meter_of(modbus_meter, GEN, VALUES).port
    state = tmp_path / "state"
    state.mkdir()
    extra = ('ct_ratio = 2.0\ncalibration = { current_l1_a = { gain = 1.5, offset = 1.0 }, '
             'voltage_l1_n_v = { offset = -0.5 } }')
    rt = make_runtime(site(port, extra, tmp=str(state)), start=True)
    i1, v1 = VALUES["current_l1_a"], VALUES["voltage_l1_n_v"]
    wait_until(lambda: good(rt, "m1.current_l1_a") == pytest.approx(i1 * 2 * 1.5 + 1.0))
    assert good(rt, "m1.voltage_l1_n_v") == pytest.approx(v1 - 0.5)  # not a ct point
    assert good(rt, "m1.current_l2_a") == pytest.approx(VALUES["current_l2_a"] * 2)
    cal = state / "calibration.toml"
    cal.write_text('[meter."m1"]\ncurrent_l1_a = { gain = 1.002, offset = 0.0, updated_utc = '
                   '"2026-01-01T00:00:00Z" }\n', encoding="utf-8")
    wait_until(lambda: good(rt, "m1.current_l1_a") == pytest.approx(i1 * 2 * 1.002),
               what="calibration file applied")
    cal.write_text('[meter."m1"]\ncurrent_l1_a = { gain = 0.5, ct_ratio = 1.0 }\n',
                   encoding="utf-8")
    st = cal.stat()
    os.utime(cal, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    wait_until(lambda: good(rt, "m1.current_l1_a") == pytest.approx(i1 * 0.5 + 1.0),
               what="calibration file reloaded")


def test_exception_0x02_marks_block_bad_logs_once_backs_off_and_recovers(
        modbus_meter, make_runtime, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    unit.refuse(4, 100, 103, 0x02)  # the input-register block does not exist
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    wait_until(lambda: point(rt, "m1.temp_c")[1] == Quality.BAD, what="block BAD")
    wait_until(lambda: rt.drivers[0].stats()["exception_count"] >= 3, what="block retried")
    assert good(rt, "m1.current_l1_a") == VALUES["current_l1_a"]  # other block fine
    assert point(rt, "m1.residual_current_ma")[1] == Quality.BAD
    assert good(rt, "m1.comm_ok") == 1.0  # the device answers
    wait_until(lambda: len(rt.drivers[0].stats()["bad_blocks"]) == 2, what="block split")
    st = rt.drivers[0].stats()
    # the merged read failed, so each point is read alone: both registers pairs are missing
    assert st["bad_blocks"] == {"input registers 100..101": "0x02",
                                "input registers 102..103": "0x02"}
    polls = st["polls"]
    wait_until(lambda: rt.drivers[0].stats()["polls"] > polls + 10)
    st = rt.drivers[0].stats()
    assert st["exception_count"] < st["polls"]  # 2 failing reads, backed off: < 1 per poll
    msgs = [r.getMessage() for r in caplog.records if "Illegal Data Address" in r.getMessage()]
    assert len(msgs) == 3  # once for the merged read, once per point: not once per poll
    assert "m1: 0x80 (Illegal Data Address): exception code 0x02 to function 0x04 " \
           "(response 0x84) reading input registers at address 100..103, unit 1, profile " \
           "generic-pqm" in msgs[0]
    assert "temp_c, residual_current_ma not marked BAD yet: reading its points one by one" \
        in msgs[0]
    assert "address 100..101" in msgs[1] + msgs[2] and "address 102..103" in msgs[1] + msgs[2]
    unit.accept()
    wait_until(lambda: good(rt, "m1.temp_c") == VALUES["temp_c"], what="block recovered")
    assert rt.drivers[0].stats()["bad_blocks"] == {}


def test_pm5000_exception_log_names_documented_registers(modbus_meter, make_runtime, tmp_path,
                                                         caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    pm = load_profile("pm5000")
    unit = meter_of(modbus_meter, pm, {p.name: 1.0 for p in pm.points})
    port = unit.port
    unit.refuse(3, 21299, 21400, 0x02)  # a PM5100 has no THD block
    rt = make_runtime(site(port, 'profile = "pm5000"', tmp=str(tmp_path)), start=True)
    wait_until(lambda: point(rt, "m1.thd_v_l1_pct")[1] == Quality.BAD)
    wait_until(lambda: good(rt, "m1.current_l1_a") == 1.0)
    msg = next(r.getMessage() for r in caplog.records if "exception code 0x02" in r.getMessage())
    assert "(documented registers 21300.." in msg and "profile pm5000" in msg


def test_timeout_counts_as_loss_then_not_connected_then_recovers(modbus_meter, make_runtime,
                                                                 tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    rt = make_runtime(site(port, "loss_limit = 3\nretries = 0", tmp=str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None)
    unit.faults(drop_pct=100.0)  # the meter stops answering
    wait_until(lambda: point(rt, "m1.current_l1_a")[1] == Quality.NOT_CONNECTED,
               what="NOT_CONNECTED")
    st = rt.drivers[0].stats()
    assert st["state"] == "not-connected" and st["timeout_count"] >= 3
    assert point(rt, "m1.current_l1_a")[0] == VALUES["current_l1_a"]  # last value kept
    assert good(rt, "m1.comm_ok") == 0.0
    assert good(rt, "m1.comm_loss_pct") > 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Connection Timeout (Errno 110)" in text and "points NOT_CONNECTED" in text
    unit.faults()
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="recovery")
    wait_until(lambda: good(rt, "m1.comm_ok") == 1.0)
    assert rt.drivers[0].stats()["state"] == "ok"
    assert "answering again" in "\n".join(r.getMessage() for r in caplog.records)


def test_disconnect_and_reconnect(modbus_meter, make_runtime, tmp_path):
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    rt = make_runtime(site(port, "loss_limit = 2", tmp=str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None)
    before = unit.requests
    unit.drop_connections()  # the meter resets the connection: reconnect at once
    wait_until(lambda: unit.requests > before + 4, what="polling after reconnect")
    assert rt.drivers[0].stats()["reconnects"] >= 2
    unit.stop_serving()  # the meter goes away: refused
    wait_until(lambda: point(rt, "m1.current_l1_a")[1] == Quality.NOT_CONNECTED)
    assert rt.drivers[0].stats()["disconnect_count"] >= 2
    unit.set(current_l1_a=7.0)
    unit.serve_again()  # back on the same port
    wait_until(lambda: good(rt, "m1.current_l1_a") == 7.0, what="reconnected by itself")


def test_garbage_answer_is_not_a_value(modbus_meter, make_runtime, tmp_path):
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    rt = make_runtime(site(port, "loss_limit = 2", tmp=str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None)
    unit.faults(garbage_pct=100.0)
    wait_until(lambda: good(rt, "m1.comm_ok") == 0.0, what="garbage noticed")
    unit.faults()
    wait_until(lambda: good(rt, "m1.comm_ok") == 1.0, what="recovered from garbage")
    assert good(rt, "m1.current_l1_a") == VALUES["current_l1_a"]


def test_slow_device_warns_when_poll_under_3x_latency(modbus_meter, make_runtime, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    unit.faults(latency_ms=30.0)  # two reads per poll: >= 60 ms per poll against a 50 ms period
    rt = make_runtime(site(port, tmp=str(tmp_path), timeout_ms=500), start=True)
    wait_until(lambda: rt.drivers[0].stats()["latency_warning"], what="latency warning")
    msgs = [r.getMessage() for r in caplog.records if "3x the measured latency" in
            r.getMessage()]
    assert len(msgs) == 1 and "poll period 50 ms" in msgs[0]


def test_max_in_flight_uses_parallel_connections(modbus_meter, make_runtime, tmp_path):
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    unit.faults(latency_ms=20.0)
    rt = make_runtime(site(port, "max_in_flight = 2\nmax_gap = 0\nmax_registers = 8",
                           tmp=str(tmp_path), timeout_ms=1000), start=True)
    wait_until(lambda: good(rt, "m1.residual_current_ma") is not None)
    wait_until(lambda: rt.drivers[0].stats()["reconnects"] == 2, what="two connections")
    # 34 float32 (100..167) + the uint16 quadrant in 9 reads of <= 8, 2 uint64 pairs, 1 input
    assert rt.drivers[0].stats()["reads_per_poll"] == 12
    assert unit.max_in_flight == 2  # two reads at once, never more
    for name, v in VALUES.items():
        assert good(rt, f"m1.{name}") == pytest.approx(v)


def test_one_request_in_flight_per_device_by_default(modbus_meter, make_runtime, tmp_path):
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    unit.faults(latency_ms=10.0)
    rt = make_runtime(site(port, "max_gap = 0\nmax_registers = 8", tmp=str(tmp_path),
                           timeout_ms=1000), start=True)
    wait_until(lambda: rt.drivers[0].stats()["ok_count"] >= 14)
    assert unit.max_in_flight == 1


def test_stop_is_prompt_with_a_dead_device(modbus_meter, make_runtime, tmp_path):
    meter = meter_of(modbus_meter, GEN, VALUES)
    meter.faults(drop_pct=100.0)
    port = meter.port
    rt = make_runtime(site(port, tmp=str(tmp_path), timeout_ms=2000), start=True)
    wait_until(lambda: meter.answered == 0 and rt.drivers[0].stats()["polls"] == 0)
    t0 = time.monotonic()
    rt.stop()
    assert rt.state == "stopped" and time.monotonic() - t0 < 10  # bounded, not a timing claim


def test_global_max_concurrent_caps_requests_over_all_meters(make_runtime, tmp_path):
    unit = SimMeter(GEN, VALUES)  # one meter on three ports: its in-flight count is theirs
    unit.fill_gaps(0)
    try:
        ports = [unit.port, unit.add_port(), unit.add_port()]
        unit.faults(latency_ms=10.0)
        text = f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp_path}"\n[modbus]\n' \
               f'max_concurrent = 1\n'
        for i, port in enumerate(ports):
            text += (f'[[meter]]\nname = "m{i}"\nhost = "127.0.0.1"\nport = {port}\n'
                     f'poll_ms = 20\ntimeout_ms = 500\n')
        rt = make_runtime(text, start=True)
        wait_until(lambda: all(d.stats()["ok_count"] >= 6 for d in rt.drivers))
        assert unit.max_in_flight == 1  # three meters, one request at a time
    finally:
        unit.stop()


def test_unparsable_calibration_file_keeps_the_previous_calibration(modbus_meter, make_runtime,
                                                                   tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    port = meter_of(modbus_meter, GEN, VALUES).port
    cal = tmp_path / "calibration.toml"
    cal.write_text('[meter."m1"]\ncurrent_l1_a = { gain = 2.0 }\n', encoding="utf-8")
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    i1 = VALUES["current_l1_a"]
    wait_until(lambda: good(rt, "m1.current_l1_a") == pytest.approx(i1 * 2.0))
    cal.write_text('[meter."m1"\ncurrent_l1_a = {', encoding="utf-8")
    st = cal.stat()
    os.utime(cal, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    wait_until(lambda: any("previous calibration kept" in r.getMessage()
                           for r in caplog.records), what="bad file noticed")
    polls = rt.drivers[0].stats()["polls"]
    wait_until(lambda: rt.drivers[0].stats()["polls"] > polls + 2)
    assert good(rt, "m1.current_l1_a") == pytest.approx(i1 * 2.0)


def test_exception_in_a_merged_read_is_narrowed_to_the_missing_point(modbus_meter, make_runtime,
                                                                     tmp_path):
    unit = meter_of(modbus_meter, GEN, VALUES)
    port = unit.port
    unit.refuse(3, 120, 121, 0x02)  # only power_kw's registers are missing
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    wait_until(lambda: good(rt, "m1.current_l1_a") == VALUES["current_l1_a"])
    wait_until(lambda: good(rt, "m1.frequency_hz") == VALUES["frequency_hz"])
    assert point(rt, "m1.power_kw")[1] == Quality.BAD
    assert rt.drivers[0].stats()["bad_blocks"] == {"holding registers 120..121": "0x02"}


def test_scan_sees_meter_values_and_a_spike_between_scans(modbus_meter, make_runtime, run_scans,
                                                          tmp_path):
    """The runtime path: driver -> image -> snapshot -> block -> alarm (fake-clock scans)."""
    unit = meter_of(modbus_meter, GEN, {**VALUES, "thd_v_l1_pct": 2.0})
    port = unit.port
    extra = ('\n[[block]]\nname = "thd"\ntype = "threshold_alarm"\npoint = "m1.thd_v_l1_pct"\n'
             'high = 5.0\ncode = "BG-THD"\n')
    rt = make_runtime(site(port, tmp=str(tmp_path)) + extra, start=True)
    wait_until(lambda: good(rt, "m1.thd_v_l1_pct") == 2.0)
    (res,) = run_scans(rt, 1)
    assert res.snapshot.value("m1.thd_v_l1_pct") == 2.0 and not res.edges
    # a spike the meter serves for a moment, gone again before the next scan
    n = rt.drivers[0].stats()["polls"]
    unit.set(thd_v_l1_pct=9.0)
    wait_until(lambda: rt.drivers[0].stats()["polls"] > n + 1)
    unit.set(thd_v_l1_pct=2.0)
    wait_until(lambda: good(rt, "m1.thd_v_l1_pct") == 2.0)
    (res,) = run_scans(rt, 1)
    assert res.snapshot.peak("m1.thd_v_l1_pct") == 9.0
    assert [e.kind for e in res.edges] == ["raised"]
