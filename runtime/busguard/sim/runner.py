"""The :class:`Simulator`: a site's model served on loopback, in one background thread.

All serving runs on one asyncio loop in the ``busguard-sim`` thread: the TCP servers, the RTU
lines, and three periodic tasks (1-Wire files every second, LED lines every 20 ms on wall time,
shunt-trip lines every 50 ms). Model time is ``(monotonic - start) * speed``; each meter's
values are computed at most once per 20 ms of wall time and shared by all requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from busguard.config.site import SiteConfig
from busguard.errors import BusguardError, ConfigError, ConfigProblem
from busguard.modbus.codec import decode, encode
from busguard.modbus.profiles import Profile, load_profile
from busguard.sim.files import GpioLines, IioTree, W1Tree
from busguard.sim.layout import SimLayout, layout_of
from busguard.sim.model import (
    F_NOMINAL,
    V_LL_NOMINAL,
    BreakerSpec,
    MeterSpec,
    ProbeSpec,
    SiteModel,
)
from busguard.sim.scenarios import NO_FAULTS, CommFaults, Scenario, get_scenario

log = logging.getLogger("busguard.sim")

CACHE_S = 0.02
W1_EVERY_S = 1.0
LED_EVERY_S = 0.02
SHUNT_EVERY_S = 0.05
SETPOINT_EVERY_S = 0.2


def load_site_for_sim(path: str | Path) -> SiteConfig:
    """The validated site (same checks as `busguard check`), for the simulator to read."""
    from busguard.runtime import check_site

    return check_site(path)


class Simulator:
    def __init__(self, site: SiteConfig, scenario: Scenario | str = "normal", speed: float = 1.0,
                 seed: int = 1, faults: CommFaults = NO_FAULTS,
                 fault_meters: frozenset[str] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if speed <= 0:
            raise BusguardError(f"speed must be > 0, got {speed}")
        self.site = site
        self.layout: SimLayout = layout_of(site)
        self.scenario = get_scenario(scenario) if isinstance(scenario, str) else scenario
        self.speed = speed
        self.seed = seed
        self.monotonic = monotonic
        self.wall = wall
        lay = self.layout
        n = max(1, len(lay.meters))
        self.model = SiteModel(
            [MeterSpec(m.name, m.rated_a, m.bus) for m in lay.meters],
            [ProbeSpec(p.name, i % n) for i, p in enumerate(lay.probes)],
            [BreakerSpec(b, j % n) for j, b in enumerate(lay.breakers)],
            self.scenario, seed, faults, fault_meters,
            v_ll_nominal=site.nominal_voltage_ll_v or V_LL_NOMINAL,
            f_nominal=site.nominal_hz or F_NOMINAL)
        unknown = sorted((fault_meters or frozenset()) - {m.name for m in lay.meters})
        if unknown:
            raise BusguardError(f"--fault-meters names no simulated meter: "
                                f"{', '.join(unknown)}; simulated: "
                                f"{', '.join(m.name for m in lay.meters)}")
        self.profiles = self._load_profiles()
        self.t0 = monotonic()
        self._cache: dict[int, tuple[float, Mapping[str, float], CommFaults]] = {}
        self.power_steps: dict[int, float] = {}  # meter index -> kW added to its power_kw
        self.units: dict[str, Any] = {}
        self.tcp: list[Any] = []
        self.rtu: list[Any] = []
        self.w1 = W1Tree(lay.onewire_dir, lay.probes) if lay.onewire_dir and \
            any(p.kind == "w1" for p in lay.probes) else None
        self.iio = IioTree(lay.iio_dir, lay.probes) if lay.iio_dir and \
            any(p.kind == "iio" for p in lay.probes) else None
        self.gpio = GpioLines(lay.gpio_dir, lay.leds, lay.shunts) if lay.gpio_dir else None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task] = []
        self.setpoint_units: dict[str, tuple[Any, Any]] = {}
        self._setpoint_last: dict[str, float] = {}
        self.started = threading.Event()
        self.error: BaseException | None = None

    def _load_profiles(self) -> dict[str, Any]:
        out, problems = {}, []
        for m in self.layout.meters:
            try:
                out[m.name] = load_profile(m.profile, self.site.base_dir)
            except ConfigError as exc:
                problems.extend(exc.problems)
        for name in {m.line for m in self.layout.meters if m.bus == "rtu"} | {
                sp.line for sp in self.layout.setpoints if sp.bus == "rtu"}:
            if name not in self.layout.lines:
                problems.append(ConfigProblem(self.site.file, "rs485",
                                              f"no [[rs485]] line named {name!r}"))
        if problems:
            raise ConfigError(problems)
        return out

    # -- time and values --------------------------------------------------------------------
    def model_time(self) -> float:
        return (self.monotonic() - self.t0) * self.speed

    def meter_state(self, i: int) -> tuple[Mapping[str, float], CommFaults]:
        now = self.monotonic()
        hit = self._cache.get(i)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1], hit[2]
        t = (now - self.t0) * self.speed
        values, faults = self.model.meter(i, t), self.model.comm_faults(i, t)
        if i in self.power_steps:
            values = {**values, "power_kw": values["power_kw"] + self.power_steps[i]}
        self._cache[i] = (now, values, faults)
        return values, faults

    def step_power(self, meter: int | str, delta_kw: float) -> None:
        """Move one meter's served power_kw by ``delta_kw`` from now on (on top of the model):
        a change whose arrival the fleet test and bench time level by level."""
        i = meter if isinstance(meter, int) else next(
            k for k, m in enumerate(self.layout.meters) if m.name == meter)
        self.power_steps[i] = self.power_steps.get(i, 0.0) + delta_kw
        self._cache.pop(i, None)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start serving in the background; returns once every server listens."""
        self.t0 = self.monotonic()  # scenario times count from the start of serving
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="busguard-sim", daemon=True)
        self.thread.start()
        if not self.started.wait(timeout):
            raise BusguardError("simulator did not start in time")
        if self.error is not None:
            self.stop()
            raise BusguardError(f"simulator could not start: {self.error}") from self.error

    def _run(self) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start_all())
        except BaseException as exc:  # reported to start()
            self.error = exc
        self.started.set()
        if self.error is None:
            self.loop.run_forever()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self._stop_all())
        self.loop.close()

    async def _listen(self, srv: Any, what: str) -> None:
        """Start one TCP server (a meter's or a set point's); a port in use is a clear error."""
        try:
            await srv.start()
        except RuntimeError as exc:
            raise BusguardError(f"{what}: cannot listen on {srv.host}:{srv.port} (in use? "
                                f"another simulator running?)") from exc
        self.tcp.append(srv)

    async def _start_all(self) -> None:
        from busguard.sim.serve import RtuLineServer, SimUnit, TcpMeterServer

        lay = self.layout
        by_line: dict[str, dict[int, Any]] = {}
        for i, m in enumerate(lay.meters):
            unit = SimUnit(m.name, m.unit_id, self.profiles[m.name],
                           lambda i=i: self.meter_state(i), self.seed)
            self.units[m.name] = unit
            if m.bus == "tcp":
                await self._listen(TcpMeterServer(unit, m.host, m.port), f"meter {m.name}")
            else:
                by_line.setdefault(m.line, {})[m.unit_id] = unit
        for sp in lay.setpoints:
            unit = self._setpoint_unit(sp, SimUnit)
            if sp.bus == "tcp":
                await self._listen(TcpMeterServer(unit, sp.host, sp.port), f"output {sp.name}")
            elif sp.unit_id in by_line.get(sp.line, {}):
                raise BusguardError(f"output {sp.name}: unit {sp.unit_id} on {sp.line} is "
                                    f"already a meter's")
            else:
                by_line.setdefault(sp.line, {})[sp.unit_id] = unit
        for name, units in by_line.items():
            line = lay.lines[name]
            rtu = RtuLineServer(name, line.port, units, line.baudrate)
            await rtu.start()
            self.rtu.append(rtu)
        loop = asyncio.get_running_loop()
        if self.setpoint_units:
            self._tasks.append(loop.create_task(self._every(SETPOINT_EVERY_S,
                                                            self._tick_setpoints)))
        if self.w1 is not None:
            self._tasks.append(loop.create_task(self._every(W1_EVERY_S, self._tick_w1)))
        if self.iio is not None:
            self._tasks.append(loop.create_task(self._every(W1_EVERY_S, self._tick_iio)))
        if self.gpio is not None:
            self._tasks.append(loop.create_task(self._every(LED_EVERY_S, self._tick_leds)))
            if self.gpio.shunts:
                self._tasks.append(loop.create_task(self._every(SHUNT_EVERY_S,
                                                                self._tick_shunts)))

    async def _every(self, period: float, fn: Callable[[], None]) -> None:
        while True:
            try:
                fn()
            except Exception:
                log.exception("simulator task %s failed", getattr(fn, "__name__", fn))
            await asyncio.sleep(period)

    def _setpoint_unit(self, sp: Any, unit_cls: Any) -> Any:
        from busguard.modbus.codec import REGISTER_COUNT

        unit = unit_cls(sp.name, sp.unit_id, Profile(f"setpoint {sp.name}", "", ()),
                        lambda: ({}, NO_FAULTS), self.seed)
        words = encode(0.0, sp.type, sp.word_order, sp.scale)
        unit.writable = {sp.address + k: words[k] for k in range(REGISTER_COUNT[sp.type])}
        self.setpoint_units[sp.name] = (sp, unit)
        self._setpoint_last[sp.name] = 0.0
        self.units[sp.name] = unit
        return unit

    def setpoint_values(self) -> dict[str, float]:
        out = {}
        for name, (sp, unit) in self.setpoint_units.items():
            regs = [unit.writable[a] for a in sorted(unit.writable)]
            out[name] = decode(regs, sp.type, sp.word_order, sp.scale)
        return out

    def _tick_setpoints(self) -> None:
        t = self.model_time()
        for name, value in self.setpoint_values().items():
            sp = self.setpoint_units[name][0]
            if not sp.output.endswith("demand_pct") or value == self._setpoint_last.get(name):
                continue
            self._setpoint_last[name] = value
            log.info("%s: cooling demand %.1f %% at t=%.1f s", name, value, t)
            self.model.set_cooling(t, value)

    def _tick_w1(self) -> None:
        t = self.model_time()
        assert self.w1 is not None
        self.w1.update(lambda i: self.model.probe(i, t))

    def _tick_iio(self) -> None:
        t = self.model_time()
        assert self.iio is not None
        self.iio.update(lambda i: self.model.probe(i, t))

    def _tick_leds(self) -> None:
        t = self.model_time()
        assert self.gpio is not None
        index = {b: j for j, b in enumerate(self.layout.breakers)}
        self.gpio.update_leds(lambda i: self.model.breaker(index[self.gpio.leds[i].breaker],
                                                           t).led, self.wall())

    def _tick_shunts(self) -> None:
        assert self.gpio is not None
        t = self.model_time()
        index = {b: j for j, b in enumerate(self.layout.breakers)}
        for i in self.gpio.shunt_active():
            b = index[self.gpio.shunts[i].breaker]
            if b not in self.model.shunt_trips and self.model.breaker(b, t).closed:
                log.warning("breaker %s opened by its shunt-trip line at t=%.1f s",
                            self.gpio.shunts[i].breaker, t)
                self.model.shunt_trips[b] = t
                self._cache.clear()

    async def _stop_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for srv in self.tcp:
            with contextlib.suppress(Exception):
                await srv.stop()
        for rtu in self.rtu:
            with contextlib.suppress(Exception):
                await rtu.stop()
        self.tcp.clear()
        self.rtu.clear()
        # what the simulator lit goes dark: a runtime left running sees vanished sensors,
        # not frozen readings that look good
        for part in (self.w1, self.iio, self.gpio):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.remove()

    def stop(self) -> None:
        """Stop serving, remove the pty links. Idempotent."""
        if self.loop is not None and self.thread is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may be closing already
                self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.thread = None

    # -- views ------------------------------------------------------------------------------
    def ready_info(self) -> dict[str, Any]:
        return {"ready": True, "scenario": self.scenario.name, "speed": self.speed,
                "seed": self.seed,
                "tcp": {s.unit.name: [s.host, s.port] for s in self.tcp},
                "rtu": {r.name: str(r.link) for r in self.rtu},
                "setpoints": {n: f"{sp.host}:{sp.port}" if sp.bus == "tcp" else
                              f"{sp.line}#{sp.unit_id}" for n, (sp, _u) in
                              self.setpoint_units.items()},
                "probes": len(self.layout.probes), "leds": len(self.layout.leds),
                "onewire_dir": str(self.layout.onewire_dir or ""),
                "gpio_dir": str(self.layout.gpio_dir or ""),
                "skipped": self.layout.skipped}

    def status(self) -> dict[str, Any]:
        t = self.model_time()
        return {"t_model_s": round(t, 3),
                "breakers": {b: _breaker_dict(self.model.breaker(j, t)) for j, b in
                             enumerate(self.layout.breakers)},
                "units": {n: u.stats.as_dict() for n, u in self.units.items()},
                "setpoints": {n: round(v, 3) for n, v in self.setpoint_values().items()},
                "cooling_pct": self.model.cooling_pct(t),
                "rtu_lines": {r.name: {"frames_in": r.frames_in,
                                       "bad_requests": r.crc_errors_in} for r in self.rtu}}


def _breaker_dict(st: Any) -> dict[str, Any]:
    return {"closed": st.closed, "led": st.led, "cause": st.cause,
            "since_s": None if st.since_s == float("inf") else round(st.since_s, 3)}
