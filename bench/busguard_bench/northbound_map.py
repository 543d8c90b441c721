"""The northbound side as the bench sees it: switching the [modbus_server] publisher on in a
bench site, and the register blocks of one full map read.

A *full map read* is what a DCIM polls: the header and every live area (meters, probes,
breakers, outputs, alarms, commands, extra points), each area's used range split into reads of
at most 125 registers. The name table (static text, read once at commissioning) and the
alignment gaps between areas are left out.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from busguard_bench.sites import SiteSpec

Block = tuple[int, int, int]  # function code, address, count
MAX_READ = 125
LIVE_AREAS = ("meter", "probe", "breaker", "output", "alarm", "command", "extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(spec: SiteSpec, port: int = 0) -> int:
    """Add [modbus_server] on a free loopback port, with the per-client caps lifted (every
    bench client comes from 127.0.0.1); returns the port."""
    port = port or free_port()
    spec.tables["modbus_server"] = {"host": "127.0.0.1", "port": port, "max_connections": 1024,
                                    "max_connections_per_client": 1024,
                                    "max_requests_per_s": 100000.0, "idle_timeout_s": 3600.0}
    return port


def chunks(start: int, count: int, fc: int = 3) -> list[Block]:
    return [(fc, a, min(MAX_READ, start + count - a)) for a in range(start, start + count,
                                                                     MAX_READ)]


def blocks(site_path: Path) -> tuple[list[Block], int]:
    """(the reads of one full map read, the map's total size in registers) for a site."""
    from busguard.northbound import mapdef
    from busguard.runtime import Runtime
    from busguard_bench.target import BenchPlugin

    rt = Runtime.from_file(site_path, extra=[BenchPlugin()])
    m = mapdef.for_runtime(rt)
    out = chunks(0, mapdef.HEADER_WORDS)
    for area in LIVE_AREAS:
        n = m.counts.get(area, 0) * m.strides.get(area, 0)
        if n:
            out += chunks(m.bases[area], n)
    return out, m.size


def dumps(blocks: list[Block]) -> str:
    return json.dumps([list(x) for x in blocks])
