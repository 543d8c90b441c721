"""The I/O process of ``[scan] io = "process"``: input drivers and the DCIM's server.

Started by the scan process (:class:`busguard.ioproc.supervisor.IoSupervisor`) as
``python -m busguard.ioproc SITE --fd N``, with one end of the link socket
(:mod:`busguard.ioproc.link`). It loads the same site file (checked against the scan
process's config hash), builds only the drivers that declare ``io_process_ok`` and the
publishers that declare it (no blocks, no runtime: the point layout and the blocks' outputs
come from the scan process, message ``L``), starts them, and then only moves messages: driver
writes out, frames in. It owns no state worth keeping: the scan process holds the image, the
retained state and the decisions, so this process can die and be restarted at any time; its
inputs just age to stale meanwhile. It ends when the scan process closes the link (or dies)
and on SIGTERM; it ignores SIGINT (Ctrl-C is the scan process's to handle).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from busguard import gcpolicy
from busguard.clock import MonotonicClock
from busguard.config.site import SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import BusguardError
from busguard.ioloop import IoLoop, stop_io
from busguard.ioproc import STATS_EVERY_S, SWITCH_INTERVAL_S, link
from busguard.ioproc.frames import Layout
from busguard.plugins import register_observers
from busguard.publisher import Publisher

log = logging.getLogger("busguard.ioprocess")
FIRST_FRAME_S = 3.0
LAYOUT_WAIT_S = 120.0  # the scan process builds the site meanwhile (a Pi: seconds)


class FrameInbox:
    """The frames the scan process sends, in the I/O process. The next one is asked for only
    after a client read the current one (no work while nobody reads) and at most every
    ``refresh_s``: each new frame is encoded on the server's loop, so under many clients a
    frame per scan would cost the server more than all its requests
    (``[modbus_server] refresh_ms``)."""

    def __init__(self, sock: socket.socket, refresh_s: float = 0.0) -> None:
        self._sock = sock
        self._latest: bytes | None = None
        self._asked = False
        self._at = -1e9
        self.refresh_s = refresh_s
        self.received = 0
        self.on_frame: list[Callable[[], None]] = []

    def put(self, frame: bytes) -> None:
        self._latest = frame
        self._asked = False
        self._at = time.monotonic()
        self.received += 1
        for fn in self.on_frame:
            fn()  # e.g. hand it to the server's loop to encode, not in a client's request

    @property
    def newest(self) -> bytes | None:
        """The newest frame, without asking for the next one."""
        return self._latest

    def latest(self) -> bytes | None:
        """The newest frame; asks for the next one when a client read this one and
        ``refresh_s`` passed since it came."""
        if not self._asked and time.monotonic() - self._at >= self.refresh_s:
            self._asked = link.send(self._sock, link.DEMAND)
        return self._latest


@dataclass
class RemoteContext:
    """What a publisher gets in the I/O process (:meth:`Publisher.start_remote`): the site,
    the scan process's point layout, the image writer (command writes go to the scan
    process), the frames the scan process sends, and for the observers of what happens
    there (``busguard_command_written``: the fault log's audit line) the plugin manager and
    the clock. It stands for the runtime in those hooks: it has ``site``, ``pm`` and
    ``clock``, no blocks and no image to read."""

    site: SiteConfig
    layout: Layout
    image: link.LinkImageWriter
    frames: FrameInbox
    pm: pluggy.PluginManager
    clock: MonotonicClock
    # the publishers serving in this process, in site order (an interface that serves the
    # register map's snapshot finds the Modbus server here: busguard.northbound.snapshot)
    publishers: tuple[Publisher, ...] = ()


class LinkClosed(Exception):
    """The scan process closed the link (or ended) before we were ready."""


class IoProcess:
    def __init__(self, site_path: str, sock: socket.socket,
                 extra: list[object] | None = None) -> None:
        from busguard.loader import load  # here: the launcher's import stays light

        self.sock = sock
        self.clock = MonotonicClock()
        loaded = load(site_path, extra=extra or ())
        self.pm, registry, self.site = loaded.pm, loaded.registry, loaded.site
        self.registry = registry
        self.drivers: list[Driver] = [
            drv for drv in (registry.drivers[d.kind][d.driver](d, self.site)
                            for d in self.site.devices) if drv.runs_in_io_process]
        self.publishers: list[Publisher] = [
            pub for pub in (registry.publishers[name](cfg, self.site)
                            for name, cfg in self.site.publishers.items()) if pub.io_process_ok]
        self.frames = FrameInbox(sock)
        self.io = IoLoop()
        self.observers: list[object] = []
        self.rctx: RemoteContext | None = None
        self.stopping = threading.Event()
        self.layout: Layout | None = None
        self.image: link.LinkImageWriter | None = None

    def _recv(self, timeout_s: float) -> bytes | None:
        """One message (None: none within ``timeout_s``); LinkClosed when the peer is gone."""
        self.sock.settimeout(max(timeout_s, 1e-3))
        try:
            msg = self.sock.recv(link.MAX_MESSAGE)
        except TimeoutError:
            return None
        except OSError as exc:
            raise LinkClosed(str(exc)) from exc
        if not msg:
            raise LinkClosed("closed")
        return msg

    def receive_layout(self, timeout_s: float = LAYOUT_WAIT_S) -> Layout:
        """Wait for the scan process's layout (``L``, its first message) and check that it
        describes the site this process loaded."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0 and not self.stopping.is_set():
            msg = self._recv(min(left, 0.2))
            if msg is not None and msg[:1] == link.LAYOUT:
                lay = Layout.from_bytes(msg[1:])
                if lay.config_hash != self.site.config_hash:
                    raise RuntimeError(f"{self.site.file} changed since the scan process "
                                       f"loaded it (config hash {self.site.config_hash[:12]}, "
                                       f"running {lay.config_hash[:12]}); reload to apply it")
                return lay
        if self.stopping.is_set():
            raise LinkClosed("told to stop")
        raise RuntimeError(f"no layout from the scan process within {timeout_s:.0f} s")

    def first_frame(self, timeout_s: float = FIRST_FRAME_S) -> bool:
        """Ask for a register image and wait for it (bounded), so the first DCIM read after
        a restart already gets the restored values, not the empty template."""
        link.send(self.sock, link.DEMAND)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(link.MAX_MESSAGE)
            except TimeoutError:
                break
            if not msg:
                return False
            if msg[:1] == link.FRAME:
                self.frames.put(msg[1:])
                return True
        log.warning("io process: no register image from the scan process within %.1f s; "
                    "serving the map's template until one comes", timeout_s)
        return True

    def start(self) -> dict[str, Any] | None:
        """Start publishers and drivers once the layout came; None when the scan process
        went away first."""
        try:
            self.layout = self.receive_layout()
        except LinkClosed:
            return None
        self.image = link.LinkImageWriter(self.layout.specs, self.layout.index, self.sock,
                                          self.clock)
        loop = self.io.start()
        if self.publishers and not self.first_frame():
            return None
        ready: dict[str, Any] = {"pid": os.getpid(), "drivers": [d.name for d in self.drivers],
                                 "publishers": {}}
        rctx = RemoteContext(self.site, self.layout, self.image, self.frames, self.pm,
                             self.clock, tuple(self.publishers))
        # the observers of what is served here (the fault log's command audit lines)
        self.observers = register_observers(self.pm, self.registry, rctx, io_process=True)
        self.rctx = rctx
        for pub in self.publishers:
            pub.start_remote(rctx)
            ready["publishers"][pub.section] = pub.status()
        ctx = DriverContext(self.image, self.clock, loop, self.site, self.registry)
        for drv in self.drivers:
            drv.start(ctx)
        return ready

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"drivers": {}, "publishers": {},
                               "link": {"sent": self.image.sent if self.image else 0,
                                        "dropped": self.image.dropped if self.image else 0,
                                        "frames": self.frames.received}}
        for d in self.drivers:
            try:
                out["drivers"][d.name] = d.stats()
            except Exception:  # a driver's stats are never worth the process
                log.debug("stats() of %s failed", d.name, exc_info=True)
        for p in self.publishers:
            try:
                out["publishers"][p.section] = p.status()
            except Exception:
                log.debug("status() of %s failed", p.section, exc_info=True)
        return out

    def serve(self) -> None:
        """Receive register images until the scan process closes the link or we are told
        to stop; send statistics once a second."""
        self.sock.settimeout(0.2)
        next_stats = time.monotonic()
        while not self.stopping.is_set():
            try:
                msg = self.sock.recv(link.MAX_MESSAGE)
            except TimeoutError:
                msg = None
            except OSError:
                break
            if msg is not None:
                if not msg:
                    log.info("io process: the scan process closed the link; stopping")
                    break
                if msg[:1] == link.FRAME:
                    self.frames.put(msg[1:])
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_EVERY_S
                link.send_obj(self.sock, link.STATS, self.stats())

    def stop(self) -> None:
        """The one stop sequence (:func:`busguard.ioloop.stop_io`): publishers first, then
        the link closes (the scan process waits for that: a reload's next I/O process binds
        the same port), then the drivers and the I/O loop."""
        def close_link() -> None:
            with contextlib.suppress(OSError):
                self.sock.close()

        stop_io(self.publishers, self.drivers, self.io, between=close_link)
        for obs in self.observers:  # flush what they hold (the fault log's queue)
            with contextlib.suppress(Exception):
                obs.busguard_shutdown(runtime=self.rctx)  # type: ignore[attr-defined]


def _make(spec: str) -> object:
    module, _sep, name = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m busguard.ioproc",
                                 description="busguard's I/O process (started by busguard run "
                                             "when [scan] io = \"process\")")
    ap.add_argument("site")
    ap.add_argument("--fd", type=int, required=True, help="the link socket, inherited")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE:CLASS",
                    help="a plugin class to instantiate and register (repeatable)")
    ap.add_argument("--listen", action="append", default=[], metavar="HOST:PORT:FD",
                    help="a listening socket the early server hands over, inherited")
    ap.add_argument("--handover-fd", type=int, metavar="FD",
                    help="the early server's handover channel, inherited")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[io]: %(message)s")
    # the drivers' thread and the server's thread hand the interpreter lock to each other
    # every 0.5 ms instead of every 5 ms, so no DCIM request waits long behind a busy poller
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    sock = socket.socket(fileno=args.fd)
    proc: IoProcess | None = None
    if args.listen:
        from busguard.northbound import earlyserve

        # holding the DCIM's listening socket, this process must not outlive the scan
        # process while it still imports (before it reads the link): a next start could
        # not bind the port and clients would wait in a backlog nobody accepts
        earlyserve.end_with_parent()
        for spec in args.listen:  # the server takes these instead of binding
            host, port, fd = earlyserve.parse_listen(spec)
            earlyserve.inherit(host, port, socket.socket(fileno=fd))

    def on_signal(_sig: int, _frame: Any) -> None:
        if proc is not None:
            proc.stopping.set()
        else:  # still loading the site: nothing built, nothing to stop
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C reaches the whole process group: the scan process handles it and closes the
    # link, which ends this process after the scan process stopped (no restart race)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = IoProcess(args.site, sock, [_make(p) for p in args.plugin])
        ready = proc.start()
    except Exception as exc:  # reported to the scan process, then exit 1
        if isinstance(exc, BusguardError):  # e.g. a port taken: the message says it all
            log.error("io process: start failed: %s", exc)
        else:
            log.exception("io process: start failed")
        link.send_obj(sock, link.READY, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    if ready is None:
        log.info("io process: the scan process stopped before we started; exiting")
        proc.stop()
        return 0
    if args.handover_fd is not None:  # the early server's connections, now ours
        from busguard.northbound import earlyserve

        earlyserve.drop_inherited()  # a listener no server took (e.g. [modbus_server] gone)
        servers = [s for s in (getattr(p, "server", None) for p in proc.publishers)
                   if hasattr(s, "adopt")]
        earlyserve.receive(args.handover_fd, servers[0].adopt if servers else None)
    gcpolicy.settle()  # no 20 ms full collection while serving (busguard.gcpolicy)
    link.send_obj(sock, link.READY, ready)
    try:
        proc.serve()
    finally:
        proc.stop()
    return 0

