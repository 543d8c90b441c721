"""The Modbus TCP client of busguard's tools: ``busguard status``, ``recalibrate
--from-running``, the demo's wait for its meters and the bench's restart probe.

One client for all of them, and the same one the meter driver polls with:
:class:`~busguard.modbus.transport.TcpLink` (busguard's own MBAP client, TLS when given a
context), run to completion on a private event loop, so a tool blocks on each request the
way a script expects. Errors are the link's: :class:`~busguard.modbus.transport.CommError`
(timeout, errno 110; refused or reset) and :class:`~busguard.modbus.transport.ExceptionReply`
(0x02 illegal data address and the rest).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from types import TracebackType

from busguard.modbus.transport import CommError, ExceptionReply, TcpLink

__all__ = ["CommError", "ExceptionReply", "ModbusTcpClient"]


class ModbusTcpClient:
    """Blocking reads and writes of holding/input registers on one Modbus TCP server."""

    def __init__(self, host: str, port: int, timeout_s: float = 1.0, unit: int = 1,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.unit = unit
        self._loop = asyncio.new_event_loop()
        self._link = TcpLink(host, port, 1, ssl_context)

    def connect(self) -> bool:
        """Connect now; False when the server cannot be reached (refused, no route, TLS
        handshake refused, no answer within the timeout)."""
        try:
            self._loop.run_until_complete(self._link.connect(self.timeout_s))
        except CommError:
            return False
        return True

    def read(self, address: int, count: int, function: str = "holding") -> list[int]:
        """``count`` registers from ``address`` (0-based) of ``function`` ("holding" or
        "input")."""
        regs, _latency = self._loop.run_until_complete(self._link.request(
            "read", self.unit, function, address, count, self.timeout_s))
        return regs

    def write(self, address: int, values: Sequence[int]) -> None:
        """Function 16 (write multiple registers)."""
        self._loop.run_until_complete(self._link.request(
            "write", self.unit, "holding", address, [int(v) & 0xFFFF for v in values],
            self.timeout_s))

    def answers(self, address: int = 0, function: str = "holding") -> bool:
        """True when the server answers a two-register read at all (values or an exception
        reply, such as 0x02 for an unmapped address); False when it does not (refused,
        reset, timeout)."""
        try:
            self.read(address, 2, function)
        except ExceptionReply:
            return True
        except CommError:
            return False
        return True

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._link.close()
        self._loop.run_until_complete(asyncio.sleep(0))  # let the transport finish closing
        self._loop.close()

    def __enter__(self) -> ModbusTcpClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
