"""Retained state: what must survive a restart, saved by what changed, restored before the
first scan.

A built-in observer plugin. ``busguard_startup`` (before publishers and drivers start) loads
the newest valid generation of ``{state_dir}/retained.json`` and ``retained.json.b`` (see
:mod:`busguard.statefile` for the format, the two slots and the durable writes) and restores
it with the one state import of :mod:`busguard.statedoc` (``live=False``; a reload imports
the old runtime's state in memory instead and does not read the file):

- last known values with their UTC stamps, into the image as *stale* (``ProcessImage.restore``)
  so the DCIM sees them at once, marked as not current, until drivers read fresh ones;
- command points (counters and settings the DCIM wrote) as good values: the restored value is
  the baseline, so a restart never replays an old command and the DCIM's next change fires;
- each block's ``state()`` (latched trips) through ``Block.restore``, matched by name and type;
- the alarm table (active, latched-waiting-for-ack, acknowledged flags), each alarm held as it
  is until its block's inputs have been read again (:meth:`AlarmTable.adopt`), and the counters.

Saving is driven by what changed, because the file usually lives on an SD card or eMMC:

- at once (within ``MIN_GAP_S`` when changes come in a burst): a latched alarm raised or
  cleared, an acknowledgement or any command the DCIM wrote (trip resets, counters), a
  block-state change (a latch set or reset); these must survive a power cut;
- measured values and plain (non-latching) alarm edges: at most every
  ``[retained] values_every_s`` (60 s), and only when a retained value or the alarm table
  changed since the last save (plain alarms are derived from the inputs again after a
  restart; a flapping BG-INPUT must not write the flash every few seconds);
- nothing at all while nothing changed; once more at a clean stop.

Saves run in a background thread (the scan only hands over references). The restore never
half-applies a file: everything is parsed and checked first, block states that fail to restore
are rolled back, and a generation that cannot be applied is skipped for the one before it.
A corrupt newest slot is set aside (``.corrupt-<utc>``), the previous generation is restored
and ``BG-RETAINED-CORRUPT`` (a latched warning alarm, fault-log line, header retained_status 2)
says which generation was used; with no good generation the runtime starts cold. It never
crashes the service.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from busguard import hookimpl
from busguard.alarms import AlarmCondition, Severity
from busguard.config.params import Param
from busguard.image import Snapshot
from busguard.service import follow_scan_priority
from busguard.statedoc import (
    RETAINED_ALARM_SOURCE,
    Capture,
    StatePlan,
    block_states,
    capture,
    document,
    import_state,
)
from busguard.statefile import (  # noqa: F401  (re-exported: the file API lives there)
    CHUNK_ITEMS,
    FORMAT,
    CorruptState,
    Slots,
    decode_state,
    encode_state,
    json_pieces,
    load_newest,
    newest_valid,
    read_state,
    slot_paths,
    write_atomic,
)

if TYPE_CHECKING:
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult

log = logging.getLogger("busguard.retained")

PLUGIN_NAME = "busguard-retained"
SECTION = "retained"
PARAMS: Mapping[str, Param] = {
    "enabled": Param(bool, default=True, doc="save and restore retained state"),
    "file": Param(str, default="retained.json", doc="file name, relative to [paths] state_dir"),
    "values_every_s": Param(float, default=60.0, minval=0.01, maxval=86400.0, unit="s",
                            doc="measured values are saved at most this often, and only when "
                                "one changed (trips, acknowledgements, commands and block "
                                "states are saved at once)"),
    "interval_s": Param(float, default=None, minval=0.01, maxval=86400.0, unit="s",  # type: ignore[arg-type]
                        doc="former name of values_every_s (used when set)"),
}
ALARM_BLOCK = RETAINED_ALARM_SOURCE
MIN_GAP_S = 0.1  # shortest time between two saves caused by changes


@dataclass
class _Job:
    """A save: the state captured by the scan (:func:`busguard.statedoc.capture`), and why."""

    capture: Capture
    reason: str

    @property
    def snapshot(self) -> Snapshot:
        snap = self.capture.snapshot
        assert snap is not None  # the retained state captures the scan's snapshot
        return snap

    @property
    def t_utc(self) -> float:
        return self.capture.t_utc


def set_aside(path: Path, now_utc: float) -> Path:
    stamp = datetime.fromtimestamp(now_utc, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, dest)
    return dest


class RetainedState:
    """Per-runtime observer (busguard.builtin registers the type; each runtime its object)."""

    def __init__(self, runtime: Runtime) -> None:
        cfg = runtime.site.sections[SECTION]  # validated, defaults applied
        self.runtime = runtime
        self.enabled = cfg["enabled"]
        every = cfg["interval_s"]  # the former name, used when set
        self.values_every_s = every if every is not None else cfg["values_every_s"]
        self.path = runtime.site.state_dir / cfg["file"]
        self.slots = Slots(self.path)
        self.status = "disabled" if not self.enabled else "none"
        self.generation = 0
        self.saves = 0
        self.queued = 0
        self.save_errors = 0
        self.bytes_written = 0
        self.reasons: dict[str, int] = {"change": 0, "values": 0, "shutdown": 0}
        self.set_aside_as: Path | None = None
        self.restored_from: Path | None = None
        self._last_states: dict[str, Any] = {}
        self._cmd_idx: list[int] = []
        self._val_idx: list[int] = []
        self._last_cmds: bytes = b""
        self._saved_values: bytes | None = None
        self._dirty = False
        self._alarms_changed = False
        self._state_failed: set[str] = set()
        self._last_change_save = -math.inf
        self._last_values_save = -math.inf
        self._pending: _Job | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # told (snapshot, t_utc, generation) after each save, on the thread that saved: the
        # Modbus server writes its restart image (busguard.northbound.restartimage) here
        self.on_saved: list[Callable[[Snapshot, float, int], None]] = []

    @property
    def starts(self) -> int:
        """Runtime starts recorded in the retained state (the map header's ``starts``)."""
        return self.runtime.starts if self.enabled else 1

    # -- startup ---------------------------------------------------------------------------
    def restore(self) -> None:
        rt = self.runtime
        specs = rt.image.specs
        self._cmd_idx = [i for i, s in enumerate(specs) if s.command]
        self._val_idx = [i for i, s in enumerate(specs) if s.retained and not s.command]
        if self.enabled and rt.took_over:
            self._follow_file()
        elif self.enabled:
            self._restore_newest()
        self._last_states = block_states(rt.blocks, self._state_failed)

    def _follow_file(self) -> None:
        """A reload: the state came from the runtime this one replaces (imported live before
        this observer ran); the file only says which generation and slot come next."""
        newest = newest_valid(self.path)
        if newest is not None:
            self.generation, self.restored_from = newest
            self.status = "loaded"
        self.slots.after_load(self.restored_from)

    def _restore_newest(self) -> None:
        rt = self.runtime
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            with contextlib.suppress(OSError):  # left by an older version's interrupted save
                stale.unlink()
        loaded = load_newest(self.path)
        problems: list[str] = []
        bad_paths: list[Path] = []
        restored_gen: int | None = None
        for generation, source, body in loaded.found:
            try:
                plan = import_state(rt, body, live=False)  # whole, or nothing of it
            except Exception as exc:  # any content error: this generation is unusable
                why = f"{type(exc).__name__}: {exc}"
                log.error("BG-RETAINED-CORRUPT retained state %s (generation %d) cannot be "
                          "applied (%s); nothing of it was restored", source, generation, why)
                problems.append(f"{source.name}: cannot be applied ({why})")
                bad_paths.append(source)
                continue
            self._finish(plan, source, generation)
            restored_gen = generation
            break
        for path, why, gen in loaded.damaged:
            if restored_gen is not None and gen is not None and gen < restored_gen:
                # an older generation, already superseded: nothing is lost; overwritten next
                log.warning("retained state slot %s (generation %d) is damaged (%s); the "
                            "newer generation %d was restored", path.name, gen, why,
                            restored_gen)
                continue
            log.error("BG-RETAINED-CORRUPT retained state file %s is damaged: %s", path, why)
            problems.insert(0, f"{path.name}: {why}")
            bad_paths.append(path)
        self.slots.after_load(self.restored_from)
        if problems:
            outcome = (f"restored generation {restored_gen} from {self.restored_from.name}"
                       if self.restored_from is not None and restored_gen is not None else
                       "no good generation left; started without retained state")
            self._report(problems, bad_paths, outcome)

    def _finish(self, plan: StatePlan, source: Path, generation: int) -> None:
        rt = self.runtime
        self.generation = generation
        self.restored_from = source
        self.status = "loaded"
        age = rt.clock.wall() - plan.saved_utc
        log.info("retained state restored from %s (generation %d, saved %.1f s ago): %d values "
                 "(stale until read), %d block states, %d alarms", source, generation, age,
                 plan.restored_points, len(plan.blocks), len(plan.alarms))

    def _report(self, problems: list[str], bad_paths: list[Path], outcome: str) -> None:
        """A damaged or unusable generation that mattered: set it aside, log, latch an alarm
        (the fault log gets its line), and the header's retained_status reads 2."""
        rt = self.runtime
        self.status = "corrupt"
        for path in bad_paths:
            if path.exists():
                try:
                    self.set_aside_as = set_aside(path, rt.clock.wall())
                except OSError as exc:
                    log.error("BG-RETAINED-CORRUPT could not set %s aside: %s", path, exc)
        aside = f"; set aside as {self.set_aside_as.name}" if self.set_aside_as else ""
        text = f"retained state: {'; '.join(problems)}{aside}; {outcome}"
        log.error("BG-RETAINED-CORRUPT %s", text)
        cond = AlarmCondition("corrupt", Severity.WARNING, "BG-RETAINED-CORRUPT", text,
                              device="", values={"outcome": outcome,
                                                 "generation": self.generation},
                              latch=True)
        t = rt.clock.wall()
        edges = rt.alarms.update(ALARM_BLOCK, [cond], t)
        rt.alarms.update(ALARM_BLOCK, [], t)  # latched: stays until acknowledged
        for edge in edges:
            with contextlib.suppress(Exception):
                rt.pm.hook.busguard_alarm_raised(runtime=rt, edge=edge)

    # -- saving ----------------------------------------------------------------------------
    def start_writer(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="busguard-retained",
                                            daemon=True)
            self._thread.start()

    def _job(self, snap: Snapshot, t_utc: float, cycle: int, reason: str,
             states: dict[str, Any] | None = None) -> _Job:
        return _Job(capture(self.runtime, snap, t_utc, cycle, states,
                            clean=reason == "shutdown", failed=self._state_failed), reason)

    def body(self, job: _Job) -> dict[str, Any]:
        """The state document saved (:func:`busguard.statedoc.document`)."""
        return document(self.runtime, job.capture)

    def save(self, job: _Job) -> bool:
        try:
            data = encode_state(self.body(job), self.generation + 1)
            self.slots.write(data)
        except Exception as exc:
            self.save_errors += 1
            if self.status != "error":
                log.error("BG-RETAINED-SAVE could not save retained state to %s: %s",
                          self.path, exc)
            self.status = "error"
            return False
        self.generation += 1
        self.bytes_written = self.slots.bytes_written
        self.reasons[job.reason] = self.reasons.get(job.reason, 0) + 1
        if self.status == "error":
            self.status = "loaded"
        self.saves += 1
        for fn in self.on_saved:
            try:
                fn(job.snapshot, job.t_utc, self.generation)
            except Exception:  # never the retained state's business
                log.exception("an observer of the retained state's save failed")
        return True

    def _writer(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                job, self._pending = self._pending, None
            if job is not None:
                follow_scan_priority(self.runtime.loop.thread_id)  # busguard.service: why
                self.save(job)
            if self._stopping:
                return

    def _queue(self, job: _Job) -> None:
        self.queued += 1
        with self._lock:
            pending = self._pending
            if pending is not None and pending.reason == "change":
                job.reason = "change"  # a newer job carries the change it replaces
            self._pending = job  # the newest wins: a slow disk never builds a backlog
        self._wake.set()

    def _values_key(self, snap: Snapshot) -> bytes:
        vals = snap.values
        return array("d", [vals[i] for i in self._val_idx]).tobytes()

    # -- hooks -----------------------------------------------------------------------------
    @hookimpl
    def busguard_startup(self, runtime: Runtime) -> None:
        """Restore retained state before publishers and drivers start."""
        if runtime is not self.runtime:
            return
        t0 = time.perf_counter()
        self.restore()
        log.debug("retained restore took %.1f ms", (time.perf_counter() - t0) * 1e3)
        self.start_writer()

    @hookimpl
    def busguard_scan_complete(self, runtime: Runtime, result: CycleResult) -> None:
        if not self.enabled or runtime is not self.runtime:
            return
        snap = result.snapshot
        states = block_states(runtime.blocks, self._state_failed)
        vals = snap.values
        cmds = array("d", [vals[i] for i in self._cmd_idx]).tobytes()
        if states != self._last_states or cmds != self._last_cmds:
            self._dirty = True  # trips, resets, acknowledgements, commands: at once
        if runtime.alarms.events.wants_save():
            self._dirty = True  # the event ring's numbers need a new reservation on disk
        for edge in result.edges:
            if edge.alarm.condition.latch:
                self._dirty = True  # a latched alarm raised, or cleared by its ack: at once
            else:  # a plain alarm is derived from the inputs again after a restart
                self._alarms_changed = True
        self._last_states = states
        self._last_cmds = cmds
        now = result.now
        if self._dirty and now - self._last_change_save >= MIN_GAP_S:
            # a change is saved at once, or, in a burst of changes (a block whose state moves
            # every scan), at most every MIN_GAP_S: bounded disk writes, never a missed change
            self._dirty = False
            self._last_change_save = now
            self._saved_values = self._values_key(snap)
            self._last_values_save = now
            self._alarms_changed = False
            self._queue(self._job(snap, result.t_utc, result.cycle, "change", states))
        elif now - self._last_values_save >= self.values_every_s:
            self._last_values_save = now
            key = self._values_key(snap)
            if key != self._saved_values or self._alarms_changed:  # nothing changed: no write
                self._saved_values = key
                self._alarms_changed = False
                self._queue(self._job(snap, result.t_utc, result.cycle, "values", states))

    @hookimpl
    def busguard_shutdown(self, runtime: Runtime) -> None:
        if runtime is not self.runtime:
            return
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if not self.enabled:
            return
        last = runtime.last_result
        snap = last.snapshot if last is not None else runtime.image.snapshot()
        cycle = last.cycle if last is not None else 0
        if self.save(self._job(snap, runtime.clock.wall(), cycle, "shutdown")):
            log.info("retained state saved to %s (%d saves this run, %d bytes; by reason %s)",
                     self.path, self.saves, self.bytes_written, self.reasons)

    def stats(self) -> dict[str, Any]:
        return {"status": self.status, "generation": self.generation, "saves": self.saves,
                "bytes_written": self.bytes_written, "reasons": dict(self.reasons),
                "save_errors": self.save_errors, "values_every_s": self.values_every_s}

