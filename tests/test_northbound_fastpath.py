"""The northbound read fast path (functions 3/4 answered from the pre-encoded image) over real
sockets: the same bytes as pymodbus's path, the same exceptions and counters, answers in
request order when reads, writes and refused requests are pipelined on one connection, frames
split across segments, and the bound on answers a client never reads."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from busguard.northbound import mapdef
from busguard.testing import run_scans
from test_northbound_helpers import (
    closed_by_server,
    connect,
    f32_words,
    frame,
    read,
    recv_exact,
    response,
    site_text,
    wait_for,
)


@pytest.fixture
def served(make_runtime):
    def make(server: str | None = None):
        rt = make_runtime(site_text(server) if server else site_text(), start=True)
        pub = rt.publishers[0]
        run_scans(rt, 1)
        return rt, pub, pub.server.port()

    return make


def rd(address: int, count: int, tid: int, fc: int = 3, unit: int = 1) -> bytes:
    return frame(fc, struct.pack(">HH", address, count), tid=tid, unit=unit)


def test_reads_are_the_image_bytes_with_tid_and_unit_echoed(served):
    _rt, pub, port = served()
    img = pub.image()
    with connect(port) as s:
        for fc in (3, 4):
            s.sendall(rd(10, 125, tid=0xBEEF, fc=fc, unit=255))  # site map
            head = recv_exact(s, 9)
            tid, pid, length, unit, rfc, nbytes = struct.unpack(">HHHBBB", head)
            assert (tid, pid, length, unit, rfc, nbytes) == (0xBEEF, 0, 253, 255, fc, 250)
            assert recv_exact(s, 250) == img[20:270]
        last = pub.map.size - 1
        assert read(s, last, 1) == list(struct.unpack_from(">H", img, 2 * last))


def test_exceptions_and_counters_match_the_pymodbus_path(served):
    _rt, pub, port = served()
    before = pub.status()
    with connect(port) as s:
        assert read(s, 0, 0) == 0x03  # count outside 1..125: illegal data value
        assert read(s, 0, 126) == 0x03
        assert read(s, pub.map.size - 1, 2) == 0x02  # past the end: illegal data address
        assert read(s, 0xFFFF, 125, fc=4) == 0x02
        assert read(s, 0, 2) == [mapdef.MAGIC, mapdef.MAP_VERSION]  # and the server goes on
        s.sendall(rd(0, 0, tid=9, fc=4, unit=3))
        assert struct.unpack(">HHHBBB", recv_exact(s, 9)) == (9, 0, 3, 3, 0x84, 0x03)
    st = pub.status()
    assert st["requests"] - before["requests"] == 6
    assert st["reads"] - before["reads"] == 3  # a bad count is not a read (as before)
    assert st["exceptions"] - before["exceptions"] == 5


def test_pipelined_reads_writes_and_refusals_answer_in_order(served):
    rt, pub, port = served('allow = ["127.0.0.1/32"]\nwrite_allow = ["127.0.0.1/32"]\n'
                           'max_requests_per_s = 1000.0\n')
    ack = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    wr = frame(16, struct.pack(">HHB2H", ack.address + 2, 2, 4, 0, 5), tid=3)
    coil = frame(1, bytes.fromhex("00000008"), tid=4)
    unknown = frame(0x63, b"\x00\x01", tid=6)
    batch = (rd(0, 2, 1) + rd(0, 64, 2, fc=4) + wr + coil + rd(0, 1, 5)
             + unknown)  # the undecodable frame takes the rest of the segment, as before
    with connect(port) as s:
        s.sendall(batch)
        got = [response(s) for _ in range(6)]
        assert [g[0] for g in got] == [1, 2, 3, 4, 5, 6]
        assert [g[1] for g in got] == [3, 4, 16, 0x81, 3, 0xE3]
        assert got[0][2][1:] == struct.pack(">HH", mapdef.MAGIC, mapdef.MAP_VERSION)
        assert got[2][2] == struct.pack(">HH", ack.address + 2, 2)
        assert got[3][2] == b"\x01" and got[5][2] == b"\x01"
        # reads queued behind a write, many of them in one segment
        s.sendall(frame(16, struct.pack(">HHB2H", ack.address, 2, 4, *f32_words(6.0)), tid=7)
                  + b"".join(rd(0, 1, t) for t in range(8, 40)))
        assert [response(s)[0] for _ in range(33)] == list(range(7, 40))
    assert rt.image.snapshot()["cmd.ack_alarms"].value == 6.0


def test_frames_split_across_segments(served):
    """A read cut anywhere is answered once it is complete, also behind a write answered
    meanwhile (pymodbus's send would empty the buffer holding the read's first part)."""
    _rt, pub, port = served('allow = ["127.0.0.1/32"]\nwrite_allow = ["127.0.0.1/32"]\n')
    ack = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    with connect(port) as s:
        req = rd(0, 2, 1)
        for cut in range(1, len(req)):
            s.sendall(req[:cut])
            time.sleep(0.002)
            s.sendall(req[cut:])
            assert response(s) == (1, 3, b"\x04" + struct.pack(">HH", mapdef.MAGIC,
                                                               mapdef.MAP_VERSION))
        wr = frame(16, struct.pack(">HHB2H", ack.address + 2, 2, 4, 0, 1), tid=2)
        nxt = rd(0, 1, 3)
        s.sendall(wr + nxt[:5])
        assert response(s)[:2] == (2, 16)  # the write's answer went out in between
        s.sendall(nxt[5:])
        assert response(s) == (3, 3, b"\x02" + struct.pack(">H", mapdef.MAGIC))


def test_a_burst_of_pipelined_reads_larger_than_one_receive_is_answered_in_order(served):
    """24 KB of reads in one send: several receives of the connection's buffer, every read
    answered once and in order (none dropped as "sent too much")."""
    _rt, _pub, port = served('allow = ["127.0.0.1/32"]\nmax_requests_per_s = 100000.0\n')
    n = 2000
    with connect(port) as s:
        s.sendall(b"".join(rd(0, 1, t) for t in range(1, n + 1)))
        got = [response(s) for _ in range(n)]
    assert [g[0] for g in got] == list(range(1, n + 1))
    assert {g[2] for g in got} == {b"\x02" + struct.pack(">H", mapdef.MAGIC)}


def test_throttled_reads_wait_in_order_then_the_fast_path_resumes(served):
    _rt, pub, port = served('max_requests_per_s = 20.0\n')
    with connect(port) as s:
        s.sendall(b"".join(rd(0, 1, t) for t in range(1, 31)))  # burst 20, then 20/s
        assert [response(s)[0] for _ in range(30)] == list(range(1, 31))
        assert pub.status()["throttled"] >= 1
        wait_for(lambda: all(h._worker is None for h in pub.server.handlers),
                 what="the queue drained")
        throttled = pub.status()["throttled"]
        time.sleep(0.2)  # tokens for 4 requests
        assert read(s, 0, 1) == [mapdef.MAGIC]
        assert pub.status()["throttled"] == throttled


def test_a_client_that_never_reads_its_answers_is_dropped(served):
    _rt, pub, port = served()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    chunk = b"".join(rd(0, 125, t) for t in range(1000))  # 12 kB of requests, 257 kB answers
    try:
        for _ in range(400):
            s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    try:
        assert closed_by_server(_drain(s), timeout=10)
    finally:
        s.close()
    wait_for(lambda: pub.status()["connections"] == 0, what="slot released")
    with connect(port) as ok:  # the others are served on
        assert read(ok, 0, 1) == [mapdef.MAGIC]


def _drain(s: socket.socket) -> socket.socket:
    """Read whatever answers the server had sent before closing; then the socket sees EOF."""
    s.settimeout(10)
    try:
        while s.recv(1 << 20):
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    return s
