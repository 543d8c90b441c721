"""Output driver modbus_write: write on change and on refresh, read-back, its own quality."""

from __future__ import annotations

import pytest

from busguard.image import Quality
from busguard.modbus.codec import decode
from modbus_slave import point, wait_until


def site(port: int, extra: str = "", tmp: str = "", dtype: str = "uint16",
         scale: float = 0.1) -> str:
    return (f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp}"\n'
            f'[[output]]\nname = "bms"\ndriver = "modbus_write"\noutput = "cooling.demand_pct"\n'
            f'host = "127.0.0.1"\nport = {port}\nunit = 5\naddress = 40\ntype = "{dtype}"\n'
            f'scale = {scale}\ntimeout_ms = 100\nretries = 0\n{extra}\n')


def test_writes_on_change_verifies_and_refreshes(slave, make_runtime, tmp_path):
    port = slave.serve_tcp()
    unit = slave.unit(5)
    rt = make_runtime(site(port, "refresh_ms = 100", tmp=str(tmp_path)), start=True)
    drv = rt.drivers[0]
    drv.apply({"cooling.demand_pct": 42.5})
    wait_until(lambda: unit.holding.get(40) == 425, what="first write")
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(42.5), Quality.GOOD))
    assert point(rt, "bms.comm_ok") == (1.0, Quality.GOOD)
    drv.apply({"cooling.demand_pct": 42.5})  # no change: no immediate write
    drv.apply({"cooling.demand_pct": 80.0})
    wait_until(lambda: unit.holding.get(40) == 800, what="write on change")
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(80.0), Quality.GOOD))
    n = len(unit.writes)
    unit.holding[40] = 0  # the BMS rebooted and lost the setpoint
    wait_until(lambda: unit.holding.get(40) == 800 and len(unit.writes) > n,
               what="periodic refresh")
    assert all(addr == 40 for addr, _ in unit.writes)
    wait_until(lambda: drv.stats()["writes"] >= 3, what="refresh confirmed")


def test_readback_mismatch_is_bad(slave, make_runtime, tmp_path):
    port = slave.serve_tcp()
    unit = slave.unit(5)
    unit.ignore_writes = True  # accepts the write, keeps its own value
    unit.holding[40] = 123
    rt = make_runtime(site(port, tmp=str(tmp_path)), start=True)
    rt.drivers[0].apply({"cooling.demand_pct": 50.0})
    wait_until(lambda: point(rt, "bms.readback")[1] == Quality.BAD, what="mismatch")
    assert rt.drivers[0].stats()["last_readback"] == pytest.approx(12.3)
    assert point(rt, "bms.comm_ok")[0] == 0.0
    assert rt.drivers[0].stats()["mismatches"] >= 1


def test_dead_device_gives_not_connected_apply_stays_instant_and_recovers(
        slave, make_runtime, tmp_path):
    port = slave.serve_tcp()
    unit = slave.unit(5)
    unit.dead = True
    rt = make_runtime(site(port, 'word_order = "CDAB"', tmp=str(tmp_path), dtype="float32",
                           scale=1.0), start=True)
    drv = rt.drivers[0]
    for v in (10.0, 11.0, 12.0):  # returns at once even though nothing answers
        drv.apply({"cooling.demand_pct": v})
    wait_until(lambda: drv.stats()["failures"] >= 1, what="write failed")
    assert drv.stats()["state"] == "not-connected"
    assert point(rt, "bms.readback")[1] == Quality.NOT_CONNECTED
    assert point(rt, "bms.comm_ok") == (0.0, Quality.GOOD)
    unit.dead = False
    wait_until(lambda: point(rt, "bms.readback") == (12.0, Quality.GOOD), what="recovered")
    assert decode([unit.holding[40], unit.holding[41]], "float32", "CDAB") == 12.0


def test_config_needs_exactly_one_of_host_or_line(make_runtime, tmp_path):
    from busguard.errors import ConfigError
    text = ('[site]\nname = "t"\n[[output]]\nname = "bms"\ndriver = "modbus_write"\n'
            'output = "cooling.demand_pct"\naddress = 1\n')
    with pytest.raises(ConfigError, match=r"output\[0\]\.host: set exactly one of host"):
        make_runtime(text)


def test_last_value_is_written_at_stop(slave, make_runtime, tmp_path):
    port = slave.serve_tcp()
    unit = slave.unit(5)
    rt = make_runtime(site(port, "refresh_ms = 60000", tmp=str(tmp_path)), start=True)
    drv = rt.drivers[0]
    drv.apply({"cooling.demand_pct": 30.0})
    wait_until(lambda: point(rt, "bms.readback") == (pytest.approx(30.0), Quality.GOOD))
    drv.apply({"cooling.demand_pct": 100.0})  # e.g. the fail-safe value applied at stop
    rt.stop()
    assert unit.holding[40] == 1000
