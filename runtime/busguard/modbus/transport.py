"""The only module that talks to pymodbus on the client side (pinned >=3.16,<3.17).

A *link* carries requests to devices and turns every outcome into one of four results:
registers (or a completed write), :class:`ExceptionReply` (the device answered with a Modbus
exception), or :class:`CommError` of kind ``timeout`` (errno 110), ``disconnect`` (refused,
reset) or ``crc`` (bytes came back but no valid frame: CRC/framing error or garbage).

- :class:`TcpLink`: one device (host:port), a pool of up to ``max_in_flight`` connections.
- :class:`RtuLine`: one RS-485 bus (serial port); a FIFO lock serialises its requests, several
  unit ids share it, and the per-request timeout is the requesting device's own.

pymodbus's own retries and reconnect timers are switched off (``retries=0``,
``reconnect_delay=0``): the driver decides when to retry, back off and reconnect, so every
attempt is counted and a dead device never delays the others behind pymodbus's schedule.
Everything here runs on the runtime's asyncio loop; objects are created lazily on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from busguard.modbus.commstats import CRC, DISCONNECT, TIMEOUT

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
        if len(regs) < count_or_values:
            raise CommError(CRC, f"short answer: {len(regs)} of {count_or_values} registers")
        return regs[:count_or_values]
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


class TcpLink:
    """One Modbus TCP device; up to ``max_in_flight`` requests at once (one per connection)."""

    def __init__(self, host: str, port: int, max_in_flight: int = 1) -> None:
        self.host = host
        self.port = port
        self.size = max_in_flight
        self.reconnects = 0
        self.garbage = 0
        self._pool: asyncio.Queue[Any] | None = None
        self._clients: list[Any] = []

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def _garbage(self, exc: Exception) -> None:
        self.garbage += 1

    def _ensure_pool(self) -> asyncio.Queue[Any]:
        if self._pool is None:
            self._pool = asyncio.Queue()
            for i in range(self.size):
                c = AsyncModbusTcpClient(self.host, port=self.port, name=f"{self.host}:{i}",
                                         reconnect_delay=0, timeout=1.0, retries=0)
                guard_decoding(c, self._garbage)
                self._clients.append(c)
                self._pool.put_nowait(c)
        return self._pool

    async def request(self, op: str, unit: int, function: str, address: int,
                      count_or_values: Any, timeout_s: float,
                      gate: asyncio.Semaphore | None = None) -> tuple[list[int], float]:
        """One attempt; returns (registers, latency_s) or raises CommError/ExceptionReply."""
        pool = self._ensure_pool()
        client = await pool.get()
        try:
            if not client.connected:
                client.ctx.comm_params.timeout_connect = timeout_s
                ok, why = await _connect(client)
                if not ok:
                    raise CommError(DISCONNECT, f"cannot connect to {self.describe()}{why}",
                                    errno.ECONNREFUSED)
                self.reconnects += 1
            client.ctx.comm_params.timeout_connect = timeout_s
            async with gate if gate is not None else contextlib.nullcontext():
                t0 = time.perf_counter()
                try:
                    regs = await _call(client, op, unit, function, address, count_or_values)
                except ModbusException as exc:
                    if not client.connected:
                        raise CommError(DISCONNECT, f"connection to {self.describe()} lost: "
                                        f"{exc}", errno.ECONNRESET) from exc
                    raise _timeout(f"no answer from {self.describe()} unit {unit} within "
                                   f"{timeout_s * 1e3:g} ms") from exc
                return regs, time.perf_counter() - t0
        finally:
            pool.put_nowait(client)

    def close(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()


class RtuLine:
    """One RS-485 bus. Shared (through ``DriverContext.shared``) by every device on the port."""

    def __init__(self, cfg: Mapping[str, Any], port_path: str) -> None:
        self.name = cfg.get("name") or port_path
        self.port = port_path
        self.baudrate = int(cfg.get("baudrate", 19200))
        self.parity = str(cfg.get("parity", "N"))
        self.stopbits = int(cfg.get("stopbits", 1))
        self.bytesize = int(cfg.get("bytesize", 8))
        self.timeout_s = float(cfg.get("timeout_ms", 500.0)) / 1e3
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


def write_values(values: Sequence[int]) -> list[int]:
    return [int(v) & 0xFFFF for v in values]
