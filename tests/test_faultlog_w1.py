"""Thermal-Critical (0xCF) end to end through a real 1-Wire file tree: DS18B20 w1_slave files
read by the w1 driver (through w1thermsensor), judged by thermal_interlock, written to the fault
log; a CRC failure is a bad input, never a temperature."""

from __future__ import annotations

import asyncio

import pytest

from busguard.driver import DriverContext
from busguard.faultlog import get_fault_log, parse_line
from busguard.w1 import write_sensor_file
from busguard.w1.driver import W1Bus

A1, A2 = "28-0000075a3c1f", "28-0000075a3c20"
SITE = f"""
[site]
name = "w1-thermal"
[scan]
period_ms = 1000
[paths]
fault_log = "fault.log"
state_dir = "st-w1"
[onewire]
base_dir = "w1/devices"
[[probe]]
name = "bb1"
sensor_id = "{A1}"
poll_ms = 1000
[[probe]]
name = "bb2"
sensor_id = "{A2}"
poll_ms = 1000
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1", "bb2"]
output = "relay.critical"
rate_alarm_c_per_min = 0.0  # the test's jumps would be rises; this test is about 0xCF
ttt_alarm_s = 0.0
"""


@pytest.fixture
def w1site(tmp_path, make_runtime, fake_clock):
    """A runtime whose w1 bus the test steps (no thread), on the fake clock."""
    base = tmp_path / "w1" / "devices"
    base.mkdir(parents=True)
    rt = make_runtime(SITE)
    loop = asyncio.new_event_loop()
    ctx = DriverContext(rt.image, fake_clock, loop, rt.site)
    bus = ctx.shared(f"w1.bus:{base}", lambda: W1Bus(base, rt.image, fake_clock, threaded=False))
    for drv in rt.drivers:
        drv.start(ctx)
    yield rt, bus, base
    for drv in rt.drivers:
        drv.stop()
    loop.close()


def test_0xcf_from_probe_files_to_the_fault_log(w1site, run_scans, tmp_path):
    rt, bus, base = w1site

    def step(t1: float, t2: float, crc_ok: bool = True) -> list[str]:
        write_sensor_file(base, A1, t1, crc_ok=crc_ok)
        write_sensor_file(base, A2, t2)
        bus.poll_once(force=True)
        (res,) = run_scans(rt, 1)
        return [f"{e.kind} {e.alarm.id} {e.alarm.condition.code}" for e in res.edges]

    assert step(55.0, 54.0) == []
    assert step(91.0, 89.5) == ["raised th:trip 0xCF"]
    assert rt.engine.outputs["relay.critical"] == 1.0
    edges = step(93.0, 99.0, crc_ok=False) + step(93.0, 90.0, crc_ok=False) + \
        step(93.0, 90.0, crc_ok=False)
    assert edges == ["raised th:input BG-INPUT"]  # bb1 bad for 2 s; the 99 C was never used
    assert rt.engine.outputs["relay.critical"] == 1.0  # bb2 still reads 90 C
    assert get_fault_log(rt).flush()
    lines = (tmp_path / "fault.log").read_text().splitlines()
    (crit,) = [ln for ln in lines if " critical " in ln]
    assert "raised code=0xCF device=bb1 alarm=th:trip" in crit
    assert "Thermal-Critical (0xCF): bb1.temp_c at 91.0 C" in crit
    (inp,) = [ln for ln in lines if "BG-INPUT" in ln]
    assert parse_line(inp)["values"] == {"lost": {"bb1.temp_c": "bad"}}
