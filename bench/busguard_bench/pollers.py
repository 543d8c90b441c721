"""The polling baseline: a hand-written pymodbus async client loop, in its own process.

One ``AsyncModbusTcpClient`` per meter, each reading the same register blocks busguard's
meter driver plans for the profile (:func:`busguard.modbus.planner.plan_reads`), back to back,
as fast as the meter answers: what a competent engineer would write in twenty lines, with no
decoding, quality, statistics or process image. ``run`` answers the requests completed and
this process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from busguard.modbus.planner import plan_reads
from busguard.modbus.profiles import load_profile
from busguard_bench.procs import self_usage, serve_commands


async def main_async(args: argparse.Namespace) -> None:
    profile = load_profile(args.profile)
    blocks = [(b.function, b.address, b.count) for b in plan_reads(profile.points)]
    clients = [AsyncModbusTcpClient(args.host, port=p, retries=0, reconnect_delay=0)
               for p in args.ports]

    async def poll(client: AsyncModbusTcpClient, stop: asyncio.Event, counts: list[int]
                   ) -> None:
        while not stop.is_set():
            for fn, addr, count in blocks:
                if fn == "holding":
                    rr = await client.read_holding_registers(addr, count=count, device_id=1)
                else:
                    rr = await client.read_input_registers(addr, count=count, device_id=1)
                counts[0 if not rr.isError() else 1] += 1

    async def run(msg: dict[str, Any]) -> dict[str, Any]:
        await asyncio.gather(*(c.connect() for c in clients))
        stop = asyncio.Event()
        counts = [0, 0]
        cpu0, t0 = self_usage()["cpu_s"], time.monotonic()
        tasks = [asyncio.create_task(poll(c, stop, counts)) for c in clients]
        await asyncio.sleep(float(msg["duration_s"]))
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        wall, cpu = time.monotonic() - t0, self_usage()["cpu_s"] - cpu0
        return {"requests": counts[0], "errors": counts[1], "wall_s": wall, "cpu_s": cpu}

    await serve_commands({"run": run}, {"meters": len(clients), "blocks": blocks})
    for c in clients:
        c.close()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.pollers")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--profile", default="generic-pqm")
    ap.add_argument("ports", type=int, nargs="+")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
