"""The northbound server under hostile and clumsy clients (issue 21), over real sockets on
127.0.0.x: slots a DCIM can always get, the idle rule, frames of another protocol id,
function codes with the exception bit, and pymodbus's logger kept quiet."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading

import pytest

from busguard.northbound import mapdef
from test_northbound import needs_alias
from test_northbound_helpers import (
    closed_by_server,
    connect,
    frame,
    read,
    refused,
    response,
    site_text,
    try_connect,
    wait_for,
)


@pytest.fixture
def served(make_runtime):
    def make(server: str):
        rt = make_runtime(site_text(server), start=True)
        pub = rt.publishers[0]
        return rt, pub, pub.server.port()

    return make


def raw_frame(pid: int, body: bytes, tid: int = 1) -> bytes:
    """An MBAP header with protocol id ``pid`` and ``body`` (unit id + PDU)."""
    return struct.pack(">HHH", tid, pid, len(body)) + body


class Trickle:
    """Connections that each send one byte now and then and never a whole request: the
    slow client of the issue (1 byte every 20 s), sped up; bounded in time by ``stop``."""

    def __init__(self, socks: list[socket.socket], every_s: float = 0.1) -> None:
        self.socks = socks
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.send(b"\x00")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.socks:
            s.close()


def test_a_frame_of_another_protocol_id_does_not_stall_the_connection(served, caplog):
    """The issue: after one frame with protocol id != 0 the connection answered nothing
    more (pymodbus waits for more data, up to 16 kB) and pymodbus logged an ERROR line per
    frame; on this site (no Modbus meter) nothing had quieted it."""
    caplog.set_level(logging.DEBUG, logger="busguard")
    _rt, pub, port = served('max_requests_per_s = 5000.0\n')
    with connect(port) as s:
        read_req = frame(3, struct.pack(">HH", 0, 1), tid=7)
        s.sendall(raw_frame(1, bytes([1, 3, 0, 0, 0, 1]), tid=6))
        s.sendall(read_req)  # a later, separate request on the same connection
        tid, fc, data = response(s)
        assert (tid, fc) == (7, 3) and struct.unpack(">H", data[1:3])[0] == mapdef.MAGIC
        # in one segment: a bad frame between two good ones, then 50 more bad ones
        s.sendall(frame(3, struct.pack(">HH", 0, 1), tid=8)
                  + raw_frame(0x1234, bytes([1, 16, 0, 0]), tid=9)
                  + frame(4, struct.pack(">HH", 0, 1), tid=10))
        assert [response(s)[:2] for _ in range(2)] == [(8, 3), (10, 4)]
        s.sendall(b"".join(raw_frame(2, bytes([1, 3, 0, 0, 0, 1]), tid=t)
                           for t in range(50)) + frame(3, struct.pack(">HH", 0, 1), tid=99))
        assert response(s)[:2] == (99, 3)
    assert pub.status()["dropped_frames"] == 52
    pymodbus_lines = [r for r in caplog.records if r.name.startswith("pymodbus")
                      and r.levelno >= logging.WARNING]
    assert pymodbus_lines == []
    ours = [r for r in caplog.records if "frames dropped" in r.getMessage()]
    assert len(ours) == 1  # once per streak, not once per frame


def test_every_unsupported_function_code_gets_illegal_function(served):
    """0x01 for each: functions with the exception bit set (>= 0x80) were answered with the
    request's first data byte as the exception code."""
    _rt, _pub, port = served('write_allow = ["127.0.0.1/32"]\n')
    with connect(port) as s:
        for tid, (fc, payload) in enumerate([
                (0x83, b"\x05\x00\x00\x01"), (0x80, b"\x02"), (0x90, b"\x0b\x00"),
                (0xFF, b"\x07"), (0x86, b""), (0x41, b"\x00\x01"), (1, b"\x00\x00\x00\x01"),
                (8, b"\x00\x00\x12\x34"), (43, b"\x0d\x01\x00")], start=1):  # 43/14: answered
            s.sendall(frame(fc, payload, tid=tid))
            rtid, rfc, data = response(s)
            assert (rtid, rfc, data) == (tid, fc | 0x80, b"\x01"), hex(fc)
        assert read(s, 0, 1) == [mapdef.MAGIC]  # and the connection goes on


def test_an_unframeable_length_drops_only_that_connection(served):
    _rt, _pub, port = served('')
    with connect(port) as bad, connect(port) as good:
        bad.sendall(struct.pack(">HHH", 1, 0, 0xFFFF) + b"\x01\x03")
        assert closed_by_server(bad)
        assert read(good, 0, 1) == [mapdef.MAGIC]


@needs_alias
def test_trickling_clients_cannot_lock_a_newcomer_out(served):
    """The issue's lockout: 4 addresses x 4 connections, each sending one byte now and then,
    fill the 16-connection cap; any byte counted as activity, so the idle timeout never
    fired and a new client from another address was reset for as long as it went on. Now a
    newcomer takes the slot of an idle-ish one (no whole request), and the trickling ones
    are closed by the idle timeout, which counts whole requests only."""
    _rt, pub, port = served('allow = ["127.0.0.0/8"]\nmax_connections = 16\n'
                            'max_connections_per_client = 4\nidle_timeout_s = 2.0\n')
    socks = [connect(port, f"127.0.0.{10 + a}") for a in range(4) for _ in range(4)]
    trickle = Trickle(socks)
    try:
        wait_for(lambda: pub.status()["connections"] == 16, what="16 attacker connections")
        got = None
        for _ in range(100):  # bounded: a newcomer keeps trying, as a DCIM reconnects
            s = try_connect(port, "127.0.0.50")
            if s is not None:
                try:
                    got = read(s, 0, 1)
                    break
                except OSError:
                    pass
                finally:
                    s.close()
            threading.Event().wait(0.05)
        assert got == [mapdef.MAGIC]
        # the idle rule: bytes that never make a request do not keep a slot
        wait_for(lambda: pub.status()["closed_idle"] >= 1, timeout=10,
                 what="a trickling connection closed as idle")
    finally:
        trickle.stop()


@needs_alias
def test_eviction_takes_the_oldest_idle_slot_of_the_heaviest_address(served):
    _rt, pub, port = served('allow = ["127.0.0.0/8"]\nmax_connections = 4\n'
                            'max_connections_per_client = 4\nidle_timeout_s = 4.0\n')
    heavy = [connect(port, "127.0.0.3") for _ in range(3)]
    light = connect(port, "127.0.0.4")
    try:
        for s in heavy:
            assert read(s, 0, 1) == [mapdef.MAGIC]
        assert read(light, 0, 1) == [mapdef.MAGIC]
        wait_for(lambda: pub.status()["connections"] == 4, what="4 connections")
        threading.Event().wait(1.1)  # all four idle-ish now (1 s without a request)
        with connect(port, "127.0.0.5") as newcomer:
            assert read(newcomer, 0, 1) == [mapdef.MAGIC]
        assert pub.status()["evicted"] == 1
        assert closed_by_server(heavy[0], timeout=2)  # the oldest of the heaviest address
        assert read(light, 0, 1) == [mapdef.MAGIC]  # the lone client kept its slot
    finally:
        for s in [*heavy, light]:
            s.close()


@needs_alias
def test_reserved_slots_are_kept_for_write_allow_and_priority_clients(served):
    """A busy allowed client (always reading, never idle) cannot take the last slots: they
    are held for the DCIMs in `write_allow` and `priority`."""
    _rt, _pub, port = served('allow = ["127.0.0.0/8"]\nwrite_allow = ["127.0.0.2/32"]\n'
                            'priority = ["127.0.0.7/32"]\nmax_connections = 6\n'
                            'max_connections_per_client = 6\nreserved_connections = 2\n'
                            'idle_timeout_s = 600.0\n')
    busy = [s for s in (try_connect(port, "127.0.0.9") for _ in range(6)) if s is not None]
    open_ = []
    try:
        for s in busy:
            try:
                if read(s, 0, 1) == [mapdef.MAGIC]:
                    open_.append(s)
            except OSError:
                pass
        assert len(open_) == 4  # 6 minus the 2 reserved
        assert refused(port, "127.0.0.9")
        with connect(port, "127.0.0.2") as writer, connect(port, "127.0.0.7") as dcim:
            assert read(writer, 0, 1) == [mapdef.MAGIC]
            assert read(dcim, 0, 1) == [mapdef.MAGIC]
    finally:
        for s in busy:
            s.close()


def test_priority_must_lie_inside_allow(make_runtime):
    from busguard.errors import ConfigError

    with pytest.raises(ConfigError, match=r"priority.*127\.0\.0\.9/32 is not inside `allow`"):
        make_runtime(site_text('allow = ["127.0.0.2/32"]\npriority = ["127.0.0.9/32"]\n'))



def test_the_pymodbus_logger_is_quiet_from_the_start_of_a_server(make_runtime, caplog):
    """On a site without a Modbus meter nothing quieted pymodbus's logger, which writes an
    ERROR line per frame it cannot use (the issue: ~1,500 lines/s under a fuzzer)."""
    lg = logging.getLogger("pymodbus")
    saved = lg.level
    lg.setLevel(logging.NOTSET)  # as in a fresh process (another test may have set it)
    try:
        make_runtime(site_text(''), start=True)  # memory devices only: no Modbus meter
        from pymodbus.logging import Log

        Log.error("Invalid Modbus protocol id: {}", 4660)
        assert [r for r in caplog.records if r.name.startswith("pymodbus")] == []
        assert lg.level == logging.CRITICAL
    finally:
        lg.setLevel(saved)
