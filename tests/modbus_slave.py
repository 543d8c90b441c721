"""A small Modbus slave for tests, with fault injection (TCP on 127.0.0.1 and RTU on a pty).

Not pymodbus on purpose: the tests need faults pymodbus's server does not make (silence,
delays, garbage frames, bad CRCs, dropped connections, exception codes per address range).
Per unit id a :class:`Unit` holds holding/input registers and fault knobs:

- ``dead``: never answer; ``delay_s``: answer late;
- ``exceptions``: list of (function, first, last, code): requests touching those registers
  get that exception code;
- ``garbage``: answer with random bytes (TCP: a valid header with junk; RTU: junk);
- ``bad_crc``: RTU answers with a wrong CRC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import tty
from dataclasses import dataclass, field


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + struct.pack("<H", crc16(frame))


@dataclass
class Unit:
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    dead: bool = False
    delay_s: float = 0.0
    exceptions: list[tuple[int, int, int, int]] = field(default_factory=list)
    garbage: bool = False
    bad_crc: bool = False
    requests: int = 0
    writes: list[tuple[int, list[int]]] = field(default_factory=list)
    ignore_writes: bool = False

    def set(self, address: int, regs: list[int], function: str = "holding") -> None:
        table = self.holding if function == "holding" else self.input
        for i, r in enumerate(regs):
            table[address + i] = r & 0xFFFF


def handle_pdu(unit: Unit, pdu: bytes) -> bytes:
    """The response PDU for a request PDU (functions 3, 4, 6, 16)."""
    fc = pdu[0]
    if fc in (3, 4):
        addr, count = struct.unpack(">HH", pdu[1:5])
        for f, lo, hi, code in unit.exceptions:
            if f == fc and addr <= hi and addr + count - 1 >= lo:
                return bytes([fc | 0x80, code])
        if not 1 <= count <= 125:
            return bytes([fc | 0x80, 3])
        table = unit.holding if fc == 3 else unit.input
        data = b"".join(struct.pack(">H", table.get(addr + i, 0)) for i in range(count))
        return bytes([fc, len(data)]) + data
    if fc == 6:
        addr, value = struct.unpack(">HH", pdu[1:5])
        unit.writes.append((addr, [value]))
        if not unit.ignore_writes:
            unit.holding[addr] = value
        return pdu[:5]
    if fc == 16:
        addr, count = struct.unpack(">HH", pdu[1:5])
        for f, lo, hi, code in unit.exceptions:
            if f == 16 and addr <= hi and addr + count - 1 >= lo:
                return bytes([fc | 0x80, code])
        values = [struct.unpack(">H", pdu[6 + 2 * i:8 + 2 * i])[0] for i in range(count)]
        unit.writes.append((addr, values))
        if not unit.ignore_writes:
            for i, v in enumerate(values):
                unit.holding[addr + i] = v
        return pdu[:5]
    return bytes([fc | 0x80, 1])


class SlaveThread:
    """An asyncio loop in a thread serving TCP and/or RTU slaves; stop() ends it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.units: dict[int, Unit] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._fds: list[int] = []

    def unit(self, uid: int) -> Unit:
        return self.units.setdefault(uid, Unit())

    def call(self, coro, timeout: float = 5.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- TCP --------------------------------------------------------------------------------
    def serve_tcp(self, port: int = 0) -> int:
        async def start() -> int:
            srv = await asyncio.start_server(self._tcp_client, "127.0.0.1", port)
            self._servers.append(srv)
            return srv.sockets[0].getsockname()[1]
        return self.call(start())

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, uid = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                unit = self.units.get(uid)
                if unit is None or unit.dead:
                    continue
                unit.requests += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if unit.delay_s:
                        await asyncio.sleep(unit.delay_s)
                finally:
                    self.in_flight -= 1
                if unit.garbage:
                    writer.write(struct.pack(">HHHB", tid, 0, 4, uid) + os.urandom(3))
                    continue
                resp = handle_pdu(unit, pdu)
                writer.write(struct.pack(">HHHB", tid, 0, len(resp) + 1, uid) + resp)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def drop_connections(self) -> None:
        """Close every open TCP connection (the server keeps listening)."""
        async def drop() -> None:
            for w in self._writers:
                w.close()
            self._writers.clear()
        self.call(drop())

    def close_servers(self) -> None:
        async def close() -> None:
            for s in self._servers:
                s.close()
            self._servers.clear()
            for w in self._writers:
                w.close()
            self._writers.clear()
        self.call(close())

    # -- RTU over a pty ---------------------------------------------------------------------
    def serve_rtu(self) -> str:
        """Open a pty pair; the slave answers on the master side. Returns the port path."""
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._fds += [master, slave]
        path = os.ttyname(slave)
        os.set_blocking(master, False)
        buf = bytearray()

        def readable() -> None:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            buf.extend(data)
            while len(buf) >= 8:
                fc = buf[1]
                size = 9 + buf[6] if fc == 16 and len(buf) >= 7 else 8
                if len(buf) < size:
                    return
                frame = bytes(buf[:size])
                if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
                    buf.clear()  # resynchronise on the next request
                    return
                del buf[:size]
                self.loop.create_task(self._rtu_answer(master, frame))

        self.loop.call_soon_threadsafe(self.loop.add_reader, master, readable)
        return path

    async def _rtu_answer(self, fd: int, frame: bytes) -> None:
        uid = frame[0]
        unit = self.units.get(uid)
        if unit is None or unit.dead:
            return
        unit.requests += 1
        if unit.delay_s:
            await asyncio.sleep(unit.delay_s)
        if unit.garbage:
            out = bytes([uid]) + os.urandom(6)
        else:
            resp = bytes([uid]) + handle_pdu(unit, frame[1:-2])
            out = with_crc(resp)
            if unit.bad_crc:
                out = out[:-1] + bytes([out[-1] ^ 0xFF])
        with contextlib.suppress(OSError):
            os.write(fd, out)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.close_servers()

        async def wind_down() -> None:
            for fd in self._fds:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(fd)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            self.call(wind_down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def wait_until(pred, timeout: float = 8.0, what: str = "condition"):
    """Poll ``pred`` until it is true (bounded: fails the test after ``timeout`` s)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def serve_profile(unit: Unit, profile, values: dict[str, float]) -> None:
    """Load ``values`` (point name -> engineering value) into a unit using ``profile``."""
    for name, v in values.items():
        p = profile.point(name)
        unit.set(p.address, p.encode(v), p.function)


def point(rt, name: str) -> tuple[float, int]:
    """(value, quality) of a point in a runtime's live image."""
    i = rt.image.index[name]
    return rt.image.values[i], rt.image.quality[i]


def generic_values() -> tuple[object, dict[str, float]]:
    """The bundled generic-pqm profile and one distinct value per point (100, 101, ...)."""
    from busguard.modbus import load_profile

    gen = load_profile("generic-pqm")
    return gen, {p.name: 100.0 + i for i, p in enumerate(gen.points)}
