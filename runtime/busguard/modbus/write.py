"""Output driver ``modbus_write``: one output of the scan written to a remote device register.

For example ``cooling.demand_pct`` to the BMS chilled-water setpoint. The value is written on
change (beyond ``deadband``) and again every ``refresh_ms`` (so a device that rebooted gets it
back), then read back and compared register by register. The driver has points of its own:

- ``{device}.readback``: the value read back (GOOD when it matches what was written, BAD when
  the device holds something else, NOT_CONNECTED while writes get no answer);
- ``{device}.comm_ok``: 1 when the last write (and read-back) succeeded.

:meth:`apply` runs in the scan thread and only hands the value to the I/O loop; the write,
the read-back and the retries happen there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from busguard.annunciator import ANNUNCIATOR_PARAMS
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import ConfigError
from busguard.image import PointSpec, Quality
from busguard.modbus import codec, shared
from busguard.modbus.commstats import OK, CommStats
from busguard.modbus.transport import CommError, ExceptionReply, TcpLink

log = logging.getLogger("busguard.modbus")


class ModbusWrite(Driver):
    type_name = "modbus_write"
    kind = "output"
    default_poll_ms = 1000.0
    params: ClassVar[Mapping[str, Param]] = {
        "output": Param(str, doc="output name from a block, e.g. cooling.demand_pct"),
        "host": Param(str, default="", doc="device address (Modbus TCP); or set `line`"),
        "port": Param(int, default=502, minval=1, maxval=65535),
        "line": Param(str, default="", doc="name of an [[rs485]] entry (Modbus RTU)"),
        "unit": Param(int, default=1, minval=0, maxval=247),
        "address": Param(int, minval=0, maxval=65535, doc="holding register address"),
        "address_base": Param(int, default=0, choices=(0, 1)),
        "type": Param(str, default="float32", choices=codec.TYPES),
        "word_order": Param(str, default="ABCD", choices=codec.WORD_ORDERS),
        "scale": Param(float, default=1.0, doc="register raw value = output / scale"),
        "deadband": Param(float, default=0.0, minval=0.0, doc="change that triggers a write"),
        "refresh_ms": Param(float, default=10000.0, minval=10.0, unit="ms",
                            doc="rewrite period even without change"),
        "verify": Param(bool, default=True, doc="read the registers back after each write"),
        "timeout_ms": Param(float, default=1000.0, minval=1.0, maxval=60000.0, unit="ms"),
        "retries": Param(int, default=1, minval=0, maxval=10),
        **ANNUNCIATOR_PARAMS,
    }

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        p = config.params
        problems = []
        if bool(p["host"]) == bool(p["line"]):
            problems.append(config.problem("host",
                                           "set exactly one of host (Modbus TCP) or line "
                                           "(an [[rs485]] name)"))
        elif p["line"] and shared.line_config(site, p["line"]) is None:
            problems.append(config.problem("line",
                                           f"no [[rs485]] line named {p['line']!r}"))
        if p["scale"] == 0:
            problems.append(config.problem("scale",
                                           "got 0.0; expected a non-zero number"))
        if p["address"] is not None and p["address"] - p["address_base"] < 0:
            problems.append(config.problem("address",
                                           "got 0; expected >= 1 with address_base = 1"))
        if problems:
            raise ConfigError(problems)
        age = (p["refresh_ms"] / 1e3) * 3 + 60.0
        return [PointSpec(f"{config.name}.readback", source=config.name, max_age_s=age,
                          retained=False, doc=f"{p['output']} as read back from the device"),
                PointSpec(f"{config.name}.comm_ok", source=config.name, max_age_s=age,
                          retained=False, doc="1 when the last write was confirmed")]

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.p = config.params
        self.address = self.p["address"] - self.p["address_base"]
        self.comm = CommStats()
        self.writes = 0
        self.mismatches = 0
        self.failures = 0
        self.last_error = ""
        self.last_written = math.nan
        self.last_readback = math.nan
        self._desired = math.nan
        self._queued = math.nan
        self._event: asyncio.Event | None = None
        self._future: concurrent.futures.Future | None = None
        self._task: asyncio.Task | None = None
        self.ctx: DriverContext | None = None
        self.link: Any = None
        self._gate: shared.Gate | None = None
        self.down = False

    def consumes(self) -> tuple[str, ...]:
        return (self.p["output"],)

    def start(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self._gate = shared.modbus_gate(ctx)
        self.link = shared.shared_line(ctx, self.p["line"]) if self.p["line"] else \
            TcpLink(self.p["host"], self.p["port"])
        self._future = asyncio.run_coroutine_threadsafe(self._run(), ctx.loop)

    def apply(self, outputs: Mapping[str, float]) -> None:
        value = outputs.get(self.p["output"])
        if value is None or self.ctx is None:
            return
        value = float(value)
        old = self._queued
        if math.isnan(old) or abs(value - old) > self.p["deadband"] or \
                (self.p["deadband"] == 0 and value != old):
            self._queued = value
            self.ctx.loop.call_soon_threadsafe(self._wake, value)

    def _wake(self, value: float) -> None:
        self._desired = value
        if self._event is not None:
            self._event.set()

    async def _run(self) -> None:
        self._task = asyncio.current_task()
        self._event = asyncio.Event()
        if not math.isnan(self._queued):
            self._desired = self._queued
        refresh = self.p["refresh_ms"] / 1e3
        while True:
            if math.isnan(self._desired) or self._desired == self.last_written:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._event.wait(), refresh if not self.down else
                                           min(refresh, 1.0))
            self._event.clear()
            if math.isnan(self._desired):
                continue
            try:
                await self._write(self._desired)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: write failed", self.name)
            if self.down:  # do not spin on a dead device: wait before the next attempt
                await asyncio.sleep(min(refresh, 1.0))

    async def _write(self, value: float) -> None:
        assert self.ctx is not None and self._gate is not None
        p = self.p
        regs = codec.encode(value, p["type"], p["word_order"], p["scale"])
        timeout = p["timeout_ms"] / 1e3
        image = self.ctx.image
        err: Exception | None = None
        for _ in range(p["retries"] + 1):
            try:
                _, lat = await self.link.request("write", p["unit"], "holding", self.address,
                                                 regs, timeout, self._gate.sem)
                self.comm.record(OK, lat)
                readback = regs
                if p["verify"]:
                    readback, lat = await self.link.request(
                        "read", p["unit"], "holding", self.address, len(regs), timeout,
                        self._gate.sem)
                    self.comm.record(OK, lat)
                err = None
                break
            except ExceptionReply as exc:
                self.comm.record("exception")
                err = exc
                break
            except CommError as exc:
                self.comm.record(exc.kind)
                err = exc
        name = self.name
        if err is not None:
            self.failures += 1
            self.last_error = str(err)
            q = Quality.BAD if isinstance(err, ExceptionReply) else Quality.NOT_CONNECTED
            if not self.down:
                log.warning("%s: writing %s = %g to %s unit %d address %d failed: %s", name,
                            p["output"], value, self.link.describe(), p["unit"], self.address,
                            err)
            self.down = True
            self.last_written = math.nan
            image.set_quality([f"{name}.readback"], q)
            image.write(f"{name}.comm_ok", 0.0)
            return
        if self.down:
            log.warning("%s: writes to %s confirmed again", name, self.link.describe())
        self.down = False
        self.writes += 1
        self.last_written = value
        back = codec.decode(readback, p["type"], p["word_order"], p["scale"])
        self.last_readback = back
        match = list(readback) == list(regs)
        if not match:
            self.mismatches += 1
            log.warning("%s: read-back of %s at address %d is %g, wrote %g", name,
                        p["output"], self.address, back, value)
        image.write_many([(f"{name}.readback", back, Quality.GOOD if match else Quality.BAD),
                          (f"{name}.comm_ok", 1.0 if match else 0.0, Quality.GOOD)])

    def stop(self) -> None:
        fut, self._future = self._future, None
        if fut is not None and self.ctx is not None:
            shared.stop_driver(fut, self.ctx.loop, self._shutdown)

    async def _shutdown(self, fut: concurrent.futures.Future) -> None:
        await shared.stop_task(self._task)
        fut.cancel()
        # the runtime applies fail-safe outputs just before it stops drivers: write the last
        # value once more (bounded) so the device is left holding it
        if not math.isnan(self._desired) and self._desired != self.last_written:
            bound = self.p["timeout_ms"] / 1e3 * 2 * (self.p["retries"] + 1) + 0.1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write(self._desired), bound)
        await self._close()

    async def _close(self) -> None:
        if self.link is not None:
            if hasattr(self.link, "release"):
                self.link.release()
            else:
                self.link.close()

    def stats(self) -> dict[str, Any]:
        d = self.comm.as_dict()
        d.update({"state": "not-connected" if self.down else "ok", "writes": self.writes,
                  "mismatches": self.mismatches, "failures": self.failures,
                  "last_written": _none(self.last_written),
                  "last_readback": _none(self.last_readback), "last_error": self.last_error})
        return d


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x
