"""The ``modbus_meter`` fixture (the simulator's meter, for tests and plugin authors) read
through busguard's tool client (``busguard.modbus.tcpclient``), on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from busguard.modbus import load_profile
from busguard.modbus.tcpclient import ExceptionReply, ModbusTcpClient

GEN = load_profile("generic-pqm")


def _value(client: ModbusTcpClient, name: str) -> float:
    p = GEN.point(name)
    return p.decode(client.read(p.address, len(p.encode(0.0)), p.function))


def test_the_meter_serves_the_profile_encoding_and_new_values(modbus_meter):
    meter = modbus_meter(values={"current_l1_a": 412.5, "voltage_l1_n_v": 231.0})
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=2.0) as client:
        assert client.connect()
        assert _value(client, "current_l1_a") == pytest.approx(412.5)
        assert _value(client, "voltage_l1_n_v") == pytest.approx(231.0)
        meter.set(current_l1_a=20.0)
        assert _value(client, "current_l1_a") == pytest.approx(20.0)
        assert _value(client, "voltage_l1_n_v") == pytest.approx(231.0)  # kept
    assert meter.requests == 4


def test_faults_and_unmapped_addresses_answer_as_a_real_meter(modbus_meter):
    meter = modbus_meter()
    unmapped = max(p.address for p in GEN.points) + 100
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=0.3) as client:
        with pytest.raises(ExceptionReply) as exc:
            client.read(unmapped, 2)
        assert exc.value.code == 0x02  # illegal data address
        assert client.answers(unmapped)  # an exception reply is an answer
        meter.faults(exception_pct=100.0)
        p = GEN.point("current_l1_a")
        with pytest.raises(ExceptionReply):
            client.read(p.address, 2, p.function)
        meter.faults(drop_pct=100.0)
        assert not client.answers(p.address, p.function)  # silence: a timeout
        meter.faults()
        assert client.answers(p.address, p.function)


def test_the_client_says_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with ModbusTcpClient("127.0.0.1", port, timeout_s=0.5) as client:
            assert not client.connect()


def test_the_knobs_tests_use_refusals_gaps_raw_registers_and_writes(modbus_meter):
    meter = modbus_meter()
    gap = GEN.point("power_factor_quadrant").address + 1  # 169: between two points
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=2.0) as client:
        assert client.connect()
        with pytest.raises(ExceptionReply) as exc:
            client.read(gap, 1)
        assert exc.value.code == 0x02  # the simulator refuses a gap, as many meters do
        meter.fill_gaps(0)
        assert client.read(gap, 1) == [0]
        meter.refuse(4, 100, 101, 0x04)
        with pytest.raises(ExceptionReply) as exc:
            client.read(100, 2, "input")
        assert exc.value.code == 0x04
        assert len(client.read(102, 2, "input")) == 2  # outside the refused range
        meter.accept()
        assert len(client.read(100, 2, "input")) == 2
        with pytest.raises(ExceptionReply):
            client.write(40, [1])  # not a set point register: 0x02
        meter.set_registers(40, [7, 8])
        assert client.read(40, 2) == [7, 8]
        client.write(40, [9])
        assert meter.register(40) == 9 and meter.recent_writes == [(40, (9,))]
        meter.ignore_writes()
        client.write(40, [10])  # accepted, not kept
        assert meter.register(40) == 9 and meter.writes == 2
        p = GEN.point("current_l1_a")
        meter.alternate({"current_l1_a": 1.0}, {"current_l1_a": 2.0})
        got = [_value(client, "current_l1_a") for _ in range(4)]
        assert got == [1.0, 2.0, 1.0, 2.0]
        meter.set(current_l1_a=3.0)
        assert p.decode(client.read(p.address, 2)) == 3.0


def test_a_meter_that_goes_away_and_comes_back_on_its_port(modbus_meter):
    meter = modbus_meter()
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=1.0) as client:
        assert client.answers(GEN.point("current_l1_a").address)
    meter.stop_serving()
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=1.0) as client:
        assert not client.connect()
    meter.serve_again()
    with ModbusTcpClient("127.0.0.1", meter.port, timeout_s=1.0) as client:
        assert client.answers(GEN.point("current_l1_a").address)


def test_an_rtu_line_answers_each_of_its_units(modbus_line, make_runtime, tmp_path):
    from busguard.testing import point, wait_until

    line = modbus_line()
    line.meter(1, GEN, {"current_l1_a": 11.0})
    two = line.meter(2, GEN, {"current_l1_a": 22.0})
    text = (f'[site]\nname = "t"\n[paths]\nstate_dir = "{tmp_path}"\n[[rs485]]\nname = "b"\n'
            f'port = "{line.path}"\nbaudrate = 115200\nparity = "N"\ntimeout_ms = 100\n')
    for u in (1, 2):
        text += (f'[[meter]]\nname = "m{u}"\ndriver = "modbus_rtu"\nline = "b"\nunit = {u}\n'
                 f'poll_ms = 50\npoints = ["current_l1_a"]\n')
    rt = make_runtime(text, start=True)
    wait_until(lambda: point(rt, "m1.current_l1_a")[0] == 11.0
               and point(rt, "m2.current_l1_a")[0] == 22.0, what="both units read")
    two.set(current_l1_a=23.0)
    wait_until(lambda: point(rt, "m2.current_l1_a")[0] == 23.0, what="the new value")
    assert two.requests >= 2
