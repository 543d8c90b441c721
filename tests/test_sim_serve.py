"""Simulated meters through real interfaces: Modbus TCP on 127.0.0.1 and RTU over a pty pair,
read with pymodbus's own clients; fault knobs (exception 0x02, drops, garbage frames)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from busguard.modbus.profiles import load_profile, parse_profile
from busguard.sim.model import MeterSpec, SiteModel
from busguard.sim.scenarios import NO_FAULTS, CommFaults
from busguard.sim.serve import RtuLineServer, SimUnit, TcpMeterServer

PROFILE = load_profile("generic-pqm")


class LoopThread:
    """An asyncio loop in a thread, as the simulator runs its servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: object, timeout: float = 5.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def unit(name: str, unit_id: int = 1, faults: CommFaults = NO_FAULTS) -> SimUnit:
    model = SiteModel([MeterSpec(name)], seed=7)
    state = {"faults": faults}
    u = SimUnit(name, unit_id, PROFILE, lambda: (model.meter(0, 12.5), state["faults"]), seed=7)
    u.state = state  # type: ignore[attr-defined]
    u.expected = model.meter(0, 12.5)  # type: ignore[attr-defined]
    return u


def read_point(client: ModbusTcpClient | ModbusSerialClient, name: str, dev: int = 1) -> float:
    p = PROFILE.point(name)
    fn = client.read_holding_registers if p.function == "holding" else \
        client.read_input_registers
    rr = fn(p.address, count=p.count, device_id=dev)
    assert not rr.isError(), rr
    return p.decode(rr.registers)


def test_tcp_meter_serves_its_profile(loop: LoopThread) -> None:
    u = unit("pqm-t1")
    srv = TcpMeterServer(u, "127.0.0.1", 0)
    loop.run(srv.start())
    try:
        assert srv.port > 0
        client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=2, retries=0)
        assert client.connect()
        try:
            for name in ("current_l1_a", "voltage_l1_n_v", "thd_v_l1_pct", "temp_c",
                         "residual_current_ma"):
                assert read_point(client, name) == pytest.approx(u.expected[name], rel=1e-5)
            # a contiguous block read, as the runtime's planner does
            rr = client.read_holding_registers(100, count=42, device_id=1)
            assert not rr.isError() and len(rr.registers) == 42
            # an address the profile does not map: exception 0x02 (illegal data address)
            rr = client.read_holding_registers(5000, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 0x02
            # the exception knob: 0x02 on a mapped address
            u.state["faults"] = CommFaults(exception_pct=100.0)
            rr = client.read_holding_registers(100, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 0x02
        finally:
            client.close()
    finally:
        loop.run(srv.stop())
    assert u.stats.answered >= 6 and u.stats.exceptions == 2


def test_tcp_drop_gives_a_timeout_then_recovers(loop: LoopThread) -> None:
    u = unit("pqm-t2", faults=CommFaults(drop_pct=100.0))
    srv = TcpMeterServer(u, "127.0.0.1", 0)
    loop.run(srv.start())
    try:
        client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=0.3, retries=0)
        assert client.connect()
        try:
            with pytest.raises(Exception):  # noqa: B017 - pymodbus raises ModbusIOException
                rr = client.read_holding_registers(100, count=2, device_id=1)
                assert not rr.isError()
            client.close()
            u.state["faults"] = NO_FAULTS
            assert client.connect()
            assert read_point(client, "current_l1_a") == pytest.approx(
                u.expected["current_l1_a"], rel=1e-5)
        finally:
            client.close()
    finally:
        loop.run(srv.stop())
    assert u.stats.dropped >= 1


def rtu_client(link: Path) -> ModbusSerialClient:
    return ModbusSerialClient(str(link), baudrate=115200, timeout=1, retries=0)


def test_rtu_line_on_a_pty_serves_every_unit(loop: LoopThread, tmp_path: Path) -> None:
    u1, u2 = unit("pqm-r1", 1), unit("pqm-r2", 2)
    link = tmp_path / "sim" / "ttyRS485-1"
    line = RtuLineServer("rs485-1", link, {1: u1, 2: u2}, baudrate=115200)
    loop.run(line.start())
    try:
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        client = rtu_client(link)
        assert client.connect()
        try:
            for dev, u in ((1, u1), (2, u2), (1, u1)):
                assert read_point(client, "current_l2_a", dev) == pytest.approx(
                    u.expected["current_l2_a"], rel=1e-5)
            assert read_point(client, "temp_c", 2) == pytest.approx(u2.expected["temp_c"],
                                                                     rel=1e-5)
        finally:
            client.close()
    finally:
        loop.run(line.stop())
    assert not link.exists() and not link.is_symlink()
    assert u1.stats.answered == 2 and u2.stats.answered == 2


def test_rtu_garbage_frames_fail_the_crc_and_the_line_recovers(loop: LoopThread,
                                                              tmp_path: Path) -> None:
    u1 = unit("pqm-r3", 3, faults=CommFaults(garbage_pct=100.0))
    link = tmp_path / "ttyRS485-2"
    line = RtuLineServer("rs485-2", link, {3: u1}, baudrate=115200)
    loop.run(line.start())
    try:
        client = ModbusSerialClient(str(link), baudrate=115200, timeout=0.3, retries=0)
        assert client.connect()
        try:
            failed = 0
            for _ in range(2):
                try:
                    rr = client.read_holding_registers(100, count=2, device_id=3)
                    failed += rr.isError()
                except Exception:
                    failed += 1
            assert failed == 2
            assert u1.stats.garbage == 2
            u1.state["faults"] = NO_FAULTS
            assert read_point(client, "current_l1_a", 3) == pytest.approx(
                u1.expected["current_l1_a"], rel=1e-5)
        finally:
            client.close()
    finally:
        loop.run(line.stop())


def test_a_sites_own_profile_is_served_whole(loop: LoopThread) -> None:
    """Points the model does not know read as 0 (every mapped register answers); known ones
    in int16/uint32 with scales and other word orders encode as the profile says."""
    prof = parse_profile({
        "profile": {"name": "custom", "address_base": 1, "word_order": "CDAB"},
        "points": {"current_l1_a": {"address": 3001, "type": "uint32", "scale": 0.001},
                   "frequency_hz": {"address": 3003, "type": "int16", "scale": 0.01},
                   "harmonic_5_pct": {"address": 3004, "type": "float32"}}})
    model = SiteModel([MeterSpec("pqm-c")], seed=7)
    values = model.meter(0, 12.5)
    u = SimUnit("pqm-c", 9, prof, lambda: (values, NO_FAULTS))
    srv = TcpMeterServer(u, "127.0.0.1", 0)
    loop.run(srv.start())
    try:
        client = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=2, retries=0)
        assert client.connect()
        try:
            rr = client.read_holding_registers(3000, count=5, device_id=9)
            assert not rr.isError()
        finally:
            client.close()
    finally:
        loop.run(srv.stop())
    regs = rr.registers
    assert prof.decode("current_l1_a", regs[0:2]) == pytest.approx(values["current_l1_a"],
                                                                   abs=0.001)
    assert prof.decode("frequency_hz", regs[2:3]) == pytest.approx(values["frequency_hz"],
                                                                   abs=0.01)
    assert prof.decode("harmonic_5_pct", regs[3:5]) == 0.0
