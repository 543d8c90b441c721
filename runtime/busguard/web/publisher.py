"""``[web]``: the publisher that runs the page's server in a thread of its own.

The server gets its own event loop in its own thread (``busguard-web``), not the drivers'
loop: a burst of page loads or a slow scrape delays neither a meter poll nor the scan. It
reads the register map's snapshot (:func:`busguard.northbound.snapshot.map_snapshot`), so it
needs a ``[modbus_server]`` table (loopback is enough) and serves exactly what the DCIM reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param
from busguard.firewall import Listener
from busguard.northbound import access
from busguard.publisher import Publisher, listener_allow, listener_params
from busguard.web import view
from busguard.web.lateness import LatenessHistogram, SharedLateness
from busguard.web.passwd import Verifier

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.ioproc.process import RemoteContext
    from busguard.northbound.snapshot import MapSnapshot
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult
    from busguard.web.guard import Gate

log = logging.getLogger("busguard.web")


def lateness_path(scan_pid: int) -> Path:
    """The shared lateness histogram of the scan process ``scan_pid`` (tmpfs: no flash)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"busguard-lateness-{scan_pid}"


@dataclass(frozen=True)
class Served:
    """One refresh: the bodies every request gets until the next."""

    generation: int
    at: float
    snapshot: Mapping[str, Any]
    status: bytes
    view: bytes


class Cache:
    """The newest snapshot's bodies, rebuilt at most once per ``refresh_s`` and only when a
    request wants them (an unwatched unit spends nothing), on the web thread."""

    def __init__(self, pub: WebPublisher, refresh_s: float) -> None:
        self.pub = pub
        self.refresh_s = refresh_s
        self.layout = b"[]"
        self.taps: list[dict[str, Any]] = []
        self._served = Served(0, -1e9, {}, b"{}", b"{}")
        self.refreshes = 0

    def due(self) -> bool:
        """True when the next :meth:`current` rebuilds (its copy is older than refresh)."""
        return time.monotonic() - self._served.at >= self.refresh_s

    async def fresh(self) -> Served:
        """:meth:`current`, its rebuild moved just after a scan (:meth:`WebPublisher.quiet`)."""
        if self.due():
            await self.pub.quiet(heavy=True)
        return self.current()

    def current(self) -> Served:
        s = self._served
        now = time.monotonic()
        if now - s.at < self.refresh_s:
            return s
        snap = self.pub.snap
        if snap is None:
            return s
        data = snap.latest()
        if snap.generation == s.generation and s.generation:
            self._served = Served(s.generation, now, s.snapshot, s.status, s.view)
            return self._served
        from busguard.web.view import dumps

        status = dict(data)
        status["server"] = self.pub.modbus_address
        self.refreshes += 1
        self._served = Served(snap.generation, now, data, dumps(status),
                              dumps(view.page_view(data, self.taps)))
        return self._served


class History:
    """``/api/history``: the on-box history store (``busguard.history``), read in a thread;
    answers are kept for a few seconds, so four pages plotting the same point cost one read."""

    KEEP_S = 2.0

    def __init__(self, state_dir: Any) -> None:
        self.state_dir = state_dir
        self._reader: Any = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "busguard-web-history")
        self._cache: dict[tuple[str, str], tuple[float, bytes]] = {}

    def reader(self) -> Any:
        if self._reader is None:
            try:
                from busguard.history import open_reader
            except ImportError:
                raise RuntimeError("no history store in this busguard") from None
            try:
                self._reader = open_reader(self.state_dir)
            except Exception as exc:
                raise RuntimeError(f"history store in {self.state_dir}: {exc}") from exc
        return self._reader

    async def points(self) -> bytes:
        from busguard.web.view import dumps

        loop = asyncio.get_running_loop()
        pts = await loop.run_in_executor(self._pool, lambda: list(self.reader().points()))
        return dumps(pts)

    async def query(self, point: str, span_s: float, rng: str) -> bytes:
        from busguard.web.view import dumps

        now = time.monotonic()
        hit = self._cache.get((point, rng))
        if hit is not None and now - hit[0] < self.KEEP_S:
            return hit[1]

        def read() -> list[Any]:
            r = self.reader()
            if point not in set(r.points()):
                raise LookupError(f"no history for point {point!r}")
            # 1 h: the 1 s ring; longer: min/avg/max per minute (the store's "auto" would
            # switch at exactly one hour's span, so say which)
            return list(r.query(point, time.time() - span_s,
                                resolution="1s" if span_s <= 3600.0 else "1min"))

        loop = asyncio.get_running_loop()
        samples = await loop.run_in_executor(self._pool, read)
        body = dumps({"point": point, "range": rng, "samples": [
            [s.t_utc, s.min, s.avg, s.max, s.quality] for s in samples]})
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[(point, rng)] = (now, body)
        return body

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class HttpLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs each malformed request (a 10 MB header, a bad request line) with a
    traceback at ERROR; a flood of them would bury the journal. Count them instead and log
    once per streak, like every other refusal (one adapter per server, for its counters)."""

    def __init__(self, pub: WebPublisher) -> None:
        super().__init__(logging.getLogger("busguard.web.http"), {})
        self.pub = pub

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = kwargs.get("exc_info")
        if isinstance(exc, tuple):
            exc = exc[1]
        if isinstance(exc, HttpProcessingError):
            self.pub.counts["refused_bad_request"] += 1
            lines = (exc.message or "").strip().splitlines()
            what = f"{exc.code} {lines[0][:100] if lines else ''}".strip()
            self.pub.refusals.note(f"web: refused a malformed request ({what})", "-")
            return
        super().log(level, msg, *args, **kwargs)


class WebPublisher(Publisher):
    """The operator's page, its JSON API and /metrics over HTTPS (docs/web.md)."""

    section = "web"
    doc = "the operator's HTTPS page, JSON API and Prometheus /metrics (read-only)"
    # with [scan] io = "process" the server runs in the I/O process: the scan process then
    # only counts lateness (shared with it through a small file in /dev/shm)
    io_process_ok = True
    params: ClassVar[Mapping[str, Param]] = {
        **listener_params(port=8443, needs=" and TLS", port_doc="0: any free port"),
        "tls": Param(bool, default=True, doc="HTTPS (with `cert` and `key`); false (plain "
                     "HTTP) only on a loopback `host`"),
        "cert": Param(str, default="", doc="server certificate chain (PEM), relative to the "
                      "site file"),
        "key": Param(str, default="", doc="server private key (PEM)"),
        "auth": Param(bool, default=True, doc="HTTP basic auth against `passwd`; false only "
                      "on a loopback `host`"),
        "passwd": Param(str, default="web.passwd", doc="users file (mode 0600) that "
                        "`busguard passwd USER` writes, relative to the site file"),
        "max_connections": Param(int, default=64, minval=1, maxval=4096),
        "max_connections_per_client": Param(int, default=16, minval=1, maxval=4096),
        "max_requests_per_s": Param(float, default=20.0, minval=0.1, maxval=10000.0,
                                    doc="per client address (burst: twice this)"),
        "idle_timeout_s": Param(float, default=30.0, minval=0.1, maxval=3600.0, unit="s",
                                doc="keep-alive connections idle this long are closed"),
        "first_byte_s": Param(float, default=10.0, minval=0.1, maxval=600.0, unit="s",
                              doc="a new connection that sends nothing (or does not finish "
                                  "its TLS handshake) this long is closed"),
        "refresh_ms": Param(float, default=500.0, minval=50.0, maxval=60000.0, unit="ms",
                            doc="the page and /metrics serve a snapshot at most this old"),
    }

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        sec = self.reader()
        allow = listener_allow(sec, "the networks that may connect")
        self.host = p["host"]
        loop_only = access.is_loopback(self.host)
        self.tls = bool(p["tls"])
        if not self.tls and not loop_only:
            sec.problem("tls", f"false (plain HTTP) is only allowed on a loopback host, not "
                        f"{self.host!r}; set tls = true with `cert` and `key`")
        if not p["auth"] and not loop_only:
            sec.problem("auth", f"false is only allowed on a loopback host, not {self.host!r}")
        if self.tls:
            for key in ("cert", "key"):
                if not p[key]:
                    sec.problem(key, "missing: HTTPS (tls = true, the default) needs the "
                                "certificate and key files (PEM); tls = false only on "
                                "loopback")
                elif not site.resolve(p[key]).is_file():
                    sec.problem(key, f"no such file: {site.resolve(p[key])}")
        self.needs_map(sec, "serves")
        sec.raise_problems()
        self.policy = access.Policy(allow, (), p["max_connections"],
                                    p["max_connections_per_client"], p["idle_timeout_s"],
                                    p["max_requests_per_s"], (), 0)
        self.passwd_path = site.resolve(p["passwd"])
        self.verifier: Verifier | None = Verifier(self.passwd_path) if p["auth"] else None
        self.auth_executor = concurrent.futures.ThreadPoolExecutor(1, "busguard-web-auth")
        self.counts: dict[str, int] = {"refused_auth": 0, "refused_rate": 0,
                                       "refused_bad_request": 0}
        self.refusals = access.RefusalLog(log)
        self.snap: MapSnapshot | None = None
        self.modbus_address = ""
        self.cache = Cache(self, float(p["refresh_ms"]) / 1000.0)
        self.hist = LatenessHistogram()
        self.last_scan = 0.0  # monotonic time of the last scan (set by on_scan)
        self.period_s = site.scan.period_ms / 1000.0
        self.history = History(site.state_dir)
        self.lateness: LatenessHistogram | SharedLateness = self.hist
        from busguard.web.metrics import Metrics, SnapshotCollector  # prometheus-client: only
        # when a site has [web], not at every busguard start

        self.metrics = Metrics(SnapshotCollector(lambda: self.cache.current().snapshot,
                                                 site.name, lambda: self.lateness,
                                                 self.connection_counts))
        self.runtime: Runtime | None = None
        self.gate: Gate | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._ctx: Any = None  # the server's ssl.SSLContext (None: plain HTTP)
        self.bound: tuple[str, int] | None = None
        self.error = ""

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.host, int(self.config.params["port"]), self.policy.allow,
                         f"web: the operator's page and /metrics "
                         f"({'HTTPS' if self.tls else 'plain HTTP, loopback'})")]

    def connection_counts(self) -> dict[str, int]:
        out = dict(self.gate.counts) if self.gate else {}
        out.update(self.counts)
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if runtime.io is not None:  # the I/O process serves; we count the scans' lateness
            path = lateness_path(os.getpid())
            try:
                self.hist.share(path)
            except OSError as exc:
                log.warning("web: cannot share the scan lateness histogram through %s (%s): "
                            "/metrics will not have busguard_scan_lateness_seconds", path,
                            exc.strerror or exc)
            return
        self._serve_from(runtime.publishers)

    def start_remote(self, ctx: RemoteContext) -> None:
        """In the I/O process: serve from its Modbus server's snapshot; the lateness
        histogram is the scan process's (its parent), read from the shared file."""
        self.lateness = SharedLateness(lateness_path(os.getppid()))
        self._serve_from(ctx.publishers)

    def _serve_from(self, publishers: Any) -> None:
        from busguard.northbound.snapshot import map_snapshot
        from busguard.web.view import dumps

        self.snap = map_snapshot(publishers)
        ms = self.site.publishers["modbus_server"].params
        self.modbus_address = f"{ms['host']}:{ms['port']}"
        self.cache.taps = view.tapoffs(self.site)
        self.cache.layout = dumps({"site": self.site.name, "taps": self.cache.taps,
                                   "refresh_ms": self.cache.refresh_s * 1000.0})
        import ssl

        try:  # a certificate that does not load is an error of start, with the file
            self._ctx = self._ssl()
        except (OSError, ssl.SSLError) as exc:
            p = self.config.params
            raise OSError(f"web: cannot load the certificate {self.site.resolve(p['cert'])} "
                          f"and key {self.site.resolve(p['key'])}: {exc}") from exc
        sock = self._listen()  # bind errors surface here, in start, with the address
        # aiohttp is imported and set up in the server's own thread: start returns at once
        # (connections wait in the listen backlog meanwhile), the runtime's start and the
        # Modbus server are not held up by it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(sock,),
                                        name="busguard-web", daemon=True)
        self._thread.start()
        log.info("web: serving %s://%s:%d/ (%s)", "https" if self.tls else "http",
                 self.host, self.bound[1] if self.bound else 0,
                 "basic auth" if self.verifier else "no auth, loopback")

    def _listen(self) -> socket.socket:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, int(self.config.params["port"])))
            sock.listen(256)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"web: cannot listen on {self.host}:"
                          f"{self.config.params['port']}: {exc.strerror}") from exc
        self.bound = (self.host, int(sock.getsockname()[1]))
        return sock

    def _ssl(self) -> Any:
        if not self.tls:
            return None
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        p = self.config.params
        ctx.load_cert_chain(str(self.site.resolve(p["cert"])), str(self.site.resolve(p["key"])))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _serve(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup(sock))
        except Exception as exc:  # a bad certificate, a missing library: logged, not fatal
            self.error = f"web: cannot start: {exc}"
            log.error("%s", self.error)
            sock.close()
            return
        loop.run_forever()
        loop.run_until_complete(self._teardown())
        loop.close()

    async def _setup(self, sock: socket.socket) -> None:
        from aiohttp import web

        from busguard.web.app import build_app
        from busguard.web.guard import Gate

        p = self.config.params
        self._runner = web.AppRunner(build_app(self), handle_signals=False, access_log=None,
                                     keepalive_timeout=float(p["idle_timeout_s"]),
                                     max_line_size=8190, max_field_size=8190,
                                     logger=HttpLog(self))
        await self._runner.setup()
        self.gate = Gate(sock, self._runner.server, self.policy, self._ctx,
                         float(p["first_byte_s"]), self.refusals)
        self.gate.start()

    async def _teardown(self) -> None:
        if self.gate is not None:
            await self.gate.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def on_scan(self, result: CycleResult) -> None:
        self.hist.observe(result.lateness_s)
        self.last_scan = time.monotonic()

    async def quiet(self, heavy: bool = False) -> None:
        """Wait, when need be, until just after a scan before work that holds the GIL (a
        request: ~0.2 ms; ``heavy``: decoding the map or building the metrics text, a few ms).
        The scan runs on absolute deadlines; started right after one, the work ends before the
        next deadline instead of making the scan wait a switch interval (0.5 ms) for the GIL.
        Goes at once in the first half of a period (``heavy``: the first 15 %), else sleeps
        to just after the next scan; never longer than 2.5 periods, and not at all while the
        scan is not running."""
        period = self.period_s
        limit = (0.15 if heavy else 0.5) * period
        give_up = time.monotonic() + 2.5 * period
        while True:
            now = time.monotonic()
            since = now - self.last_scan
            if since < limit or since > 4 * period or now >= give_up:
                return
            # the next scan is due at last_scan + period; a little after it, its on_scan
            await asyncio.sleep(max(0.0002, period - since + 0.0002))

    def stop(self) -> None:
        self.hist.unshare()
        if isinstance(self.lateness, SharedLateness):
            self.lateness.close()
        loop, self._loop = self._loop, None
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10.0)
        self.auth_executor.shutdown(wait=False, cancel_futures=True)
        self.history.close()

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        if self.bound is None and rt is not None and rt.io is not None:
            return rt.io.publisher_status(self.section)
        out: dict[str, Any] = {"listening": [f"{'https' if self.tls else 'http'} "
                                             f"{self.bound[0]}:{self.bound[1]}"]
                               if self.bound else []}
        out.update(self.connection_counts())
        out["refreshes"] = self.cache.refreshes
        return out

    def port(self) -> int:
        """The bound port (here or, with ``[scan] io = "process"``, in the I/O process)."""
        if self.bound is not None:
            return self.bound[1]
        for item in self.status().get("listening", []):
            return int(item.rsplit(":", 1)[1])
        raise KeyError("web: not listening")
