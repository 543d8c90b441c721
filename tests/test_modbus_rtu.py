"""Modbus RTU meters on one RS-485 line over a real pty pair: the simulator's RTU line
(``modbus_line``) on one side, pyserial on the client side."""

from __future__ import annotations

import logging

import pytest

from busguard.image import Quality
from busguard.modbus import load_profile
from busguard.testing import point, wait_until

GEN = load_profile("generic-pqm")


@pytest.fixture
def line(modbus_line):
    """(units by id, the line's port path): three generic-pqm units on one line."""
    sim = modbus_line()
    units = {u: sim.meter(u, GEN, {"current_l1_a": 100.0 * u, "voltage_l1_n_v": 230.0,
                                   "temp_c": 30.0 + u}) for u in (1, 2, 3)}
    return units, sim


def site(path: str, units=(1, 2, 3), extra: str = "", tmp: str = "") -> str:
    text = (f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp}"\n\n'
            f'[[rs485]]\nname = "bus1"\nport = "{path}"\nbaudrate = 115200\nparity = "N"\n'
            f'timeout_ms = 60\n')
    for u in units:
        text += (f'\n[[meter]]\nname = "m{u}"\ndriver = "modbus_rtu"\nline = "bus1"\nunit = {u}\n'
                 f'poll_ms = 50\nbackoff_ms = 100\nbackoff_max_ms = 400\nloss_limit = 2\n'
                 f'retries = 0\npoints = ["current_l1_a", "voltage_l1_n_v", "temp_c"]\n{extra}\n')
    return text


def value(rt, name):
    v, q = point(rt, name)
    return v if q == Quality.GOOD else None


def test_several_units_share_one_line_object(line, make_runtime, tmp_path):
    _units, sim = line
    path = sim.path
    rt = make_runtime(site(path, tmp=str(tmp_path)), start=True)
    for u in (1, 2, 3):
        wait_until(lambda u=u: value(rt, f"m{u}.temp_c") == 30.0 + u, what=f"unit {u}")
        assert value(rt, f"m{u}.current_l1_a") == 100.0 * u
    links = {id(d.link) for d in rt.drivers}
    assert len(links) == 1 and rt.drivers[0].link.users == 3
    assert value(rt, "m1.comm_error_pct") == 0.0


def test_dead_slave_backs_off_while_others_keep_polling_and_it_recovers(
        line, make_runtime, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="busguard.modbus")
    units, sim = line
    path = sim.path
    rt = make_runtime(site(path, tmp=str(tmp_path)), start=True)
    m1, m2, m3 = rt.drivers
    wait_until(lambda: all(value(rt, f"m{u}.temp_c") for u in (1, 2, 3)))
    units[2].faults(drop_pct=100.0)
    wait_until(lambda: point(rt, "m2.temp_c")[1] == Quality.NOT_CONNECTED, what="m2 down")
    # while m2 is dead and backed off, the others go on being polled and stay GOOD
    p1, p3, t2 = m1.comm.counts["ok"], m3.comm.counts["ok"], m2.comm.counts["timeout"]
    wait_until(lambda: m1.comm.counts["ok"] >= p1 + 20 and m3.comm.counts["ok"] >= p3 + 20,
               what="others keep polling")
    assert m2.comm.counts["timeout"] - t2 < 10  # backoff: few probes of the dead unit
    assert value(rt, "m1.comm_ok") == 1.0 and value(rt, "m3.comm_ok") == 1.0
    assert point(rt, "m1.temp_c") == (31.0, Quality.GOOD)
    assert value(rt, "m2.comm_ok") == 0.0 and m2.stats()["state"] == "not-connected"
    units[2].faults()
    units[2].set(temp_c=55.0)
    wait_until(lambda: value(rt, "m2.temp_c") == 55.0, what="m2 recovered by itself")
    assert m2.stats()["state"] == "ok"


def test_crc_errors_are_counted_as_comm_error_pct(line, make_runtime, tmp_path):
    units, sim = line
    path = sim.path
    rt = make_runtime(site(path, (1, 2), tmp=str(tmp_path)), start=True)
    wait_until(lambda: value(rt, "m1.temp_c") and value(rt, "m2.temp_c"))
    units[1].faults(garbage_pct=100.0)  # a corrupted byte: a bad CRC
    wait_until(lambda: (value(rt, "m1.comm_error_pct") or 0) > 0, what="CRC errors counted")
    st = rt.drivers[0].stats()
    assert st["crc_count"] >= 1 and st["error_pct"] > 0
    assert value(rt, "m2.comm_error_pct") == 0.0  # the other unit's answers are clean
    units[1].faults()
    before = rt.drivers[0].comm.counts["ok"]
    wait_until(lambda: rt.drivers[0].comm.counts["ok"] > before + 3, what="clean again")
    assert value(rt, "m1.temp_c") == 31.0


def test_garbage_frames_do_not_become_values(line, make_runtime, tmp_path):
    units, sim = line
    path = sim.path
    rt = make_runtime(site(path, (1, 2), tmp=str(tmp_path)), start=True)
    wait_until(lambda: value(rt, "m1.temp_c") and value(rt, "m2.temp_c"))
    units[1].faults(garbage_pct=100.0)
    wait_until(lambda: rt.drivers[0].comm.counts["crc"] >= 3, what="garbage counted")
    assert value(rt, "m1.temp_c") in (None, 31.0)  # never a garbage number
    assert value(rt, "m2.temp_c") == 32.0
    units[1].faults()
    wait_until(lambda: value(rt, "m1.comm_ok") == 1.0, what="clean answers again")
    assert value(rt, "m1.temp_c") == 31.0


def test_exception_on_rtu_line(line, make_runtime, tmp_path):
    units, sim = line
    path = sim.path
    units[1].refuse(3, 0, 65535, 0x02)
    rt = make_runtime(site(path, (1,), tmp=str(tmp_path)), start=True)
    wait_until(lambda: point(rt, "m1.current_l1_a")[1] == Quality.BAD)
    wait_until(lambda: value(rt, "m1.temp_c") == 31.0)  # the input block still reads


def test_missing_serial_port_is_not_connected_not_a_crash(make_runtime, tmp_path):
    text = site(str(tmp_path / "no-such-tty"), (1,), tmp=str(tmp_path))
    rt = make_runtime(text, start=True)
    drv = rt.drivers[0]
    wait_until(lambda: drv.stats()["state"] == "not-connected", what="not-connected")
    assert "cannot open RS-485 line bus1" in drv.stats()["last_error"]
    assert point(rt, "m1.temp_c")[1] == Quality.NOT_CONNECTED
    assert value(rt, "m1.comm_ok") == 0.0


def test_modbus_write_shares_the_rtu_line_with_the_meters(line, make_runtime, tmp_path):
    _units, sim = line
    path = sim.path
    bms = sim.meter(9, None)  # a BMS: one set point register, 7 (1-based)
    bms.set_registers(6, [0])
    text = site(path, (1,), tmp=str(tmp_path)) + (
        '\n[[output]]\nname = "bms"\ndriver = "modbus_write"\noutput = "cooling.demand_pct"\n'
        'line = "bus1"\nunit = 9\naddress = 7\naddress_base = 1\ntype = "int16"\n')
    rt = make_runtime(text, start=True)
    writer = next(d for d in rt.drivers if d.name == "bms")
    meter = next(d for d in rt.drivers if d.name == "m1")
    assert writer.link is meter.link  # one line object for the port
    writer.apply({"cooling.demand_pct": 65.0})
    wait_until(lambda: point(rt, "bms.readback") == (65.0, Quality.GOOD), what="written")
    assert bms.register(6) == 65  # register 7 (1-based) = protocol address 6
    wait_until(lambda: value(rt, "m1.temp_c") == 31.0)


def test_late_answers_of_a_slow_unit_never_land_on_another_unit(line, make_runtime, tmp_path):
    units, sim = line
    path = sim.path
    units[2].faults(latency_ms=90.0)  # answers after its 60 ms timeout, while others are polled
    rt = make_runtime(site(path, tmp=str(tmp_path)), start=True)
    m1, m2, m3 = rt.drivers
    wait_until(lambda: value(rt, "m1.current_l1_a") and value(rt, "m3.current_l1_a"))
    rt.image.snapshot()  # start a min/max window
    wait_until(lambda: m2.comm.counts["timeout"] >= 4, what="slow unit timing out")
    p1, p3 = m1.comm.counts["ok"], m3.comm.counts["ok"]
    wait_until(lambda: m1.comm.counts["ok"] > p1 + 10 and m3.comm.counts["ok"] > p3 + 10)
    snap = rt.image.snapshot()
    for name, want in (("m1.current_l1_a", 100.0), ("m3.current_l1_a", 300.0)):
        pv = snap[name]  # every value written in the window, not only the last one
        assert (pv.vmin, pv.vmax, pv.value) == (want, want, want), name
    assert value(rt, "m2.current_l1_a") in (None, 200.0)
