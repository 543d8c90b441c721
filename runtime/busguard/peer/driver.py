"""``busguard_peer``: another busguard's register map as the input of this one (a row or hall
aggregator), read over Modbus TCP exactly as a DCIM reads it.

A ``[[meter]]`` entry with ``driver = "busguard_peer"`` names the peer (host, port) and the
records wanted from it: its meters, probes and breakers by name, and for a stacked
aggregator its output or extra records (a row summary's outputs). Every point enters the image
as ``{peer}.{device}.{point}`` (records: ``{peer}.{record}``) with the peer's quality and age
carried over: a point the peer serves stale (or RESTORED, which it serves stale) stays stale
here; an unreachable peer goes NOT_CONNECTED after ``loss_limit`` lost requests, like a meter.
The peer's own link health is the entry's ``comm_*`` points, in its meter block of this map.

The layout is found through the peer's header directory and name table, once per
fingerprint. A changed fingerprint is refused (every point BAD, ``peer_state`` 3, one log
line) until it is accepted again: ``accept_fingerprint`` in site.toml, or ``busguard
peer-accept`` which rewrites ``{state_dir}/peers/{name}.fingerprint``. The first fingerprint
seen is accepted and recorded there. A peer that is not a busguard map v2 (wrong magic,
version, a directory that does not fit, garbage) gets ``peer_state`` 4 and BAD points, never a
crash. The row_summary block raises the alarms from ``peer_state``.

The peer's points are kept out of this map's extra area (``PointSpec.mapped``): a hall has
thousands; the DCIM reads the summary block's outputs instead.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from busguard.atomicfile import atomic_write
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec, Quality
from busguard.linkhealth import COMM_POINTS as LINK_POINTS
from busguard.linkhealth import DOWN, LinkHealth, Wording, comm_specs
from busguard.modbus.commstats import DISCONNECT, EXCEPTION, LOSS_LIMIT, OK
from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard.northbound import mapdef as md
from busguard.northbound import reader as rd
from busguard.peer import layout as ly

log = logging.getLogger("busguard.peer")

# peer_state values (also the row_summary block's alarm conditions)
OK_STATE, CONNECTING, NOT_CONNECTED, FINGERPRINT_CHANGED, NOT_BUSGUARD, MISSING = range(6)
PEER_STATES = ("ok", "connecting", "not-connected", "fingerprint-changed", "not-busguard",
               "missing-records")
# a peer over Modbus TCP has no CRC errors: no comm_error_pct (adding it would move the map)
COMM_POINTS = tuple(c for c in LINK_POINTS if c != "comm_error_pct")
WORDING = Wording(
    down="%(device)s: peer %(where)s: %(lost)d requests in a row lost, last: %(last)s; points "
         "NOT_CONNECTED",
    up="%(device)s: peer %(where)s answering again")
SEVERITY_POINTS = tuple(f"alarms_{s}" for s in md.SEVERITY_WORDS[1:])
ALARM_POINTS = (*SEVERITY_POINTS, "alarms_latched", "alarms_unacked", "alarms_total")
BREAKER_POINTS = ("led", "trip_latched", "shunt_trip", "trip_cause")
_TRIP_LATCHED = md.flag_mask(md.DEVICE_FLAGS, "trip_latched")
_SHUNT = md.flag_mask(md.DEVICE_FLAGS, "shunt_trip")
_QUALITY = {"good": Quality.GOOD, "stale": Quality.STALE, "bad": Quality.BAD,
            "not-connected": Quality.NOT_CONNECTED}
_FIRST_ROWS = 4  # alarm rows read with the table's head in one request (8 + 4 x 24 words)


def fingerprint_file(state_dir: Path, name: str) -> Path:
    return state_dir / "peers" / f"{name}.fingerprint"


def parse_fingerprint(text: str) -> int | None:
    """``0x1234abcd`` or ``1234abcd`` -> int; None when it is not a 32-bit hex number."""
    t = text.strip().lower()
    t = t[2:] if t.startswith("0x") else t
    try:
        v = int(t, 16)
    except ValueError:
        return None
    return v if 0 <= v <= 0xFFFFFFFF and t else None


def accept(state_dir: Path, name: str, fingerprint: int) -> Path:
    """Record ``fingerprint`` as the accepted layout of peer ``name`` (``peer-accept``)."""
    path = fingerprint_file(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{fingerprint:#010x}\n".encode())
    return path


class PeerDriver(Driver):
    type_name = "busguard_peer"
    kind = "meter"  # a [[meter]] entry: its comm_* points fill its meter block in this map
    default_poll_ms = 1000.0
    params: ClassVar[Mapping[str, Param]] = {
        "host": Param(str, doc="the peer busguard's address"),
        "port": Param(int, default=502, minval=1, maxval=65535,
                      doc="the peer's [modbus_server] port"),
        "unit": Param(int, default=1, minval=0, maxval=255,
                      doc="unit id of the peer's whole-site map (1, 0 or 255)"),
        "timeout_ms": Param(float, default=1000.0, minval=1.0, maxval=60000.0, unit="ms",
                            doc="answer timeout of one request"),
        "loss_limit": LOSS_LIMIT,
        "meters": Param(list, item=str, default=(), doc="the peer's meters to bring in"),
        "probes": Param(list, item=str, default=(), doc="the peer's probes"),
        "breakers": Param(list, item=str, default=(),
                          doc="the peer's breakers (led, trip_latched, shunt_trip, "
                              "trip_cause)"),
        "records": Param(list, item=str, default=(),
                         doc="the peer's output or extra records by name (a lower-level "
                             "aggregator's row summary outputs)"),
        "points": Param(list, item=str, default=(),
                        doc="meter quantities to bring in (default: all of map v2's)"),
        "alarms": Param(bool, default=True,
                        doc="read the peer's alarm table: counts by severity, latched, "
                            "unacknowledged"),
        "tls_ca": Param(str, default="",
                        doc="Modbus/TCP Security: CA that signed the peer's certificate (PEM; "
                            "set with the peer's TLS port); empty: plain Modbus TCP"),
        "tls_cert": Param(str, default="", doc="this aggregator's client certificate (PEM)"),
        "tls_key": Param(str, default="", doc="its key (PEM, 0600)"),
        "accept_fingerprint": Param(str, default="",
                                    doc="the only layout fingerprint accepted (hex, as "
                                        "`busguard status` shows it); empty: the first one "
                                        "seen, recorded in {state_dir}/peers/"),
    }

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def quantities(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(params["points"] or md.METER_QUANTITIES)

    @classmethod
    def device_points(cls, config: DeviceConfig) -> list[tuple[str, str, str]]:
        """(image name, device, quantity) of every device point the entry brings in."""
        p = config.params
        out = [(f"{config.name}.{m}.{q}", m, q) for m in p["meters"]
               for q in cls.quantities(p)]
        out += [(f"{config.name}.{d}.temp_c", d, "temp_c") for d in p["probes"]]
        out += [(f"{config.name}.{b}.{q}", b, q) for b in p["breakers"] for q in BREAKER_POINTS]
        return out

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        problems = cls.check(config)
        if problems:
            raise ConfigError(problems)
        p = config.params
        n = config.name
        max_age = config.poll_s * site.scan.stale_after_polls + p["timeout_ms"] / 1e3
        specs = [PointSpec(name, source=n, unit=md.unit_of(q), max_age_s=max_age,
                           retained=False, mapped=False, doc=f"{q} of {dev} at peer {n}")
                 for name, dev, q in cls.device_points(config)]
        specs += [PointSpec(f"{n}.{r}", source=n, max_age_s=max_age, retained=False,
                            mapped=False, doc=f"record {r} of peer {n}") for r in p["records"]]
        health = max_age * 20 + 60.0
        specs += comm_specs(n, health, "link health to the peer", COMM_POINTS)
        specs.append(PointSpec(f"{n}.peer_state", source=n, max_age_s=health, retained=False,
                               doc="0 ok, 1 connecting, 2 not connected, 3 fingerprint "
                                   "changed (refused), 4 not a busguard map, 5 records "
                                   "missing"))
        specs.append(PointSpec(f"{n}.restored", source=n, max_age_s=max_age, retained=False,
                               mapped=False, doc="1: the peer serves retained values"))
        if p["alarms"]:
            specs += [PointSpec(f"{n}.{a}", source=n, max_age_s=max_age, retained=False,
                                mapped=False, doc="peer alarm table count") for a in ALARM_POINTS]
        return specs

    @classmethod
    def check(cls, config: DeviceConfig) -> list[ConfigProblem]:
        p = config.params
        out = []
        for i, q in enumerate(p["points"]):
            if q not in md.METER_QUANTITIES:
                out.append(config.problem(f"points[{i}]",
                                          f"{q!r} is not a map v2 meter quantity; known: "
                                          f"{', '.join(md.METER_QUANTITIES)}"))
        seen: set[str] = set()
        for opt in ("meters", "probes", "breakers", "records"):
            for i, d in enumerate(p[opt]):
                if not d or d in seen:
                    out.append(config.problem(f"{opt}[{i}]",
                                              f"got {d!r}; expected a non-empty name listed "
                                              f"once in meters, probes, breakers and records"))
                seen.add(d)
                if len(d) > md.NAME_WORDS * 2:
                    out.append(config.problem(f"{opt}[{i}]",
                                              f"{d!r} is {len(d)} characters; a busguard map's "
                                              f"name table holds {md.NAME_WORDS * 2}, so no "
                                              f"peer serves that name"))
        if not seen:
            out.append(config.problem("meters",
                                      "the peer entry brings in nothing; expected at least one "
                                      "name in meters, probes, breakers or records"))
        if (p["tls_cert"] or p["tls_key"]) and not (p["tls_ca"] and p["tls_cert"]
                                                    and p["tls_key"]):
            out.append(config.problem("tls_cert",
                                      "a client certificate needs tls_ca, tls_cert and tls_key "
                                      "together"))
        fp = p["accept_fingerprint"]
        if fp and parse_fingerprint(fp) is None:
            out.append(config.problem("accept_fingerprint",
                                      f"got {fp!r}; expected a 32-bit hex number such as "
                                      f"0x1a2b3c4d (busguard status shows the fingerprint)"))
        return out

    # -- running ---------------------------------------------------------------------------
    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.p = config.params
        self.ctx: DriverContext | None = None
        self.layout: ly.PeerLayout | None = None
        self.reads: list[tuple[int, int]] = []
        self.state = CONNECTING
        self.seen_fingerprint: int | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: tuple[int, str] | None = None  # last problem logged (once per streak)
        self._dev_points = self.device_points(config)
        self._data_names = [n for n, _d, _q in self._dev_points] + \
            [f"{self.name}.{r}" for r in self.p["records"]] + [f"{self.name}.restored"] + \
            ([f"{self.name}.{a}" for a in ALARM_POINTS] if self.p["alarms"] else [])
        self.health = LinkHealth(self.name, self.p["loss_limit"], WORDING, log,
                                 lambda: self._data_names, self.where, points=COMM_POINTS)
        self.comm = self.health.comm

    def start(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self._write_health()  # peer_state 1 (connecting) from the first scan on
        self._thread = threading.Thread(target=self._run, name=f"peer-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.p["timeout_ms"] / 1e3 * 3 + 2.0)

    def _tls(self) -> ssl.SSLContext | None:
        p = self.p
        if not p["tls_ca"]:
            return None
        from busguard.northbound.tls import client_context

        return client_context(self.site.resolve(p["tls_ca"]),
                              self.site.resolve(p["tls_cert"]) if p["tls_cert"] else None,
                              self.site.resolve(p["tls_key"]) if p["tls_key"] else None)

    def _run(self) -> None:
        try:
            ctx = self._tls()
        except (OSError, ssl.SSLError) as exc:
            self.health.last_error = f"TLS files: {exc}"
            log.error("%s: peer %s: cannot load the TLS files (tls_ca %s, tls_cert %s): %s; "
                      "not polling", self.name, self.where(), self.p["tls_ca"],
                      self.p["tls_cert"], exc)
            self.state = NOT_CONNECTED
            self._write_health()
            return
        client = ModbusTcpClient(self.p["host"], self.p["port"], self.p["timeout_ms"] / 1e3,
                                 self.p["unit"], ctx)
        period = self.config.poll_s
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self.poll(client.read)
                except Exception:  # a bug must not end the polling for good
                    log.exception("%s: poll failed", self.name)
                self.polls += 1
                next_due += period
                now = time.monotonic()
                if now > next_due:  # late by whole periods: skip them, do not catch up
                    next_due = now
                self._stop.wait(next_due - now if next_due > now else 0)
        finally:
            client.close()

    # -- one poll (also called by tests with any read function) ----------------------------
    def poll(self, read: ly.ReadFn) -> None:
        """Read the peer once through ``read(address, count)`` and write the image."""
        assert self.ctx is not None
        counted = self._counting(read)
        try:
            head = ly.header(counted)
            self.seen_fingerprint = head["fingerprint"]
            if not self._fingerprint_ok(head["fingerprint"]):
                return
            if self.layout is None or self.layout.fingerprint != head["fingerprint"]:
                self.layout = ly.discover(counted, head, bool(self.p["records"]))
                self.reads = self._plan(self.layout)
            words = ly.read_spans(counted, self.reads)
            items, missing = self._decode(words, head)
            if self.p["alarms"]:
                items += self._alarms(counted, head)
        except CommError as exc:
            self._lost(str(exc))
            return
        except ExceptionReply as exc:
            self._problem(NOT_BUSGUARD, f"answers exception 0x{exc.code:02X} to a read of its "
                          f"map ({exc}): not a busguard map v2")
            return
        except ly.NotBusguard as exc:
            self._problem(NOT_BUSGUARD, f"not a busguard map v2: {exc}")
            return
        self._answered()
        state = MISSING if missing else OK_STATE
        if missing:
            self._say(MISSING, f"{self.name}: peer {self.where()} serves no "
                      f"{', '.join(missing)} (fingerprint {head['fingerprint']:#010x}); "
                      f"those points BAD", logging.WARNING)
        elif self._said is not None:
            log.warning("%s: peer %s read again; points carried with the peer's quality",
                        self.name, self.where())
            self._said = None
        self._write(items, state)

    def where(self) -> str:
        return f"{self.p['host']}:{self.p['port']}"

    def _counting(self, read: ly.ReadFn) -> ly.ReadFn:
        def counted(address: int, count: int) -> list[int]:
            t0 = time.perf_counter()
            try:
                regs = read(address, count)
            except ExceptionReply:
                self.comm.record(EXCEPTION)
                raise
            self.comm.record(OK, time.perf_counter() - t0)
            return regs
        return counted

    def _accepted(self) -> int | None:
        if self.p["accept_fingerprint"]:
            return parse_fingerprint(self.p["accept_fingerprint"])
        path = fingerprint_file(self.site.state_dir, self.name)
        try:
            return parse_fingerprint(path.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError):
            return None

    def _fingerprint_ok(self, fp: int) -> bool:
        accepted = self._accepted()
        if accepted is None:  # first sight: this layout is the accepted one
            try:
                path = accept(self.site.state_dir, self.name, fp)
                log.info("%s: peer %s layout fingerprint %#010x accepted (%s)", self.name,
                         self.where(), fp, path)
            except OSError as exc:
                log.warning("%s: cannot record peer fingerprint %#010x: %s", self.name, fp, exc)
            return True
        if fp == accepted:
            return True
        how = "set accept_fingerprint" if self.p["accept_fingerprint"] else \
            f"run `busguard peer-accept SITE {self.name}`"
        self._problem(FINGERPRINT_CHANGED, f"layout fingerprint changed from {accepted:#010x} "
                      f"to {fp:#010x}; its points are refused (BAD) until the new layout is "
                      f"accepted: {how} = {fp:#010x}")
        self.layout = None
        return False

    def _plan(self, layout: ly.PeerLayout) -> list[tuple[int, int]]:
        spans = [(d.address, d.words) for d in layout.devices.values()
                 if d.name in self._wanted_devices()]
        spans += [(layout.records[r], md.POINT_WORDS) for r in self.p["records"]
                  if r in layout.records]
        return ly.plan(spans)

    def _wanted_devices(self) -> set[str]:
        p = self.p
        return {*p["meters"], *p["probes"], *p["breakers"]}

    def _decode(self, words: Mapping[int, int], head: Mapping[str, Any]
                ) -> tuple[list[tuple[str, float, Quality, int]], list[str]]:
        """(name, value, quality, age_ms) of every point, and the names the peer lacks."""
        assert self.layout is not None
        lay = self.layout
        out: list[tuple[str, float, Quality, int]] = []
        missing: list[str] = []
        kinds = {**{m: "meter" for m in self.p["meters"]},
                 **{m: "probe" for m in self.p["probes"]},
                 **{m: "breaker" for m in self.p["breakers"]}}
        index = {kind: {q: j for j, q in enumerate(md.STANDARD[kind])} for kind in md.STANDARD}
        for name, dev, q in self._dev_points:
            at = lay.devices.get(dev)
            if at is None or at.kind != kinds[dev]:
                if dev not in missing:
                    missing.append(dev if at is None else f"{dev} (a {at.kind}, not a "
                                   f"{kinds[dev]})")
                out.append((name, math.nan, Quality.BAD, 0))
                continue
            a = at.address
            if q in ("trip_latched", "shunt_trip", "trip_cause"):
                flags = words[a + 3]
                if q == "trip_cause":
                    o = a + md.BREAKER_TRIP_OFFSET
                    v = float(words[o])
                else:
                    v = 1.0 if flags & (_TRIP_LATCHED if q == "trip_latched" else _SHUNT) \
                        else 0.0
                out.append((name, v, Quality.GOOD, 0))
                continue
            o = a + md.DEVICE_HEADER_WORDS + index[at.kind][q] * md.POINT_WORDS
            rec = rd.point([words[o + k] for k in range(md.POINT_WORDS)])
            out.append(_item(name, rec))
        for r in self.p["records"]:
            addr = lay.records.get(r)
            if addr is None:
                missing.append(r)
                out.append((f"{self.name}.{r}", math.nan, Quality.BAD, 0))
                continue
            ws = [words[addr + k] for k in range(md.POINT_WORDS)]
            rec = rd.counter(ws) if r in lay.counters else rd.point(ws)
            out.append(_item(f"{self.name}.{r}", rec))
        out.append((f"{self.name}.restored",
                    1.0 if head["data_origin"] == "RESTORED" else 0.0, Quality.GOOD, 0))
        return out, missing

    def _alarms(self, read: ly.ReadFn, head: Mapping[str, Any]
                ) -> list[tuple[str, float, Quality, int]]:
        a = head["directory"]["alarm_table"]
        stride = a["stride"]
        first = read(a["base"], md.AREA_HEAD_WORDS + _FIRST_ROWS * stride)
        h = md.ALARM_TABLE_HEAD.unpack(first[:md.AREA_HEAD_WORDS])
        listed = min(h["listed"], a["count"])
        ws = first[md.AREA_HEAD_WORDS:]
        if listed > _FIRST_ROWS:
            ws += rd.read_chunked(read, a["base"] + md.AREA_HEAD_WORDS + _FIRST_ROWS * stride,
                                  (listed - _FIRST_ROWS) * stride)
        sev = [0] * len(md.SEVERITY_WORDS)
        latched = unacked = 0
        for i in range(listed):
            row = md.ALARM_ROW.unpack(ws[i * stride:(i + 1) * stride])
            s = row["severity"]
            if 0 < s < len(sev):
                sev[s] += 1
            latched += row["state"] in (2, 3)
            unacked += not row["acked"]
        out = [(f"{self.name}.{p}", float(n), Quality.GOOD, 0)
               for p, n in zip(SEVERITY_POINTS, sev[1:], strict=True)]
        out += [(f"{self.name}.alarms_latched", float(latched), Quality.GOOD, 0),
                (f"{self.name}.alarms_unacked", float(unacked), Quality.GOOD, 0),
                (f"{self.name}.alarms_total", float(h["total"]), Quality.GOOD, 0)]
        return out

    # -- writing ---------------------------------------------------------------------------
    def _write(self, items: list[tuple[str, float, Quality, int]], state: int) -> None:
        assert self.ctx is not None
        image = self.ctx.image
        now = self.ctx.clock.monotonic()
        wall = self.ctx.clock.wall()
        by_age: dict[int, list[tuple[str, float, Quality]]] = defaultdict(list)
        for name, v, q, age in items:
            by_age[age].append((name, v, q))
        for age, group in by_age.items():  # the peer's age carried: stamped that much earlier
            image.write_many(group, now - age / 1e3, wall - age / 1e3)
        self.state = state
        self._write_health()

    def _write_health(self) -> None:
        assert self.ctx is not None
        ok = not self.health.down and self.state not in (CONNECTING, NOT_CONNECTED)
        items = self.health.items(ok, self.config.poll_ms)
        items.append((f"{self.name}.peer_state", float(self.state), Quality.GOOD))
        self.ctx.image.write_many(items)

    def _answered(self) -> None:
        assert self.ctx is not None
        self.health.update(True, False, self.ctx.image)

    def _lost(self, why: str) -> None:
        """A poll stops at its first lost request: the up/down rule runs after each."""
        assert self.ctx is not None
        self.health.lost(DISCONNECT, why)
        if self.health.update(False, True, self.ctx.image) == DOWN:
            self.state = NOT_CONNECTED
            self._said = None
        self._write_health()

    def _problem(self, state: int, message: str) -> None:
        """The peer answers but cannot be used: every point BAD, ``peer_state``, one log
        line per streak of the same problem."""
        assert self.ctx is not None
        self._answered()
        self.ctx.image.set_quality(self._data_names, Quality.BAD)
        self.state = state
        self.health.last_error = message
        self._say(state, f"{self.name}: peer {self.where()}: {message}", logging.ERROR)
        self._write_health()

    def _say(self, state: int, message: str, level: int) -> None:
        if self._said is None or self._said[0] != state:
            log.log(level, "%s", message)
            self._said = (state, message)

    def stats(self) -> dict[str, Any]:
        d = self.comm.as_dict()
        d.update({"state": PEER_STATES[self.state], "link": self.where(),
                  "last_error": self.health.last_error, "reads_per_poll": len(self.reads) + 1
                  + (1 if self.p["alarms"] else 0),
                  "fingerprint": f"{self.seen_fingerprint:#010x}"
                  if self.seen_fingerprint is not None else ""})
        return d


def _item(name: str, rec: Mapping[str, Any]) -> tuple[str, float, Quality, int]:
    v = rec["value"]
    q = _QUALITY.get(rec["quality"], Quality.BAD)
    return (name, math.nan if v is None else float(v), q, int(rec["age_ms"]))
