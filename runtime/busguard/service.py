"""Running under systemd: readiness, the watchdog, STATUS=, the status file and real-time priority.

:class:`Service` is an observer plugin that ``busguard run`` registers into every runtime it
builds (the first one and each one a SIGHUP reload builds), so it lives as long as the process:

- ``READY=1`` once the config is loaded, retained state restored (``busguard_startup``
  observers ran) and the first scan is complete. A SIGHUP reload sends ``RELOADING=1`` as soon
  as it begins (before the new file is even checked, as systemd asks: "the request to reload
  ... has been received and is now being processed") and ``READY=1`` when it ends, whatever
  the outcome: after the new runtime's first scan, or at once when the file is refused or
  unchanged.
- ``WATCHDOG=1`` from the scan thread only, and only while the scan is healthy: the last
  ``watchdog_healthy_cycles`` cycles each started within one period of their deadline with no
  overrun. sdnotify does not read ``WATCHDOG_USEC``; we do and ping at half of it, so a hung or
  persistently late scan stops the pings and systemd restarts the service.
- ``STATUS=`` (cycle count, active alarms, lateness) and the status file (JSON, read by
  ``busguard apply`` to judge health) from a separate thread at ``status_every_s``, never from
  the scan path, so both are rate-limited by construction.
- ``STOPPING=1`` on the final shutdown (not on the swap of a reload).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sdnotify

from busguard import __version__, gcpolicy, hookimpl
from busguard.atomicfile import atomic_write, utc_stamp
from busguard.config.params import Param, defaults

if TYPE_CHECKING:
    from busguard.config.site import SiteConfig
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult

log = logging.getLogger("busguard.service")

SERVICE_PARAMS: Mapping[str, Param] = {
    "realtime": Param(str, default="auto", choices=("auto", "off"),
                      doc="ask for SCHED_FIFO for the scan thread when permitted"),
    "rt_priority": Param(int, default=40, minval=1, maxval=99,
                         doc="SCHED_FIFO priority of the scan thread"),
    "watchdog_healthy_cycles": Param(int, default=10, minval=1, maxval=100_000,
                                     doc="cycles in a row on time before a watchdog ping"),
    "status_every_s": Param(float, default=1.0, minval=0.1, maxval=60.0, unit="s",
                            doc="refresh of STATUS= and of the status file"),
    "run_dir": Param(str, default="", doc="folder of busguard.pid and status.json "
                                          "(default: state_dir)"),
}
STATUS_FILE = "status.json"
PID_FILE = "busguard.pid"


def service_options(site: SiteConfig) -> Mapping[str, Any]:
    """The site's validated [service] table (the declared defaults for a site read without
    the plugin that owns it)."""
    return site.sections.get("service") or defaults(SERVICE_PARAMS)


def run_dir(site: SiteConfig) -> Path:
    """Where the pid file and the status file of the site's running instance live: the
    site's ``[service] run_dir``, else its state_dir (the service and `busguard apply` both
    derive it from the file, so they always agree)."""
    opt = service_options(site)["run_dir"]
    return site.resolve(opt) if opt else site.state_dir


def read_status(site: SiteConfig) -> dict[str, Any] | None:
    """The status file of the site's running instance, or None."""
    try:
        return json.loads((run_dir(site) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked for."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


def set_realtime(priority: int) -> str:
    """Ask for SCHED_FIFO for the calling thread; returns what we got, in words."""
    if not hasattr(os, "sched_setscheduler"):
        return "SCHED_OTHER (no sched_setscheduler on this platform)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        return (f"SCHED_OTHER (SCHED_FIFO {priority} refused: {exc.strerror}; grant "
                f"LimitRTPRIO= or CAP_SYS_NICE and RestrictRealtime=no)")
    got = os.sched_getscheduler(0)
    prio = os.sched_getparam(0).sched_priority
    return f"SCHED_FIFO priority {prio}" if got == os.SCHED_FIFO else f"policy {got}"


HELPER_PRIORITY = 1  # SCHED_FIFO of a helper thread beside a real-time scan: below any scan


def follow_scan_priority(scan_thread_id: int | None) -> None:
    """Put the calling helper thread of the scan process (one that holds the interpreter lock
    for long: the retained-state writer) at SCHED_FIFO ``HELPER_PRIORITY`` while the scan
    thread runs SCHED_FIFO, and back to SCHED_OTHER while it does not.

    Why: the scan thread waits for the interpreter lock whoever holds it. A helper at normal
    priority that the OS preempts while holding it (the I/O process, the DCIM's clients, any
    other process wants the CPU) keeps the real-time scan waiting for a whole time slice: at
    256 meters the retained-state saves (7,400 points) were what made scans late and overrun
    (docs/benchmarks.md, the scale curve). At the lowest real-time priority nothing of normal
    priority preempts it, and the scan, above it, still does."""
    if scan_thread_id is None or not hasattr(os, "sched_getscheduler"):
        return
    try:
        fifo = os.sched_getscheduler(scan_thread_id) == os.SCHED_FIFO
        want, prio = (os.SCHED_FIFO, HELPER_PRIORITY) if fifo else (os.SCHED_OTHER, 0)
        if os.sched_getscheduler(0) != want:
            os.sched_setscheduler(0, want, os.sched_param(prio))
    except OSError:  # the scan thread ended, or real-time refused: stay as we are
        return


def clear_realtime() -> None:
    """Back to SCHED_OTHER (before starting threads that must not inherit SCHED_FIFO)."""
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class Service:
    """The observer plugin; one per ``busguard run`` process."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.notify_enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.notify_enabled else None
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            sock.setblocking(False)  # a full notify queue must never stall the scan
        self.watchdog_s = watchdog_interval(env)
        self.runtime: Runtime | None = None
        self.options: Mapping[str, Any] = defaults(SERVICE_PARAMS)
        self.state = "starting"
        self.ready = False
        self.reloading = False
        self.healthy = False
        self.ok_run = 0
        self.pings = 0
        self.last_ping = -math.inf
        self.scheduling = "SCHED_OTHER"
        self.last_reload: dict[str, Any] = {}
        self._announced = False  # RELOADING=1 sent, its READY=1 not yet
        self._overruns = 0
        self._period = 0.0
        self._stalled = False
        self._seen_cycles = -1
        self._seen_at = 0.0
        self._need = 10
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid_path: Path | None = None
        if self.watchdog_s:
            log.info("systemd watchdog: WATCHDOG_USEC=%s, pinging every %.3f s while healthy",
                     env.get("WATCHDOG_USEC"), self.watchdog_s)

    def notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    # -- hooks ------------------------------------------------------------------------------
    @hookimpl
    def busguard_startup(self, runtime: Runtime) -> None:
        with self._lock:
            self.runtime = runtime
            self.options = service_options(runtime.site)
            self._need = int(self.options["watchdog_healthy_cycles"])
            self._period = runtime.site.scan.period_s
            self._overruns = runtime.stats.overruns
            self.ok_run = 0
            self.healthy = False
            self.ready = False
        self._write_pid(run_dir(runtime.site))
        if self._thread is None:
            self._thread = threading.Thread(target=self._status_loop, name="busguard-status",
                                            daemon=True)
            self._thread.start()

    @hookimpl
    def busguard_scan_complete(self, runtime: Runtime, result: CycleResult) -> None:
        overruns = runtime.stats.overruns
        if overruns != self._overruns or result.lateness_s > self._period:
            self._overruns = overruns
            self.ok_run = 0
        else:
            self.ok_run += 1
        self.healthy = self.ok_run >= self._need
        if not self.ready:
            self.ready = True
            self.reloading = False
            self._announced = False
            self.state = "running"
            self.notify("READY=1\nSTATUS=" + self.status_line(runtime))
            log.info("ready: first scan complete (cycle %d)", result.cycle)
            self._wake.set()
        # due at half of WATCHDOG_USEC, on the scan nearest to it (never more than half a
        # period early)
        if self.watchdog_s and self.healthy and \
                result.now >= self.last_ping + self.watchdog_s - self._period / 2:
            self.last_ping = result.now
            self.pings += 1
            self.notify("WATCHDOG=1")

    @hookimpl
    def busguard_shutdown(self, runtime: Runtime) -> None:
        if self.reloading:
            return
        self.state = "stopped"
        self.notify("STOPPING=1\nSTATUS=stopping: outputs to fail-safe, state flushed")
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._write_status()
        if self._pid_path is not None:
            with contextlib.suppress(OSError):
                self._pid_path.unlink()

    # -- reload ------------------------------------------------------------------------------
    def reload_begun(self) -> None:
        """A SIGHUP's reload begins (the file not checked yet): ``RELOADING=1``."""
        self.state = "reloading"
        self._announce("checking site.toml")

    def reload_started(self) -> None:
        """The swap: the running runtime stops for the new one (whose first scan sends
        ``READY=1``); a stop meanwhile is part of the reload, not the service's stop."""
        self.reloading = True
        self.state = "reloading"
        if not self._announced:  # the swap back after a failed start is a reload of its own
            self._announce("reloading site.toml")

    def _announce(self, what: str) -> None:
        self._announced = True
        mono_us = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={mono_us}\nSTATUS={what}")

    def reload_finished(self, ok: bool, message: str, config_hash: str = "") -> None:
        self.last_reload = {"ok": ok, "message": message, "utc": utc_stamp(),
                            "t": time.time(), "config_hash": config_hash}
        if not ok:
            self.reloading = False
            self._announced = False
            self.state = "running"
            self.notify("READY=1\nSTATUS=reload refused, previous site.toml keeps running: "
                        + message.splitlines()[0][:200])
        elif self._announced and not self.reloading:  # nothing swapped (unchanged)
            self._announced = False
            self.state = "running"
            self.notify(f"READY=1\nSTATUS=reload: {message}, site.toml keeps running")
        self._wake.set()

    # -- status ------------------------------------------------------------------------------
    def stalled(self, runtime: Runtime) -> bool:
        """The scan has not completed a cycle for over a second (or 10 periods): hung. The
        watchdog pings stopped with it; the status says so too."""
        now = time.monotonic()
        cycles = runtime.stats.cycles
        if cycles != self._seen_cycles or not self.ready or self.reloading:
            self._seen_cycles, self._seen_at = cycles, now
            return False
        return now - self._seen_at > max(1.0, 10 * self._period)

    def status_line(self, runtime: Runtime) -> str:
        st = runtime.stats.snapshot()
        alarms = runtime.alarms.active()
        crit = sum(1 for a in alarms if a.condition.severity.word == "critical")
        text = (f"scan cycle {st.cycles}, {len(alarms)} alarm{'s' if len(alarms) != 1 else ''}"
                f" active")
        if crit:
            text += f" ({crit} critical)"
        text += f", lateness p99 {st.lateness_p99_ms:.2f} ms, {st.overruns} overruns"
        if self._stalled:
            text += ", SCAN STALLED (no watchdog ping)"
        elif not self.healthy and st.cycles > self._need:
            text += ", NOT HEALTHY (scan late: no watchdog ping)"
        return text

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        out: dict[str, Any] = {"pid": os.getpid(), "busguard": __version__,
                               "state": self.state, "ready": self.ready,
                               "healthy": self.healthy and not self._stalled,
                               "stalled": self._stalled, "scheduling": self.scheduling,
                               "watchdog_s": self.watchdog_s, "watchdog_pings": self.pings,
                               "last_reload": self.last_reload, "updated_utc": time.time()}
        if rt is not None:
            st = rt.stats.snapshot()
            alarms = rt.alarms.active()
            out.update({"site": rt.site.name, "site_file": str(Path(rt.site.file).resolve()),
                        "config_hash": rt.site.config_hash,
                        "runtime_state": rt.state, "cycles": st.cycles,
                        "overruns": st.overruns, "lateness_p99_ms": st.lateness_p99_ms,
                        "alarms_active": len(alarms),
                        "alarms_critical": sum(1 for a in alarms
                                               if a.condition.severity.word == "critical"),
                        "faulted_blocks": sorted(rt.engine.faulted)})
        return out

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            every = self.options["status_every_s"]
            self._wake.wait(every)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                rt = self.runtime
                self._stalled = rt is not None and self.stalled(rt)
                if rt is not None and self.ready and not self.reloading:
                    self.notify("STATUS=" + self.status_line(rt))
                self._write_status()
            except Exception:  # the status thread must outlive any one bad refresh
                log.exception("status refresh failed")

    def _write_status(self) -> None:
        rt = self.runtime
        if rt is None:
            return
        path = run_dir(rt.site) / STATUS_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, (json.dumps(self.status(), indent=1) + "\n").encode())
        except OSError as exc:
            log.warning("cannot write status file %s: %s", path, exc)

    def _write_pid(self, folder: Path) -> None:
        path = folder / PID_FILE
        if path == self._pid_path:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, f"{os.getpid()}\n".encode())
        except OSError as exc:
            log.warning("cannot write pid file %s: %s", path, exc)
            return
        if self._pid_path is not None:
            with contextlib.suppress(OSError):
                self._pid_path.unlink()
        self._pid_path = path

    def enter_realtime(self) -> str:
        """Called from the scan thread before it scans (at start and after each reload):
        SCHED_FIFO when the site asks and the system permits, logs what it got; and the
        collector settled (:func:`busguard.gcpolicy.settle`)."""
        if self.options["realtime"] == "off":
            self.scheduling = "SCHED_OTHER (realtime = \"off\")"
        else:
            self.scheduling = set_realtime(self.options["rt_priority"])
        log.info("scan thread scheduling: %s", self.scheduling)
        log.info("start-up objects frozen out of the garbage collector's reach (%.1f ms)",
                 gcpolicy.settle())
        return self.scheduling

