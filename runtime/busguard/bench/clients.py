"""Modbus TCP clients for the bench (the DCIM side), in their own process.

A minimal client (MBAP frames built with ``struct``, asyncio streams, one outstanding request
per connection, as a DCIM polls) so that the client process costs little and the server under
test is what limits the rate. One *map read* is the whole register map, read as the given
blocks one after the other on one connection; its latency is first request out to last reply
in.

Modes: ``closed`` (each client starts its next map read as soon as the last one finished: the
throughput test) and ``paced`` (each client reads the map ``hz`` times per second on absolute
deadlines: the DCIM load of the scan-determinism test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import struct
import time
from typing import Any

from busguard.bench.procs import self_usage, serve_commands
from busguard.bench.result import pct


class MapReader:
    """One connection reading the map blocks ``[(fc, address, count), ...]``."""

    def __init__(self, host: str, port: int, blocks: list[tuple[int, int, int]],
                 unit: int = 1) -> None:
        self.host, self.port, self.unit = host, port, unit
        self.frames = [struct.pack(">HHHBBHH", 0, 0, 6, unit, fc, addr, count)
                       for fc, addr, count in blocks]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tid = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def read_map(self, req_lat: list[float]) -> bool:
        """One full map read (each request's latency appended to ``req_lat``); False when a
        request got a Modbus exception reply."""
        assert self.reader is not None and self.writer is not None
        ok = True
        clock = time.monotonic
        for frame in self.frames:
            self.tid = (self.tid + 1) & 0xFFFF
            t = clock()
            self.writer.write(struct.pack(">H", self.tid) + frame[2:])
            head = await self.reader.readexactly(8)
            length = struct.unpack_from(">H", head, 4)[0]
            await self.reader.readexactly(length - 2)
            req_lat.append(clock() - t)
            if head[7] & 0x80:
                ok = False
        return ok

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


class Load:
    def __init__(self, args: argparse.Namespace, mode: str, clients: int, hz: float) -> None:
        self.args, self.mode, self.clients, self.hz = args, mode, clients, hz
        self.latencies: list[float] = []
        self.req_latencies: list[float] = []
        self.errors = 0
        self.exceptions = 0
        self.late = 0
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.t0 = self.t1 = 0.0
        self.cpu0 = 0.0

    async def start(self) -> None:
        readers = [MapReader(self.args.host, self.args.port, self.args.blocks, self.args.unit)
                   for _ in range(self.clients)]
        await asyncio.gather(*(r.connect() for r in readers))
        self.t0 = time.monotonic()
        self.cpu0 = self_usage()["cpu_s"]
        self.tasks = [asyncio.create_task(self._client(r, i)) for i, r in enumerate(readers)]

    async def _client(self, r: MapReader, i: int) -> None:
        period = 1.0 / self.hz if self.hz > 0 else 0.0
        next_t = time.monotonic() + (period * i / max(1, self.clients))
        lat = self.latencies
        try:
            while not self.stop.is_set():
                if period:
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_t += period
                    now = time.monotonic()
                    if now > next_t:  # fell behind: skip to the grid, count it
                        self.late += 1
                        next_t += math.ceil((now - next_t) / period) * period
                t = time.monotonic()
                try:
                    ok = await r.read_map(self.req_latencies)
                except (OSError, asyncio.IncompleteReadError):
                    self.errors += 1
                    await asyncio.sleep(0.05)
                    with contextlib.suppress(OSError):
                        await r.connect()
                    continue
                lat.append(time.monotonic() - t)
                if not ok:
                    self.exceptions += 1
        finally:
            await r.close()

    async def finish(self) -> dict[str, Any]:
        self.t1 = time.monotonic()
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        wall = self.t1 - self.t0
        lat = self.latencies
        return {"mode": self.mode, "clients": self.clients, "hz": self.hz,
                "reads": len(lat), "wall_s": wall,
                "reads_per_s": len(lat) / wall if wall > 0 else 0.0,
                "requests_per_map": len(self.args.blocks),
                "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                "max_ms": max(lat) * 1e3 if lat else math.nan,
                "request_p50_ms": pct(self.req_latencies, 50) * 1e3,
                "request_p99_ms": pct(self.req_latencies, 99) * 1e3,
                "errors": self.errors, "exception_replies": self.exceptions, "late": self.late,
                "cpu_s": self_usage()["cpu_s"] - self.cpu0}


async def main_async(args: argparse.Namespace) -> None:
    current: dict[str, Load] = {}

    async def start(msg: dict[str, Any]) -> dict[str, Any]:
        load = Load(args, msg.get("mode", "closed"), int(msg.get("clients", 1)),
                    float(msg.get("hz", 0.0)))
        await load.start()
        current["load"] = load
        return {"started": True}

    async def stop(_msg: dict[str, Any]) -> dict[str, Any]:
        return await current.pop("load").finish()

    async def run(msg: dict[str, Any]) -> dict[str, Any]:
        await start(msg)
        await asyncio.sleep(float(msg["duration_s"]))
        return await stop(msg)

    await serve_commands({"start": start, "stop": stop, "run": run},
                         {"port": args.port, "blocks": args.blocks})


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m busguard.bench.clients")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--blocks", type=json.loads, required=True,
                    help='JSON list of [function, address, count], e.g. [[3, 0, 125]]')
    args = ap.parse_args()
    args.blocks = [tuple(int(x) for x in b) for b in args.blocks]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
