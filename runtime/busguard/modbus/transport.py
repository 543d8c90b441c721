"""The Modbus client links; the only module that talks to pymodbus on the client side
(pinned >=3.16,<3.17).

A *link* carries requests to devices and turns every outcome into one of four results:
registers (or a completed write), :class:`ExceptionReply` (the device answered with a Modbus
exception), or :class:`CommError` of kind ``timeout`` (errno 110), ``disconnect`` (refused,
reset) or ``crc`` (bytes came back but no valid frame: CRC/framing error or garbage).

- :class:`TcpLink`: one device (host:port), a pool of up to ``max_in_flight`` connections,
  each a :class:`MbapConnection`: busguard's own Modbus TCP client for functions 3, 4 and 16.
- :class:`RtuLine`: one RS-485 bus (serial port, pymodbus); a FIFO lock serialises its
  requests, several unit ids share it, and the per-request timeout is the requesting
  device's own.

Why TCP does not go through pymodbus's client: per request it builds PDU objects, runs its
framer and decoder (formatting a debug string of every PDU even with debug logging off),
records a frame dump, holds an asyncio lock and wraps the answer in ``asyncio.wait_for``;
measured with 64 meters polled back to back that was most of the driver's CPU per request.
A read is one ``struct.pack``, one ``transport.write``, one future (the connection's one
timeout timer is re-armed only when it fires), and one ``unpack_from`` of the answer. It
keeps what the pymodbus client did for the driver: a connection at a time per request,
answers matched by transaction id (a late answer to a timed-out request is dropped),
exception responses, garbage discarded without dropping the connection (the request then
ends as a timeout), and the connection given up at the fifth timeout in a row (pymodbus's
countdown from ``retries + 3``) so the next attempt reconnects.

pymodbus's own retries and reconnect timers are switched off on the RTU line (``retries=0``,
``reconnect_delay=0``), and the TCP client has none: the driver decides when to retry, back
off and reconnect, so every attempt is counted and a dead device never delays the others
behind a client library's schedule. Everything here runs on the runtime's asyncio loop;
objects are created lazily on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from busguard.modbus.commstats import CRC, DISCONNECT, TIMEOUT
from busguard.recvbuf import ReceiveIntoBuffer

log = logging.getLogger("busguard.modbus")

EXCEPTION_NAMES = {
    0x01: "Illegal Function", 0x02: "Illegal Data Address", 0x03: "Illegal Data Value",
    0x04: "Server Device Failure", 0x05: "Acknowledge", 0x06: "Server Device Busy",
    0x08: "Memory Parity Error", 0x0A: "Gateway Path Unavailable",
    0x0B: "Gateway Target Device Failed to Respond",
}
FUNCTION_CODES = {"holding": 0x03, "input": 0x04, "write": 0x10}


class CommError(Exception):
    """No usable answer: ``kind`` is timeout, disconnect or crc."""

    def __init__(self, kind: str, detail: str, err: int = 0) -> None:
        super().__init__(detail)
        self.kind = kind
        self.errno = err


class ExceptionReply(Exception):
    """The device answered with exception ``code`` to ``function``."""

    def __init__(self, function: int, code: int) -> None:
        self.function = function
        self.code = code
        super().__init__(f"0x80 ({exception_name(code)}): exception code 0x{code:02X}")


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, "Unknown Exception")


def _timeout(detail: str) -> CommError:
    return CommError(TIMEOUT, f"Connection Timeout (Errno {errno.ETIMEDOUT}): {detail}",
                     errno.ETIMEDOUT)


async def _call(client: Any, op: str, unit: int, function: str, address: int,
                count_or_values: Any) -> list[int]:
    if op == "read":
        fn = client.read_holding_registers if function == "holding" else \
            client.read_input_registers
        rr = await fn(address, count=count_or_values, device_id=unit)
    else:
        values = list(count_or_values)
        rr = await client.write_registers(address, values, device_id=unit)
    if rr.isError():
        code = getattr(rr, "exception_code", 0)
        raise ExceptionReply(FUNCTION_CODES.get(function, 0) if op == "read" else 0x10, code)
    if op == "read":
        regs = list(rr.registers)
        if len(regs) != count_or_values:  # RTU has no transaction id: a late answer to
            # another request of the same unit can arrive instead; its length gives it away
            raise CommError(CRC, f"answer of {len(regs)} registers to a read of "
                                 f"{count_or_values} (a late answer to another request?)")
        return regs
    return []


async def _connect(client: Any) -> tuple[bool, str]:
    """Connect; any failure (refused, no such port, termios refusing the settings) -> False."""
    try:
        return bool(await client.connect()), ""
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # pyserial/termios errors are not all OSError
        return False, f": {exc}"


def guard_decoding(client: Any, on_garbage: Any) -> None:
    """Bytes pymodbus cannot decode raise inside ``data_received``; asyncio would then log a
    traceback and drop the connection for every garbage frame. Discard them instead (the
    request then ends as a timeout, counted by the caller) and tell ``on_garbage``."""
    orig = client.ctx.callback_data

    def safe(data: bytes, addr: tuple | None = None) -> int:
        try:
            return orig(data, addr=addr)
        except Exception as exc:
            on_garbage(exc)
            return len(data)

    client.ctx.callback_data = safe


_MBAP = struct.Struct(">HHH")             # transaction id, protocol id (0), length
_READ = struct.Struct(">HHHBBHH")         # MBAP + unit, function, address, count
_WRITE_HEAD = struct.Struct(">HHHBBHHB")  # MBAP + unit, 0x10, address, count, byte count
_REGS: dict[int, struct.Struct] = {}      # register count -> ">nH"
# pymodbus counted down from retries + 3 (retries = 0 here) and closed its connection at
# the timeout after the count went below zero: the fifth in a row
TIMEOUTS_BEFORE_CLOSE = 3


def _regs_struct(n: int) -> struct.Struct:
    st = _REGS.get(n)
    if st is None:
        st = _REGS[n] = struct.Struct(f">{n}H")
    return st


class _Lost(Exception):
    """The connection closed while a request waited for its answer."""


class MbapConnection(ReceiveIntoBuffer):
    """One Modbus TCP connection, one request at a time (the link's pool ensures it).

    Answers are received into one buffer per connection (:mod:`busguard.recvbuf`: a plain
    protocol's receives can each cost an mmap and a munmap of 256 KiB; docs/benchmarks.md).

    Frames are matched to the pending request by transaction id and function; anything else
    that parses as a frame (a late answer to a request that timed out) is dropped, and bytes
    that do not (a wrong protocol id or length, a function or byte count that does not fit
    the request) are discarded and reported to ``on_garbage`` while the connection stays up:
    the request then ends as a timeout, as it did with pymodbus.
    """

    def __init__(self, on_garbage: Callable[[], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self._on_garbage = on_garbage
        self._buf = bytearray()
        self._tid = 0
        self._pending: tuple[int, int, int, asyncio.Future] | None = None  # tid, fc, count
        self.until_close = TIMEOUTS_BEFORE_CLOSE
        # one timer per connection, not one per request: requests follow each other far
        # faster than they time out, so a timer made and cancelled per request was most of
        # the event loop's work per request. The timer is armed for the oldest deadline it
        # may have to enforce; when it fires for a request that has since been answered, it
        # re-arms itself for the deadline of the request now pending (or stops when idle).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.until_close = TIMEOUTS_BEFORE_CLOSE

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._buf.clear()
        p = self._pending
        if p is not None and not p[3].done():
            p[3].set_exception(_Lost(str(exc) if exc else "closed by the device"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if not buf and len(data) >= 8:  # the usual case: exactly one whole answer
            tid, proto, length = _MBAP.unpack_from(data)
            if proto == 0 and 2 <= length <= 254 and len(data) == 6 + length:
                self._frame(tid, data[7:])
                return
        buf += data
        while len(buf) >= 8:
            tid, proto, length = _MBAP.unpack_from(buf)
            if proto != 0 or not 2 <= length <= 254:  # not Modbus TCP: drop what we have
                buf.clear()
                self._on_garbage()
                return
            total = 6 + length
            if len(buf) < total:
                return
            pdu = bytes(buf[7:total])
            del buf[:total]
            self._frame(tid, pdu)

    def _frame(self, tid: int, pdu: bytes) -> None:
        p = self._pending
        if p is None or p[0] != tid or p[3].done():
            return  # a late answer to a request that already timed out
        _tid, fc, _count, fut = p
        got = pdu[0]
        if got == fc | 0x80 and len(pdu) >= 2:
            fut.set_result(pdu[1])  # an exception code
        elif got == fc and fc == 0x10 and len(pdu) >= 5:
            fut.set_result(None)
        elif got == fc and fc != 0x10 and len(pdu) >= 2 and len(pdu) >= 2 + pdu[1] and \
                not pdu[1] % 2:
            fut.set_result(pdu)
        else:
            self._on_garbage()

    def send(self, unit: int, fc: int, address: int, count_or_values: Any,
             timeout_s: float) -> asyncio.Future:
        """Send one request; the future gets its answer (the read PDU, None for a write, an
        int exception code), or TimeoutError ``timeout_s`` after now, or :class:`_Lost`.
        The caller awaits it, then calls :meth:`done` (no coroutine of its own per
        request)."""
        transport = self.transport
        if transport is None:
            raise _Lost("not connected")
        self._tid = tid = self._tid % 0xFFFF + 1
        if fc == 0x10:
            values = list(count_or_values)
            n = len(values)
            frame = _WRITE_HEAD.pack(tid, 0, 7 + 2 * n, unit, fc, address, n, 2 * n) + \
                _regs_struct(n).pack(*values)
            count = n
        else:
            count = int(count_or_values)
            frame = _READ.pack(tid, 0, 6, unit, fc, address, count)
        transport.write(frame)  # first: if it raises, nothing is left pending
        loop = asyncio.get_running_loop()
        fut = loop.create_future()  # the answer cannot come before the caller awaits it
        self._pending = (tid, fc, count, fut)
        self._deadline = deadline = loop.time() + timeout_s
        timer = self._timer
        if timer is None or self._timer_at > deadline or self._timer_loop is not loop:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at, self._timer_loop = deadline, loop
        return fut

    def _on_timer(self) -> None:
        self._timer = None
        p = self._pending
        if p is None or p[3].done():
            return  # idle: the next request arms it again
        if self._deadline <= self._timer_at:  # the pending request's own deadline
            p[3].set_exception(TimeoutError())
        else:  # armed for an earlier request: now for the pending one's deadline
            loop = self._timer_loop
            assert loop is not None
            self._timer = loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline

    def done(self, answered: bool) -> None:
        """The request ended; ``answered``: a frame came back for it."""
        self._pending = None
        if answered:
            self.until_close = TIMEOUTS_BEFORE_CLOSE


class TcpLink:
    """One Modbus TCP device; up to ``max_in_flight`` requests at once (one per connection)."""

    def __init__(self, host: str, port: int, max_in_flight: int = 1,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context  # Modbus/TCP Security (busguard status --tls-*)
        self.size = max_in_flight
        self.reconnects = 0
        self.garbage = 0
        self._pool: asyncio.Queue[MbapConnection] | None = None
        self._clients: list[MbapConnection] = []
        self._where = f"{host}:{port}"

    def describe(self) -> str:
        return self._where

    def _garbage(self) -> None:
        self.garbage += 1

    def _ensure_pool(self) -> asyncio.Queue[MbapConnection]:
        if self._pool is None:
            self._pool = asyncio.Queue()
            for _ in range(self.size):
                c = MbapConnection(self._garbage)
                self._clients.append(c)
                self._pool.put_nowait(c)
        return self._pool

    async def _connect(self, client: MbapConnection, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: client, self.host,
                                                          self.port, ssl=self.ssl), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, unreachable, no such host, connect timeout
            raise CommError(DISCONNECT, f"cannot connect to {self._where}",
                            errno.ECONNREFUSED) from exc
        self.reconnects += 1

    async def connect(self, timeout_s: float) -> None:
        """Open the pool's connections now (a tool says "cannot connect" before reading);
        the driver never needs this: a request connects when it finds none."""
        self._ensure_pool()
        for c in self._clients:
            if c.transport is None:
                await self._connect(c, timeout_s)

    async def request(self, op: str, unit: int, function: str, address: int,
                      count_or_values: Any, timeout_s: float,
                      gate: asyncio.Semaphore | None = None) -> tuple[list[int], float]:
        """One attempt; returns (registers, latency_s) or raises CommError/ExceptionReply."""
        pool = self._pool if self._pool is not None else self._ensure_pool()
        # a free connection is taken without a coroutine (Queue.get does the same then)
        client = pool.get_nowait() if not pool.empty() else await pool.get()
        try:
            if client.transport is None:
                await self._connect(client, timeout_s)
            read = op == "read"
            fc = (0x03 if function == "holding" else 0x04) if read else 0x10
            if gate is not None:
                await gate.acquire()
            try:
                t0 = time.perf_counter()
                answered = False
                try:
                    fut = client.send(unit, fc, address, count_or_values, timeout_s)
                    try:
                        answer = await fut
                        answered = True
                    finally:
                        client.done(answered)
                except _Lost as exc:
                    raise CommError(DISCONNECT, f"connection to {self._where} lost: {exc}",
                                    errno.ECONNRESET) from exc
                except TimeoutError as exc:
                    if client.until_close < 0:  # as pymodbus: give the connection up
                        client.close()
                        raise CommError(DISCONNECT, f"connection to {self._where} lost: no "
                                        f"answer to the last requests", errno.ECONNRESET
                                        ) from exc
                    client.until_close -= 1
                    raise _timeout(f"no answer from {self._where} unit {unit} within "
                                   f"{timeout_s * 1e3:g} ms") from exc
                latency = time.perf_counter() - t0
            finally:
                if gate is not None:
                    gate.release()
            if type(answer) is int:
                raise ExceptionReply(fc, answer)
            if not read:
                return [], latency
            count = int(count_or_values)
            have = answer[1] // 2
            if have < count:
                raise CommError(CRC, f"short answer: {have} of {count} registers")
            return list(_regs_struct(count).unpack_from(answer, 2)), latency
        finally:
            pool.put_nowait(client)

    def close(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()


class RtuLine:
    """One RS-485 bus. Shared (through ``DriverContext.shared``) by every device on the port."""

    def __init__(self, cfg: Mapping[str, Any], port_path: str) -> None:
        # cfg: a validated [[rs485]] entry (every option present, its declared default applied)
        self.name = cfg["name"] or port_path
        self.port = port_path
        self.baudrate = cfg["baudrate"]
        self.parity = cfg["parity"]
        self.stopbits = cfg["stopbits"]
        self.bytesize = cfg["bytesize"]
        self.timeout_s = cfg["timeout_ms"] / 1e3
        self.users = 0
        self.reconnects = 0
        self.crc_errors = 0
        self._lock: asyncio.Lock | None = None
        self._client: Any = None
        self._rx = 0

    def describe(self) -> str:
        return f"RS-485 line {self.name} ({self.port})"

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx += len(data)
        return data

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.close()

    async def request(self, op: str, unit: int, function: str, address: int,
                      count_or_values: Any, timeout_s: float,
                      gate: asyncio.Semaphore | None = None) -> tuple[list[int], float]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # FIFO: one request on the bus at a time
            if self._client is None:
                self._client = AsyncModbusSerialClient(
                    self.port, framer=FramerType.RTU, baudrate=self.baudrate,
                    bytesize=self.bytesize, parity=self.parity, stopbits=self.stopbits,
                    name=self.name, reconnect_delay=0, timeout=timeout_s, retries=0,
                    trace_packet=self._trace)
                guard_decoding(self._client, lambda exc: None)  # counted as crc by _rx
            client = self._client
            if not client.connected:
                ok, why = await _connect(client)
                if not ok:
                    raise CommError(DISCONNECT, f"cannot open {self.describe()}{why}", errno.EIO)
                self.reconnects += 1
            client.ctx.comm_params.timeout_connect = timeout_s
            async with gate if gate is not None else contextlib.nullcontext():
                self._rx = 0
                t0 = time.perf_counter()
                try:
                    regs = await _call(client, op, unit, function, address, count_or_values)
                except ModbusException as exc:
                    if self._rx:
                        self.crc_errors += 1
                        raise CommError(CRC, f"{self._rx} bytes on {self.describe()} but no "
                                        f"valid answer from unit {unit} (CRC/framing error or "
                                        f"garbage)") from exc
                    # a late answer may still come: let the line go quiet before the next
                    # request on it, so that answer cannot be taken for the next one's
                    await asyncio.sleep(min(timeout_s, QUIET_AFTER_TIMEOUT_S))
                    raise _timeout(f"no answer from unit {unit} on {self.describe()} within "
                                   f"{timeout_s * 1e3:g} ms") from exc
                except CommError:
                    self.crc_errors += 1
                    raise
                return regs, time.perf_counter() - t0

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


QUIET_AFTER_TIMEOUT_S = 0.05  # RS-485: silence kept after a timeout, before the next request

