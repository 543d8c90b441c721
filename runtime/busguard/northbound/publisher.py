"""``[modbus_server]``: the DCIM's Modbus map, served with access control (see docs/northbound.md).

The scan thread only captures a :class:`Frame` per cycle (``on_scan`` returns at once); a
read encodes the newest frame once and swaps the immutable image in. Writes are command-point
writes into the process image (``ProcessImage.write``), so they are scanned, recorded and
replayed like any input. With ``[scan] io = "process"`` the server runs in the I/O process
(:meth:`ModbusServerPublisher.start_remote`, serving a
:class:`busguard.ioproc.register_image.RemoteRegisterImage`) and this side only hands the
frames over (:meth:`ModbusServerPublisher.frame_payload`).
"""

from __future__ import annotations

import logging
import math
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param, Section, Values
from busguard.firewall import Listener
from busguard.image import ImageWriter, Quality
from busguard.northbound import access, mapdef
from busguard.northbound.encode import AlarmInfo, Encoder, Frame
from busguard.northbound.events import AlarmRow, rows_of
from busguard.northbound.units import Identity, UnitTable
from busguard.publisher import Publisher, cidrs, listener_params

if TYPE_CHECKING:  # the server (and pymodbus.server) loads where it serves, not at registration
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.ioproc.process import RemoteContext
    from busguard.northbound.server import Endpoint, NorthboundServer
    from busguard.northbound.snapshot import MapSnapshot
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
ILLEGAL_ADDRESS, ILLEGAL_VALUE = 0x02, 0x03  # the Modbus exception codes a write may get
_EMPTY: frozenset[str] = frozenset()


class ModbusServerPublisher(Publisher):
    """Serves the register map over Modbus/TCP (and Modbus/TCP Security)."""

    section = "modbus_server"
    doc = "the DCIM's Modbus TCP server (register map, allowlists, TLS)"
    io_process_ok = True
    params: ClassVar[Mapping[str, Param]] = {
        **listener_params(port=502, port_doc="Modbus/TCP port (0: any free port)"),
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
        self.snapshot: MapSnapshot | None = None  # the decoded map, made on first use
        p = config.params
        sec = self.reader()
        allow, write_allow, priority = (cidrs(sec, key, "10.0.5.10/32")
                                        for key in ("allow", "write_allow", "priority"))
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
        if not allow and not access.is_loopback(self.host):
            log.warning("modbus_server: host %s but no `allow` list: serving 127.0.0.1 only "
                        "until the allowlist is set", self.host)
            self.host = "127.0.0.1"
        self.tls: Values | None = None  # the validated [modbus_server.tls] table
        if p["tls"]:
            ts = Section(config.file, f"{self.section}.tls", p["tls"], sec.problems)
            tv = ts.values(TLS_PARAMS)
            ts.finish()
            if tv["require_client_cert"] and not tv["ca"]:
                ts.problem("ca", "missing: client certificates are required "
                           "(require_client_cert = true) and need the CA that signs them")
            for key in ("cert", "key", "ca"):
                if tv[key] and not site.resolve(tv[key]).is_file():
                    ts.problem(key, f"no such file: {site.resolve(tv[key])}")
            self.tls = tv
        sec.raise_problems()
        self.runtime: Runtime | None = None
        self.server: NorthboundServer | None = None
        self.map: mapdef.RegisterMap | None = None
        self.encoder: Encoder | None = None
        self._frame: Frame | None = None
        self._encoded: tuple[Frame | None, bytes] = (None, b"")
        self._lock = threading.Lock()
        self._alarms: tuple[AlarmInfo, ...] = ()
        self._latched: frozenset[str] = _EMPTY
        self._trips: dict[str, tuple[str, float | None]] = {}
        self._rows: tuple[AlarmRow, ...] = ()
        self._rows_at = -1  # AlarmTable.changes when _rows was built
        self._events: tuple[int, tuple[Any, ...]] = (0, ())
        self._wire: dict[str, Any] = {}  # frames.frame_to_bytes' cache (alarm rows, ring)
        self._alarm_cycle = -ALARM_REFRESH_CYCLES
        self._last_good = 0.0
        self._retained: Any = None
        self._writer: ImageWriter | None = None  # where command writes go
        # what busguard_command_written is told about: the runtime, or in the I/O process
        # its RemoteContext (site, pm, clock: what the fault log's audit line needs)
        self._observed: Any = None
        self._restart_error = ""  # the last restart image write's failure, logged once

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
        from busguard.northbound.server import Endpoint

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
        self._writer = runtime.image
        self._observed = runtime
        self.map = mapdef.for_runtime(runtime)
        self._commit_lock()
        self.encoder = Encoder(self.map, runtime.image.index, runtime.site.scan.period_ms,
                               runtime.site.config_hash)
        self._retained = runtime.pm.get_plugin(PLUGIN_NAME)
        self._frame = self._capture(0, runtime.clock.wall(), runtime.image.snapshot(),
                                    runtime.engine.outputs, "built")
        if self._retained is not None and getattr(self._retained, "enabled", False):
            self._retained.on_saved.append(self._save_restart_image)
        if runtime.io is not None:  # the server runs in the I/O process; frames go there
            runtime.io.frame_source = self
            log.info("modbus_server: the register map (map v%d, %d registers) is served by "
                     "the I/O process", mapdef.MAP_VERSION, self.map.size)
            return
        from busguard.northbound.server import NorthboundServer

        self.server = NorthboundServer(self, self.policy, self.endpoints(),
                                       handshake_timeout_s=10.0, units=self.unit_table())
        self.server.start()
        log.info("modbus_server: serving the register map (map v%d, %d registers) on %s",
                 mapdef.MAP_VERSION, self.map.size, ", ".join(
                     f"{k} {h}:{p}" for k, h, p in self.server.bound))

    def _save_restart_image(self, snap: Any, t_utc: float, generation: int) -> None:
        """The register image the next start serves before it builds anything
        (:mod:`busguard.northbound.restartimage`), for the retained generation just saved.
        Runs on the thread that saved (the retained writer, or the stop's last save)."""
        from busguard.northbound import restartimage as ri

        rt, frame, m, enc = self.runtime, self._frame, self.map, self.encoder
        if rt is None or frame is None or m is None or enc is None:
            return
        path = ri.path_in(rt.site.state_dir)
        try:
            img = enc.encode(ri.restored_frame(frame, snap, t_utc, rt.engine.failsafe,
                                               getattr(self._retained, "starts", 0) + 1))
            port = int(self.config.params["port"])
            plain = not (self.tls and self.tls["only"]) and port != 0
            ri.write(path, ri.RestartImage(
                rt.site.config_hash, generation, str(self._retained.path), t_utc, img,
                ((self.host, port),) if plain else (),
                tuple(str(n) for n in self.policy.allow), self.policy.max_connections,
                tuple(mapdef.SITE_UNITS),
                {u: (d.address, m.strides[d.kind]) for u, d in m.units.items()}))
        except Exception as exc:  # the next start just serves later; logged once per streak
            if not self._restart_error:
                log.error("modbus_server: cannot write the restart image %s: %s (the next "
                          "start serves once it is built)", path, exc)
            self._restart_error = str(exc)
            return
        self._restart_error = ""

    def _commit_lock(self) -> None:
        """Record the map's slots in map.lock (created when missing); a point that moved
        (an explicit `slot` taking another's) is logged with the diff."""
        assert self.map is not None and self.map.assignment is not None
        from busguard.northbound import slots

        a = self.map.assignment
        if a.moved:
            log.warning("modbus_server: the register map moved points a DCIM may read: %s",
                        "; ".join(slots.describe(a, {k: (b, st) for k, (b, _c, st)
                                                     in mapdef.LAYOUT.items()})[:len(a.moved)]))
        try:
            if mapdef.commit_lock(self.map, self.site):
                log.info("modbus_server: map slots recorded in %s",
                         slots.lock_path(self.site.state_dir))
        except OSError as exc:
            log.error("modbus_server: cannot write %s (%s): slots not recorded; the next "
                      "start assigns new devices again", slots.lock_path(self.site.state_dir),
                      exc.strerror or exc)

    def unit_table(self) -> UnitTable:
        """What each Modbus unit id serves: the whole map, a device's block, or nothing."""
        assert self.map is not None
        from busguard import __version__

        m = self.map
        site = Identity("BG-SITE", "busguard site map", "site", self.site.name,
                        m.fingerprint, __version__)
        views = {u: (d.address, m.strides[d.kind],
                     Identity(f"BG-{d.kind.upper()}", f"busguard {d.kind} view", d.name,
                              self.site.name, m.fingerprint, __version__))
                 for u, d in m.units.items()}
        return UnitTable(mapdef.SITE_UNITS, site, views)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def start_remote(self, ctx: RemoteContext) -> None:
        """In the I/O process: serve the frames the scan process sends; command writes are
        validated here and go to the scan process like any image write."""
        from busguard.ioproc.register_image import RemoteRegisterImage

        lay = ctx.layout
        self._writer = ctx.image
        self._observed = ctx
        self.map = mapdef.RegisterMap.build(lay.specs, lay.devices, lay.block_outputs,
                                            inputs=lay.map_inputs)
        self.encoder = Encoder(self.map, lay.index, self.site.scan.period_ms,
                               self.site.config_hash)
        ctx.frames.refresh_s = max(ctx.frames.refresh_s,
                                   float(self.config.params["refresh_ms"]) / 1000.0)
        source = RemoteRegisterImage(self, self.encoder, ctx.frames, lay)
        from busguard.northbound.server import NorthboundServer

        self.server = NorthboundServer(source, self.policy, self.endpoints(),
                                       handshake_timeout_s=10.0, units=self.unit_table())
        source.server = self.server
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
        moved = rt.alarms.changes != self._rows_at  # raised, cleared or acknowledged
        if edges or moved or cycle - self._alarm_cycle >= ALARM_REFRESH_CYCLES:
            # the alarms' and breakers' view is refreshed with every change to the table
            # (an acknowledgement is no edge but must be in this cycle's frame: the retained
            # save of this cycle writes its restart image from it) and every 10 scans for
            # what a block's breakers() may change without an alarm
            self._alarm_cycle = cycle
            self._alarms = tuple(
                AlarmInfo(a.block, a.condition.device, int(a.condition.severity), a.active,
                          a.acked) for a in rt.alarms.alarms.values())
            latched = set()
            trips: dict[str, tuple[str, float | None]] = {}
            for b in rt.blocks:
                if b.name in rt.engine.faulted:
                    continue
                try:  # what the block declares about its breakers (Block.breakers)
                    for br, st in b.breakers().items():
                        if st.latched:
                            latched.add(br)
                        if st.cause and (br not in trips or st.latched):
                            trips[br] = (st.cause, st.t_utc)  # a latched trip wins
                except Exception:  # a block's own business; never the scan's
                    log.debug("breakers() of block %s failed", b.name, exc_info=True)
            self._latched = frozenset(latched)
            self._trips = trips
        if moved:  # the table moved: rebuild its rows
            self._rows_at = rt.alarms.changes
            self._rows = rows_of(rt.alarms.by_priority())
        if rt.alarms.events.seq != self._events[0]:
            self._events = rt.alarms.events.view()
        faulted = frozenset(rt.engine.faulted) if rt.engine.faulted else _EMPTY
        if cycle and not faulted:
            self._last_good = t_utc
        ret = self._retained
        return Frame(cycle, t_utc, snap, dict(outputs), self._alarms, faulted, self._latched,
                     rt.stats.overruns, state, rt.started_utc, self._last_good,
                     getattr(ret, "status", "disabled"), getattr(ret, "starts", 0),
                     self._trips, self._rows, self._events)

    # -- server side (northbound thread) ----------------------------------------------------
    def frame_payload(self) -> bytes:
        """The newest frame for the I/O process (it encodes it there)."""
        from busguard.ioproc.frames import frame_to_bytes

        assert self._frame is not None
        return frame_to_bytes(self._frame, self._wire)

    def served_image(self) -> bytes:
        """The register image this process serves (here, or the I/O process's encoded one):
        what :mod:`busguard.northbound.snapshot` decodes for the other interfaces."""
        if self.server is not None and self.server.source is not self:
            return self.server.source.image()
        return self.image()

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
              client: str) -> int | None:
        """Validate a write into the command area and apply it to the image; None when
        done, else the Modbus exception code to answer."""
        assert self.map is not None and self._writer is not None
        items: list[tuple[mapdef.CommandRecord, float]] = []
        if func_code == 6:
            hit = self.map.command_at(address)
            if hit is None or hit[1] != mapdef.COMMAND_LOW_WORD:
                return ILLEGAL_ADDRESS
            items.append((hit[0], float(values[0])))
        else:
            if not values or len(values) % 2:
                return ILLEGAL_ADDRESS
            by_offset = {f.offset: f for f in mapdef.COMMAND.fields}
            for k in range(0, len(values), 2):
                hit = self.map.command_at(address + k)
                f = by_offset.get(hit[1]) if hit is not None else None
                if hit is None or f is None:
                    return ILLEGAL_ADDRESS
                raw = struct.pack(">HH", values[k] & 0xFFFF, values[k + 1] & 0xFFFF)
                items.append((hit[0], float(f.struct.unpack(raw)[0])))
        for rec, v in items:
            if not math.isfinite(v) or v < rec.minval or v > rec.maxval:
                log.warning("northbound: refused write from %s: %s = %r outside [%g, %g]",
                            client, rec.name, v, rec.minval, rec.maxval)
                return ILLEGAL_VALUE
        self._writer.write_many([(rec.name, v, Quality.GOOD) for rec, v in items])
        observed = self._observed
        t_utc = observed.clock.wall() if observed is not None else 0.0
        for rec, v in items:
            log.info("northbound: %s wrote %s = %r", client, rec.name, v)
            if observed is not None:
                observed.pm.hook.busguard_command_written(
                    runtime=observed, point=rec.name, value=v, client=client, t_utc=t_utc)
        return None
