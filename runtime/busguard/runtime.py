"""The runtime: builds a site's objects, starts the I/O, runs the scan, stops cleanly.

Order of a start (OpenPLC's cycle order, with retained state first):
1. types from plugins, site.toml validated, blocks and drivers built, the image laid out;
2. a reload's new runtime takes the old one's state over (busguard.statedoc); then
   ``busguard_startup`` observers run (retained state is restored here, before anything serves);
3. publishers start (the DCIM sees last known values at once, marked stale), then drivers;
4. the scan loop: snapshot, blocks in site.toml order, output image applied, observers told.
A stop forces every output to its fail-safe value, applies it, tells observers, then stops
drivers and publishers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pluggy

from busguard import __version__
from busguard.alarms import AlarmTable
from busguard.annunciator import annunciators
from busguard.block import Block
from busguard.clock import Clock, MonotonicClock
from busguard.config.site import Document, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec, ProcessImage, Quality
from busguard.ioloop import IoLoop, stop_io
from busguard.ioproc import STATS_EVERY_S, SWITCH_INTERVAL_S
from busguard.ioproc.supervisor import IO_ALARM_SOURCE, IoSupervisor, Spawned
from busguard.loader import load
from busguard.loader import load_types as load_types  # re-exported: the public name
from busguard.plugins import register_observers
from busguard.publisher import Publisher
from busguard.record import Recorder
from busguard.registry import TypeRegistry
from busguard.scan import (
    ACK_CODE_POINT,
    ACK_POINT,
    RESET_FAULTS_POINT,
    CycleResult,
    ScanEngine,
    ScanLoop,
    output_owners,
)
from busguard.stats import LatenessRecorder, ScanStats

log = logging.getLogger("busguard.runtime")

SYSTEM_POINTS = ("scan.cycles", "scan.overruns", "scan.lateness_p50_ms", "scan.lateness_p99_ms",
                 "scan.lateness_max_ms")
# The scan thread waits at most SWITCH_INTERVAL_S (busguard.ioproc) for the interpreter lock
# when another thread of the scan process (the retained-state writer, the status writer,
# local drivers) holds it: a waiting thread asks for the lock only after the switch interval,
# 5 ms by default, half a scan period. Library calls that hold the lock for long are cut into
# pieces where they run beside the scan (retained.json_pieces).


def core_points() -> list[PointSpec]:
    """Points every runtime has: scan statistics and the core command counters."""
    pts = [PointSpec(n, source="runtime", retained=False) for n in SYSTEM_POINTS]
    pts.append(PointSpec(ACK_POINT, source="command", command=True, minval=0, maxval=65535,
                         doc="change (e.g. increment) to acknowledge all alarms"))
    pts.append(PointSpec(RESET_FAULTS_POINT, source="command", command=True, minval=0,
                         maxval=65535, doc="change (e.g. increment) to re-enable faulted blocks"))
    return pts


def appended_core_points() -> list[PointSpec]:
    """Core points added after map v2's first release: laid out after every other point, so
    on a site without a map.lock too they take the next free records of their area and no
    existing address moves (docs/northbound.md, "Stable slots")."""
    return [PointSpec(ACK_CODE_POINT, source="command", command=True, minval=0,
                      maxval=0xFFFFFFFF,
                      doc="acknowledge the alarms of one code: write (n << 16) | the code's "
                          "number (code table), n one more than the high word read, through "
                          "the uint32 pair")]


def build_blocks(site: SiteConfig, registry: TypeRegistry) -> list[Block]:
    """Instantiate the site's blocks in file order; construction problems become ConfigErrors."""
    blocks = []
    problems = []
    for bc in site.blocks:
        try:
            blocks.append(registry.blocks[bc.type].from_config(bc, site))
        except ConfigError as exc:
            problems.extend(exc.problems)
    declared = {bc.type for bc in site.blocks}
    for section, pcfg in site.publishers.items():  # a publisher's health block
        kind = registry.publishers[section].companion_block
        make = getattr(registry.blocks.get(kind), "for_publisher", None) if kind else None
        if make is not None and kind not in declared:
            try:
                blocks.append(make(pcfg, site))
            except ConfigError as exc:
                problems.extend(exc.problems)
    paths = {bc.name: bc.path for bc in site.blocks}
    owners, clashes = output_owners(blocks)
    for out, first, block in clashes:
        problems.append(ConfigProblem(site.file, paths[block.name], f"output {out!r} is "
                                      f"already written by block {first!r}; an output has "
                                      f"one writer"))
    try:  # outputs that follow the alarm table: after every block, so they see this scan's
        blocks.extend(annunciators(site.devices, owners))
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return blocks


def check_site(path: str | Path | Document, extra: Iterable[object] = ()) -> SiteConfig:
    """Validate a site file fully (types, references, block construction); no I/O started."""
    loaded = load(path, extra=extra)
    site, registry = loaded.site, loaded.registry
    blocks = build_blocks(site, registry)
    _layout(site, blocks)
    problems = []
    for name, cfg in site.publishers.items():  # constructors validate (no I/O before start)
        try:
            registry.publishers[name](cfg, site)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return site


def _layout(site: SiteConfig, blocks: list[Block]) -> list[PointSpec]:
    specs = list(core_points()) + list(site.points)
    seen = {s.name for s in specs}
    problems = []
    for b in blocks:
        for spec in b.points():
            if spec.name in seen:
                problems.append(ConfigProblem(site.file, f"block[{b.name}]",
                                              f"point {spec.name!r} declared twice"))
            seen.add(spec.name)
            specs.append(spec)
        for name in b.inputs():
            if name not in seen:
                problems.append(ConfigProblem(site.file, f"block[{b.name}]",
                                              f"reads input point {name!r} that no device "
                                              f"or block declares"))
    if problems:
        raise ConfigError(problems)
    for spec in appended_core_points():
        if spec.name not in seen:
            specs.append(spec)
    return specs


class Runtime:
    """One running site. Build with :meth:`from_file` or :meth:`from_site`."""

    def __init__(self, site: SiteConfig, pm: pluggy.PluginManager, registry: TypeRegistry,
                 clock: Clock | None = None) -> None:
        self.site = site
        self.pm = pm
        self.registry = registry
        self.clock: Clock = clock or MonotonicClock(spin_s=site.scan.spin_ms / 1000.0)
        self.blocks = build_blocks(site, registry)
        self.image = ProcessImage(_layout(site, self.blocks), self.clock)
        # Command points start at 0, a known baseline: after a cold start the DCIM's first
        # write (e.g. reset = 1) acts. Retained state, restored next, replaces the baseline
        # with the last counters, so a restart never replays an old command.
        self.image.write_many([(s.name, 0.0, Quality.GOOD) for s in self.image.specs
                               if s.command])
        self.alarms = AlarmTable()
        self.engine = ScanEngine(self.blocks, self.alarms)
        self.drivers: list[Driver] = [
            registry.drivers[d.kind][d.driver](d, site) for d in site.devices]
        self.publishers: list[Publisher] = [
            registry.publishers[name](cfg, site) for name, cfg in site.publishers.items()]
        self.stats = LatenessRecorder(site.scan.stats_window, site.scan.period_ms)
        self.loop = ScanLoop(self._cycle, site.scan.period_s, self.clock, self.stats)
        self.recorder: Recorder | None = None
        self.state = "built"
        self.started_utc = self.clock.wall()
        self.last_result: CycleResult | None = None
        self.restored = False
        # from the state imported at start (busguard.statedoc): runtime starts so far (this
        # one included) and the scan cycles of the runs before this one
        self.starts = 1
        self.cycles_before = 0
        #: runtimes this one replaces (a reload): their state is exported and imported, live,
        #: at start, before the startup observers run (the retained file is then not read)
        self.handover_from: tuple[Runtime, ...] = ()
        self.took_over = False  # True once it did (the retained state then follows the file)
        self._consumers = [(d, d.consumes()) for d in self.drivers if d.consumes()]
        self._stats_every = max(1, round(STATS_EVERY_S / site.scan.period_s))
        self._io_loop = IoLoop()
        self.driver_ctx: DriverContext | None = None
        self.io: IoSupervisor | None = None  # [scan] io = "process": the I/O process
        register_observers(pm, registry, self)  # the fault log, retained state, ...

    @classmethod
    def from_file(cls, path: str | Path | Document, clock: Clock | None = None,
                  extra: Iterable[object] = ()) -> Runtime:
        loaded = load(path, extra=extra)
        return cls(loaded.site, loaded.pm, loaded.registry, clock)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, record: str | Path | None = None, io: Spawned | None = None) -> None:
        """Restore retained state, start publishers and drivers. Returns promptly.

        ``io``: an I/O process started early for this site (:func:`busguard.ioproc.
        supervisor.prespawn`), adopted instead of starting one now."""
        if isinstance(self.clock, MonotonicClock):
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.site.scan.io == "process":
            if isinstance(self.clock, MonotonicClock):
                # first, so the I/O process imports and builds while retained state loads
                self.io = IoSupervisor(self, first=io)
                self.io.start()
                io = None
            else:
                log.warning("[scan] io = \"process\" needs the real clock; with an injected "
                            "clock the drivers run in this process")
        if io is not None:
            io.close()
        loop = self._io_loop.start()
        self._take_over()
        self.pm.hook.busguard_startup(runtime=self)
        for pub in self.publishers:
            pub.start(self)
        self.driver_ctx = DriverContext(self.image, self.clock, loop, self.site,
                                        self.registry)
        for drv in self.local_drivers():
            drv.start(self.driver_ctx)
        if record is not None:
            self.recorder = Recorder(record, self.recording_header())
        self.state = "running"
        log.info("started site %s (%d devices, %d blocks, %d points, period %g ms)",
                 self.site.name, len(self.drivers), len(self.blocks), len(self.image),
                 self.site.scan.period_ms)

    def _take_over(self) -> None:
        """A reload: the state of the runtimes this one replaces, in order (a later one wins
        where both hold a name), exported and imported live (:mod:`busguard.statedoc`)."""
        from busguard.statedoc import export_state, import_state

        for src in self.handover_from:
            plan = import_state(self, export_state(src, live=True), live=True)
            log.info("reload: carried over %d point values, %d block states, %d alarms",
                     plan.restored_points, len(plan.blocks) - len(plan.refused),
                     len(plan.alarms))
            self.took_over = True
        self.handover_from = ()  # no chain of every runtime a long life of reloads built

    def run(self, max_cycles: int | None = None) -> int:
        """Run the scan loop in the calling thread until :meth:`request_stop`."""
        return self.loop.run(max_cycles=max_cycles)

    def request_stop(self) -> None:
        """Ask the scan loop to end after the current cycle (safe from signal handlers)."""
        self.loop.stop()

    def stop(self, failsafe: bool = True) -> None:
        """Fail-safe outputs applied, observers told, I/O stopped. Idempotent.

        ``failsafe=False`` (a reload handing over to a new runtime) leaves the outputs as the
        last scan set them.
        """
        if self.state == "stopped":
            return
        self.state = "stopping"
        if failsafe:
            self._apply(dict(self.engine.failsafe))
        try:
            self.pm.hook.busguard_shutdown(runtime=self)
        except Exception:
            log.exception("a shutdown observer failed")
        io = self.io

        def stop_io_process() -> None:
            if io is not None:
                io.stop(wait=failsafe)  # a hand-over (reload) need not wait for its exit

        stop_io(self.publishers, self.local_drivers(), self._io_loop, between=stop_io_process)
        if self.recorder is not None:
            self.recorder.close()
        self.state = "stopped"

    # -- the cycle -------------------------------------------------------------------------
    def local_drivers(self) -> list[Driver]:
        """The drivers this process runs (all but those the I/O process runs)."""
        if self.io is None:
            return self.drivers
        return [d for d in self.drivers if not d.runs_in_io_process]

    def _cycle(self, now: float, lateness: float) -> CycleResult:
        io = self.io
        if io is not None:
            io.before_scan()
        snap = self.image.snapshot(now)
        result = self.engine.step(snap, self.clock.wall())
        result.lateness_s = lateness
        if io is not None:
            result.edges.extend(self.alarms.update(IO_ALARM_SOURCE, io.conditions(),
                                                   result.t_utc))
        self._apply(result.outputs)
        if self.recorder is not None:
            self.recorder.add(result.cycle, snap, result.t_utc, result.outputs)
        for pub in self.publishers:
            pub.on_scan(result)
        if io is not None:
            io.after_scan(bool(result.edges))
        hook = self.pm.hook
        for name, exc in result.faults:
            self._observe(hook.busguard_fault, runtime=self, source=name, error=exc,
                          details={"forced": {o: self.engine.failsafe[o] for o in
                                              next(b for b in self.blocks
                                                   if b.name == name).outputs()}})
        for edge in result.edges:
            fn = hook.busguard_alarm_raised if edge.kind == "raised" else \
                hook.busguard_alarm_cleared
            self._observe(fn, runtime=self, edge=edge)
        self._observe(hook.busguard_scan_complete, runtime=self, result=result)
        if result.cycle % self._stats_every == 0:
            self._publish_stats()
        self.last_result = result
        return result

    def _observe(self, hook: Any, **kwargs: Any) -> None:
        try:
            hook(**kwargs)
        except Exception:  # an observer never stops the scan
            log.exception("observer of %s failed", getattr(hook, "name", hook))

    def _apply(self, outputs: Mapping[str, float]) -> None:
        for drv, _names in self._consumers:
            try:
                drv.apply(outputs)
            except Exception:
                log.exception("driver %s failed to take outputs", drv.name)

    def _publish_stats(self) -> ScanStats:
        st = self.stats.snapshot()
        self.image.write_many([
            ("scan.cycles", st.cycles, Quality.GOOD),
            ("scan.overruns", st.overruns, Quality.GOOD),
            ("scan.lateness_p50_ms", st.lateness_p50_ms, Quality.GOOD),
            ("scan.lateness_p99_ms", st.lateness_p99_ms, Quality.GOOD),
            ("scan.lateness_max_ms", st.lateness_max_ms, Quality.GOOD),
        ])
        return st

    # -- views -----------------------------------------------------------------------------
    def recording_header(self) -> dict[str, Any]:
        return {"busguard": __version__, "site_file": str(Path(self.site.file).resolve()),
                "config_hash": self.site.config_hash, "period_ms": self.site.scan.period_ms,
                "points": [s.name for s in self.image.specs],
                "sources": [s.source for s in self.image.specs],
                "blocks": [b.name for b in self.blocks]}

    def status(self) -> dict[str, Any]:
        return {"site": self.site.name, "state": self.state, "restored": self.restored,
                "scan": self.stats.snapshot().as_dict(),
                "alarms": [a.as_dict() for a in self.alarms.active()],
                "faulted_blocks": dict(self.engine.faulted),
                "drivers": {d.name: self.driver_stats(d) for d in self.drivers},
                **({"io_process": self.io.status()} if self.io is not None else {})}

    def driver_stats(self, drv: Driver) -> dict[str, Any]:
        """A driver's health figures, from the I/O process when it runs there."""
        if self.io is not None and drv.runs_in_io_process:
            return self.io.driver_stats(drv.name) or {"state": "io process not reporting"}
        return drv.stats()
