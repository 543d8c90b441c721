"""The web server's front door: who may connect, how many, and TLS only where it is due.

aiohttp serves HTTP; this module owns the listening socket so that the checks happen before
aiohttp (or the TLS handshake) sees a byte:

- ``allow`` (empty: loopback only) and the connection caps (total and per client address,
  :class:`busguard.northbound.access.Clients`, the Modbus server's rules) are applied at
  accept: a refused socket is closed at once, and the refusal is logged once per streak.
- a connection that sends nothing within ``first_byte_s`` is closed (500 idle sockets cost
  500 file descriptors for that long, and never a slot beyond the caps).
- on the TLS port the first bytes are peeked: a TLS ClientHello goes on to the handshake; a
  plain HTTP request gets a clear ``400`` saying to use https:// (nginx's 497 idea) instead
  of a handshake failure the browser shows as garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from busguard.northbound.access import Clients, Policy, RefusalLog

log = logging.getLogger("busguard.web")

HTTP_METHODS = (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN",
                b"TRAC")
TLS_HANDSHAKE = 0x16


def plain_http_refusal(host: str, port: int) -> bytes:
    body = (f"This port speaks HTTPS only: use https://{host}:{port}/\n").encode()
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol, plus giving the connection's slot back when it ends."""

    def __init__(self, inner: asyncio.Protocol, done: Callable[[], None]) -> None:
        self.inner = inner
        self.done = done

    def connection_made(self, transport: Any) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self.done()


class Gate:
    """Accepts on one listening socket and hands admitted connections to ``factory``."""

    def __init__(self, sock: socket.socket, factory: Callable[[], Any], policy: Policy,
                 ssl_context: ssl.SSLContext | None, first_byte_s: float = 10.0,
                 refusals: RefusalLog | None = None) -> None:
        self.sock = sock
        self.factory = factory
        self.policy = policy
        self.ssl = ssl_context
        self.first_byte_s = first_byte_s
        self.clients = Clients(policy)
        self.refusals = refusals or RefusalLog(log)
        self.counts: dict[str, int] = {"accepted": 0, "refused_allowlist": 0,
                                       "refused_cap": 0, "closed_silent": 0,
                                       "refused_plain_http": 0, "tls_failed": 0}
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for t in list(self._pending):
            t.cancel()
        self.sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and the like: back off, keep serving
                self.refusals.note(f"web: accept failed ({exc.strerror or exc})", "-")
                await asyncio.sleep(0.1)
                continue
            host = addr[0]
            why = self.clients.admit(host)
            if why:
                key = "refused_allowlist" if why == "allowlist" else "refused_cap"
                self.counts[key] += 1
                self.refusals.note(f"web: refused a connection ({why})", host)
                _abort(conn)
                continue
            self.counts["accepted"] += 1
            t = loop.create_task(self._admit(conn, host))
            self._pending.add(t)
            t.add_done_callback(self._pending.discard)

    async def _admit(self, conn: socket.socket, host: str) -> None:
        """Wait for the first bytes, then plain HTTP, TLS, or a refusal."""
        loop = asyncio.get_running_loop()
        handed = False
        try:
            conn.setblocking(False)
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: readable.done() or
                            readable.set_result(None))
            try:
                await asyncio.wait_for(readable, self.first_byte_s)
            except asyncio.TimeoutError:
                self.counts["closed_silent"] += 1
                self.refusals.note("web: closed a connection that sent nothing "
                                   f"in {self.first_byte_s:g} s", host)
                return
            finally:
                loop.remove_reader(conn.fileno())
            try:
                head = conn.recv(5, socket.MSG_PEEK)
            except OSError:
                return
            if not head:
                return
            if self.ssl is not None and head[0] != TLS_HANDSHAKE:
                if head[:4] in HTTP_METHODS:
                    self.counts["refused_plain_http"] += 1
                    self.refusals.note("web: plain HTTP sent to the HTTPS port", host)
                    with contextlib.suppress(OSError):
                        conn.setblocking(True)
                        conn.settimeout(1.0)
                        conn.sendall(plain_http_refusal(_local_host(conn), self.port))
                        conn.shutdown(socket.SHUT_WR)
                else:
                    self.counts["tls_failed"] += 1
                    self.refusals.note("web: not a TLS handshake on the HTTPS port", host)
                return
            proto = _Tracked(self.factory(), lambda: self.clients.release(host))
            try:
                await loop.connect_accepted_socket(
                    lambda: proto, conn, ssl=self.ssl,
                    ssl_handshake_timeout=self.first_byte_s if self.ssl else None)
            except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
                self.counts["tls_failed"] += 1
                self.refusals.note(f"web: TLS handshake failed ({type(exc).__name__})", host)
                return
            handed = True
        finally:
            if not handed:
                self.clients.release(host)
                _abort(conn)


def _local_host(conn: socket.socket) -> str:
    try:
        h = conn.getsockname()[0]
    except OSError:
        return "this-unit"
    return f"[{h}]" if ":" in h else h


def _abort(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()
