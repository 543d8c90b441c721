"""Modbus TCP clients for the bench (the DCIM side), in their own process.

A minimal client so that the client process costs little and the server under test is what
limits the rate and the latency: MBAP frames built with ``struct`` once, non-blocking sockets
on one ``selectors`` loop in a worker thread, one outstanding request per connection (as a
DCIM polls). One *map read* is the whole register map, read as the given blocks one after
the other on one connection; its latency is first request out to last reply in. A request's
latency is its send to its reply's last byte arriving in the client's socket (the kernel's
receive timestamp, SO_TIMESTAMPNS), so the client's own scheduling on a shared 2-core box does
not count as the server's; the latency to the client reading the reply is kept beside it
(``seen_request_*``; docs/benchmarks.md, step 10).

Why not asyncio streams: with ``StreamReader.readexactly`` and a task per connection the
client process spent far more CPU per request than this loop, and with 16 closed-loop
clients it added its own scheduling delays to the tail it measured (the figures:
docs/benchmarks.md, "What changed the figures", step 7).

Modes: ``closed`` (each client starts its next map read as soon as the last one finished: the
throughput test; run by the compiled client of :mod:`busguard_bench.native` when the bench
could build it) and ``paced`` (each client reads the map ``hz`` times per second on absolute
deadlines: the DCIM load of the scan-determinism test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import selectors
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from busguard_bench.native import NativeLoad
from busguard_bench.procs import self_usage, serve_commands
from busguard_bench.result import map_read_figures

RECONNECT_S = 0.05
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), which Python's socket module does not name
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("=qq")
ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
CONNECT_TIMEOUT_S = 2.0
_TID = struct.Struct(">H")
_LEN = struct.Struct(">H")


class MapReader:
    """One connection reading the map blocks ``[(fc, address, count), ...]`` in turn."""

    def __init__(self, host: str, port: int, blocks: list[tuple[int, int, int]],
                 unit: int = 1) -> None:
        self.host, self.port, self.unit = host, port, unit
        # the frame of each block after its transaction id (set per request)
        self.tails = [struct.pack(">HHBBHH", 0, 6, unit, fc, addr, count)
                      for fc, addr, count in blocks]
        self.sock: socket.socket | None = None
        self.tid = 0
        self.block = 0  # the block whose answer is awaited
        self.buf = bytearray()
        self.t_req = 0.0
        self.t_req_ns = 0  # CLOCK_REALTIME, the kernel stamp's clock
        self.t_map = 0.0
        self.ok = True
        self.unstamped = 0
        self.busy = False  # a map read is under way
        self.t_rx_ns = 0  # the kernel's receive stamp of the reply's last segment so far

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        self.sock = sock
        self.buf.clear()
        return sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def begin(self, now: float) -> None:
        """Start a map read with its first request."""
        self.busy, self.ok, self.block, self.t_map = True, True, 0, now
        self._send(now)

    def _send(self, now: float) -> None:
        assert self.sock is not None
        self.tid = (self.tid + 1) & 0xFFFF
        self.t_req = now
        self.t_req_ns = time.time_ns()
        self.t_rx_ns = 0
        self.sock.send(_TID.pack(self.tid) + self.tails[self.block])

    def readable(self, req_lat: list[float], seen_lat: list[float], clock: Any) -> bool:
        """Take what arrived; send the next request of the map. True when the map read ended
        (raises OSError when the connection went)."""
        assert self.sock is not None
        data, anc, _flags, _addr = self.sock.recvmsg(65536, ANCILLARY_BYTES)
        if not data:
            raise ConnectionResetError("server closed the connection")
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                self.t_rx_ns = sec * 1_000_000_000 + nsec
        buf = self.buf
        buf += data
        if len(buf) < 6 or len(buf) < 6 + _LEN.unpack_from(buf, 4)[0]:
            return False
        now = clock()
        seen = now - self.t_req
        stamped = (self.t_rx_ns - self.t_req_ns) * 1e-9
        if not self.t_rx_ns or not 0.0 <= stamped <= seen:
            self.unstamped += 1  # no stamp, or the wall clock stepped: what the loop saw
            stamped = seen
        req_lat.append(stamped)
        seen_lat.append(seen)
        if len(buf) > 7 and buf[7] & 0x80:
            self.ok = False
        buf.clear()  # one request in flight: nothing follows the reply
        self.block += 1
        if self.block < len(self.tails):
            self._send(now)
            return False
        self.busy = False
        return True


class Load:
    """``clients`` connections, closed loop or paced, until :meth:`finish` (worker thread)."""

    def __init__(self, args: argparse.Namespace, mode: str, clients: int, hz: float) -> None:
        self.args, self.mode, self.clients, self.hz = args, mode, clients, hz
        self.latencies: list[float] = []
        self.req_latencies: list[float] = []
        self.seen_latencies: list[float] = []
        self.errors = 0
        self.exceptions = 0
        self.late = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.t0 = self.t1 = 0.0
        self.cpu0 = 0.0
        self.readers: list[MapReader] = []

    def start(self) -> None:
        readers = [MapReader(self.args.host, self.args.port, self.args.blocks, self.args.unit)
                   for _ in range(self.clients)]
        for r in readers:
            r.connect()
        self.readers = readers
        self.t0 = time.monotonic()
        self.cpu0 = self_usage()["cpu_s"]
        self.thread = threading.Thread(target=self._guarded, args=(readers,),
                                       name="bench-clients", daemon=True)
        self.thread.start()

    def _guarded(self, readers: list[MapReader]) -> None:
        try:
            self._loop(readers)
        except BaseException as exc:  # reported by finish()
            self.failure = exc
        finally:
            for r in readers:
                r.close()

    def _loop(self, readers: list[MapReader]) -> None:
        clock = time.monotonic
        sel = selectors.DefaultSelector()
        period = 1.0 / self.hz if self.mode == "paced" and self.hz > 0 else 0.0
        # (when, index): paced map reads due, and reconnections after an error
        due: list[tuple[float, int]] = []
        now = clock()
        for i, r in enumerate(readers):
            assert r.sock is not None
            sel.register(r.sock, selectors.EVENT_READ, i)
            if period:
                heapq.heappush(due, (now + period * i / max(1, len(readers)), i))
            else:
                r.begin(now)
        grid = [t for t, _ in sorted(due, key=lambda x: x[1])] if period else []
        lat, req_lat, seen_lat = self.latencies, self.req_latencies, self.seen_latencies

        def failed(i: int, when: float) -> None:
            """Count it and drop the connection; closed loop: reconnect shortly; paced: the
            client's next slot (always in ``due``) reconnects."""
            r = readers[i]
            self.errors += 1
            if r.sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(r.sock)
            r.close()
            r.busy = False
            if not period:
                heapq.heappush(due, (when + RECONNECT_S, i))

        while not self.stop.is_set():
            now = clock()
            while due and due[0][0] <= now:
                _, i = heapq.heappop(due)
                r = readers[i]
                if period:  # the next slot first: whatever happens now, the client goes on
                    heapq.heappush(due, (self._next_slot(grid, i, period, now), i))
                try:
                    if r.sock is None:
                        sel.register(r.connect(), selectors.EVENT_READ, i)
                    if r.busy:  # the last map read is still going: this slot is missed
                        self.late += 1
                    else:
                        r.begin(now)
                except OSError:
                    failed(i, now)
            timeout = min(0.1, max(0.0, due[0][0] - clock())) if due else 0.1
            for key, _ in sel.select(timeout):
                i = key.data
                r = readers[i]
                try:
                    if r.readable(req_lat, seen_lat, clock):
                        end = clock()
                        lat.append(end - r.t_map)
                        if not r.ok:
                            self.exceptions += 1
                        if not period:
                            r.begin(end)
                except OSError:
                    failed(i, clock())
        sel.close()

    def _next_slot(self, grid: list[float], i: int, period: float, now: float) -> float:
        """The client's next deadline after ``now``; a slot already passed counts as late."""
        grid[i] += period
        if now > grid[i]:  # fell behind: skip to the grid, count it
            self.late += 1
            grid[i] += math.ceil((now - grid[i]) / period) * period
        return grid[i]

    def finish(self) -> dict[str, Any]:
        self.t1 = time.monotonic()
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.failure is not None:
            raise RuntimeError(f"client loop failed: {self.failure!r}") from self.failure
        return {"mode": self.mode, "clients": self.clients, "hz": self.hz, "client": "python",
                **map_read_figures(self.latencies, self.req_latencies, self.seen_latencies,
                                   self.t1 - self.t0, len(self.args.blocks)),
                "unstamped": sum(r.unstamped for r in self.readers),
                "errors": self.errors, "exception_replies": self.exceptions, "late": self.late,
                "cpu_s": self_usage()["cpu_s"] - self.cpu0}


async def main_async(args: argparse.Namespace) -> None:
    current: dict[str, Load | NativeLoad] = {}

    async def start(msg: dict[str, Any]) -> dict[str, Any]:
        mode, clients = msg.get("mode", "closed"), int(msg.get("clients", 1))
        load: Load | NativeLoad
        if mode == "closed" and args.native:
            load = NativeLoad(args.native, args.host, args.port, args.unit, args.blocks,
                              clients, args.native.parent)
        else:
            load = Load(args, mode, clients, float(msg.get("hz", 0.0)))
        load.start()
        current["load"] = load
        return {"started": True}

    async def stop(_msg: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(current.pop("load").finish)

    async def run(msg: dict[str, Any]) -> dict[str, Any]:
        await start(msg)
        await asyncio.sleep(float(msg["duration_s"]))
        return await stop(msg)

    await serve_commands({"start": start, "stop": stop, "run": run},
                         {"port": args.port, "blocks": args.blocks})


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.clients")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--blocks", type=json.loads, required=True,
                    help='JSON list of [function, address, count], e.g. [[3, 0, 125]]')
    ap.add_argument("--native", type=Path, default=None,
                    help="the compiled client (busguard_bench.native.build): closed-loop runs "
                         "use it instead of the Python loop")
    args = ap.parse_args()
    args.blocks = [tuple(int(x) for x in b) for b in args.blocks]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
