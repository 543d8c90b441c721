"""The northbound side as the bench sees it: how to switch the [modbus_server] publisher on
in a bench site, and which register blocks make up one full map read."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from busguard.bench.context import Bench
from busguard.bench.sites import SiteSpec

Block = tuple[int, int, int]  # function code, address, count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(spec: SiteSpec, b: Bench) -> int:
    """Add [modbus_server] on a free loopback port; returns the port."""
    port = free_port()
    spec.tables["modbus_server"] = {"host": "127.0.0.1", "port": port}
    return port


def blocks(b: Bench, site_path: Path) -> list[Block]:
    """The requests of one full map read (at most 125 registers each)."""
    raise NotImplementedError("northbound map layout not wired yet")


def dumps(blocks: list[Block]) -> str:
    return json.dumps([list(x) for x in blocks])
