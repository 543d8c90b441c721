"""busguard's own Modbus TCP client (TcpLink over MbapConnection), against a scripted server:
answers matched by transaction id (a late answer is dropped), exception replies, garbage kept
off the values, the connection given up at the fifth timeout in a row, writes (function 16),
one timeout timer per connection."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from busguard.modbus.commstats import CRC, DISCONNECT, TIMEOUT
from busguard.modbus.transport import CommError, ExceptionReply, TcpLink

Answer = Callable[[int, int, bytes], bytes | None]  # (tid, unit, pdu) -> frame to send


async def _serve(answer: Answer) -> tuple[asyncio.AbstractServer, int, list[int]]:
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            while True:
                tid, _p, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                out = answer(tid, unit, await reader.readexactly(length - 1))
                if out:
                    writer.write(out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], conns


def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _regs(tid: int, unit: int, pdu: bytes) -> bytes:
    _fc, _addr, count = struct.unpack(">BHH", pdu[:5])
    return _frame(tid, unit, bytes((pdu[0], 2 * count)) + struct.pack(f">{count}H",
                                                                       *range(count)))


def test_reads_writes_exceptions_and_a_late_answer_dropped() -> None:
    async def main() -> None:
        held: list[bytes] = []

        def answer(tid: int, unit: int, pdu: bytes) -> bytes | None:
            addr = struct.unpack(">H", pdu[1:3])[0]
            if pdu[0] == 0x10:
                return _frame(tid, unit, pdu[:5])
            if addr == 7:
                return _frame(tid, unit, bytes((pdu[0] | 0x80, 0x02)))
            if addr == 9:  # answer late: after the next request was sent
                held.append(_regs(tid, unit, pdu))
                return None
            late = held.pop() if held else b""
            return late + _regs(tid, unit, pdu)

        srv, port, conns = await _serve(answer)
        link = TcpLink("127.0.0.1", port)
        regs, lat = await link.request("read", 1, "holding", 0, 4, 1.0)
        assert regs == [0, 1, 2, 3] and lat > 0
        assert (await link.request("read", 1, "input", 0, 2, 1.0))[0] == [0, 1]
        with pytest.raises(ExceptionReply) as exc:
            await link.request("read", 1, "holding", 7, 2, 1.0)
        assert (exc.value.function, exc.value.code) == (0x03, 0x02)
        with pytest.raises(CommError) as lost:
            await link.request("read", 1, "holding", 9, 3, 0.05)
        assert lost.value.kind == TIMEOUT and lost.value.errno == 110
        # the late 3-register answer arrives first and must not be taken for this one
        assert (await link.request("read", 1, "holding", 0, 5, 1.0))[0] == [0, 1, 2, 3, 4]
        assert (await link.request("write", 1, "holding", 3, [1, 2], 1.0))[0] == []
        assert link.reconnects == 1 and len(conns) == 1
        link.close()
        srv.close()

    asyncio.run(main())


def test_garbage_short_answers_and_giving_up_a_silent_connection() -> None:
    async def main() -> None:
        mode = {"m": "garbage"}

        def answer(tid: int, unit: int, pdu: bytes) -> bytes | None:
            if mode["m"] == "garbage":
                return b"\xff" * 12
            if mode["m"] == "short":
                return _frame(tid, unit, bytes((pdu[0], 2, 0, 1)))
            if mode["m"] == "silent":
                return None
            return _regs(tid, unit, pdu)

        srv, port, conns = await _serve(answer)
        link = TcpLink("127.0.0.1", port)
        with pytest.raises(CommError) as e:
            await link.request("read", 1, "holding", 0, 2, 0.05)
        assert e.value.kind == TIMEOUT and link.garbage == 1
        mode["m"] = "short"
        with pytest.raises(CommError) as e:
            await link.request("read", 1, "holding", 0, 2, 1.0)
        assert e.value.kind == CRC
        mode["m"] = "silent"
        kinds = []
        for _ in range(5):
            with pytest.raises(CommError) as e:
                await link.request("read", 1, "holding", 0, 2, 0.02)
            kinds.append(e.value.kind)
        assert kinds == [TIMEOUT] * 4 + [DISCONNECT]
        mode["m"] = "ok"
        assert (await link.request("read", 1, "holding", 0, 2, 1.0))[0] == [0, 1]
        assert link.reconnects == 2 and len(conns) == 2  # a new connection after giving up
        srv.close()
        await srv.wait_closed()
        link.close()
        with pytest.raises(CommError) as e:
            await link.request("read", 1, "holding", 0, 2, 0.5)
        assert e.value.kind == DISCONNECT

    asyncio.run(main())


class _Wire:
    """A transport that keeps what was written."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def test_one_timer_per_connection_enforces_each_request_s_own_timeout() -> None:
    from busguard.modbus.transport import MbapConnection

    async def main() -> None:
        conn = MbapConnection(lambda: None)
        wire = _Wire()
        conn.connection_made(wire)  # type: ignore[arg-type]

        def answer_last() -> None:
            tid = struct.unpack(">H", wire.sent[-1][:2])[0]
            conn.data_received(_frame(tid, 1, bytes((3, 4, 0, 1, 0, 2))))

        long = conn.send(1, 3, 0, 2, 30.0)  # the timer is armed 30 s ahead
        answer_last()
        assert long.result()[2:] == b"\x00\x01\x00\x02"
        conn.done(True)
        short = conn.send(1, 3, 0, 2, 0.01)  # must not wait for the 30 s timer
        await asyncio.wait({short}, timeout=10.0)
        assert short.done() and isinstance(short.exception(), TimeoutError)
        conn.done(False)
        quick = conn.send(1, 3, 0, 2, 0.01)  # answered: its timer will fire for nothing
        answer_last()
        conn.done(True)
        later = conn.send(1, 3, 0, 2, 30.0)
        await asyncio.sleep(0.05)  # the 0.01 s timer fired, re-armed for this one's deadline
        assert quick.done() and not later.done()
        answer_last()
        assert later.result()
        conn.done(True)
        conn.close()

    asyncio.run(main())
