"""The 1-Wire side of the load, in its own process: a sysfs-shaped tree of DS18B20 probes.

Every ``--every`` seconds each probe's ``w1_slave`` file is rewritten (atomically, as the
simulator does, through :mod:`busguard.w1.tree`) with a slowly moving temperature, so the
runtime's 1-Wire driver reads real files in the kernel's format.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from busguard.w1.tree import write_sensor_file
from busguard_bench.procs import self_usage, serve_commands


def sensor_ids(count: int) -> list[str]:
    return [f"28-0000be{i:06x}" for i in range(count)]


async def main_async(args: argparse.Namespace) -> None:
    ids = sensor_ids(args.count)
    writes = [0]

    def write_all(t: float) -> None:
        for i, sid in enumerate(ids):
            write_sensor_file(args.dir, sid, 35.0 + 3.0 * math.sin(t / 30.0 + i))
        writes[0] += len(ids)

    write_all(time.monotonic())

    async def writer() -> None:
        while True:
            await asyncio.sleep(args.every)
            write_all(time.monotonic())

    task = asyncio.create_task(writer())

    async def stats(_msg: dict[str, Any]) -> dict[str, Any]:
        return {"writes": writes[0], **self_usage()}

    await serve_commands({"stats": stats}, {"ids": ids, "dir": args.dir})
    task.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.probes")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--every", type=float, default=1.0)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
