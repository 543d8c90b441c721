"""SIGHUP: reload site.toml without a trip through fail-safe.

The signal handler only sets a flag. A worker thread validates the file on disk with
:func:`busguard.runtime.check_site` while the old runtime keeps scanning:

- a bad file is refused: every problem is logged, the service's status says so, the old
  runtime never stopped;
- an unchanged file (same config hash, same calibration file) only reopens log files (what
  logrotate's ``postrotate`` asks for);
- a good, changed file: the new runtime is built (no I/O yet) beside the running one, then the
  scan thread ends the old one's loop, stops its I/O *without* forcing outputs to fail-safe
  (output drivers hold what the last scan set), and starts the new one. The new runtime
  takes the old one's state over before its startup observers run (``Runtime.handover_from``):
  the one state export and import of :mod:`busguard.statedoc`, in memory, ``live`` (input
  values keep their qualities and ages; the state of every block whose name and type are
  unchanged, latched trips included; their alarms as they were; the outputs; the command and
  cycle counters); the retained file is not read. If the new runtime fails to start, the
  old site is started again the same way.

A reload counts (``last_reload.ok`` in the status file, what ``busguard apply`` waits for)
only once every listener of the new site serves. In one process the publishers bind in
``start()``, so a port that is taken fails the start at once. With ``[scan] io = "process"``
they bind in the new I/O process, which reports its binds back (its ready message): the new
site scans meanwhile, and the reload is confirmed by the reload thread when the ready message
comes (:meth:`Reloader.confirm`); an error, an I/O process that ends or no answer within
:data:`IO_READY_S` makes it a failed start: the refusal is reported and the previous site is
started again, carrying over the state of both (a trip latched meanwhile stays latched).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from busguard import faultlog
from busguard.atomicfile import atomic_write
from busguard.calibration import calibration_path
from busguard.config.precheck import MAX_PROBLEMS, precheck
from busguard.config.site import Document, SiteConfig, read_document
from busguard.errors import BusguardError, ConfigError
from busguard.loader import load_types
from busguard.runtime import Runtime, check_site
from busguard.service import clear_realtime

log = logging.getLogger("busguard.reload")
IO_READY_S = 15.0  # how long a new site's I/O process has to report its listeners


def fingerprint(site: SiteConfig) -> tuple[str, str, str]:
    """What decides whether a reload changes anything: the site file and its calibration."""
    return fingerprint_of(site.file, site.config_hash, site.state_dir)


def fingerprint_of(file: str | Path, config_hash: str, state_dir: Path
                   ) -> tuple[str, str, str]:
    try:
        cal = hashlib.sha256(calibration_path(state_dir).read_bytes()).hexdigest()
    except OSError:
        cal = ""
    return str(Path(file).resolve()), config_hash, cal


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while a site is read and built beside the scan: each one would
    walk every object the parse just made, holding the interpreter lock the scan waits for
    (the file is at most MAX_SITE_BYTES; :func:`busguard.gcpolicy.settle` runs after the
    swap, before the next scan)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def site_bytes(path: Path, config_hash: str) -> bytes | None:
    """The bytes of ``path`` if they are still those of ``config_hash``, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == config_hash else None


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
        self._fallback = False  # the pending runtime is the previous site, started again
        # a swap to a site whose I/O process has not reported its listeners yet:
        # (previous runtime, new runtime, new fingerprint, swap start)
        self.unconfirmed: tuple[Runtime, Runtime, tuple[str, str, str], float] | None = None
        # the bytes of the running site and of the pending one: an I/O process of the
        # previous site, started again after a refused reload, must read what that site
        # was, not the refused file still on disk
        self._running_bytes = site_bytes(self.path, runtime.site.config_hash)
        self._pending_bytes: bytes | None = None
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
        fallback, self._fallback = self._fallback, False
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
                if self.service is not None and not fallback:
                    self.service.reload_finished(False, f"start failed: {exc}")
                new = self._rebuild(new if fallback else old)  # the previous site, again
                new.start()
            else:
                self.last_swap_ms = (time.monotonic() - t0) * 1e3
                if fallback:
                    log.info("reload: the previous site %s runs again (config hash %s)",
                             new.site.file, new.site.config_hash[:12])
                elif new.io is not None:  # its listeners are confirmed by the I/O process
                    self.unconfirmed = (old, new, self._pending_fp, t0)
                    log.info("reload: now scanning %s (config hash %s); swap took %.1f ms; "
                             "waiting for its I/O process to report its listeners",
                             new.site.file, new.site.config_hash[:12], self.last_swap_ms)
                else:
                    self._confirmed(new, self._pending_fp)
            self.current = new
            if self.terminating:
                new.request_stop()
        finally:
            self._idle.set()

    def _confirmed(self, new: Runtime, fp: tuple[str, str, str]) -> None:
        self.reloads += 1
        self.loaded = fp
        self._running_bytes = self._pending_bytes
        with contextlib.suppress(OSError):  # the previous site's copy: nothing runs it now
            self._previous_copy().unlink()
        if self.service is not None:
            self.service.reload_finished(True, "reloaded", new.site.config_hash)
        log.info("reload: now running %s (config hash %s); swap took %.1f ms (no scan "
                 "meanwhile, outputs held)", new.site.file, new.site.config_hash[:12],
                 self.last_swap_ms)

    def confirm(self, timeout_s: float = IO_READY_S) -> bool | None:
        """After a swap to a site with an I/O process (reload thread): wait until that
        process reports its listeners serving. Then the reload counts; if it reports an
        error, ends, or says nothing within ``timeout_s``, the start failed: the refusal is
        reported and the previous site is started again (the scan thread swaps back).
        Returns None when there was nothing to confirm."""
        pending = self.unconfirmed
        if pending is None:
            return None
        old, new, fp, _t0 = pending
        io = new.io
        assert io is not None
        pause = threading.Event()
        deadline = time.monotonic() + timeout_s
        why = f"its I/O process did not report its listeners within {timeout_s:g} s"
        while time.monotonic() < deadline and not (self.terminating or self._closed):
            ready = io.ready
            if ready:
                if "error" not in ready:
                    self.unconfirmed = None
                    self._confirmed(new, fp)
                    return True
                why = f"its I/O process failed to start: {ready['error']}"
                break
            if io.exits:
                why = f"its I/O process ended with code {io.exits[0]}"
                break
            pause.wait(0.02)
        self.unconfirmed = None
        if self.terminating or self._closed:
            return False
        log.error("reload: the new site failed to start (%s); starting the previous site "
                  "again", why)
        if self.service is not None:
            self.service.reload_finished(False, f"start failed: {why}")
            self.service.reload_started()  # the swap back is a hand-over, not a stop
        self.refused += 1
        try:
            back = self._rebuild(old, also=new)
            self._pin_site_file(back)
        except Exception:
            log.exception("reload: the previous site could not be built again; the new one "
                          "goes on")
            return False
        self._idle.clear()
        self._fallback = True
        self._pending_fp = self.loaded
        self._pending = back
        new.request_stop()
        return False

    def _previous_copy(self) -> Path:
        return self.path.parent / f".{self.path.name}.previous"

    def _pin_site_file(self, back: Runtime) -> None:
        """The previous site runs again while the refused file is still on disk: its I/O
        process reads a copy of the previous bytes (``.<name>.previous`` beside the site
        file, so relative paths resolve the same), as long as that site runs (removed by
        the next reload that counts)."""
        if site_bytes(self.path, back.site.config_hash) is not None or \
                self._running_bytes is None:
            return
        copy = self._previous_copy()
        atomic_write(copy, self._running_bytes)
        back.io_site_file = str(copy)  # type: ignore[attr-defined]
        log.info("reload: the I/O process of the previous site reads %s (the site file now "
                 "holds the refused one)", copy)

    def _rebuild(self, old: Runtime, also: Runtime | None = None) -> Runtime:
        """``old``'s site built again; its state from ``old`` and then from ``also`` (a
        runtime that scanned after it: what it latched meanwhile stays latched)."""
        pm, registry = load_types(disabled=old.site.disabled_plugins, extra=self.extra)
        rt = Runtime(old.site, pm, registry, old.clock)
        rt.handover_from = (old,) if also is None else (old, also)
        return rt

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
                if self.prepare():
                    while not self._idle.wait(0.2):  # the scan thread swaps
                        if self.terminating or self._closed:
                            return
                    self.confirm()
            except Exception as exc:  # never let the worker die: the next SIGHUP must work
                log.exception("reload failed unexpectedly; the running site is unchanged")
                if self.service is not None:
                    self.service.reload_finished(
                        False, f"reload failed unexpectedly: {type(exc).__name__}: {exc}")

    def prepare(self) -> bool:
        """Validate and build the new runtime; True when a swap was requested."""
        cur = self.current
        if self.service is not None:
            self.service.reload_begun()
        reopen_logs(cur)
        log.info("SIGHUP: fault log reopened; reloading %s", self.path)
        # judged in a child process first: the size, syntax and depth always; the whole check
        # when the types all come from installed plugins (as with `busguard run`), so only a
        # file that is a valid site is parsed here, once, to build it
        full = not any(hasattr(p, "busguard_register_types") for p in self.extra)
        site: SiteConfig | None = None
        doc: Document | None = None
        try:
            checked_hash = precheck(self.path, full=full)
            if not full:
                with collector_paused():
                    doc = read_document(self.path)  # parsed once: for the check and the build
                    site = check_site(doc, extra=self.extra)
        except (ConfigError, BusguardError) as exc:
            self.refused += 1
            problems = getattr(exc, "problems", None) or []
            if len(problems) <= MAX_PROBLEMS + 1:  # (the child's list ends with its count)
                lines = [str(p) for p in problems] if problems else [str(exc)]
            else:
                lines = [str(p) for p in problems[:MAX_PROBLEMS]]
                lines.append(f"{self.path}: (file): and {len(problems) - MAX_PROBLEMS} more "
                             f"problems (`busguard check` lists them all)")
            log.error("reload refused: %s has problems; the running site is unchanged",
                      self.path)
            for line in lines:
                log.error("  %s", line)
            if self.service is not None:
                self.service.reload_finished(False, "\n".join(lines))
            return False
        fp = fingerprint(site) if site is not None else \
            fingerprint_of(self.path, checked_hash, cur.site.state_dir)
        if fp == self.loaded:
            log.info("reload: %s and the calibration file are unchanged; nothing to do",
                     self.path)
            if self.service is not None:
                self.service.reload_finished(True, "unchanged", fp[1])
            return False
        try:
            with collector_paused():
                new = Runtime.from_file(doc or self.path, clock=cur.clock, extra=self.extra)
        except Exception as exc:
            self.refused += 1
            log.error("reload refused: building %s failed: %s", self.path, exc)
            if self.service is not None:
                self.service.reload_finished(False, f"build failed: {exc}")
            return False
        new.handover_from = (cur,)  # its state is taken over when new starts
        if self.terminating:
            return False
        fp = fingerprint(new.site)  # what was built (the file may have changed meanwhile)
        self._pending_bytes = site_bytes(self.path, new.site.config_hash)
        if self.service is not None:
            self.service.reload_started()
        self._idle.clear()
        self._pending_fp = fp
        self._pending = new
        cur.request_stop()
        return True
