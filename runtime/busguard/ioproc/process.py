"""The I/O process of ``[scan] io = "process"``: input drivers and the DCIM's server.

Started by the scan process (:class:`busguard.iosupervisor.IoSupervisor`) as
``python -m busguard.ioprocess SITE --fd N``, with one end of the link socket
(:mod:`busguard.iolink`). It builds the same site the scan process runs (same file, so the same
point layout and register map), starts the drivers that declare ``io_process_ok`` and the
publishers that declare it, and then only moves messages: driver writes out, register images
in. It owns no state worth keeping: the scan process holds the image, the retained state and
the decisions, so this process can die and be restarted at any time; its inputs just age to
stale meanwhile. It ends when the scan process closes the link (or dies) and on SIGTERM;
it ignores SIGINT (Ctrl-C is the scan process's to handle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from busguard import gcpolicy, iolink
from busguard.clock import MonotonicClock
from busguard.driver import Driver, DriverContext

log = logging.getLogger("busguard.ioprocess")
STATS_EVERY_S = 1.0
SWITCH_INTERVAL_S = 0.0005
FIRST_FRAME_S = 3.0


class RemoteFrames:
    """The frames the scan process sends. The next one is asked for only after a client read
    the current one (no work while nobody reads) and at most every ``refresh_s``: each new
    frame is encoded on the server's loop, so under many clients a frame per scan would
    cost the server more than all its requests (``[modbus_server] refresh_ms``)."""

    def __init__(self, sock: socket.socket, refresh_s: float = 0.0) -> None:
        self._sock = sock
        self._latest: bytes | None = None
        self._asked = False
        self._at = -1e9
        self.refresh_s = refresh_s
        self.received = 0
        self.on_frame: list[Any] = []

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
            self._asked = iolink.send(self._sock, iolink.DEMAND)
        return self._latest


class IoProcess:
    def __init__(self, site_path: str, sock: socket.socket,
                 extra: list[object] | None = None) -> None:
        from busguard.runtime import Runtime

        self.sock = sock
        self.clock = MonotonicClock()
        self.rt = Runtime.from_file(site_path, clock=self.clock, extra=extra or ())
        self.image = iolink.RemoteImage(self.rt.image.specs, self.rt.image.index, sock,
                                        self.clock)
        self.rt.image = self.image  # type: ignore[assignment]  # writes go to the link
        self.drivers: list[Driver] = [d for d in self.rt.drivers if d.runs_in_io_process]
        self.publishers = [p for p in self.rt.publishers if p.io_process_ok]
        refresh_ms = max([float(p.config.params.get("refresh_ms", 0.0))
                          for p in self.publishers] or [0.0])
        self.frames = RemoteFrames(sock, refresh_ms / 1000.0)
        self.loop = asyncio.new_event_loop()
        self.stopping = threading.Event()

    def first_frame(self, timeout_s: float = FIRST_FRAME_S) -> bool:
        """Ask for a register image and wait for it (bounded), so the first DCIM read after
        a restart already gets the restored values, not the empty template."""
        iolink.send(self.sock, iolink.DEMAND)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(iolink.MAX_MESSAGE)
            except TimeoutError:
                break
            if not msg:
                return False
            if msg[:1] == iolink.FRAME:
                self.frames.put(msg[1:])
                return True
        log.warning("io process: no register image from the scan process within %.1f s; "
                    "serving the map's template until one comes", timeout_s)
        return True

    def start(self) -> dict[str, Any] | None:
        """Start publishers and drivers; None when the scan process went away first."""
        threading.Thread(target=self.loop.run_forever, name="busguard-io",
                         daemon=True).start()
        if self.publishers and not self.first_frame():
            return None
        ready: dict[str, Any] = {"pid": os.getpid(), "drivers": [d.name for d in self.drivers],
                                 "publishers": {}}
        for pub in self.publishers:
            pub.start_remote(self.rt, self.frames)  # type: ignore[attr-defined]
            ready["publishers"][pub.section] = pub.status()
        ctx = DriverContext(self.image, self.clock, self.loop, self.rt.site)  # type: ignore[arg-type]
        for drv in self.drivers:
            drv.start(ctx)
        return ready

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"drivers": {}, "publishers": {},
                               "link": {"sent": self.image.sent, "dropped": self.image.dropped,
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
                msg = self.sock.recv(iolink.MAX_MESSAGE)
            except TimeoutError:
                msg = None
            except OSError:
                break
            if msg is not None:
                if not msg:
                    log.info("io process: the scan process closed the link; stopping")
                    break
                if msg[:1] == iolink.FRAME:
                    self.frames.put(msg[1:])
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_EVERY_S
                iolink.send_obj(self.sock, iolink.STATS, self.stats())

    def stop(self) -> None:
        """Publishers first, then the link closes (the scan process waits for that: a
        reload's next I/O process binds the same port), then the drivers."""
        for p in self.publishers:
            try:
                p.stop()
            except Exception:
                log.exception("publisher %s failed to stop cleanly", p.section)
        with contextlib.suppress(OSError):
            self.sock.close()
        for d in self.drivers:
            try:
                d.stop()
            except Exception:
                log.exception("driver %s failed to stop cleanly", d.name)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _make(spec: str) -> object:
    module, _sep, name = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m busguard.ioprocess",
                                 description="busguard's I/O process (started by busguard run "
                                             "when [scan] io = \"process\")")
    ap.add_argument("site")
    ap.add_argument("--fd", type=int, required=True, help="the link socket, inherited")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE:CLASS",
                    help="a plugin class to instantiate and register (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[io]: %(message)s")
    # the drivers' thread and the server's thread hand the interpreter lock to each other
    # every 0.5 ms instead of every 5 ms, so no DCIM request waits long behind a busy poller
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    sock = socket.socket(fileno=args.fd)
    proc: IoProcess | None = None

    def on_signal(_sig: int, _frame: Any) -> None:
        if proc is not None:
            proc.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C reaches the whole process group: the scan process handles it and closes the
    # link, which ends this process after the scan process stopped (no restart race)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = IoProcess(args.site, sock, [_make(p) for p in args.plugin])
        ready = proc.start()
    except Exception as exc:  # reported to the scan process, then exit 1
        log.exception("io process: start failed")
        iolink.send_obj(sock, iolink.READY, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    if ready is None:
        log.info("io process: the scan process stopped before we started; exiting")
        proc.stop()
        return 0
    gcpolicy.settle()  # no 20 ms full collection while serving (busguard.gcpolicy)
    iolink.send_obj(sock, iolink.READY, ready)
    try:
        proc.serve()
    finally:
        proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
