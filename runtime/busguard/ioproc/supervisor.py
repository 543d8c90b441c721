"""The scan process's side of ``[scan] io = "process"``: starts the I/O process
(:mod:`busguard.ioproc.process`), sends it the layout first, restarts it when it ends, and
moves the link's messages (:mod:`busguard.ioproc`'s contract) at the two points of a cycle
where that is safe: before the snapshot (driver writes into the image) and after the
publishers saw the cycle (the cycle's frame out, when a DCIM client asked for one).

Restarts come from this module's own thread, which runs at normal priority (it is created
before the scan thread asks for SCHED_FIFO, and on a reload after the runtime dropped it), so
the I/O process never inherits real-time priority. A restart backs off from 1 s to 30 s; while
the I/O process is away its inputs age to stale and the blocks follow their fail-safe policy.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from busguard.alarms import AlarmCondition, Severity
from busguard.config.site import Document, read_document, scan_options
from busguard.errors import ConfigError
from busguard.ioproc import link
from busguard.ioproc.frames import Layout

if TYPE_CHECKING:
    from busguard.northbound.earlyserve import EarlyServer
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.io")
BACKOFF_S = (1.0, 30.0)
IO_ALARM_SOURCE = "io-process"  # the alarm table's owner name for the I/O process alarm
STOP_WAIT_S = 3.0
# An alarm edge pushes a frame without waiting for the I/O process to ask (at most this often):
# the event ring and the alarm table reach the DCIM's map, SNMP traps and Sparkplug within a
# scan or two of the edge, not after the next demand (up to [modbus_server] refresh_ms later).
EDGE_PUSH_MIN_S = 0.010


class FrameSource(Protocol):
    """The publisher whose frames the I/O process serves (:meth:`Publisher.frame_payload`)."""

    def frame_payload(self) -> bytes: ...


def plugin_specs(rt: Runtime) -> list[str]:
    """``module:Class`` of the plugin objects given to the runtime directly (not through
    entry points, which the I/O process finds by itself) that declare ``io_process_ok``:
    the I/O process makes one each (no arguments) so it knows the same types."""
    out = []
    for p in rt.pm.get_plugins():
        cls = type(p)
        if not isinstance(p, types.ModuleType) and getattr(cls, "io_process_ok", False):
            module = cls.__module__
            if module == "__main__":  # run as `python -m pkg.mod`: import it by that name
                spec = getattr(sys.modules["__main__"], "__spec__", None)
                module = spec.name if spec is not None else module
            out.append(f"{module}:{cls.__qualname__}")
    return out


@dataclass
class Spawned:
    """A started I/O process and our end of its link."""

    site_file: str
    sock: socket.socket
    proc: subprocess.Popen[bytes]

    def close(self) -> None:
        """Not adopted by a runtime after all: close the link; the process ends by itself."""
        with contextlib.suppress(OSError):
            self.sock.close()
        _reap(self.proc)


def spawn(site_file: str | Path, plugins: Sequence[str] = (),
          early: EarlyServer | None = None) -> Spawned | None:
    """Start ``python -m busguard.ioproc SITE`` with one end of a new link; with ``early``
    (the early server of this start) it inherits the listening sockets and the handover
    channel (:mod:`busguard.northbound.earlyserve`)."""
    ours, theirs = link.socket_pair()
    fd = theirs.fileno()
    cmd = [sys.executable, "-m", "busguard.ioproc", str(site_file), "--fd", str(fd)]
    for spec in plugins:
        cmd += ["--plugin", spec]
    fds = [fd]
    if early is not None:
        args, more = early.for_child()
        cmd += args
        fds += more
    try:
        proc = subprocess.Popen(cmd, pass_fds=fds, stdin=subprocess.DEVNULL)
    except OSError as exc:
        ours.close()
        theirs.close()
        log.error("io process: cannot start %s: %s", sys.executable, exc)
        return None
    theirs.close()
    if early is not None:
        early.child_started()
    return Spawned(str(site_file), ours, proc)


def prespawn(site_file: str | Path, doc: Document | None = None,
             early: EarlyServer | None = None) -> Spawned | None:
    """Start the I/O process of a site that asks for one (``[scan] io = "process"``) before
    the site is built, so both processes build in parallel and a restarted unit serves the
    DCIM sooner. Reads only the [scan] table of the parsed file ``doc`` (the loader
    validates the whole file); returns None for any other site or a file that does not
    parse."""
    try:
        doc = doc or read_document(site_file)
    except ConfigError:
        return None
    if scan_options(doc.data).io != "process":
        return None
    return spawn(site_file, early=early)


def _half_close_and_wait(sock: socket.socket, timeout_s: float) -> None:
    """Shut our sending side down, read until the peer closes its end (bounded), close."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(link.MAX_MESSAGE):
                break
    with contextlib.suppress(OSError):
        sock.close()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class IoSupervisor:
    """Owns the I/O process of one runtime."""

    def __init__(self, runtime: Runtime, first: Spawned | None = None) -> None:
        self.rt = runtime
        self._first = first
        self.frame_source: FrameSource | None = None
        self.ready: dict[str, Any] = {}
        self.stats: dict[str, Any] = {}
        self.starts = 0
        self.exits: list[int] = []
        self.frames_sent = 0
        self.bad_messages = 0
        self._sock: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._demand = False
        self._pushed_at = -1e9
        self.frames_pushed = 0
        self._frame_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._layout_bytes: bytes | None = None

    # -- lifecycle (start and stop from the runtime's controlling thread) -------------------
    def start(self) -> None:
        first, self._first = self._first, None
        if first is not None and first.proc.poll() is None and \
                Path(first.site_file).resolve() == Path(self.rt.site.file).resolve() and \
                not plugin_specs(self.rt):
            self._adopt(first)
        else:
            if first is not None:
                first.close()
            self._spawn()
        self._thread = threading.Thread(target=self._watch, name="busguard-io-supervisor",
                                        daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        # io_site_file: a copy of the bytes this runtime runs, when the file on disk no
        # longer holds them (the previous site started again after a refused reload)
        got = spawn(getattr(self.rt, "io_site_file", None) or self.rt.site.file,
                    plugin_specs(self.rt))
        if got is not None:
            self._adopt(got)

    def _adopt(self, got: Spawned) -> None:
        old = self._sock
        self._sock, self._proc = got.sock, got.proc
        proc = got.proc
        self.ready = {}
        self.starts += 1
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        # the first message of every I/O process: it builds nothing that indexes points
        # before it has this (a full buffer here is a dead peer: the watch restarts it)
        if not link.send(got.sock, link.LAYOUT, self._layout()):
            log.error("io process: the layout (%d points) could not be sent",
                      len(self.rt.image.specs))
        log.info("io process started (pid %d): input drivers and the DCIM server run there",
                 proc.pid)

    def _layout(self) -> bytes:
        if self._layout_bytes is None:
            self._layout_bytes = Layout.of(self.rt).to_bytes()
        return self._layout_bytes

    def _watch(self) -> None:
        delay = BACKOFF_S[0]
        while not self._stop.wait(0.2):
            proc = self._proc
            if proc is None or proc.poll() is None:
                if self.ready and delay > BACKOFF_S[0]:
                    delay = BACKOFF_S[0]  # it came up fine: the next failure starts over
                continue
            self.exits.append(int(proc.returncode))
            log.error("io process (pid %d) ended with code %s; its inputs go stale; "
                      "restarting in %.1f s", proc.pid, proc.returncode, delay)
            if self._stop.wait(delay):
                break
            delay = min(BACKOFF_S[1], delay * 2)
            if not self._stop.is_set():
                self._spawn()

    def stop(self, wait: bool = True) -> None:
        """End the I/O process: half-close the link, which it answers by closing its
        listeners and then its end of the link (so the port is free when this returns), then
        it stops its drivers and exits. ``wait``: also wait for the exit (a final stop);
        without (a reload's hand-over) a thread reaps it, insisting after 3 s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        sock, proc = self._sock, self._proc
        self._sock = None
        if sock is not None:
            _half_close_and_wait(sock, STOP_WAIT_S)
        if proc is not None and proc.poll() is None:
            if wait:
                _reap(proc)
            else:
                threading.Thread(target=_reap, args=(proc,), name="busguard-io-reaper",
                                 daemon=True).start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- scan thread ------------------------------------------------------------------------
    def before_scan(self) -> None:
        """Apply the I/O process's writes to the image (before the cycle's snapshot)."""
        sock = self._sock
        if sock is None:
            return
        got = link.drain(sock, self.rt.image)
        if got.bad:
            if not self.bad_messages:
                log.error("io process: a message that does not fit the layout was dropped")
            self.bad_messages += got.bad
        if got.demand:
            self._demand = True
        for kind, obj in got.objects:
            if kind == link.READY:
                self.ready = obj if isinstance(obj, dict) else {}
                if "error" in self.ready:
                    log.error("io process failed to start: %s", self.ready["error"])
                else:
                    log.info("io process ready: %d drivers; %s", len(obj.get("drivers", ())),
                             "; ".join(f"{k}: {', '.join(v.get('listening', []))}"
                                       for k, v in obj.get("publishers", {}).items()))
            elif kind == link.STATS and isinstance(obj, dict):
                self.stats = obj

    def after_scan(self, edges: bool = False) -> None:
        """Send a fresh register image when a client read the last one, or at once when this
        scan raised or cleared an alarm (``edges``; at most every ``EDGE_PUSH_MIN_S``)."""
        if self.frame_source is None or self._sock is None:
            return
        if not self._demand:
            now = time.monotonic()
            if not edges or now - self._pushed_at < EDGE_PUSH_MIN_S:
                return
            self._pushed_at = now
            self.frames_pushed += 1
        self._demand = False
        payload = self.frame_source.frame_payload()
        if link.send(self._sock, link.FRAME, payload):
            self.frames_sent += 1
            self._frame_failed = False
        elif not self._frame_failed:  # once per streak, not once per scan
            self._frame_failed = True
            try:
                buf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            except OSError:
                buf = 0
            log.error("io process: a northbound frame of %d bytes was not delivered (link "
                      "send buffer %d bytes%s); the DCIM is served the last one delivered",
                      len(payload) + 1, buf, "; raise net.core.wmem_max"
                      if len(payload) + 1 > buf // 2 else ", full")

    def conditions(self) -> list[AlarmCondition]:
        """The alarm while the I/O process is away (ended, or failed to start): one raise
        when it goes, one clear when it is back, like any alarm (scan thread)."""
        proc = self._proc
        if proc is not None and proc.poll() is None and "error" not in self.ready:
            return []
        if proc is None:
            why = "could not be started"
        elif "error" in self.ready:
            why = f"failed to start: {self.ready['error']}"
        else:
            why = f"ended with code {proc.returncode}"
        return [AlarmCondition("down", Severity.MAJOR, "BG-IO-PROCESS",
                               f"I/O process {why}; its inputs go stale; restarting",
                               device=IO_ALARM_SOURCE,
                               values={"starts": self.starts, "exits": len(self.exits)})]

    # -- views ------------------------------------------------------------------------------
    def driver_stats(self, name: str) -> dict[str, Any] | None:
        return self.stats.get("drivers", {}).get(name)

    def publisher_status(self, section: str) -> dict[str, Any]:
        got = self.stats.get("publishers", {}).get(section)
        if got is None:
            got = self.ready.get("publishers", {}).get(section, {})
        return dict(got)

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "alive": self.alive(), "starts": self.starts,
                "exits": list(self.exits), "frames_sent": self.frames_sent,
                "bad_messages": self.bad_messages,
                "ready": bool(self.ready) and "error" not in self.ready,
                "link": self.stats.get("link", {}), "as_of": time.time()}
