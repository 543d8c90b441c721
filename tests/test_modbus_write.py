"""Output driver modbus_write: write on change and on refresh, read-back, its own quality,
against the simulator's Modbus TCP unit standing in for a BMS (``modbus_meter``)."""

from __future__ import annotations

import pytest

from busguard.image import Quality
from busguard.modbus.codec import decode
from busguard.testing import point, wait_until


def bms(modbus_meter, registers: int = 2):
    """A BMS on unit 5 whose set point is holding register 40 (and 41 for 32-bit types)."""
    unit = modbus_meter(None, unit_id=5)
    unit.set_registers(40, [0] * registers)
    return unit


def site(port: int, extra: str = "", tmp: str = "", dtype: str = "uint16",
         scale: float = 0.1) -> str:
    return (f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp}"\n'
            f'[[output]]\nname = "bms"\ndriver = "modbus_write"\noutput = "cooling.demand_pct"\n'
            f'host = "127.0.0.1"\nport = {port}\nunit = 5\naddress = 40\ntype = "{dtype}"\n'
            f'scale = {scale}\ntimeout_ms = 100\nretries = 0\n{extra}\n')


def test_writes_on_change_verifies_and_refreshes(modbus_meter, make_runtime, tmp_path):
    unit = bms(modbus_meter)
    port = unit.port
    rt = make_runtime(site(port, "refresh_ms = 100", tmp=str(tmp_path)), start=True)
    drv = rt.drivers[0]
    drv.apply({"cooling.demand_pct": 42.5})
    wait_until(lambda: unit.register(40) == 425, what="first write")
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(42.5), Quality.GOOD))
    assert point(rt, "bms.comm_ok") == (1.0, Quality.GOOD)
    drv.apply({"cooling.demand_pct": 42.5})  # no change: no immediate write
    drv.apply({"cooling.demand_pct": 80.0})
    wait_until(lambda: unit.register(40) == 800, what="write on change")
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(80.0), Quality.GOOD))
    n = unit.writes
    unit.set_registers(40, [0])  # the BMS rebooted and lost the setpoint
    wait_until(lambda: unit.register(40) == 800 and unit.writes > n,
               what="periodic refresh")
    assert all(addr == 40 for addr, _ in unit.recent_writes)
    wait_until(lambda: drv.stats()["writes"] >= 3, what="refresh confirmed")


def test_readback_mismatch_is_bad(modbus_meter, make_runtime, tmp_path):
    unit = bms(modbus_meter)
    port = unit.port
    unit.ignore_writes()  # accepts the write, keeps its own value
    unit.set_registers(40, [123])
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    rt.drivers[0].apply({"cooling.demand_pct": 50.0})
    wait_until(lambda: point(rt, "bms.readback")[1] == Quality.BAD, what="mismatch")
    assert rt.drivers[0].stats()["last_readback"] == pytest.approx(12.3)
    assert point(rt, "bms.comm_ok")[0] == 0.0
    assert rt.drivers[0].stats()["mismatches"] >= 1


def test_dead_device_gives_not_connected_apply_stays_instant_and_recovers(
        modbus_meter, make_runtime, tmp_path):
    unit = bms(modbus_meter)
    port = unit.port
    unit.faults(drop_pct=100.0)  # the BMS does not answer
    rt = make_runtime(site(port, 'word_order = "CDAB"', tmp=str(tmp_path), dtype="float32",
                           scale=1.0), start=True)
    drv = rt.drivers[0]
    for v in (10.0, 11.0, 12.0):  # returns at once even though nothing answers
        drv.apply({"cooling.demand_pct": v})
    wait_until(lambda: drv.stats()["failures"] >= 1, what="write failed")
    assert drv.stats()["state"] == "not-connected"
    assert point(rt, "bms.readback")[1] == Quality.NOT_CONNECTED
    assert point(rt, "bms.comm_ok") == (0.0, Quality.GOOD)
    unit.faults()
    wait_until(lambda: point(rt, "bms.readback") == (12.0, Quality.GOOD), what="recovered")
    assert decode([unit.register(40), unit.register(41)], "float32", "CDAB") == 12.0


def test_config_needs_exactly_one_of_host_or_line(make_runtime, tmp_path):
    from busguard.errors import ConfigError
    text = ('[site]\nname = "t"\n[[output]]\nname = "bms"\ndriver = "modbus_write"\n'
            'output = "cooling.demand_pct"\naddress = 1\n')
    with pytest.raises(ConfigError, match=r"output\[0\]\.host: set exactly one of host"):
        make_runtime(text)


def test_last_value_is_written_at_stop(modbus_meter, make_runtime, tmp_path):
    unit = bms(modbus_meter)
    port = unit.port
    rt = make_runtime(site(port, "refresh_ms = 60000", tmp=str(tmp_path)), start=True)
    drv = rt.drivers[0]
    drv.apply({"cooling.demand_pct": 30.0})
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(30.0), Quality.GOOD))
    drv.apply({"cooling.demand_pct": 100.0})  # e.g. the fail-safe value applied at stop
    rt.stop()
    assert unit.register(40) == 1000
