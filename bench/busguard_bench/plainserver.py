"""The northbound baseline: a plain pymodbus Modbus TCP server, in its own process, holding
``--registers`` holding registers (function 3 and 4 read the same block), and nothing else:
no register map, no access policy, no runtime behind it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from busguard_bench.procs import self_usage, serve_commands


async def main_async(args: argparse.Namespace) -> None:
    device = SimDevice(id=0, simdata=[SimData(0, count=args.registers, values=0x4247,
                                              datatype=DataType.REGISTERS)])
    server = ModbusTcpServer(device, address=(args.host, args.port))
    await server.serve_forever(background=True)
    port = args.port
    sockets = getattr(server.transport, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]

    async def stats(_msg: dict[str, Any]) -> dict[str, Any]:
        return {**self_usage(), "t": time.monotonic()}

    await serve_commands({"stats": stats}, {"port": port, "registers": args.registers})
    await server.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.plainserver")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--registers", type=int, required=True)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
