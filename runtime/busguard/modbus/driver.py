"""Meter drivers ``modbus_tcp`` (the default meter driver) and ``modbus_rtu``.

Each meter polls on its own schedule as a task on the runtime's asyncio loop: its profile's
points are read in planned blocks, decoded (type, word order, scale), calibrated and written to
the image with the per-device ``comm_*`` health points. Faults (see docs/meters.md):

- exception response (e.g. 0x02 Illegal Data Address): that block's points BAD, logged once
  with device, address and profile; the block backs off on its own, the rest keep polling;
- timeout (errno 110), refused/reset connection, CRC/framing error: packet loss (CRC errors
  are counted separately as ``comm_error_pct``); after ``loss_limit`` lost requests in a row
  the device's points go NOT_CONNECTED and the device is polled on an exponential backoff,
  so a dead device on an RS-485 line takes little bus time and the others keep their rate;
- any answer again: points GOOD, backoff reset, a one-line recovery log. No restart needed.

Quantities the driver derives (never invented where a meter lacks them; see docs/meters.md):
``power_factor_quadrant`` from a four-quadrant PF register (``encoding = "pf4q"``),
``demand_kw`` / ``demand_peak_kw`` from ``power_kw`` (:mod:`busguard.modbus.demand`) and
``neutral_measured`` from the profile's declaration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from busguard import calibration as calib
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec, Quality
from busguard.linkhealth import UP, LinkHealth, Wording, comm_specs, nan0
from busguard.modbus.codec import BlockDecoder, decode_pf_4q
from busguard.modbus.commstats import EXCEPTION, LOSS_LIMIT, OK, TIMEOUT
from busguard.modbus.demand import DemandWindow
from busguard.modbus.planner import MAX_REGISTERS, ReadBlock, plan_reads, split_refused
from busguard.modbus.profiles import Profile, load_profile
from busguard.modbus.shared import (
    Gate,
    line_config,
    modbus_gate,
    shared_line,
    stop_driver,
    stop_task,
)
from busguard.modbus.transport import CommError, ExceptionReply, RtuLine, TcpLink, exception_name

log = logging.getLogger("busguard.modbus")

WORDING = Wording(
    down="%(device)s: %(lost)d requests in a row lost at %(where)s (unit %(unit)d, profile "
         "%(profile)s), last: %(last)s; points NOT_CONNECTED; retrying with backoff from "
         "%(backoff_ms)g ms",
    up="%(device)s: answering again at %(where)s (unit %(unit)d) after %(outage)d lost "
       "requests; points GOOD",
    first_loss="%(device)s: %(last)s (unit %(unit)d, profile %(profile)s); counted as packet "
               "loss")
GOOD = Quality.GOOD
BAD = Quality.BAD
DERIVED_DOCS = {
    "power_factor_quadrant": "IEC quadrant 1..4 of the total PF, decoded by busguard from the "
                             "meter's four-quadrant PF register",
    "demand_kw": "computed by busguard, not read from the meter: mean of power_kw over the "
                 "last 15 minutes (sliding)",
    "demand_peak_kw": "computed by busguard: highest demand_kw (full 15-minute windows) since "
                      "busguard started",
    "neutral_measured": "1: current_n_a is measured; 0: computed by the meter as a vector sum "
                        "(declared by the profile)",
}
LATENCY_FACTOR = 3.0  # the seed: poll period at least 3x the measured latency

COMMON_PARAMS: dict[str, Param] = {
    "unit": Param(int, default=1, minval=0, maxval=247, doc="Modbus unit (slave) id"),
    "profile": Param(str, default="generic-pqm",
                     doc="bundled profile name or path to a profile .toml"),
    "points": Param(list, item=str, default=(), doc="profile points to read (default: all)"),
    "retries": Param(int, default=1, minval=0, maxval=10,
                     doc="immediate retries of a request that got no answer"),
    "backoff_ms": Param(float, default=1000.0, minval=10.0, unit="ms",
                        doc="first backoff of a dead device or a failing block"),
    "backoff_max_ms": Param(float, default=30000.0, minval=10.0, unit="ms",
                            doc="longest backoff (doubles from backoff_ms)"),
    "loss_limit": LOSS_LIMIT,
    "max_gap": Param(int, default=8, minval=0, maxval=MAX_REGISTERS - 1,
                     doc="unused registers a merged read may span"),
    "max_registers": Param(int, default=MAX_REGISTERS, minval=2, maxval=MAX_REGISTERS,
                           doc="largest read (also capped by the profile)"),
    "ct_ratio": Param(float, default=1.0, above=0.0,
                      doc="CT ratio applied to the profile's ct points"),
    "calibration": Param(dict, default={},
                         doc="per point { gain, offset, ct_ratio }; calibration.toml wins"),
}
@dataclass(frozen=True)
class CompiledBlock:
    """What decoding one read block needs, prepared once per block and calibration.

    ``names`` are the points' image names and ``factors`` their (scale, CT multiplier, gain,
    offset), so a poll neither formats names nor looks calibrations up per value;
    ``decoder`` unpacks all of the block's raw numbers with one precompiled struct. The
    arithmetic is the same as ``Cal.apply(PointDef.decode(regs), ct)``:
    ``((raw * scale) * ct) * gain + offset``.
    """

    block: ReadBlock
    decoder: BlockDecoder
    names: tuple[str, ...]
    factors: tuple[tuple[float, float, float, float], ...]
    pf4q: tuple[int, ...] = ()  # indexes of four-quadrant PF points (signed PF decoded)
    quadrant: tuple[int, str] | None = None  # (index, image name) of the total's quadrant

    def items(self, regs: list[int]) -> list[tuple[str, float, Quality]]:
        """(name, value, quality) of every point: GOOD, or BAD for a NaN or infinite value."""
        raws = self.decoder.decode(regs)
        vals = [raw * scale * ct * gain + offset for (scale, ct, gain, offset), raw in
                zip(self.factors, raws, strict=True)]
        extra: list[tuple[str, float, Quality]] = []
        for i in self.pf4q:  # the register folds the quadrant in: PF and quadrant out
            scale, _ct, gain, offset = self.factors[i]
            pf, quad = decode_pf_4q(raws[i] * scale)
            vals[i] = pf * gain + offset
            if self.quadrant is not None and self.quadrant[0] == i:
                extra.append((self.quadrant[1], float(quad), GOOD if quad else BAD))
        if math.isfinite(sum(vals)):  # an infinite or NaN value would make the sum one
            return list(zip(self.names, vals, itertools.repeat(GOOD))) + extra
        return [(n, v, GOOD if math.isfinite(v) else BAD)
                for n, v in zip(self.names, vals, strict=True)] + extra


@dataclass
class BlockState:
    code: int = 0            # last exception code, 0 when the block reads fine
    retry_at: float = 0.0
    delay_s: float = 0.0


def _load(config: DeviceConfig, site: SiteConfig) -> Profile:
    name = config.params["profile"]
    try:
        return load_profile(name, site.base_dir)
    except ConfigError as exc:
        if exc.problems and exc.problems[0].key == "(profile)":
            raise ConfigError([config.problem("profile",
                                              exc.problems[0].message)]) from exc
        raise


class ModbusMeter(Driver):
    """Shared by ``modbus_tcp`` and ``modbus_rtu``; subclasses make the link."""

    kind = "meter"
    default_poll_ms = 1000.0

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        profile = _load(config, site)
        problems = cls.check(config, site, profile)
        if problems:
            raise ConfigError(problems)
        p = config.params
        max_age = config.poll_s * site.scan.stale_after_polls
        specs = [PointSpec(f"{config.name}.{pd.name}", source=config.name, unit=pd.unit,
                           max_age_s=max_age, doc=pd.doc or pd.name)
                 for pd in cls.selected(profile, p)]
        specs += [PointSpec(f"{config.name}.{n}", source=config.name, unit=unit,
                            max_age_s=max_age, retained=False, doc=DERIVED_DOCS[n])
                  for n, unit in cls.derived(profile, p)]
        comm_age = (max(config.poll_ms, p["backoff_max_ms"]) / 1e3 + 60.0) * 3
        specs += comm_specs(config.name, comm_age, "link health")
        return specs

    @staticmethod
    def selected(profile: Profile, params: Mapping[str, Any]) -> list:
        names = params["points"] or profile.names
        return [profile.point(n) for n in names if n in profile]

    @classmethod
    def derived(cls, profile: Profile, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(quantity, unit) of the points this driver computes for a meter of ``profile``:
        only from what the meter serves (a profile point of the same name wins)."""
        names = {pd.name: pd for pd in cls.selected(profile, params)}
        out: list[tuple[str, str]] = []
        pf = names.get("power_factor")
        if pf is not None and pf.encoding == "pf4q" and "power_factor_quadrant" not in profile:
            out.append(("power_factor_quadrant", ""))
        if "power_kw" in names:
            out += [(n, "kW") for n in ("demand_kw", "demand_peak_kw") if n not in profile]
        if profile.neutral_measured is not None and "neutral_measured" not in profile:
            out.append(("neutral_measured", ""))
        return out

    @classmethod
    def check(cls, config: DeviceConfig, site: SiteConfig, profile: Profile
              ) -> list[ConfigProblem]:
        p = config.params
        out = []
        for i, n in enumerate(p["points"] or ()):
            if n not in profile:
                out.append(config.problem(f"points[{i}]",
                                          f"no point {n!r} in profile {profile.name!r}; known: "
                                          f"{', '.join(profile.names)}"))
        for k, msg in calib.check_entries(p["calibration"] or {}, set(profile.names)):
            out.append(config.problem(f"calibration.{k}", msg))
        if p["backoff_max_ms"] < p["backoff_ms"]:
            out.append(config.problem("backoff_max_ms",
                                      f"got {p['backoff_max_ms']:g}; expected >= backoff_ms "
                                      f"({p['backoff_ms']:g})"))
        return out

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        self.p = p
        self.profile = load_profile(p["profile"], site.base_dir)
        self.points = self.selected(self.profile, p)
        self.plan: list[ReadBlock] = plan_reads(
            self.points, p["max_gap"], min(p["max_registers"], self.profile.max_registers))
        self.full = {pd.name: f"{self.name}.{pd.name}" for pd in self.points}
        self.unit = p["unit"]
        # TCP: up to max_in_flight connections; RTU: one request at a time on the bus
        self.parallel = p.get("max_in_flight", 1)
        self.blocks = [BlockState() for _ in self.plan]
        self.latency_warned = False
        self.link: Any = None
        self.ctx: DriverContext | None = None
        self._future: concurrent.futures.Future | None = None
        self._task: asyncio.Task | None = None
        self._cal: dict[str, calib.Calibration] = {}
        self._cal_version = -1
        self._cal_file: calib.CalibrationFile | None = None
        self._gate: Gate | None = None
        self._backoff_s = 0.0
        self._compiled: dict[int, CompiledBlock] = {}  # id(ReadBlock) -> its decoding
        derived = {n for n, _u in self.derived(self.profile, p)}
        self.derived_names = [f"{self.name}.{n}" for n in sorted(derived)]
        self._quadrant_name = f"{self.name}.power_factor_quadrant" \
            if "power_factor_quadrant" in derived else ""
        self.demand = DemandWindow() if "demand_kw" in derived else None
        self._power_name = f"{self.name}.power_kw"
        self._demand_names = (f"{self.name}.demand_kw", f"{self.name}.demand_peak_kw")
        self._neutral: tuple[str, float] | None = None
        if "neutral_measured" in derived:
            self._neutral = (f"{self.name}.neutral_measured",
                             1.0 if self.profile.neutral_measured else 0.0)
        self.health = LinkHealth(self.name, p["loss_limit"], WORDING, log,
                                 lambda: [*self.full.values(), *self.derived_names], self.where,
                                 context={"unit": self.unit, "profile": self.profile.name,
                                          "backoff_ms": p["backoff_ms"]})
        self.comm = self.health.comm

    # -- to override -------------------------------------------------------------------------
    def make_link(self, ctx: DriverContext) -> Any:
        raise NotImplementedError

    def release_link(self) -> None:
        if self.link is not None:
            self.link.close()

    @property
    def timeout_s(self) -> float:
        return self.p["timeout_ms"] / 1e3

    def where(self) -> str:
        return self.link.describe() if self.link is not None else "?"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        quiet_pymodbus()
        self._gate = modbus_gate(ctx)
        path = ctx.site.state_dir / calib.CAL_FILE
        self._cal_file = ctx.shared(f"modbus.calibration:{path}",
                                    lambda: calib.CalibrationFile(path))
        self.link = self.make_link(ctx)
        self._future = asyncio.run_coroutine_threadsafe(self._run(), ctx.loop)

    def stop(self) -> None:
        fut, self._future = self._future, None
        if fut is not None and self.ctx is not None:
            stop_driver(fut, self.ctx.loop, self._shutdown)

    async def _shutdown(self, fut: concurrent.futures.Future) -> None:
        await stop_task(self._task)
        fut.cancel()
        await self._close()

    async def _close(self) -> None:
        self.release_link()

    # -- the poll loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        period = self.config.poll_s
        # spread meters over the period (stable per name) so 64 polls do not start at once
        next_due = loop.time() + period * (zlib.crc32(self.name.encode()) % 997) / 997
        while True:
            delay = next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.comm.late_s.append(max(0.0, loop.time() - next_due))
            try:
                await self._poll_once(loop)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the polling for good
                log.exception("%s: poll failed", self.name)
            self.comm.polls += 1
            end = loop.time()
            if self.health.down:
                self._backoff_s = min(max(self._backoff_s * 2, self.p["backoff_ms"] / 1e3),
                                      self.p["backoff_max_ms"] / 1e3)
                next_due = end + self._backoff_s
                continue
            self._backoff_s = 0.0
            next_due += period
            missed = int((end - next_due) // period) if end > next_due else 0
            if missed:  # whole periods passed without a poll: those slots are missed;
                self.comm.missed_polls += missed  # a slot less than a period late runs late
                next_due += missed * period

    def _calibration(self) -> dict[str, calib.Calibration]:
        assert self._cal_file is not None
        version = self._cal_file.refresh()
        if version != self._cal_version:
            self._cal_version = version
            self._compiled.clear()  # the per-block factors come from the calibration
            self._cal = calib.meter_calibration([pd.name for pd in self.points],
                                                self.p["ct_ratio"], self.p["calibration"],
                                                self._cal_file.for_meter(self.name))
        return self._cal

    def _compile(self, block: ReadBlock, cal: Mapping[str, calib.Calibration]) -> CompiledBlock:
        """The decoding of ``block`` under calibration ``cal`` (cached until either
        changes: a split replaces the block object, a new calibration clears the cache)."""
        c = self._compiled.get(id(block))
        if c is not None and c.block is block:
            return c
        dec = BlockDecoder(block.count, [(pd.address - block.address, pd.type, pd.word_order)
                                         for pd in block.points])
        factors = []
        for pd in block.points:
            k = cal[pd.name]
            factors.append((pd.scale, k.ct_ratio if pd.ct else 1.0, k.gain, k.offset))
        pf4q = tuple(i for i, pd in enumerate(block.points) if pd.encoding == "pf4q")
        quad = next(((i, self._quadrant_name) for i in pf4q
                     if block.points[i].name == "power_factor" and self._quadrant_name), None)
        c = CompiledBlock(block, dec, tuple(self.full[pd.name] for pd in block.points),
                          tuple(factors), pf4q, quad)
        self._compiled[id(block)] = c
        return c

    async def _poll_once(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.ctx is not None and self._gate is not None
        cal = self._calibration()
        now = loop.time()
        items: list[tuple[str, float, Quality]] = []
        answered = False
        lost = False
        poll_latency = 0.0
        to_split: list[int] = []
        due = [(i, b) for i, b in enumerate(self.plan)
               if not (self.blocks[i].code and self.blocks[i].retry_at > now)]
        outcomes: list[Any] = []
        if self.parallel > 1 and len(due) > 1:  # max_in_flight connections share the reads
            outcomes = list(await asyncio.gather(*(self._read_block(b) for _, b in due)))
        else:
            for _, block in due:
                outcomes.append(await self._read_block(block))
                if isinstance(outcomes[-1], CommError):
                    break  # the device does not answer: do not spend the line on the rest
        for (i, block), outcome in zip(due, outcomes, strict=False):  # may stop early
            st = self.blocks[i]
            if isinstance(outcome, CommError):
                lost = True
                continue
            answered = True
            if isinstance(outcome, ExceptionReply):
                split = outcome.code == 0x02 and len(block.points) > 1
                self._block_exception(i, block, outcome, now, split)
                if split:
                    to_split.append(i)
                continue
            regs, latency = outcome
            poll_latency += latency
            if st.code:
                log.info("%s: %s answer again (unit %d, profile %s); points GOOD", self.name,
                         block.describe(), self.unit, self.profile.name)
            if st.code or st.delay_s or st.retry_at:  # else it is a fresh state already
                self.blocks[i] = BlockState()
            items += self._compile(block, cal).items(regs)
        for i in reversed(to_split):  # find which registers are missing
            parts = split_refused(self.plan[i])
            self.plan[i:i + 1] = parts
            self.blocks[i:i + 1] = [BlockState() for _ in parts]
        if answered and not lost:
            self.comm.poll_s.append(poll_latency)
        if self.demand is not None:
            self._add_demand(items, now)
        self._link_state(answered, lost)
        # comm_ok follows the link state (loss_limit), not each single lost request; the
        # values and the health points go into the image in one write (one lock, one stamp).
        # Only points of blocks that answered are in ``items``, and _link_state marks only
        # others (blocks backed off, or all points when nothing answered), so writing them
        # after it changes nothing but the scan seeing them together.
        self._write_comm(self.health.answered_once and not self.health.down, items)
        self._latency_check()

    def _add_demand(self, items: list[tuple[str, float, Quality]], now: float) -> None:
        """Feed a good ``power_kw`` of this poll to the demand window; add its points."""
        assert self.demand is not None
        for name, value, quality in items:
            if name == self._power_name:
                if quality is GOOD:
                    demand, peak = self.demand.add(now, value)
                    d_name, p_name = self._demand_names
                    items.append((d_name, demand, GOOD))
                    # no full window yet: the peak is not known (stale, NaN)
                    items.append((p_name, peak, Quality.STALE if math.isnan(peak) else GOOD))
                return

    async def _read_block(self, block: ReadBlock) -> Any:
        assert self._gate is not None
        err: CommError | None = None
        for _attempt in range(self.p["retries"] + 1):
            try:
                regs, latency = await self.link.request(
                    "read", self.unit, block.function, block.address, block.count,
                    self.timeout_s, self._gate.sem)
            except ExceptionReply as exc:
                if exc.code in (0x0A, 0x0B):  # gateway: the device behind it did not answer
                    err = CommError(TIMEOUT, f"gateway answered {exc}")
                    self.health.lost(TIMEOUT, str(err))
                    continue
                self.comm.record(EXCEPTION)
                return exc
            except CommError as exc:
                err = exc
                self.health.lost(exc.kind, str(exc))
                if self.health.down and self.comm.consecutive_lost >= self.health.loss_limit:
                    break  # already known dead: one probe per backoff is enough
                continue
            self.comm.record(OK, latency)
            return regs, latency
        return err

    def _block_exception(self, i: int, block: ReadBlock, exc: ExceptionReply, now: float,
                         split: bool = False) -> None:
        """A read refused with an exception: its points BAD and the block backed off; or,
        for a merged read refused with 0x02 (``split``), nothing marked yet: the read may only
        span a register the meter does not implement (a gap between two points), so its
        points are read one by one at the next poll and only those still refused go BAD. A
        meter with a gap in its map then raises no 0x02 alarm for points it serves."""
        assert self.ctx is not None
        st = self.blocks[i]
        first = st.code != exc.code
        st.code = exc.code
        st.delay_s = min(max(st.delay_s * 2, self.p["backoff_ms"] / 1e3),
                         self.p["backoff_max_ms"] / 1e3)
        st.retry_at = now + st.delay_s
        if not split:
            self.ctx.image.set_quality([self.full[pd.name] for pd in block.points], Quality.BAD)
        if first:
            regs = f"{block.address}..{block.end - 1}"
            documented = ""
            if self.profile.address_base:
                base = self.profile.address_base
                documented = f" (documented registers {block.address + base}.." \
                             f"{block.end - 1 + base})"
            log.log(
                logging.INFO if split else logging.WARNING,
                "%s: 0x80 (%s): exception code 0x%02X to function 0x%02X (response 0x%02X) "
                "reading %s registers at address %s%s, unit %d, profile %s (%s); points %s "
                "%s", self.name, exception_name(exc.code), exc.code,
                exc.function, exc.function | 0x80, block.function, regs, documented, self.unit,
                self.profile.name, self.profile.file, ", ".join(p.name for p in block.points),
                "not marked BAD yet: reading its points one by one to find the missing "
                "registers" if split else f"BAD; block backed off {st.delay_s:.3g} s")

    def _link_state(self, answered: bool, lost: bool) -> None:
        """The shared up/down rule (:mod:`busguard.linkhealth`); back up, the blocks still
        refused with an exception are BAD again, not GOOD."""
        assert self.ctx is not None
        if self.health.update(answered, lost, self.ctx.image) == UP:
            bad = [self.full[pd.name] for i, b in enumerate(self.plan) if self.blocks[i].code
                   for pd in b.points]
            if bad:
                self.ctx.image.set_quality(bad, Quality.BAD)

    def _write_comm(self, ok: bool, items: list[tuple[str, float, Quality]]) -> None:
        """Write the ``comm_*`` health points after ``items`` (point values)."""
        assert self.ctx is not None
        if self._neutral is not None:  # the profile's declaration: true whether or not read
            items.append((self._neutral[0], self._neutral[1], GOOD))
        items += self.health.items(ok, self.config.poll_ms)
        self.ctx.image.write_many(items)

    def _latency_check(self) -> None:
        if self.latency_warned or len(self.comm.poll_s) < 10:
            return
        p50 = self.comm.poll_latency_ms(50)
        if self.config.poll_ms < LATENCY_FACTOR * p50:
            log.warning("%s: poll period %g ms is under %gx the measured latency (p50 %.1f ms "
                        "per poll at %s); requests will back up: set poll_ms >= %.0f",
                        self.name, self.config.poll_ms, LATENCY_FACTOR, p50, self.where(),
                        math.ceil(LATENCY_FACTOR * p50))
            self.latency_warned = True  # after the log line: whoever sees the flag finds it

    def stats(self) -> dict[str, Any]:
        d = self.comm.as_dict()
        d.update({"state": "not-connected" if self.health.down else "ok", "link": self.where()
                  if self.link is not None else "", "profile": self.profile.name,
                  "unit": self.unit, "poll_ms": self.config.poll_ms,
                  "reads_per_poll": len(self.plan), "latency_warning": self.latency_warned,
                  "bad_blocks": {b.describe(): f"0x{self.blocks[i].code:02X}"
                                 for i, b in enumerate(self.plan) if self.blocks[i].code},
                  "last_error": self.health.last_error,
                  "reconnects": getattr(self.link, "reconnects", 0),
                  "garbage_frames": getattr(self.link, "garbage", 0)})
        d["late_p99_ms"] = nan0(self.comm.late_ms(99))
        return d


def quiet_pymodbus() -> None:
    """pymodbus logs every timeout at ERROR; the driver logs one line per event instead.
    Left alone when an operator set the "pymodbus" logger's level explicitly."""
    lg = logging.getLogger("pymodbus")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.CRITICAL)


class ModbusTcpMeter(ModbusMeter):
    type_name = "modbus_tcp"
    io_process_ok = True  # input only: may run in the I/O process
    params: ClassVar[Mapping[str, Param]] = {
        "host": Param(str, doc="meter IP address or host name"),
        "port": Param(int, default=502, minval=1, maxval=65535),
        "timeout_ms": Param(float, default=1000.0, minval=1.0, maxval=60000.0, unit="ms",
                            doc="answer timeout of one request"),
        "max_in_flight": Param(int, default=1, minval=1, maxval=16,
                               doc="requests in flight to this device (one connection each)"),
        **COMMON_PARAMS,
    }

    def make_link(self, ctx: DriverContext) -> TcpLink:
        return TcpLink(self.p["host"], self.p["port"], self.p["max_in_flight"])


class ModbusRtuMeter(ModbusMeter):
    type_name = "modbus_rtu"
    io_process_ok = True
    params: ClassVar[Mapping[str, Param]] = {
        "line": Param(str, doc="name of an [[rs485]] entry"),
        "timeout_ms": Param(float, default=0.0, minval=0.0, maxval=60000.0, unit="ms",
                            doc="answer timeout; 0 = the line's timeout_ms"),
        **COMMON_PARAMS,
    }

    @classmethod
    def check(cls, config: DeviceConfig, site: SiteConfig, profile: Profile
              ) -> list[ConfigProblem]:
        out = super().check(config, site, profile)
        if line_config(site, config.params["line"]) is None:
            names = [str(e["name"]) for e in site.sections["rs485"]]
            out.append(config.problem("line",
                                      f"no [[rs485]] line named {config.params['line']!r}; "
                                      + (f"known: {', '.join(names)}" if names else
                                         "the site declares no [[rs485]] lines")))
        return out

    @property
    def timeout_s(self) -> float:
        t = self.p["timeout_ms"]
        if not t:
            cfg = line_config(self.site, self.p["line"])
            assert cfg is not None  # checked with the site (check())
            t = cfg["timeout_ms"]
        return t / 1e3

    def make_link(self, ctx: DriverContext) -> RtuLine:
        return shared_line(ctx, self.p["line"])

    def release_link(self) -> None:
        if self.link is not None:
            self.link.release()
