"""Shared helpers for the northbound tests: a raw Modbus/TCP client over real sockets.

A raw client (not pymodbus) so the tests see exactly the bytes and exception codes a DCIM
would, and can bind to any loopback source address (127.0.0.2 ...) to exercise allowlists.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

SITE = """
[site]
name = "nb-test"

[scan]
period_ms = 10

[[meter]]
name = "pqm-a1"
driver = "memory"
poll_ms = 100
points = ["voltage_l1_n_v", "current_l1_a", "current_l2_a", "current_l3_a", "power_kw",
          "thd_v_l1_pct", "comm_ok"]

[[meter]]
name = "pqm-a2"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "vendor_special_x"]

[[probe]]
name = "tap-a1"
driver = "memory"
points = ["temp_c"]

[[probe]]
name = "tap-a2"
driver = "memory"
points = ["temp_c"]

[[probe]]
name = "tap-a3"
driver = "memory"
points = ["temp_c"]

[[breaker]]
name = "cb-a1-01"
driver = "memory"
points = ["led"]

[[output]]
name = "alarm-relay"
driver = "memory"
outputs = ["relay.alarm"]

[[block]]
name = "thd-a1"
type = "threshold_alarm"
point = "pqm-a1.thd_v_l1_pct"
high = 5.0
code = "BG-THD"
output = "relay.alarm"

[modbus_server]
port = 0
{server}
"""

DEFAULT_SERVER = """allow = ["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32"]
write_allow = ["127.0.0.2/32"]
max_connections = 16
max_connections_per_client = 4
idle_timeout_s = 30.0
max_requests_per_s = 1000.0
"""


def site_text(server: str = DEFAULT_SERVER) -> str:
    return SITE.replace("{server}", server)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for an I/O side effect (a socket closed, a counter moved); never for a scan."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def refused(port: int, source: str = "127.0.0.1") -> bool:
    """True when the server drops a connection from ``source`` at once (reset during or
    right after the handshake), as it does outside the allowlist or over a cap."""
    try:
        s = connect(port, source)
    except (ConnectionResetError, ConnectionRefusedError):
        return True
    with s:
        return closed_by_server(s)


def try_connect(port: int, source: str) -> socket.socket | None:
    try:
        return connect(port, source)
    except (ConnectionResetError, ConnectionRefusedError):
        return None


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def frame(fc: int, payload: bytes, tid: int = 1, unit: int = 1) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(payload) + 2, unit) + bytes([fc]) + payload


def response(sock: socket.socket) -> tuple[int, int, bytes]:
    tid, _pid, length, _unit = struct.unpack(">HHHB", recv_exact(sock, 7))
    body = recv_exact(sock, length - 1)
    return tid, body[0], body[1:]


def request(sock: socket.socket, fc: int, payload: bytes, tid: int = 1) -> tuple[int, bytes]:
    sock.sendall(frame(fc, payload, tid))
    rtid, rfc, data = response(sock)
    assert rtid == tid
    return rfc, data


def read(sock: socket.socket, address: int, count: int, fc: int = 3) -> list[int] | int:
    """Registers, or the exception code (int) if the server answered with an exception."""
    rfc, data = request(sock, fc, struct.pack(">HH", address, count))
    if rfc & 0x80:
        return data[0]
    return list(struct.unpack(f">{data[0] // 2}H", data[1:1 + data[0]]))


def write(sock: socket.socket, address: int, values: list[int]) -> int | None:
    """FC16; None when accepted, else the exception code."""
    payload = struct.pack(f">HHB{len(values)}H", address, len(values), 2 * len(values), *values)
    rfc, data = request(sock, 16, payload)
    return data[0] if rfc & 0x80 else None


def write_single(sock: socket.socket, address: int, value: int) -> int | list[int]:
    rfc, data = request(sock, 6, struct.pack(">HH", address, value))
    return data[0] if rfc & 0x80 else list(struct.unpack(">HH", data))


def f32(words: list[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", *words))[0]


def f32_words(v: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", v)))


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server closed or reset the connection (waits for the I/O event)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
