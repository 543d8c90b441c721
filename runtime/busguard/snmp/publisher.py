"""``[snmp]``: the publisher that runs the SNMPv3 agent on the I/O side (docs/snmp.md).

Like ``[web]`` it reads the register map's snapshot (so it needs a ``[modbus_server]``
table, loopback is enough) and serves from a thread of its own, never the scan's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.firewall import Listener
from busguard.northbound import access
from busguard.publisher import Publisher, listener_allow, listener_params
from busguard.snmp import tree

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.ioproc.process import RemoteContext
    from busguard.runtime import Runtime
    from busguard.snmp.agent import Agent

log = logging.getLogger("busguard.snmp")


def engine_id(site_name: str) -> bytes:
    """RFC 3411 snmpEngineID, format 4 (text) under the enterprise number: stable across
    restarts, so trap receivers and managers keep recognising the unit."""
    return bytes([0x80, 0x00, 0x7E, 0xD9, 0x04]) + site_name.encode()[:27]


class SnmpPublisher(Publisher):
    """A read-only SNMPv3 agent (USM authPriv) over BUSGUARD-MIB."""

    section = "snmp"
    doc = "a read-only SNMPv3 agent (USM authPriv) serving BUSGUARD-MIB"
    io_process_ok = True
    params: ClassVar[Mapping[str, Param]] = {
        **listener_params(port=161, host_note=" (UDP)", allow_who="of the managers that may "
                          "query", port_doc="UDP port; 0: any free port (161 needs "
                          "CAP_NET_BIND_SERVICE, which the unit has)"),
        "users": Param(str, default="snmp.users", doc="USM users file (mode 0600) that "
                       "`busguard snmp user-add` writes, relative to the site file"),
        "enterprise_oid": Param(str, default=tree.DEFAULT_OID, doc="the MIB module's OID; "
                                "the default (enterprises.32473) is a PLACEHOLDER until a "
                                "Private Enterprise Number is registered"),
        "max_requests_per_s": Param(float, default=100.0, minval=1.0, maxval=100000.0,
                                    doc="per manager address (burst: twice this); more "
                                        "are dropped unparsed (the manager retries)"),
        "refresh_ms": Param(float, default=1000.0, minval=0.0, maxval=60000.0, unit="ms",
                            doc="the agent's table is rebuilt from the newest snapshot at "
                                "most this often (walks answer from it meanwhile; the age "
                                "columns are as of that snapshot); 0: every new image"),
        "nice": Param(int, default=10, minval=0, maxval=19, doc="with [scan] io = "
                      "\"process\": the agent thread's nice increment, so the scan process "
                      "keeps the CPU on a busy machine (0: none; not applied beside the scan, "
                      "where a low-priority thread holding the GIL would delay it)"),
        "entity_mib": Param(bool, default=True, doc="also serve ENTITY-MIB's "
                            "entPhysicalTable and ENTITY-SENSOR-MIB's entPhySensorTable "
                            "(devices and their points as sensors, indexed by slot)"),
        "receivers": Param(list, item=str, default=(), doc="notification receivers, "
                           "\"host:port\" (port 162 usually): a trap or inform per alarm "
                           "raise and clear, per trip, and a cold start"),
        "notify": Param(str, default="inform", choices=("inform", "trap"),
                        doc="inform (acknowledged, retried, counted) or trap"),
        "notify_user": Param(str, default="", doc="the USM user (of `users`) notifications "
                             "are sent as (authPriv); required with `receivers`"),
        "inform_retries": Param(int, default=3, minval=0, maxval=20),
        "inform_timeout_s": Param(float, default=1.0, minval=0.05, maxval=60.0, unit="s"),
        "lab_v2c_community": Param(str, default="", doc="LAB ONLY: also answer SNMPv2c "
                                   "with this community (no auth, no privacy; a warning at "
                                   "every start); empty: v1/v2c refused"),
    }

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        from busguard.snmp.agent import parse_oid

        p = config.params
        sec = self.reader()
        self.allow = listener_allow(sec, "the managers' networks")
        self.host = p["host"]
        try:
            self.prefix = parse_oid(p["enterprise_oid"])
        except ValueError as exc:
            sec.problem("enterprise_oid", str(exc))
            self.prefix = parse_oid(tree.DEFAULT_OID)
        self.needs_map(sec, "serves")
        self.users_path = site.resolve(p["users"])
        self.receivers: list[tuple[str, int]] = []
        for item in p["receivers"] or ():
            host, _, port = str(item).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                sec.problem("receivers", f"{item!r}: expected \"host:port\", e.g. "
                            f"\"10.0.5.20:162\"")
                continue
            self.receivers.append((host.strip("[]"), int(port)))
        if self.receivers and not p["notify_user"]:
            sec.problem("notify_user", "missing: `receivers` are set; name the USM user "
                        "(added with `busguard snmp user-add`) notifications are sent as")
        sec.raise_problems()
        self.agent: Agent | None = None
        self.runtime: Runtime | None = None

    def listeners(self) -> list[Listener]:
        return [Listener("udp", self.host, int(self.config.params["port"]),
                         self.allow or access.LOOPBACK, "snmp: SNMPv3 agent (authPriv)")]

    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if runtime.io is not None:  # the I/O process serves
            return
        self._serve_from(runtime.publishers, nice=0)

    def start_remote(self, ctx: RemoteContext) -> None:
        self._serve_from(ctx.publishers, nice=int(self.config.params["nice"]))

    def _serve_from(self, publishers: Any, nice: int) -> None:
        from busguard.northbound.snapshot import map_snapshot
        from busguard.snmp.agent import Agent, NotifyConfig, Table
        from busguard.snmp.users import UsersError, read_users

        p = self.config.params
        try:
            users = read_users(self.users_path)
        except UsersError as exc:
            raise ConfigError([ConfigProblem(self.config.file, "snmp.users", str(exc))]) from None
        if not users and not p["lab_v2c_community"]:
            log.warning("snmp: no users in %s: every request will be refused", self.users_path)
        if p["lab_v2c_community"]:
            log.warning("snmp: LAB MODE: SNMPv2c is answered (community in clear, no "
                        "authentication, no privacy); never on a production network")
        snap = map_snapshot(publishers)
        extra, subtrees = None, ()
        if p["entity_mib"]:
            from busguard.snmp import entity

            site = self.site.name

            def extra(data: Mapping[str, Any]) -> dict[tuple[int, ...], tree.Value]:
                return entity.rows(data, site)

            subtrees = entity.SUBTREES
        table = Table(self.prefix, snap.latest, lambda: snap.generation,
                      float(p["refresh_ms"]) / 1000.0, extra=extra)
        notify = None
        if self.receivers:
            if p["notify_user"] not in users:
                raise ConfigError([ConfigProblem(self.config.file, "snmp.notify_user",
                                                 f"{p['notify_user']!r} is not a user of "
                                                 f"{self.users_path}; add it with `busguard "
                                                 f"snmp user-add`")])
            notify = NotifyConfig(tuple(self.receivers), p["notify"], p["notify_user"],
                                  int(p["inform_retries"]), float(p["inform_timeout_s"]),
                                  0.02)
        self.agent = Agent(self.host, int(p["port"]), self.prefix, table, users, self.allow,
                           float(p["max_requests_per_s"]), engine_id(self.site.name),
                           p["lab_v2c_community"], notify, nice, subtrees)
        if notify is not None:
            from busguard.snmp.notify import Notifier

            self.agent.notifier = Notifier(self.prefix, snap.raw, snap.latest,
                                           self.agent.send_notification)
        self.agent.start()
        assert self.agent.bound is not None
        log.info("snmp: SNMPv3 agent on udp %s:%d (%d users, authPriv only%s)", self.host,
                 self.agent.bound[1], len(users),
                 "; LAB v2c enabled" if p["lab_v2c_community"] else "")

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        a = self.agent
        if a is None and rt is not None and rt.io is not None:
            return rt.io.publisher_status(self.section)
        if a is None:
            return {"listening": []}
        out: dict[str, Any] = {"listening": [f"udp {a.bound[0]}:{a.bound[1]}"] if a.bound
                               else []}
        out.update(a.counts)
        out.update(a.usm_counters())
        out["rebuilds"] = a.table.rebuilds
        if a.notifier is not None:
            out.update(a.notifier.counts)
        return out

    def port(self) -> int:
        if self.agent is not None and self.agent.bound is not None:
            return self.agent.bound[1]
        for item in self.status().get("listening", []):
            return int(item.rsplit(":", 1)[1])
        raise KeyError("snmp: not listening")
