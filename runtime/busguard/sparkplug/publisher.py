"""``[sparkplug]``: the edge node's MQTT session, in a thread of its own.

The thread (``busguard-sparkplug``) owns everything: the paho-mqtt client (a new one per
connection, so a reconnect never replays the last session's packets and each CONNECT carries
its own NDEATH will with the next bdSeq), the snapshot polling, report by exception and the
store-and-forward queue. The scan thread only ever reads an attribute here (``on_scan`` does
nothing): a dead broker, a slow TLS handshake or a full disk cannot delay a scan.

With ``[scan] io = "process"`` (``io_process_ok``) that thread runs in the I/O process, like
``[web]`` and ``[snmp]``: it reads the snapshot of the I/O process's Modbus server, so the
scan process does not even share its interpreter lock with the encoding, the MQTT socket or
the queue's SQLite writes (docs/benchmarks.md, "sparkplug", measured both ways).

Online means: connected, and the primary host (when ``primary_host`` is set) has said it is
online in its STATE message. Then each new image's changes go out as DDATA (NDATA for the
node's own metrics). Otherwise they go to the on-disk queue, and the next birth is followed by
the queue's contents in order, each metric marked ``is_historical`` with its own timestamp.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.atomicfile import atomic_write
from busguard.config.params import Param
from busguard.errors import BusguardError
from busguard.image import ImageWriter, Quality
from busguard.publisher import Publisher
from busguard.sparkplug import health
from busguard.sparkplug import metrics as mx
from busguard.sparkplug.node import EdgeNode, rebirth_requested, topic
from busguard.sparkplug.sparkplug_b_pb2 import Payload
from busguard.sparkplug.store import Store

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.ioproc.process import RemoteContext
    from busguard.northbound.snapshot import MapSnapshot
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.sparkplug")
_BAD_ID = set("/+#")


class SparkplugPublisher(Publisher):
    """Busguard as a Sparkplug B edge node (docs/sparkplug.md)."""

    section = "sparkplug"
    doc = "Sparkplug B edge node on an MQTT broker (read-only: NCMD rebirth only)"
    # with [scan] io = "process" the edge node runs in the I/O process (start_remote)
    io_process_ok = True
    # its health alarms: the block judging the sparkplug.* points this publisher writes
    companion_block = "sparkplug_health"
    params: ClassVar[Mapping[str, Param]] = {
        "host": Param(str, default="127.0.0.1", doc="the MQTT broker's address"),
        "port": Param(int, default=1883, minval=1, maxval=65535, doc="1883 plain, 8883 TLS"),
        "group_id": Param(str, default="busguard", doc="Sparkplug group (topic level 2)"),
        "edge_node_id": Param(str, default="", doc="this node's id; empty: the site's name"),
        "client_id": Param(str, default="", doc="MQTT client id; empty: "
                           "busguard-<group>-<node>"),
        "primary_host": Param(str, default="", doc="primary host id: publish only while its "
                              "STATE says online (queue meanwhile); empty: always"),
        "username": Param(str, default="", doc="MQTT user name"),
        "password_file": Param(str, default="", doc="file holding the MQTT password (mode "
                               "0600), relative to the site file"),
        "tls": Param(bool, default=False, doc="connect with TLS (verify the broker with `ca`)"),
        "ca": Param(str, default="", doc="CA certificate(s) (PEM) to verify the broker; "
                    "empty: the system's"),
        "cert": Param(str, default="", doc="client certificate (PEM), for brokers that "
                      "authenticate clients by certificate"),
        "key": Param(str, default="", doc="the client certificate's private key (PEM)"),
        "keepalive_s": Param(int, default=30, minval=5, maxval=3600, unit="s"),
        "reconnect_s": Param(float, default=1.0, minval=0.05, maxval=600.0, unit="s",
                             doc="first retry after a lost or refused connection (then "
                                 "doubling up to reconnect_max_s)"),
        "reconnect_max_s": Param(float, default=10.0, minval=0.05, maxval=3600.0, unit="s",
                                 doc="the longest wait between connection attempts"),
        "poll_ms": Param(float, default=100.0, minval=10.0, maxval=60000.0, unit="ms",
                         doc="how often the thread looks for a new image"),
        "deadband": Param(float, default=0.0, minval=0.0, doc="default report-by-exception "
                          "deadband for numeric metrics (0: every change)"),
        "deadbands": Param(dict, default={}, doc="per-point deadbands: point name "
                           "(power_kw = 0.5) or device.point (\"m1.current_l1_a\" = 2.0)"),
        "qos": Param(int, default=0, choices=(0, 1), doc="QoS of births and data (Sparkplug "
                     "says 0; 1 makes the broker acknowledge, and unacknowledged data is "
                     "queued again)"),
        "queue_max_changes": Param(int, default=100000, minval=1, maxval=100_000_000,
                                   doc="store-and-forward bound, in metric changes"),
        "queue_file": Param(str, default="sparkplug-queue.sqlite", doc="the queue, relative "
                            "to [paths] state_dir"),
    }

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        sec = self.reader()
        self.group = p["group_id"]
        self.node_id = p["edge_node_id"] or site.name
        for key, val in (("group_id", self.group), ("edge_node_id", self.node_id),
                         ("primary_host", p["primary_host"])):
            if _BAD_ID & set(val) or (key != "primary_host" and not val):
                sec.problem(key, f"{val!r} is not a valid Sparkplug id: non-empty, without "
                            f"'/', '+' or '#'")
        self.client_id = p["client_id"] or f"busguard-{self.group}-{self.node_id}"
        self.password: str | None = None
        if p["password_file"]:
            pw = site.resolve(p["password_file"])
            try:
                mode = pw.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    sec.problem("password_file", f"{pw} is readable by others (mode "
                                f"{stat.S_IMODE(mode):04o}); chmod 600 it")
                else:
                    self.password = pw.read_text(encoding="utf-8").strip("\r\n")
            except OSError as exc:
                sec.problem("password_file", f"cannot read {pw}: {exc.strerror}")
            if not p["username"]:
                sec.problem("username", "missing: a password_file needs a user name")
        for key in ("ca", "cert", "key"):
            if p[key] and not site.resolve(p[key]).is_file():
                sec.problem(key, f"no such file: {site.resolve(p[key])}")
            if p[key] and not p["tls"]:
                sec.problem("tls", f"false, but `{key}` is set: set tls = true")
        if bool(p["cert"]) != bool(p["key"]):
            sec.problem("key" if p["cert"] else "cert", "a client certificate needs both "
                        "`cert` and `key`")
        bands: dict[str, float] = {}
        for k, v in (p["deadbands"] or {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                sec.problem("deadbands", f"{k} = {v!r}: expected a number >= 0")
            else:
                bands[str(k)] = float(v)
        self.needs_map(sec, "publishes")
        sec.raise_problems()
        self.node = EdgeNode(self.group, self.node_id, float(p["deadband"]), bands)
        self.primary = p["primary_host"]
        self.qos = int(p["qos"])
        self.poll_s = float(p["poll_ms"]) / 1000.0
        self.state_dir = site.state_dir
        self.bdseq_path = Path(self.state_dir) / "sparkplug.bdseq"
        self.store: Store | None = None
        self.snap: MapSnapshot | None = None
        self.runtime: Runtime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        # session state (sparkplug thread only)
        self.bdseq = -1
        self.seq = 0
        self.connected = False
        self.host_online = not self.primary
        self.born = False
        self.want_rebirth = False
        self._inflight: dict[int, tuple[str, bytes, int]] = {}
        self._generation = -1
        # status, read by other threads (plain attributes: one writer)
        self.error = ""
        self.counts: dict[str, int] = {"connects": 0, "refused": 0, "births": 0,
                                       "rebirths": 0, "messages": 0, "bytes": 0,
                                       "ddata": 0, "ddata_bytes": 0, "queued": 0,
                                       "historical_sent": 0}
        self.queue_alarm = False
        self.refused = False  # the broker's last answer was a refusal
        self.refused_code = 0
        self._offline_since = time.monotonic()
        # the health points (busguard.sparkplug.health) and who takes them: the image, or
        # with io = "process" the I/O process's writer to it
        self._health: ImageWriter | None = None
        self._health_names: tuple[str, ...] = ()
        self._health_last: tuple[float, ...] = ()
        self._health_at = -1e9

    # -- helpers ----------------------------------------------------------------------------
    def topic(self, kind: str, device: str = "") -> str:
        return topic(self.group, kind, self.node_id, device)

    def _next_bdseq(self) -> int:
        try:
            last = int(self.bdseq_path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            last = -1
        nxt = (last + 1) % 256
        try:
            atomic_write(self.bdseq_path, f"{nxt}\n".encode("ascii"))
        except OSError as exc:
            log.warning("sparkplug: cannot persist bdSeq in %s: %s", self.bdseq_path, exc)
        return nxt

    def _next_seq(self) -> int:
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    def status_points(self) -> dict[str, tuple[int, Any]]:
        """The publisher's own health as node metrics (and in ``busguard status``)."""
        st = self.store
        return {"Sparkplug/queue_held": (mx.UINT64, st.held if st else 0),
                "Sparkplug/queue_dropped": (mx.UINT64, st.dropped if st else 0),
                "Sparkplug/queue_full": (mx.BOOLEAN, bool(st and st.full))}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if runtime.io is not None:  # the I/O process runs the edge node
            return
        self._begin(runtime.publishers, runtime.image)

    def start_remote(self, ctx: RemoteContext) -> None:
        """In the I/O process: publish its Modbus server's snapshot."""
        self._begin(ctx.publishers, ctx.image)

    def _begin(self, publishers: Any, image: ImageWriter) -> None:
        from busguard.northbound.snapshot import map_snapshot

        self.snap = map_snapshot(publishers)
        self._health = image
        self._health_names = tuple(n for n in health.names() if n in image)
        p = self.config.params
        self.store = Store(Path(self.state_dir) / p["queue_file"], int(p["queue_max_changes"]))
        if self.store.held:
            log.info("sparkplug: %d change(s) from an earlier run wait in %s", self.store.held,
                     self.store.path)
        self._thread = threading.Thread(target=self._run, name="busguard-sparkplug",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self.store is not None:
            self.store.close()

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        if self._thread is None and rt is not None and rt.io is not None:
            return rt.io.publisher_status(self.section)
        out: dict[str, Any] = {"broker": f"{self.config.params['host']}:"
                               f"{self.config.params['port']}",
                               "connected": self.connected, "primary_host_online":
                               self.host_online, "bdSeq": self.bdseq, "error": self.error}
        out.update(self.counts)
        out.update({k.split("/")[1]: v[1] for k, v in self.status_points().items()})
        return out

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        p = self.config.params
        base = float(p["reconnect_s"])
        backoff = base
        retry_at = 0.0
        next_poll = 0.0
        cap = max(float(p["reconnect_max_s"]), base)
        while not self._stop.is_set():
            if self._client is None and time.monotonic() >= retry_at:
                self._connect()
                if self._client is None:  # unreachable: try again later, less often
                    retry_at, backoff = time.monotonic() + backoff, min(cap, backoff * 2)
            if self._client is not None:
                rc = self._client.loop(timeout=min(self.poll_s, 0.05))
                if rc != 0 and self._client is not None:
                    self._lost(f"connection lost ({_rc_text(rc)})")
                if self._client is None:  # refused or lost during this loop
                    retry_at, backoff = time.monotonic() + backoff, min(cap, backoff * 2)
            else:
                self._stop.wait(min(self.poll_s, 0.05))
            if self.connected:
                backoff = base
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_s
                try:
                    self._tick()
                except Exception:  # never let one bad image end the thread
                    log.exception("sparkplug: publishing failed")
            self._write_health()
        self._shutdown()

    def health_values(self) -> tuple[float, ...]:
        """The health points' values, in :data:`busguard.sparkplug.health.POINTS` order."""
        st = self.store
        offline = 0.0 if self.connected else time.monotonic() - self._offline_since
        return (float(self.connected), float(self.refused), float(self.refused_code),
                float(int(offline)), float(st.held if st else 0),
                float(st.max_changes if st else 0), float(st.dropped if st else 0),
                float(self.queue_alarm))

    def _write_health(self) -> None:
        """Into the image: at once when something changed, else once a second (so the
        points go stale only when this thread, or the I/O process, stops)."""
        if self._health is None or not self._health_names:
            return
        vals = self.health_values()
        now = time.monotonic()
        if vals == self._health_last and now - self._health_at < health.WRITE_EVERY_S:
            return
        self._health_last, self._health_at = vals, now
        want = set(self._health_names)
        self._health.write_many([(n, v, Quality.GOOD) for n, v in zip(health.names(), vals,
                                                                      strict=True)
                                 if n in want])

    def _ssl_context(self) -> ssl.SSLContext:
        p = self.config.params
        ctx = ssl.create_default_context(cafile=str(self.site.resolve(p["ca"]))
                                         if p["ca"] else None)
        if p["cert"]:
            ctx.load_cert_chain(str(self.site.resolve(p["cert"])),
                                str(self.site.resolve(p["key"])))
        return ctx

    def _connect(self) -> bool:
        import paho.mqtt.client as mqtt

        p = self.config.params
        self.bdseq = self._next_bdseq()
        log.debug('sparkplug: connecting (bdSeq %d)', self.bdseq)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.connect_timeout = 5.0
        c.will_set(self.topic("NDEATH"), EdgeNode.ndeath(self.bdseq).SerializeToString(),
                   qos=1, retain=False)
        if p["username"]:
            c.username_pw_set(p["username"], self.password)
        if p["tls"]:
            c.tls_set_context(self._ssl_context())
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        where = f"{p['host']}:{p['port']}"
        try:
            c.connect(p["host"], int(p["port"]), int(p["keepalive_s"]))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._refused(f"cannot connect to the broker at {where}: {exc}")
            if isinstance(exc, ssl.SSLError):  # a certificate refused, either way
                self.refused, self.refused_code = True, 0
            return False
        self._client = c
        return True

    def _refused(self, why: str) -> None:
        log.debug("sparkplug: %s", why)
        if why != self.error:
            log.error("sparkplug: %s", why)
        self.error = why

    def _lost(self, why: str) -> None:
        c, self._client = self._client, None
        if c is not None:
            with contextlib.suppress(Exception):  # the socket may be gone already
                c.disconnect()
        if self.connected:
            log.warning("sparkplug: %s; queueing changes until it is back", why)
            self.error = why
        else:  # never got as far as a session (a TLS refusal after the handshake...)
            self._refused(f"{why} before the session began (at "
                          f"{self.config.params['host']}:{self.config.params['port']})")
            if self.config.params["tls"]:  # the broker closed it: our certificate
                self.refused, self.refused_code = True, 0
        if self.connected:
            self._offline_since = time.monotonic()
        self.connected = False
        self.born = False
        self.host_online = not self.primary
        self._requeue_inflight()

    # paho callbacks: called from client.loop(), that is, on this thread
    def _on_connect(self, client: Any, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        where = f"{self.config.params['host']}:{self.config.params['port']}"
        if reason.is_failure:
            self._refused(f"the broker at {where} refused the connection: {reason} (check "
                          f"username, password_file and the client certificate)")
            self.counts["refused"] += 1
            self.refused, self.refused_code = True, int(getattr(reason, "value", 128))
            self._client = None
            client.disconnect()
            return
        self.connected = True
        self.refused, self.refused_code = False, 0
        self.counts["connects"] += 1
        if self.error:
            log.info("sparkplug: connected to %s again", where)
        else:
            log.info("sparkplug: connected to %s as %s/%s (bdSeq %d)", where, self.group,
                     self.node_id, self.bdseq)
        self.error = ""
        client.subscribe(self.topic("NCMD"), qos=1)
        if self.primary:
            client.subscribe(f"spBv1.0/STATE/{self.primary}", qos=1)
            client.subscribe(f"STATE/{self.primary}", qos=1)  # Sparkplug 2.2 hosts

    def _on_disconnect(self, client: Any, _ud: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        if client is self._client:
            self._lost(f"disconnected from the broker ({reason})")

    def _on_message(self, _client: Any, _ud: Any, msg: Any) -> None:
        if msg.topic == self.topic("NCMD"):
            if rebirth_requested(msg.payload):
                log.info("sparkplug: rebirth requested (NCMD)")
                self.want_rebirth = True
            return
        online = _host_online(msg.topic, msg.payload)
        if online is None:
            log.warning("sparkplug: ignored a STATE message on %s that is neither Sparkplug "
                        "3.0 JSON nor 2.2 ONLINE/OFFLINE", msg.topic)
            return
        if online != self.host_online:
            log.info("sparkplug: primary host %s is %s", self.primary,
                     "online" if online else "offline: queueing changes")
        self.host_online = online
        if not online:
            self.born = False

    def _on_publish(self, _client: Any, _ud: Any, mid: int, _reason: Any, _props: Any) -> None:
        self._inflight.pop(mid, None)

    # -- publishing -------------------------------------------------------------------------
    def _publish(self, kind: str, device: str, payload: Payload,
                 keep: tuple[str, bytes, int] | None = None) -> bool:
        body = payload.SerializeToString()
        c = self._client
        if c is None:
            return False
        info = c.publish(self.topic(kind, device), body, qos=self.qos)
        if info.rc != 0:
            self._lost(f"publish failed ({_rc_text(info.rc)})")
            return False
        if keep is not None and self.qos:
            self._inflight[info.mid] = keep
        self.counts["messages"] += 1
        self.counts["bytes"] += len(body)
        if kind == "DDATA":
            self.counts["ddata"] += 1
            self.counts["ddata_bytes"] += len(body)
        return True

    def _requeue_inflight(self) -> None:
        """QoS 1 data the broker never acknowledged goes back to the queue (historical)."""
        if not self._inflight or self.store is None:
            return
        rows = [self._inflight[m] for m in sorted(self._inflight)]
        self._inflight.clear()
        self._queue(rows)

    def _queue(self, rows: list[tuple[str, bytes, int]]) -> None:
        assert self.store is not None
        refused = self.store.put(rows)
        self.counts["queued"] += sum(n for _d, _b, n in rows) - refused
        if refused or self.store.full:
            if not self.queue_alarm:
                log.error("sparkplug: store-and-forward queue full (%d changes held, limit "
                          "%d): %d change(s) dropped so far", self.store.held,
                          self.store.max_changes, self.store.dropped)
            self.queue_alarm = True

    def _online(self) -> bool:
        return self._client is not None and self.connected and self.host_online

    def _tick(self) -> None:
        snap = self.snap
        if snap is None or self.store is None:
            return
        try:
            data = snap.latest()
        except BusguardError:  # no image (yet, or the server stopped first): nothing to say
            return
        if not data:
            return
        now_ms = int(time.time() * 1000)
        if self._online() and (not self.born or self.want_rebirth):
            self._birth(data, now_ms)
            self._generation = snap.generation
            return
        if snap.generation == self._generation and not self._status_changed():
            return
        self._generation = snap.generation
        current = self.node.current(data, self.status_points())
        if not self.node.last:  # nothing seen yet (offline since start): the reference
            self.node.baseline(current)
            return
        delta = self.node.delta(current)
        rows = [(dev, EdgeNode.data(ch, now_ms, historical=True).SerializeToString(), len(ch))
                for dev, ch in delta.changes.items()]
        if not self._online():
            # the publisher's own status is news only live: queueing it would make the
            # queue's growth a change of its own
            rows = [(dev, EdgeNode.data(k, now_ms, historical=True).SerializeToString(), len(k))
                    for dev, ch in delta.changes.items()
                    if (k := [c for c in ch if not c.value.name.startswith("Sparkplug/")])]
        if not self._online():
            if rows:
                self._queue(rows)
            return
        for dev in delta.born:
            self._publish("DBIRTH", dev, self._dbirth(current[dev], now_ms))
        for dev in delta.gone:
            self._publish("DDEATH", dev, Payload(timestamp=now_ms, seq=self._next_seq()))
        for i, (dev, ch) in enumerate(delta.changes.items()):
            p = EdgeNode.data(ch, now_ms)
            p.seq = self._next_seq()
            if not self._publish("DDATA" if dev else "NDATA", dev, p, keep=rows[i]):
                self._queue(rows[i:])  # this one and the rest: historical, in order
                return

    def _status_changed(self) -> bool:
        last = self.node.last.get("", {})
        return any(name in last and last[name].value != v
                   for name, (_dt, v) in self.status_points().items())

    def _dbirth(self, vals: list[mx.Value], now_ms: int) -> Payload:
        p = self.node.dbirth(vals, now_ms)
        p.seq = self._next_seq()
        return p

    def _birth(self, data: Mapping[str, Any], now_ms: int) -> None:
        """NBIRTH, every DBIRTH, then what the queue holds (historical), in order."""
        current = self.node.current(data, self.status_points())
        self.seq = 0
        nb = self.node.nbirth(current[""], self.bdseq, now_ms)
        nb.seq = self._next_seq()
        if not self._publish("NBIRTH", "", nb):
            return
        for dev, vals in current.items():
            if dev and not self._publish("DBIRTH", dev, self._dbirth(vals, now_ms)):
                return
        self.node.baseline(current)
        self.counts["rebirths" if self.want_rebirth else "births"] += 1
        self.born = True
        self.want_rebirth = False
        self._flush(set(current))

    def _flush(self, devices: set[str]) -> None:
        st = self.store
        assert st is not None
        while st.held and self._online():
            rows = list(st.peek(256))
            if not rows:
                break
            sent_msgs = sent_changes = 0
            for rid, dev, body, n in rows:
                if dev not in devices:
                    log.warning("sparkplug: %d queued change(s) of %s dropped: no such device "
                                "any more", n, dev or "the node")
                else:
                    p = Payload.FromString(body)
                    p.seq = self._next_seq()
                    if not self._publish("DDATA" if dev else "NDATA", dev, p,
                                         keep=(dev, body, n)):
                        st.remove_through(rid - 1, sent_msgs, sent_changes)
                        return
                    self.counts["historical_sent"] += n
                sent_msgs += 1
                sent_changes += n
                last = rid
            st.remove_through(last, sent_msgs, sent_changes)
            self._client.loop(timeout=0)  # keep the socket moving during a long flush
        if self.queue_alarm and not st.full:
            log.info("sparkplug: store-and-forward queue drained (%d change(s) had been "
                     "dropped while it was full)", st.dropped)
            self.queue_alarm = False

    def _shutdown(self) -> None:
        c, self._client = self._client, None
        if c is not None and self.connected:
            try:
                c.publish(self.topic("NDEATH"), EdgeNode.ndeath(
                    self.bdseq, int(time.time() * 1000)).SerializeToString(), qos=1)
                c.loop(timeout=0.2)
                c.disconnect()
                c.loop(timeout=0.2)
            except Exception:  # stopping anyway
                pass
        self.connected = False


def _rc_text(rc: Any) -> str:
    import paho.mqtt.client as mqtt

    try:
        return mqtt.error_string(rc)
    except Exception:
        return str(rc)


def _host_online(topic_name: str, payload: bytes) -> bool | None:
    """A STATE message: Sparkplug 3.0 JSON ``{"online": true, ...}`` on spBv1.0/STATE/<id>,
    or 2.2's ``ONLINE``/``OFFLINE`` on STATE/<id>; None when it is neither."""
    text = payload.decode("utf-8", "replace").strip()
    if topic_name.startswith("spBv1.0/"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        v = doc.get("online") if isinstance(doc, dict) else None
        return v if isinstance(v, bool) else None
    if text in ("ONLINE", "OFFLINE"):
        return text == "ONLINE"
    return None

