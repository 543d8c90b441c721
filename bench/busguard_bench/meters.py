"""Simulated meters for the bench, in their own process: one Modbus TCP endpoint per meter.

Two back ends serve the same profile registers (encoded by the profile, so busguard's meter
driver decodes them like a real meter's):

- ``sim``: the simulator's own server (:class:`busguard.sim.serve.TcpMeterServer`, pymodbus),
  what ``busguard simulate`` runs; values come from this process, so the bench can move one.
- ``raw``: a minimal Modbus TCP responder (functions 3, 4, 6, 16 on a bytearray per meter,
  far cheaper per request than a pymodbus server). The polling-throughput measurement
  uses it so that the server is not the bottleneck: it measures the clients.

Commands: ``set`` (meter, point, value) answers the monotonic time the new value became
readable; ``stats`` answers the requests served and this process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections.abc import Mapping
from typing import Any

from busguard.modbus.profiles import Profile, load_profile
from busguard_bench.procs import self_usage, serve_commands

FUNCS = {3: "holding", 4: "input"}


def nominal_values(i: int, profile: Profile) -> dict[str, float]:
    """Plausible readings of a loaded tap-off (meter ``i`` differs a little from the next)."""
    cur = 180.0 + (i % 16) * 5.0
    base = {"voltage_l1_n_v": 277.0, "voltage_l2_n_v": 276.5, "voltage_l3_n_v": 277.4,
            "voltage_l1_l2_v": 480.1, "voltage_l2_l3_v": 479.6, "voltage_l3_l1_v": 480.3,
            "current_l1_a": cur, "current_l2_a": cur * 0.98, "current_l3_a": cur * 1.01,
            "current_n_a": 6.0, "power_kw": cur * 3 * 0.277 * 0.97,
            "apparent_power_kva": cur * 3 * 0.277, "power_factor": 0.97, "frequency_hz": 60.0,
            "thd_v_l1_pct": 2.1, "thd_v_l2_pct": 2.2, "thd_v_l3_pct": 2.0, "thd_i_l1_pct": 8.0,
            "thd_i_l2_pct": 8.3, "thd_i_l3_pct": 7.9, "energy_kwh": 12345.0 + i,
            "temp_c": 38.0, "residual_current_ma": 4.0}
    return {p.name: base.get(p.name, 1.0) for p in profile.points}


class RawMeter:
    """Registers of one meter as big-endian bytes, per function."""

    def __init__(self, profile: Profile, values: Mapping[str, float]) -> None:
        self.profile = profile
        size: dict[str, int] = {"holding": 0, "input": 0}
        for p in profile.points:
            size[p.function] = max(size[p.function], p.end)
        self.regs = {fn: bytearray(2 * n) for fn, n in size.items()}
        for name, v in values.items():
            self.set(name, v)

    def set(self, name: str, value: float) -> None:
        p = self.profile.point(name)
        words = p.encode(value)
        self.regs[p.function][2 * p.address:2 * p.address + 2 * len(words)] = struct.pack(
            f">{len(words)}H", *words)


class RawServer(asyncio.Protocol):
    """Modbus TCP (MBAP) framing over a :class:`RawMeter`; answers any unit id."""

    counters = {"requests": 0, "registers": 0}

    def __init__(self, meter: RawMeter) -> None:
        self.meter = meter
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        while len(buf) >= 8:
            tid, _proto, length, unit = struct.unpack_from(">HHHB", buf)
            total = 6 + length
            if len(buf) < total:
                break
            pdu = bytes(buf[7:total])
            del buf[:total]
            out.append(self.answer(tid, unit, pdu))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        fc = pdu[0]
        c = self.counters
        c["requests"] += 1
        body: bytes
        if fc in FUNCS and len(pdu) >= 5:
            addr, count = struct.unpack_from(">HH", pdu, 1)
            regs = self.meter.regs[FUNCS[fc]]
            if 1 <= count <= 125 and 2 * (addr + count) <= len(regs):
                c["registers"] += count
                body = bytes((fc, 2 * count)) + regs[2 * addr:2 * (addr + count)]
            else:
                body = bytes((fc | 0x80, 2))
        elif fc == 6 and len(pdu) >= 5:
            addr = struct.unpack_from(">H", pdu, 1)[0]
            regs = self.meter.regs["holding"]
            if 2 * addr + 2 <= len(regs):
                regs[2 * addr:2 * addr + 2] = pdu[3:5]
                body = pdu[:5]
            else:
                body = bytes((0x86, 2))
        elif fc == 16 and len(pdu) >= 6:
            addr, count = struct.unpack_from(">HH", pdu, 1)
            regs = self.meter.regs["holding"]
            if 2 * (addr + count) <= len(regs):
                regs[2 * addr:2 * (addr + count)] = pdu[6:6 + 2 * count]
                body = pdu[:5]
            else:
                body = bytes((0x90, 2))
        else:
            body = bytes((fc | 0x80, 1))
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


async def main_async(args: argparse.Namespace) -> None:
    profile = load_profile(args.profile)
    ports: list[int] = []
    meters: list[Any] = []
    closers = []
    loop = asyncio.get_running_loop()
    if args.backend == "raw":
        for i in range(args.count):
            meter = RawMeter(profile, nominal_values(i, profile))
            server = await loop.create_server(lambda m=meter: RawServer(m), args.host, 0)
            ports.append(server.sockets[0].getsockname()[1])
            meters.append(meter)
            closers.append(server)
    else:
        from busguard.sim.scenarios import NO_FAULTS
        from busguard.sim.serve import SimUnit, TcpMeterServer

        for i in range(args.count):
            # the simulator encodes once per values object: a change is a new dict
            holder = [nominal_values(i, profile)]
            unit = SimUnit(f"meter-{i}", 1, profile, lambda h=holder: (h[0], NO_FAULTS))
            srv = TcpMeterServer(unit, args.host, 0)
            await srv.start()
            ports.append(srv.port)
            meters.append(holder)
            closers.append(srv)

    async def set_value(msg: dict[str, Any]) -> dict[str, Any]:
        m = meters[int(msg["meter"])]
        if isinstance(m, RawMeter):
            m.set(msg["point"], float(msg["value"]))
        else:
            m[0] = {**m[0], msg["point"]: float(msg["value"])}
        return {"t": time.monotonic()}

    async def stats(_msg: dict[str, Any]) -> dict[str, Any]:
        if args.backend == "raw":
            counts = dict(RawServer.counters)
        else:
            counts = {"requests": sum(s.unit.stats.requests for s in closers), "registers": None}
        return {**counts, **self_usage(), "t": time.monotonic()}

    await serve_commands({"set": set_value, "stats": stats},
                         {"ports": ports, "backend": args.backend, "profile": profile.name})
    for c in closers:
        if args.backend == "raw":
            c.close()
        else:
            await c.stop()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.meters")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--backend", choices=("raw", "sim"), default="sim")
    ap.add_argument("--profile", default="generic-pqm")
    ap.add_argument("--host", default="127.0.0.1")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
