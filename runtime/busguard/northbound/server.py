"""The northbound Modbus/TCP (and Modbus/TCP Security) server, built on pymodbus's server.

pymodbus (3.16) gives the framing, PDU decoding and the function codes' datastore logic; it
has no client filter or connection cap and copies an ordinary datastore it is handed. So:

- the datastore is :class:`MapContext`, a ``ModbusServerContext`` pymodbus serves as is (the
  "old simulator" path of ``ModbusBaseServer``): its ``async_getValues`` answers from the
  current immutable register image, its ``async_setValues`` validates command writes;
- each connection gets a :class:`GuardedHandler` (pymodbus's ``ServerRequestHandler``) that
  decodes every frame in a segment, answers in order, refuses functions and writes by policy
  and applies the client's rate bucket;
- the listening sockets and the accept loop are ours: a client outside the allowlist or over
  a connection cap is closed at accept (RST), before any TLS handshake or Modbus byte.

Reads of holding and input registers (functions 3 and 4, nearly all a DCIM sends) skip
pymodbus: the handler parses the 12-byte frame with ``struct`` and answers with a slice of the
pre-encoded image (one immutable ``bytes`` per scan, so one request never mixes two scans) in
one ``transport.write``, from ``data_received``, without a PDU object, a task or re-encoding
the registers. Why: through pymodbus (frame -> PDU -> ``async_getValues`` unpacking the
slice into ints -> pymodbus packing them again -> ``pdu_send``, plus a task per burst) the
server answered well under half the map reads per second of a plain pymodbus server on the
same map; what is left in the fast path is the per-scan image encoding and the scan thread
holding the GIL (the measurements: docs/benchmarks.md, "Figures behind the code"). Writes,
refused functions and malformed frames still go through pymodbus, in order with the reads
(see :class:`GuardedHandler`).

Everything runs on a dedicated event loop thread ("busguard-northbound"), apart from the
drivers' I/O loop and the scan thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from busguard.hiddenimport import hidden

with hidden("aiohttp"):  # pymodbus.server without its simulator's web page: see there
    from pymodbus.constants import DeviceInformation, ExcCodes
    from pymodbus.datastore import ModbusServerContext
    from pymodbus.pdu import ExceptionResponse, ModbusPDU
    from pymodbus.pdu.device import DeviceInformationFactory, ModbusDeviceIdentification
    from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse
    from pymodbus.server import ModbusTcpServer
    from pymodbus.server.requesthandler import ServerRequestHandler

from busguard.errors import BusguardError
from busguard.northbound import mbap
from busguard.northbound.access import Clients, Counters, Policy, RefusalLog
from busguard.northbound.units import Identity, UnitTable
from busguard.recvbuf import ReceiveIntoBuffer

log = logging.getLogger("busguard.northbound")
GATEWAY_NO_RESPONSE = ExcCodes.GATEWAY_NO_RESPONSE  # 0x0B: no such unit id


class _Control:  # what DeviceInformationFactory reads: `.Identity`
    def __init__(self, identity: Identity) -> None:
        self.Identity = ModbusDeviceIdentification(info=identity.info())  # pymodbus's name


def identify(units: UnitTable, pdu: ReadDeviceInformationRequest) -> ModbusPDU:
    """The answer to a Read Device Identification request (43/14) at its unit id:
    pymodbus's own checks and encoding, that unit id's objects (:mod:`.units`)."""
    unit = pdu.dev_id
    identity = units.identity(unit)
    if identity is None:
        return ExceptionResponse(pdu.function_code, GATEWAY_NO_RESPONSE, device_id=unit,
                                 transaction=pdu.transaction_id)
    if not 0x00 <= pdu.object_id <= 0xFF or not 0x01 <= pdu.read_code <= 0x04:
        return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_VALUE,
                                 device_id=unit, transaction=pdu.transaction_id)
    info = DeviceInformationFactory.get(_Control(identity), pdu.read_code, pdu.object_id)
    if pdu.read_code == DeviceInformation.SPECIFIC and (
            0x07 <= pdu.object_id < 0x80 or not info.get(pdu.object_id)):
        return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_ADDRESS,
                                 device_id=unit, transaction=pdu.transaction_id)
    return ReadDeviceInformationResponse(read_code=pdu.read_code, information=info,
                                         dev_id=unit, transaction_id=pdu.transaction_id)


READ_FCS = frozenset({3, 4})
WRITE_FCS = frozenset({6, 16, 23})
IDENT_FC = 43  # Read Device Identification (MEI 14), per unit id: busguard.northbound.units
ALLOWED_FCS = READ_FCS | WRITE_FCS | {IDENT_FC}
MAX_BUFFER = 16384  # bytes received and not yet decoded, per connection
MAX_QUEUE = 512  # decoded requests not yet answered, per connection


def quiet_pymodbus() -> None:
    """pymodbus logs every frame it cannot use at ERROR (a protocol id other than 0: one
    line per frame, 1,500 lines/s under a fuzzer); busguard counts and logs those once per
    streak itself (:class:`busguard.northbound.access.RefusalLog`). Called when a server
    starts, in every process that serves or polls Modbus (``busguard.modbus.driver`` does the
    same for pollers); left alone when an operator set the "pymodbus" logger's level."""
    lg = logging.getLogger("pymodbus")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.CRITICAL)


class ImageSource(Protocol):
    def image(self) -> bytes: ...

    def write(self, func_code: int, address: int, values: Sequence[int],
              client: str) -> int | None:
        """None when done, else the Modbus exception code (0x02, 0x03) to answer."""


class MapContext(ModbusServerContext):
    """Serves the register image; pymodbus keeps this object (it copies only SimDevices)."""

    def __init__(self, source: ImageSource) -> None:  # no super(): no device tables to copy
        self.old_simulator = True
        self.simdevices = []
        self._source = source
        self._echo: tuple[int, list[int]] | None = None
        self.client = ""

    def device_ids(self) -> list[int]:
        return [0]

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        if func_code == 6 and self._echo is not None and self._echo[0] == address:
            return list(self._echo[1])  # the write-single echo: what was written
        if func_code not in (3, 4, 23):
            return ExcCodes.ILLEGAL_FUNCTION
        img = self._source.image()
        if count < 1 or address < 0 or 2 * (address + count) > len(img):
            return ExcCodes.ILLEGAL_ADDRESS
        return list(struct.unpack_from(f">{count}H", img, 2 * address))

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        self._echo = None
        rc = self._source.write(func_code, address, [int(v) for v in values], self.client)
        if rc is None:
            if func_code == 6:
                self._echo = (address, [int(v) for v in values])
            return None
        return ExcCodes(rc)


@dataclass
class _Conn:
    host: str
    port: int
    released: bool = False


# The frames of the fast path (busguard.northbound.mbap, shared with the early server)
MAX_MBAP_LENGTH = mbap.MAX_MBAP_LENGTH
_MBAP = mbap.MBAP
_READ_REQ = mbap.READ_REQ
_READ_LEN = _READ_REQ.size
MAX_READ_COUNT = mbap.MAX_READ_COUNT
MAX_UNSENT = 262144  # answers written and not yet taken by the client (asyncio's buffer)
SEND_BUFFER = 65536  # SO_SNDBUF of a DCIM connection (the kernel doubles it)

# (transaction id, unit id, function code, address, count): a read queued behind a slower
# request or a throttled one; answered from the image current when its turn comes.
_Read = tuple[int, int, int, int, int]


class GuardedHandler(ServerRequestHandler, ReceiveIntoBuffer):
    """One client connection: ordered answers, policy checks, rate bucket, idle tracking.

    It receives into one buffer per connection (:class:`busguard.recvbuf.ReceiveIntoBuffer`):
    as a plain protocol each request could cost an mmap and a munmap of 256 KiB.

    Read requests (functions 3 and 4, a well-formed 12-byte frame) are answered in
    ``data_received`` itself from the pre-encoded image: one unpack, one slice of one
    immutable image, one ``transport.write`` per received segment. pymodbus's path (framer,
    PDU object, ``datastore_update``, re-encoding the registers) cost about 6x the CPU per
    request (module docstring) and an asyncio task per burst; it still handles everything
    else (writes, refused or unknown functions, malformed frames) through :meth:`_work`, in
    order: once a request is queued there (or the client is over its rate), later reads
    queue behind it, so answers on a connection always keep the order of the requests.
    """

    # a receive plus the partial frame left from the last stays within MAX_BUFFER, so only a
    # client that really sends more than that without reading answers is dropped
    recv_bytes = MAX_BUFFER // 2

    def __init__(self, owner: ModbusTcpServer, nb: NorthboundServer, conn: _Conn) -> None:
        super().__init__(owner, None, None, None)
        self.nb = nb
        self.conn = conn
        self.host = conn.host
        # the last complete request (or the connect): the idle timeout and eviction go by
        # this, not by bytes, so a client trickling a byte now and then holds no slot
        self.last_request = time.monotonic()
        self._queue: deque[ModbusPDU | _Read] = deque()
        self._worker: asyncio.Task | None = None
        self._open = True
        self._closing = False  # unframeable input: answer what came before it, then close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.nb.handlers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self.nb.handlers.discard(self)
        self.nb.release(self.conn)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """pymodbus drops a buffer over one frame's size (pipelined requests); keep them, up to
        a bound: a client that sends more without reading answers is dropped."""
        if self._closing:
            return
        now = time.monotonic()
        buf = self.recv_buffer + data if self.recv_buffer else data
        if len(buf) > MAX_BUFFER or len(self._queue) > MAX_QUEUE:
            self._drop(f"sent {len(buf)} bytes")
            return
        cut = self._consume(buf, now)
        self.recv_buffer = buf[cut:] if cut < len(buf) else b""
        # reads are answered at once, so a client that pipelines reads and never takes the
        # answers fills the transport's buffer, not the queue: the same bound, on that side
        tr = self.transport
        if tr is not None and tr.get_write_buffer_size() > MAX_UNSENT:  # type: ignore[attr-defined]
            self._drop(f"left {tr.get_write_buffer_size()} bytes of answers")  # type: ignore[attr-defined]

    def _drop(self, what: str, why: str = "without reading answers") -> None:
        self.nb.refusals.note(f"connections dropped ({why})", f"{self.conn.host}: {what}")
        self.recv_buffer = b""
        self._queue.clear()
        if self.transport:  # abort: a close would first wait for it to read what is queued
            self.transport.abort()  # type: ignore[attr-defined]

    def _consume(self, data: bytes, now: float) -> int:
        """Answer or queue every complete frame in ``data``; returns the bytes used."""
        used = 0
        end = len(data)
        out: list[bytes] = []
        queue = self._queue
        bucket = None
        queued = len(queue)
        while used < end:
            if end - used >= _READ_LEN:
                tid, pid, length, unit, fc, addr, count = _READ_REQ.unpack_from(data, used)
                if pid == 0 and length == 6 and (fc == 3 or fc == 4):
                    used += _READ_LEN
                    if not queue and self._worker is None:
                        if bucket is None:
                            bucket = self.nb.clients.bucket(self.conn.host, now)
                        if bucket.try_take(now):
                            out.append(self._read_reply(tid, unit, fc, addr, count))
                            continue
                    queue.append((tid, unit, fc, addr, count))
                    continue
            n = self._frame(data, used)
            if n <= 0:
                if n < 0:  # no frame boundary can be found again: the stream is garbage
                    self._unframeable(-n)
                    used = end
                break
            used += n
        if out or len(queue) > queued:  # a whole Modbus request came (dropped frames: no)
            self.last_request = now
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[attr-defined]
        if queue and self._worker is None:
            self._worker = self.loop.create_task(self._work())
        self._close_when_answered()
        return used

    def _unframeable(self, length: int) -> None:
        """Garbage where a frame header should be: nothing in the stream says where a next
        frame would start. Reading stops; the whole requests before it are still answered
        (in order), then the connection is closed (:meth:`_close_when_answered`)."""
        self.nb.refusals.note("connections closed (unframeable stream)",
                              f"{self.conn.host}: an MBAP length of {length}")
        self._closing = True
        with contextlib.suppress(Exception):
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def _close_when_answered(self) -> None:
        if self._closing and not self._queue and self._worker is None and self.transport:
            self.transport.close()

    def _frame(self, data: bytes, used: int) -> int:
        """The frame at ``used``, framed by its MBAP header here (pymodbus's framer stops at
        a protocol id other than 0 and waits for more data, so the connection answered
        nothing more): a whole Modbus frame is decoded and queued (:meth:`_decode_one`); a
        whole frame of another protocol id is dropped, counted and logged once per streak.
        Returns the bytes used, 0 when the frame is not complete yet, or minus the length
        field when it cannot be a Modbus/TCP frame at all (the caller drops the connection:
        nothing in the stream says where the next frame starts)."""
        if len(data) - used < _MBAP.size:
            return 0
        _tid, pid, length = _MBAP.unpack_from(data, used)
        if length > MAX_MBAP_LENGTH:
            return -length
        n = _MBAP.size + length
        if len(data) - used < n:
            return 0
        if pid != 0 or length < 2:
            self.nb.counters.dropped_frames += 1
            self.nb.refusals.note("frames dropped (protocol id other than 0, or no function "
                                  "code)", f"{self.conn.host}: protocol id {pid}, "
                                  f"length {length}")
            return n
        self._decode_one(data[used:used + n])
        return n

    def _decode_one(self, raw: bytes) -> None:
        """pymodbus's framer and decoder on one whole frame: queue its PDU, or the exception
        answer: 0x01 (illegal function) for a function it does not know or one with the
        exception bit (>= 0x80) set, 0x03 for a known function it cannot decode."""
        fc = raw[7]
        try:
            _n, pdu = self.framer.handleFrame(raw, 0, 0)
        except Exception:  # ModbusIOException, or anything a fuzzed frame finds
            pdu = None
        if pdu is None or isinstance(pdu, ExceptionResponse) or fc >= 0x80:
            code = ExcCodes.ILLEGAL_VALUE if fc in ALLOWED_FCS else ExcCodes.ILLEGAL_FUNCTION
            pdu = ExceptionResponse(fc & 0x7F, code, device_id=raw[6],
                                    transaction=int.from_bytes(raw[0:2], "big"))
        self._queue.append(pdu)

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        """pymodbus's entry point; busguard's own ``data_received`` uses :meth:`_consume`."""
        return self._consume(data, time.monotonic())

    def _read_reply(self, tid: int, unit: int, fc: int, addr: int, count: int) -> bytes:
        """The answer frame to a read of ``count`` registers at ``addr`` of unit id
        ``unit``'s view: a slice of one image (one scan), or the exception pymodbus would
        give (0x03 for a count outside 1..125, 0x02 past the end of the view), or 0x0B for a
        unit id nobody has."""
        c = self.nb.counters
        c.requests += 1
        units = self.nb.units
        view = (0, None) if units is None else units.view(unit)
        answer, failed = mbap.read_answer(self.nb.source.image(), view, tid, unit, fc, addr,
                                          count)
        if view is not None and 1 <= count <= MAX_READ_COUNT:
            c.reads += 1  # counted as before the address check, as pymodbus's path does
        if failed:
            c.exceptions += 1
        return answer

    async def _work(self) -> None:
        try:
            while self._queue and self._open:
                item = self._queue.popleft()
                delay = self.nb.clients.bucket(self.conn.host, time.monotonic()).take(
                    time.monotonic())
                if delay > 0:
                    self.nb.counters.throttled += 1
                    with contextlib.suppress(Exception):
                        self.transport.pause_reading()  # type: ignore[attr-defined]
                    await asyncio.sleep(delay)
                    if not self._open:
                        return
                    if not self._closing:
                        with contextlib.suppress(Exception):
                            self.transport.resume_reading()  # type: ignore[attr-defined]
                if isinstance(item, tuple):
                    packet = self._read_reply(*item)
                else:
                    # framed here, not with pdu_send: that empties recv_buffer, which may
                    # hold the first part of the client's next request
                    packet = self.framer.buildFrame(await self._answer(item))
                if self._open and self.transport:
                    self.transport.write(packet)  # type: ignore[attr-defined]
        finally:
            self._worker = None
            self._close_when_answered()

    async def _answer(self, pdu: ModbusPDU) -> ModbusPDU:
        c = self.nb.counters
        c.requests += 1
        if isinstance(pdu, ExceptionResponse):
            c.exceptions += 1
            return pdu
        fc = pdu.function_code
        if fc not in ALLOWED_FCS:
            return self._exc(pdu, ExcCodes.ILLEGAL_FUNCTION)
        units = self.nb.units
        if units is not None:
            view = units.view(pdu.dev_id)
            if isinstance(pdu, ReadDeviceInformationRequest):
                c.reads += 1
                answer = identify(units, pdu)
                if isinstance(answer, ExceptionResponse):
                    c.exceptions += 1
                return answer
            if view is None:
                return self._exc(pdu, GATEWAY_NO_RESPONSE)
            if view[1] is not None and fc in WRITE_FCS:  # a device view has no commands
                return self._exc(pdu, ExcCodes.ILLEGAL_ADDRESS)
        elif fc == IDENT_FC:
            return self._exc(pdu, ExcCodes.ILLEGAL_FUNCTION)
        if fc in WRITE_FCS:
            if not self.nb.policy.may_write(self.conn.host):
                c.write_refused += 1
                return self._exc(pdu, ExcCodes.ILLEGAL_FUNCTION)
            c.writes += 1
        else:
            c.reads += 1
        ctx = self.server.context
        try:
            ctx.client = self.conn.host  # type: ignore[union-attr]
            response = await pdu.datastore_update(ctx, pdu.dev_id)  # type: ignore[arg-type]
        except Exception as exc:  # one line per streak: a fuzzer must not flood the log
            log.debug("northbound request %s from %s failed", fc, self.conn.host,
                      exc_info=True)
            self.nb.refusals.note("requests failed (answered 0x04)",
                                  f"{self.conn.host}: function {fc}: "
                                  f"{type(exc).__name__}: {exc}")
            return self._exc(pdu, ExcCodes.DEVICE_FAILURE)
        if isinstance(response, ExceptionResponse):
            c.exceptions += 1
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        return response

    def _exc(self, pdu: ModbusPDU, code: ExcCodes) -> ExceptionResponse:
        self.nb.counters.exceptions += 1
        return ExceptionResponse(pdu.function_code, code, device_id=pdu.dev_id,
                                 transaction=pdu.transaction_id)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    sslctx: ssl.SSLContext | None = None

    @property
    def kind(self) -> str:
        return "tls" if self.sslctx else "tcp"


class NorthboundServer:
    """Listening sockets, accept loop, idle sweeper and pymodbus server on its own loop."""

    def __init__(self, source: ImageSource, policy: Policy, endpoints: Sequence[Endpoint],
                 handshake_timeout_s: float = 10.0, units: UnitTable | None = None) -> None:
        self.source = source
        # which view each unit id serves (None: the whole map at every unit id)
        self.units = units
        self.policy = policy
        self.endpoints = list(endpoints)
        self.clients = Clients(policy)
        self.counters = Counters()
        self.refusals = RefusalLog(log)
        self.handlers: set[GuardedHandler] = set()
        self.bound: list[tuple[str, str, int]] = []  # (kind, host, port)
        self.handshake_timeout_s = max(0.1, min(handshake_timeout_s, policy.idle_timeout_s))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socks: list[socket.socket] = []
        self._tasks: list[asyncio.Task] = []
        self._pending: set[asyncio.Task] = set()
        self._server: ModbusTcpServer | None = None

    # -- lifecycle (any thread) --------------------------------------------------------------
    def start(self) -> None:
        """Bind every endpoint (errors raise here), then serve from a background thread."""
        quiet_pymodbus()
        from busguard.northbound.earlyserve import take_listener

        for ep in self.endpoints:
            inherited = take_listener(ep.host, ep.port) if ep.sslctx is None else None
            if inherited is not None:  # the early server's socket: never a refused connect
                inherited.setblocking(False)
                self._socks.append(inherited)
                self.bound.append((ep.kind, ep.host, inherited.getsockname()[1]))
                continue
            try:
                family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
                sock = socket.create_server((ep.host, ep.port), family=family, backlog=128,
                                            dualstack_ipv6=ep.host in ("::", ""))
            except OSError as exc:
                for s in self._socks:
                    s.close()
                self._socks.clear()
                raise BusguardError(f"modbus_server: cannot listen on {ep.host}:{ep.port} "
                                    f"({ep.kind}): {exc.strerror or exc}") from exc
            sock.setblocking(False)
            self._socks.append(sock)
            self.bound.append((ep.kind, ep.host, sock.getsockname()[1]))
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name="busguard-northbound", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise BusguardError("modbus_server: the server thread did not start")

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def setup() -> None:
            self._server = ModbusTcpServer(MapContext(self.source), address=("127.0.0.1", 0))
            for sock, ep in zip(self._socks, self.endpoints, strict=True):
                self._tasks.append(loop.create_task(self._accept(sock, ep.sslctx)))
            self._tasks.append(loop.create_task(self._sweep()))

        loop.run_until_complete(setup())
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        def shutdown() -> None:
            for t in self._tasks:
                t.cancel()
            for s in self._socks:
                s.close()
            for h in list(self.handlers):
                if h.transport:
                    h.transport.close()
            loop.call_later(0.05, loop.stop)

        if loop.is_running():
            loop.call_soon_threadsafe(shutdown)
            self._thread.join(timeout=5)
        self._loop = None

    def call_soon(self, fn: Callable[[], object]) -> bool:
        """Run ``fn`` on the server's loop (from any thread); False when it is not running."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def adopt(self, sock: socket.socket, pending: bytes = b"") -> None:
        """Serve a connection the early server accepted (:mod:`busguard.northbound.
        earlyserve`), with the bytes of a request it had not completed; from any thread.
        It is admitted like a new one (counted, its client's cap), never refused: it was
        admitted already by the same rules."""
        loop = self._loop
        if loop is None or loop.is_closed():
            sock.close()
            return

        def take() -> None:
            try:
                host, port = sock.getpeername()[:2]
            except OSError:  # gone meanwhile
                sock.close()
                return
            self.clients.admit(str(host))
            self.counters.accepted += 1
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            task = loop.create_task(self._serve(sock, _Conn(str(host), int(port)), None,
                                                pending))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # closed meanwhile
            sock.close()

    def port(self, kind: str = "tcp") -> int:
        for k, _h, p in self.bound:
            if k == kind:
                return p
        raise KeyError(kind)

    def status(self) -> dict[str, Any]:
        return {"listening": [f"{k} {h}:{p}" for k, h, p in self.bound],
                "connections": self.clients.total,
                "clients": dict(self.clients.per_client), **self.counters.as_dict()}

    # -- I/O thread ------------------------------------------------------------------------
    def release(self, conn: _Conn) -> None:
        if not conn.released:
            conn.released = True
            self.clients.release(conn.host)

    async def _accept(self, lsock: socket.socket, sslctx: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # sock_accept returns without yielding while connections wait in the backlog:
            # under a connection flood this loop would run alone and every client's request
            # wait behind it (measured: 1 s p99 for a DCIM read). One accept per turn of the
            # event loop keeps the answers going between the resets.
            await asyncio.sleep(0)
            try:
                sock, addr = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and friends: back off, keep the listener
                log.warning("northbound accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            host, port = str(addr[0]), int(addr[1])
            why = self.clients.admit(host)
            if why == "cap" and self._evict_for(host):
                why = self.clients.admit(host)
            if why:
                if why == "allowlist":
                    self.counters.refused_allowlist += 1
                else:
                    self.counters.refused_cap += 1
                self.refusals.note(f"connections refused ({why})", f"{host}:{port}")
                _reset(sock)
                continue
            self.counters.accepted += 1
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # the kernel's share of unsent answers, fixed instead of autotuned up to
            # megabytes: bounded memory per connection, and a client that sends without
            # reading fills MAX_UNSENT (and is dropped) after this much, not after 4 MB
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            task = loop.create_task(self._serve(sock, _Conn(host, port), sslctx))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _evict_for(self, host: str) -> bool:
        """The cap is full: close the connection :meth:`Clients.victim` picks, if any (its
        slot is free at once, before its ``connection_lost`` runs); True when one was."""
        victim = self.clients.victim(host, [h for h in self.handlers if not h.conn.released],
                                     time.monotonic())
        if victim is None:
            return False
        assert isinstance(victim, GuardedHandler)
        self.counters.evicted += 1
        self.refusals.note("idle-ish connections evicted for a newcomer (cap full)",
                           f"{victim.conn.host}:{victim.conn.port} for {host}")
        self.release(victim.conn)
        victim._open = False
        if victim.transport:
            victim.transport.abort()  # type: ignore[attr-defined]
        return True

    async def _serve(self, sock: socket.socket, conn: _Conn,
                     sslctx: ssl.SSLContext | None, pending: bytes = b"") -> None:
        loop = asyncio.get_running_loop()
        server = self._server
        assert server is not None
        factory: Callable[[], GuardedHandler] = lambda: GuardedHandler(server, self, conn)  # noqa: E731
        try:
            if sslctx is None:
                _tr, handler = await loop.connect_accepted_socket(factory, sock)
                if pending:  # the start of a request the early server had received
                    handler.data_received(pending)
            else:
                await loop.connect_accepted_socket(
                    factory, sock, ssl=sslctx, ssl_handshake_timeout=self.handshake_timeout_s)
        except Exception as exc:  # TLS handshake failed (no/invalid client cert), reset...
            self.counters.tls_failed += 1
            log.info("northbound: %s:%d dropped during %s set-up: %s", conn.host, conn.port,
                     "TLS" if sslctx else "TCP", exc)
            self.release(conn)
            with contextlib.suppress(OSError):
                sock.close()

    async def _sweep(self) -> None:
        idle = self.policy.idle_timeout_s
        every = max(0.02, min(1.0, idle / 4))
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            self.clients.prune(now)
            for h in list(self.handlers):
                if now - h.last_request > idle and h.transport:
                    self.counters.closed_idle += 1
                    h.transport.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): no TIME_WAIT, the peer learns at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
