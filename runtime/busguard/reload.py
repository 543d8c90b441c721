"""SIGHUP: reload site.toml without a trip through fail-safe.

The signal handler only sets a flag. A worker thread validates the file on disk with
:func:`busguard.runtime.check_site` while the old runtime keeps scanning:

- a bad file is refused: every problem is logged, the service's status says so, the old
  runtime never stopped;
- an unchanged file (same config hash, same calibration file) only reopens log files (what
  logrotate's ``postrotate`` asks for);
- a good, changed file: the new runtime is built (no I/O yet) beside the running one, then the
  scan thread ends the old one's loop, stops its I/O *without* forcing outputs to fail-safe
  (output drivers hold what the last scan set), and starts the new one. The new runtime's
  ``busguard_startup`` ends with :class:`CarryOver` (``trylast``, after retained state is
  restored) which copies, by name, the live input values with their qualities and ages, the
  state of every block whose name and type are unchanged (latched trips, via
  ``Block.state()``/``restore()``), their alarms (latched, unacknowledged ones stay), the
  command counters and the cycle counters. If the new runtime fails to start, the old site
  is started again the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from busguard import faultlog, hookimpl
from busguard.calibration import calibration_path
from busguard.config.site import SiteConfig, read_document
from busguard.errors import BusguardError, ConfigError
from busguard.loader import load_types
from busguard.runtime import Runtime, check_site
from busguard.service import clear_realtime

log = logging.getLogger("busguard.reload")


def carry_over(old: Runtime, new: Runtime) -> dict[str, int]:
    """Copy what must survive a reload from ``old`` into ``new`` (not yet scanning)."""
    copied = {"points": 0, "blocks": 0, "alarms": 0}
    oi, ni = old.image, new.image
    with oi._lock, ni._lock:
        for name, j in ni.index.items():
            i = oi.index.get(name)
            if i is None or oi.t_mono[i] == float("-inf"):
                continue
            ni.values[j] = oi.values[i]
            ni.quality[j] = oi.quality[i]
            ni.t_mono[j] = oi.t_mono[i]
            ni.t_utc[j] = oi.t_utc[i]
            copied["points"] += 1
    old_blocks = {b.name: b for b in old.blocks}
    old_cfg = {b.name: b for b in old.site.blocks}
    for cfg, block in zip(new.site.blocks, new.blocks, strict=True):
        prev = old_blocks.get(block.name)
        if prev is None or type(prev) is not type(block):
            continue
        try:
            block.restore(prev.state())
        except Exception:
            log.exception("block %s: could not carry its state over the reload", block.name)
            continue
        copied["blocks"] += 1
        for out in block.outputs():
            if out in old.engine.outputs:
                new.engine.outputs[out] = old.engine.outputs[out]
        unchanged = old_cfg[block.name].params == cfg.params
        if unchanged and block.name in old.engine.faulted:
            new.engine.faulted[block.name] = old.engine.faulted[block.name]
    names = {b.name for b in new.blocks}
    for state in old.alarms.alarms.values():
        if state.block in names:
            new.alarms.adopt(state)
            copied["alarms"] += 1
    new.engine._last_cmd.update(old.engine._last_cmd)
    new.engine.cycle = old.engine.cycle
    new.stats.cycles = old.stats.cycles
    new.stats.overruns = old.stats.overruns
    new.restored = old.restored
    return copied


class CarryOver:
    """Observer plugin given to the new runtime: carries state over once it has started."""

    def __init__(self, old: Runtime) -> None:
        self.old = old
        self.copied: dict[str, int] = {}

    @hookimpl(trylast=True)
    def busguard_startup(self, runtime: Runtime) -> None:
        self.copied = carry_over(self.old, runtime)
        log.info("reload: carried over %(points)d point values, %(blocks)d block states, "
                 "%(alarms)d alarms", self.copied)


def fingerprint(site: SiteConfig) -> tuple[str, str, str]:
    """What decides whether a reload changes anything: the site file and its calibration."""
    try:
        cal = hashlib.sha256(calibration_path(site.state_dir).read_bytes()).hexdigest()
    except OSError:
        cal = ""
    return str(Path(site.file).resolve()), site.config_hash, cal


def reopen_logs(rt: Runtime) -> None:
    """Reopen the fault log (after logrotate renamed it): every SIGHUP does this first."""
    try:
        faultlog.reopen(rt)
    except Exception:
        log.exception("reopening the fault log failed")


class Reloader:
    """Owns the running runtime of ``busguard run``: the scan loop, reloads and the stop."""

    def __init__(self, path: str | Path, runtime: Runtime, extra: Iterable[object] = (),
                 service: Any = None) -> None:
        self.path = Path(path)
        self.current = runtime
        self.loaded = fingerprint(runtime.site)
        self.extra = list(extra)
        self.service = service
        self.terminating = False
        self.reloads = 0
        self.refused = 0
        self.last_swap_ms = 0.0
        self._requested = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: Runtime | None = None
        self._pending_fp = self.loaded
        self._worker: threading.Thread | None = None
        self._closed = False

    # -- requests (safe from signal handlers: they only set flags) ----------------------------
    def request_reload(self) -> None:
        self._requested.set()

    def request_stop(self) -> None:
        self.terminating = True
        self._requested.set()
        self.current.request_stop()

    # -- the main loop (scan thread) ----------------------------------------------------------
    def run(self, max_cycles: int | None = None) -> int:
        """Scan until stopped, swapping runtimes on good reloads; returns cycles run."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="busguard-reload",
                                            daemon=True)
            self._worker.start()
        ran = 0
        try:
            while not self.terminating:
                if self.service is not None:
                    self.service.enter_realtime()
                left = None if max_cycles is None else max_cycles - ran
                if left is not None and left <= 0:
                    break
                ran += self.current.run(max_cycles=left)
                if self.terminating or self._pending is None:
                    break
                self._swap()
        finally:
            self._closed = True
            self._requested.set()
        return ran

    def _swap(self) -> None:
        old, new = self.current, self._pending
        assert new is not None
        self._pending = None
        clear_realtime()  # threads the new runtime starts must not inherit SCHED_FIFO
        t0 = time.monotonic()
        if old.recorder is not None:
            log.warning("reload: the recording (--record) ends here: a recording holds one site")
        try:
            old.stop(failsafe=False)
            try:
                new.start()
            except Exception as exc:
                log.error("reload: the new site failed to start (%s: %s); starting the "
                          "previous site again", type(exc).__name__, exc)
                new.stop(failsafe=False)
                if self.service is not None:
                    self.service.reload_finished(False, f"start failed: {exc}")
                new = self._rebuild(old)
                new.start()
            else:
                self.reloads += 1
                self.loaded = self._pending_fp
                if self.service is not None:
                    self.service.reload_finished(True, "reloaded", new.site.config_hash)
                self.last_swap_ms = (time.monotonic() - t0) * 1e3
                log.info("reload: now running %s (config hash %s); swap took %.1f ms (no scan "
                         "meanwhile, outputs held)", new.site.file, new.site.config_hash[:12],
                         self.last_swap_ms)
            self.current = new
            if self.terminating:
                new.request_stop()
        finally:
            self._idle.set()

    def _rebuild(self, old: Runtime) -> Runtime:
        pm, registry = load_types(disabled=old.site.disabled_plugins,
                                  extra=[*self.extra, CarryOver(old)])
        return Runtime(old.site, pm, registry, old.clock)

    # -- the worker: validation and building, beside the running scan -------------------------
    def _work(self) -> None:
        while True:
            self._requested.wait()
            self._requested.clear()
            if self.terminating or self._closed:
                return
            self._idle.wait()
            if self.terminating or self._closed:
                return
            try:
                self.prepare()
            except Exception:  # never let the worker die: the next SIGHUP must work
                log.exception("reload failed unexpectedly; the running site is unchanged")

    def prepare(self) -> bool:
        """Validate and build the new runtime; True when a swap was requested."""
        cur = self.current
        reopen_logs(cur)
        log.info("SIGHUP: fault log reopened; reloading %s", self.path)
        try:
            doc = read_document(self.path)  # parsed once for the check and the build
            site = check_site(doc, extra=self.extra)
        except (ConfigError, BusguardError) as exc:
            self.refused += 1
            problems = getattr(exc, "problems", None)
            lines = [str(p) for p in problems] if problems else [str(exc)]
            log.error("reload refused: %s has %d problem%s; the running site is unchanged",
                      self.path, len(lines), "s" if len(lines) != 1 else "")
            for line in lines:
                log.error("  %s", line)
            if self.service is not None:
                self.service.reload_finished(False, "\n".join(lines))
            return False
        fp = fingerprint(site)
        if fp == self.loaded:
            log.info("reload: %s and the calibration file are unchanged; nothing to do",
                     self.path)
            if self.service is not None:
                self.service.reload_finished(True, "unchanged", site.config_hash)
            return False
        carry = CarryOver(cur)
        try:
            new = Runtime.from_file(doc, clock=cur.clock, extra=[*self.extra, carry])
        except Exception as exc:
            self.refused += 1
            log.error("reload refused: building %s failed: %s", self.path, exc)
            if self.service is not None:
                self.service.reload_finished(False, f"build failed: {exc}")
            return False
        if self.terminating:
            return False
        if self.service is not None:
            self.service.reload_started()
        self._idle.clear()
        self._pending_fp = fp
        self._pending = new
        cur.request_stop()
        return True
