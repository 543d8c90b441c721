"""What the Modbus drivers share: the ``[modbus]`` cap on requests in flight and the
``[[rs485]]`` lines several devices use, one object each per runtime
(``DriverContext.shared``). The meter and write drivers both import from here, never from
each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from busguard.config.params import Param
from busguard.config.site import SiteConfig
from busguard.driver import DriverContext
from busguard.errors import ConfigError, ConfigProblem
from busguard.modbus.transport import RtuLine

log = logging.getLogger("busguard.modbus")

RS485_PARAMS = {
    "port": Param(str, doc="serial device, e.g. /dev/ttyUSB0 (relative: to site.toml)"),
    "baudrate": Param(int, default=19200, choices=(1200, 2400, 4800, 9600, 19200, 38400,
                                                    57600, 115200)),
    "parity": Param(str, default="E", choices=("N", "E", "O")),
    "stopbits": Param(int, default=1, choices=(1, 2)),
    "bytesize": Param(int, default=8, choices=(7, 8)),
    "timeout_ms": Param(float, default=200.0, minval=1.0, maxval=60000.0, unit="ms",
                        doc="default answer timeout of devices on the line"),
}
MODBUS_PARAMS = {
    "max_concurrent": Param(int, default=64, minval=1, maxval=4096,
                            doc="requests in flight at once over all Modbus devices"),
}


class Gate:
    """The global cap on requests in flight (``[modbus] max_concurrent``); one per runtime."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem: asyncio.Semaphore | None = None

    @property
    def sem(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        return self._sem


def modbus_gate(ctx: DriverContext) -> Gate:
    """The runtime's one :class:`Gate`, sized by ``[modbus] max_concurrent``."""
    return ctx.shared("modbus.gate", lambda: Gate(ctx.site.sections["modbus"]["max_concurrent"]))


async def stop_task(task: asyncio.Task | None, timeout_s: float = 2.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a cancellation got lost.

    On Python < 3.12 ``asyncio.wait_for`` (used inside pymodbus) can swallow a cancellation
    that arrives just as the awaited answer does; one more cancel ends the task then.
    """
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.done():
        log.error("task %s did not stop within %g s", task.get_name(), timeout_s)


def stop_driver(fut: concurrent.futures.Future, loop: asyncio.AbstractEventLoop,
                shutdown: Callable[[concurrent.futures.Future], Awaitable[None]]) -> None:
    """Stop a driver whose main task runs on ``loop``: ``shutdown(fut)`` cancels the task and
    lets it unwind on its loop (bounded), or the future is cancelled when the loop is gone."""
    if loop.is_running():
        done = asyncio.run_coroutine_threadsafe(shutdown(fut), loop)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            done.result(timeout=3.0)
    else:
        fut.cancel()


def line_config(site: SiteConfig, name: str) -> Mapping[str, Any] | None:
    """The validated [[rs485]] entry ``name`` (None if the site has no such line)."""
    for entry in site.sections["rs485"]:
        if entry["name"] == name:
            return entry
    return None


def shared_line(ctx: DriverContext, name: str) -> RtuLine:
    """The one :class:`RtuLine` object for the port of [[rs485]] entry ``name``."""
    cfg = line_config(ctx.site, name)
    if cfg is None:
        raise ConfigError([ConfigProblem(ctx.site.file, "rs485", f"no line named {name!r}")])
    port = str(ctx.site.resolve(cfg["port"])) if "://" not in cfg["port"] else cfg["port"]
    line: RtuLine = ctx.shared(f"modbus.rs485:{port}", lambda: RtuLine(cfg, port))
    line.acquire()
    return line
