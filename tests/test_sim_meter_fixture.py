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
