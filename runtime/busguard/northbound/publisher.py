"""``[modbus_server]``: the DCIM's Modbus map, served with access control (see docs/northbound.md).

The scan thread only captures a :class:`Frame` per cycle (``on_scan`` returns at once); a
read encodes the newest frame once and swaps the immutable image in. Writes are command-point
writes into the process image (``ProcessImage.write``), so they are scanned, recorded and
replayed like any input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pymodbus.constants import ExcCodes

from busguard.config.params import Param, Section, Values
from busguard.errors import ConfigError, ConfigProblem
from busguard.firewall import Listener
from busguard.image import Quality
from busguard.northbound import access, mapdef
from busguard.northbound.encode import (
    AlarmInfo,
    Encoder,
    Frame,
    frame_from_bytes,
    frame_to_bytes,
)
from busguard.northbound.server import Endpoint, NorthboundServer
from busguard.publisher import Publisher

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult

log = logging.getLogger("busguard.northbound")

TLS_PARAMS: Mapping[str, Param] = {
    "cert": Param(str, doc="server certificate (PEM), relative to the site file"),
    "key": Param(str, doc="server private key (PEM)"),
    "ca": Param(str, default="", doc="CA (PEM) that signs the clients' certificates"),
    "port": Param(int, default=802, minval=0, maxval=65535, doc="Modbus/TCP Security port"),
    "require_client_cert": Param(bool, default=True,
                                 doc="refuse clients without a certificate signed by `ca`"),
    "only": Param(bool, default=False, doc="serve TLS only (no plain Modbus/TCP on `port`)"),
}
ALARM_REFRESH_CYCLES = 10
_EMPTY: frozenset[str] = frozenset()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ModbusServerPublisher(Publisher):
    """Serves the register map over Modbus/TCP (and Modbus/TCP Security)."""

    section = "modbus_server"
    doc = "the DCIM's Modbus TCP server (register map, allowlists, TLS)"
    io_process_ok = True
    params: ClassVar[Mapping[str, Param]] = {
        "host": Param(str, default="127.0.0.1", doc="address to listen on; any address other "
                      "than loopback needs `allow`"),
        "port": Param(int, default=502, minval=0, maxval=65535, doc="Modbus/TCP port (0: any "
                      "free port)"),
        "allow": Param(list, item=str, default=(), doc="CIDRs that may connect; empty: "
                       "loopback only"),
        "write_allow": Param(list, item=str, default=(), doc="CIDRs that may write the "
                             "command area (inside `allow`); empty: nobody"),
        "priority": Param(list, item=str, default=(), doc="CIDRs of DCIMs that may always "
                          "connect (inside `allow`): with `write_allow` they may use the "
                          "reserved slots"),
        "reserved_connections": Param(int, default=2, minval=0, maxval=1024,
                                      doc="slots of `max_connections` only `priority` and "
                                          "`write_allow` clients may take"),
        "max_connections": Param(int, default=16, minval=1, maxval=1024),
        "max_connections_per_client": Param(int, default=4, minval=1, maxval=1024),
        "idle_timeout_s": Param(float, default=60.0, minval=0.05, maxval=86400.0, unit="s"),
        "max_requests_per_s": Param(float, default=200.0, minval=0.1, maxval=100000.0,
                                    doc="per client address, over all its connections"),
        "tls": Param(dict, default={}, doc="Modbus/TCP Security: {cert, key, ca, port = 802}"),
        "refresh_ms": Param(float, default=50.0, minval=0.0, maxval=1000.0, unit="ms",
                            doc="with [scan] io = \"process\": the register image served is "
                                "at most this much older than the last scan (a fresh one at "
                                "most this often; 0: every scan a client reads)"),
    }

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        problems: list[ConfigProblem] = []
        sec = Section(config.file, self.section, p, problems)

        def nets(name: str) -> tuple[access.Network, ...]:
            try:
                return access.parse_networks(p[name] or ())
            except ValueError as exc:
                sec.problem(name, f"{exc}; expected CIDRs such as '10.0.5.10/32'")
                return ()

        allow, write_allow = nets("allow"), nets("write_allow")
        priority = nets("priority")
        for key, inner in (("write_allow", write_allow), ("priority", priority)):
            for n in inner:
                if not access.inside(n, allow or access.LOOPBACK):
                    sec.problem(key, f"{n} is not inside `allow` "
                                f"({', '.join(map(str, allow)) or 'loopback only'}); "
                                f"{'writers' if key == 'write_allow' else 'priority clients'}"
                                f" must also be allowed to connect")
        self.policy = access.Policy(allow, write_allow, p["max_connections"],
                                    p["max_connections_per_client"], p["idle_timeout_s"],
                                    p["max_requests_per_s"], priority,
                                    p["reserved_connections"])
        self.host = p["host"]
        if not allow and not _is_loopback(self.host):
            log.warning("modbus_server: host %s but no `allow` list: serving 127.0.0.1 only "
                        "until the allowlist is set", self.host)
            self.host = "127.0.0.1"
        self.tls: Values | None = None  # the validated [modbus_server.tls] table
        if p["tls"]:
            ts = Section(config.file, f"{self.section}.tls", p["tls"], problems)
            tv = ts.values(TLS_PARAMS)
            ts.finish()
            if tv["require_client_cert"] and not tv["ca"]:
                ts.problem("ca", "missing: client certificates are required "
                           "(require_client_cert = true) and need the CA that signs them")
            for key in ("cert", "key", "ca"):
                if tv[key] and not site.resolve(tv[key]).is_file():
                    ts.problem(key, f"no such file: {site.resolve(tv[key])}")
            self.tls = tv
        if problems:
            raise ConfigError(problems)
        self.runtime: Runtime | None = None
        self.server: NorthboundServer | None = None
        self.map: mapdef.RegisterMap | None = None
        self.encoder: Encoder | None = None
        self._frame: Frame | None = None
        self._encoded: tuple[Frame | None, bytes] = (None, b"")
        self._lock = threading.Lock()
        self._alarms: tuple[AlarmInfo, ...] = ()
        self._latched: frozenset[str] = _EMPTY
        self._alarm_cycle = -ALARM_REFRESH_CYCLES
        self._last_good = 0.0
        self._retained: Any = None

    def listeners(self) -> list[Listener]:
        """The Modbus TCP port and, with `[modbus_server.tls]`, the Modbus/TCP Security port,
        each admitting `allow` (empty: loopback only)."""
        allow = self.policy.allow
        out = []
        if not (self.tls and self.tls["only"]):
            out.append(Listener("tcp", self.host, int(self.config.params["port"]), allow,
                                "modbus_server: Modbus TCP for the DCIM"))
        if self.tls:
            out.append(Listener("tcp", self.host, int(self.tls["port"]), allow,
                                "modbus_server: Modbus/TCP Security (TLS)"))
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        eps = []
        if not (self.tls and self.tls["only"]):
            eps.append(Endpoint(self.host, int(self.config.params["port"])))
        if self.tls:
            from busguard.northbound.tls import server_context

            r = self.site.resolve
            ctx = server_context(r(self.tls["cert"]), r(self.tls["key"]),
                                 r(self.tls["ca"]) if self.tls["ca"] else None,
                                 self.tls["require_client_cert"])
            eps.append(Endpoint(self.host, int(self.tls["port"]), ctx))
        return eps

    def start(self, runtime: Runtime) -> None:
        from busguard.retained import PLUGIN_NAME

        self.runtime = runtime
        self.map = mapdef.for_runtime(runtime)
        self.encoder = Encoder(self.map, runtime.image.index, runtime.site.scan.period_ms,
                               runtime.site.config_hash)
        self._retained = runtime.pm.get_plugin(PLUGIN_NAME)
        self._frame = self._capture(0, runtime.clock.wall(), runtime.image.snapshot(),
                                    runtime.engine.outputs, "built")
        if runtime.io is not None:  # the server runs in the I/O process; frames go there
            runtime.io.frame_source = self
            log.info("modbus_server: the register map (map v%d, %d registers) is served by "
                     "the I/O process", mapdef.MAP_VERSION, self.map.size)
            return
        self.server = NorthboundServer(self, self.policy, self.endpoints(),
                                       handshake_timeout_s=10.0)
        self.server.start()
        log.info("modbus_server: serving the register map (map v%d, %d registers) on %s",
                 mapdef.MAP_VERSION, self.map.size, ", ".join(
                     f"{k} {h}:{p}" for k, h, p in self.server.bound))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def start_remote(self, runtime: Runtime, frames: Any) -> None:
        """In the I/O process: serve the register images the scan process sends (``frames``,
        a :class:`busguard.ioprocess.RemoteFrames`); command writes are validated here and
        go to the scan process like any image write."""
        self.runtime = runtime
        self.map = mapdef.for_runtime(runtime)
        self.encoder = Encoder(self.map, runtime.image.index, runtime.site.scan.period_ms,
                               runtime.site.config_hash)
        self.server = NorthboundServer(_RemoteImage(self, frames), self.policy,
                                       self.endpoints(), handshake_timeout_s=10.0)
        self.server.start()
        log.info("modbus_server: serving the register map (map v%d, %d registers) on %s",
                 mapdef.MAP_VERSION, self.map.size, ", ".join(
                     f"{k} {h}:{p}" for k, h, p in self.server.bound))

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        if self.server is None and rt is not None and rt.io is not None:
            return rt.io.publisher_status(self.section)
        return self.server.status() if self.server else {}

    def port(self, kind: str = "tcp") -> int:
        """The bound port (here or, with ``[scan] io = "process"``, in the I/O process)."""
        if self.server is not None:
            return self.server.port(kind)
        for item in self.status().get("listening", []):
            k, _sp, addr = item.partition(" ")
            if k == kind:
                return int(addr.rsplit(":", 1)[1])
        raise KeyError(kind)

    # -- scan thread -----------------------------------------------------------------------
    def on_scan(self, result: CycleResult) -> None:
        rt = self.runtime
        if rt is None:
            return
        self._frame = self._capture(result.cycle, result.t_utc, result.snapshot,
                                    result.outputs, rt.state, bool(result.edges))

    def _capture(self, cycle: int, t_utc: float, snap: Any, outputs: Mapping[str, float],
                 state: str, edges: bool = True) -> Frame:
        rt = self.runtime
        assert rt is not None
        if edges or cycle - self._alarm_cycle >= ALARM_REFRESH_CYCLES:
            self._alarm_cycle = cycle
            self._alarms = tuple(
                AlarmInfo(a.block, a.condition.device, int(a.condition.severity), a.active,
                          a.acked) for a in rt.alarms.alarms.values())
            latched = set()
            for b in rt.blocks:
                if b.name in rt.engine.faulted:
                    continue
                try:  # what the block declares about its breakers (Block.breakers)
                    latched.update(br for br, st in b.breakers().items() if st.latched)
                except Exception:  # a block's own business; never the scan's
                    log.debug("breakers() of block %s failed", b.name, exc_info=True)
            self._latched = frozenset(latched)
        faulted = frozenset(rt.engine.faulted) if rt.engine.faulted else _EMPTY
        if cycle and not faulted:
            self._last_good = t_utc
        ret = self._retained
        return Frame(cycle, t_utc, snap, dict(outputs), self._alarms, faulted, self._latched,
                     rt.stats.overruns, state, rt.started_utc, self._last_good,
                     getattr(ret, "status", "disabled"), getattr(ret, "starts", 0))

    # -- server side (northbound thread) ----------------------------------------------------
    def frame_payload(self) -> bytes:
        """The newest frame for the I/O process (it encodes it there)."""
        assert self._frame is not None
        return frame_to_bytes(self._frame)

    def image(self) -> bytes:
        frame = self._frame
        enc = self._encoded
        if enc[0] is frame:
            return enc[1]
        with self._lock:
            if self._encoded[0] is not frame:
                assert self.encoder is not None
                self._encoded = (frame, self.encoder.encode(frame))
            return self._encoded[1]

    def write(self, func_code: int, address: int, values: Sequence[int],
              client: str) -> ExcCodes | None:
        """Validate a write into the command area and apply it to the image."""
        assert self.map is not None and self.runtime is not None
        items: list[tuple[mapdef.CommandRecord, float]] = []
        if func_code == 6:
            hit = self.map.command_at(address)
            if hit is None or hit[1] != mapdef.COMMAND_LOW_WORD:
                return ExcCodes.ILLEGAL_ADDRESS
            items.append((hit[0], float(values[0])))
        else:
            if not values or len(values) % 2:
                return ExcCodes.ILLEGAL_ADDRESS
            by_offset = {f.offset: f for f in mapdef.COMMAND.fields}
            for k in range(0, len(values), 2):
                hit = self.map.command_at(address + k)
                f = by_offset.get(hit[1]) if hit is not None else None
                if hit is None or f is None:
                    return ExcCodes.ILLEGAL_ADDRESS
                raw = struct.pack(">HH", values[k] & 0xFFFF, values[k + 1] & 0xFFFF)
                items.append((hit[0], float(f.struct.unpack(raw)[0])))
        for rec, v in items:
            if not math.isfinite(v) or v < rec.minval or v > rec.maxval:
                log.warning("northbound: refused write from %s: %s = %r outside [%g, %g]",
                            client, rec.name, v, rec.minval, rec.maxval)
                return ExcCodes.ILLEGAL_VALUE
        self.runtime.image.write_many([(rec.name, v, Quality.GOOD) for rec, v in items])
        t_utc = self.runtime.clock.wall()
        for rec, v in items:
            log.info("northbound: %s wrote %s = %r", client, rec.name, v)
            self.runtime.pm.hook.busguard_command_written(
                runtime=self.runtime, point=rec.name, value=v, client=client, t_utc=t_utc)
        return None


class _RemoteImage:
    """The I/O process's image source: the newest frame the scan process sent, encoded on the
    server's own loop in steps (:meth:`Encoder.encode_steps`), and writes validated by the
    publisher.

    A read is answered from the last image fully encoded (the map's template until the
    first): it never waits for an encoding, and the encoding never runs on another thread
    of this process. Both were the tail of the DCIM's request latency: a request that came
    while a frame was being encoded waited for the whole encoding under a lock, and the
    receiving thread encoding it took the GIL from the server thread for up to a switch
    interval at a time (``busguard bench --only northbound``; docs/benchmarks.md, "Figures
    behind the code").
    A newer frame that comes during an encoding waits for it; one that comes after replaces
    it; the image served is at most one encoding behind the newest frame."""

    def __init__(self, pub: ModbusServerPublisher, frames: Any) -> None:
        self.pub = pub
        self.frames = frames
        enc = pub.encoder
        assert enc is not None
        self._image = enc.template
        self._done: bytes | None = None  # the frame message that _image shows
        self._encoding = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one
        first = frames.latest()
        if first is not None:  # the restart's first frame: no client yet, encode it now
            self._encode_all(first)
        frames.on_frame.append(self._arrived)  # receiving thread

    def _decode(self, got: bytes) -> Any:
        rt = self.pub.runtime
        assert rt is not None
        try:
            return frame_from_bytes(got, rt.image.specs, rt.image.index)
        except Exception:  # a damaged message: keep serving the last good image
            log.exception("modbus_server: undecodable frame from the scan process")
            return None

    def _encode_all(self, got: bytes) -> None:
        frame = self._decode(got)
        if frame is not None:
            assert self.pub.encoder is not None
            self._image, self._done = self.pub.encoder.encode(frame), got

    def _arrived(self) -> None:
        server = self.pub.server
        if server is None or not server.call_soon(self._kick):
            got = self.frames.latest()  # no loop yet (start-up): encode here
            if got is not None:
                self._encode_all(got)

    def _kick(self) -> None:  # server loop
        if not self._encoding:
            self._encoding = True
            self._task = asyncio.get_running_loop().create_task(self._encode_newest())

    async def _encode_newest(self) -> None:  # server loop
        enc = self.pub.encoder
        assert enc is not None
        try:
            while (got := self.frames.newest) is not None and got is not self._done:
                frame = self._decode(got)
                if frame is None:
                    self._done = got
                    continue
                steps = enc.encode_steps(frame)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        self._image, self._done = done.value, got
                        break
                    await asyncio.sleep(0)  # let the requests that came in meanwhile be served
        except Exception:  # never the server's end: keep serving the last good image
            log.exception("modbus_server: encoding a frame failed")
        finally:
            self._encoding = False

    def image(self) -> bytes:
        self.frames.latest()  # asks the scan process for the next frame when due
        return self._image

    def write(self, func_code: int, address: int, values: Sequence[int],
              client: str) -> ExcCodes | None:
        return self.pub.write(func_code, address, values, client)
