"""The SNMPv3 agent: pysnmp 7.1's engine on an event loop of its own thread.

Why its own agent rather than an AgentX subagent of snmpd: docs/snmp.md ("Design").

Every answer comes from :class:`Table`, the BUSGUARD-MIB rows of the newest register image
(:mod:`busguard.snmp.tree`), rebuilt at most once per new image however many managers walk,
so a walk costs a dict lookup or a bisect per varbind and never touches the scan. Datagrams
are filtered before pysnmp parses them: a source outside ``allow`` or over its per-manager
rate is dropped (counted, logged once per streak), so neither a stranger nor a noisy manager
can make the agent spend CPU on BER and USM crypto.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from busguard.northbound import access
from busguard.snmp import tree
from busguard.snmp.users import User

log = logging.getLogger("busguard.snmp")

OID = tuple[int, ...]


def parse_oid(text: str) -> OID:
    """'1.3.6.1.4.1.32473' -> a tuple; ValueError with the reason."""
    parts = text.strip().strip(".").split(".")
    try:
        oid = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a dotted OID such as '1.3.6.1.4.1.32473'") from None
    if len(oid) < 2 or oid[0] > 2 or any(p < 0 for p in oid):
        raise ValueError(f"{text!r} is not a valid OID")
    return oid


@dataclass(frozen=True)
class NotifyConfig:
    """Where and how notifications go (``[snmp]`` receivers, notify, notify_user...)."""

    receivers: tuple[tuple[str, int], ...]
    kind: str  # "trap" or "inform"
    user: str
    retries: int
    timeout_s: float
    poll_s: float

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h for h, _p in self.receivers)


class Table:
    """The served OIDs of one snapshot, sorted, with their pyasn1 objects made once.

    Rebuilt at most once per new image *and* at most every ``refresh_s``: under a walk the
    Modbus side hands over a new image every ``[modbus_server] refresh_ms`` (50 ms), and
    decoding a whole image (tens of ms for 32 meters) per image would make the agent's CPU
    grow with the scan rate instead of staying flat. The varbind objects (pysnmp's
    ObjectName and value) are made on first use and kept until the next rebuild, so a
    second manager walking the same snapshot costs a dict lookup per varbind.
    """

    def __init__(self, prefix: OID, latest: Callable[[], Mapping[str, Any]],
                 generation: Callable[[], int], refresh_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 extra: Callable[[Mapping[str, Any]], dict[OID, tree.Value]] | None = None
                 ) -> None:
        self.prefix = prefix
        self._extra = extra  # rows at absolute OIDs (the standard MIBs: snmp.entity)
        self._latest = latest
        self._generation = generation
        self.refresh_s = refresh_s
        self._clock = clock
        self._at = -1e18
        self._gen = -1
        self.keys: list[OID] = []
        self.values: dict[OID, tree.Value] = {}
        self._asn1: dict[OID, tuple[Any, Any]] = {}
        self.rebuilds = 0

    def refresh(self) -> None:
        now = self._clock()
        if self._gen >= 0 and now - self._at < self.refresh_s:
            return
        self._at = now
        data = self._latest()  # decodes at most once per image (MapSnapshot)
        gen = self._generation()
        if gen == self._gen:
            return
        rel = tree.rows(data)
        p = self.prefix
        self.values = {p + k: v for k, v in rel.items()}
        if self._extra is not None:
            self.values.update(self._extra(data))
        self.keys = sorted(self.values)
        self._asn1 = {}
        self._gen = gen
        self.rebuilds += 1

    def get(self, oid: OID) -> tree.Value | None:
        return self.values.get(oid)

    def next(self, oid: OID) -> tuple[OID, tree.Value] | None:
        i = bisect.bisect_right(self.keys, oid)
        if i >= len(self.keys):
            return None
        k = self.keys[i]
        return k, self.values[k]

    def varbind(self, oid: OID) -> tuple[Any, Any]:
        """(ObjectName, value) of a served ``oid``, made once per rebuild."""
        vb = self._asn1.get(oid)
        if vb is None:
            from pysnmp.proto import rfc1902

            vb = self._asn1[oid] = (rfc1902.ObjectName(oid), _asn1(self.values[oid]))
        return vb

    def next_varbind(self, oid: OID) -> tuple[Any, Any] | None:
        i = bisect.bisect_right(self.keys, oid)
        if i >= len(self.keys):
            return None
        return self.varbind(self.keys[i])


def _asn1(v: tree.Value) -> Any:
    from pysnmp.proto import rfc1902

    kind, x = v
    return {"i": rfc1902.Integer32, "u": rfc1902.Unsigned32, "g": rfc1902.Gauge32,
            "c": rfc1902.Counter32, "s": rfc1902.OctetString, "o": rfc1902.ObjectIdentifier,
            "t": rfc1902.TimeTicks}[kind](x)


def ensure_aes() -> None:
    """pysnmp 7.1 takes AES-CFB from ``cryptography.hazmat.decrepit`` (cryptography >= 43);
    Debian 12's python3-cryptography (38) has the same mode in ``primitives.ciphers.modes``.
    Point pysnmp at it there, so the .deb works with the distribution's package; without
    any cryptography, say what to install instead of failing at the first request."""
    from pysnmp.proto.secmod.rfc3826.priv import aes

    if not aes.PysnmpCryptoError:
        return
    try:
        from cryptography.hazmat.backends import default_backend
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        raise RuntimeError("[snmp] needs the cryptography library for AES (Debian: apt "
                           "install python3-cryptography; pip: cryptography)") from None
    aes.default_backend, aes.CFB = default_backend, modes.CFB
    aes.algorithms, aes.Cipher = algorithms, Cipher
    aes.PysnmpCryptoError = False


class Instrum:
    """What pysnmp's command responders call (its MibInstrumController interface): GET and
    GETNEXT (GETBULK repeats GETNEXT) over :class:`Table`; SET is never registered."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._ctx: Any = None  # the request being answered (pysnmp's execution context)

    def _check(self, context: Mapping[str, Any]) -> None:
        """Per call (pysnmp calls once per GETBULK repetition): the security level; per
        request (a new execution context): the table's refresh and the request count, so
        one response never mixes two snapshots."""
        from pysnmp.smi import error as smi_error

        ctx = context["snmpEngine"].observer.get_execution_context(
            "rfc3412.receiveMessage:request")
        if ctx["securityModel"] == 3 and ctx["securityLevel"] != 3:
            self.agent.count("refused_level")
            self.agent.refusals.note(f"snmp: refused user {ctx['securityName']!s}: security "
                                     f"level {ctx['securityLevel']} (authPriv only)", "-")
            raise smi_error.AuthorizationError(idx=0)
        if ctx is not self._ctx:
            self._ctx = ctx
            self.agent.table.refresh()
            self.agent.count("requests")

    def read_variables(self, *var_binds: Any, **context: Any) -> list[Any]:
        from pysnmp.proto import rfc1902, rfc1905

        self._check(context)
        out = []
        table = self.agent.table
        for name, _val in var_binds:
            oid = tuple(name)
            if oid in table.values:
                out.append(table.varbind(oid))
            elif any(oid[:len(t)] == t for t in self.agent.subtrees):
                out.append((rfc1902.ObjectName(oid), rfc1905.noSuchInstance))
            else:
                out.append((rfc1902.ObjectName(oid), rfc1905.noSuchObject))
        return out

    def read_next_variables(self, *var_binds: Any, **context: Any) -> list[Any]:
        from pysnmp.proto import rfc1902, rfc1905

        self._check(context)
        out = []
        table = self.agent.table
        for name, _val in var_binds:
            vb = table.next_varbind(tuple(name))
            out.append(vb if vb is not None
                       else (rfc1902.ObjectName(tuple(name)), rfc1905.endOfMibView))
        return out

    def write_variables(self, *var_binds: Any, **context: Any) -> list[Any]:
        from pysnmp.smi import error as smi_error

        raise smi_error.NotWritableError(idx=0)


class Agent:
    """One SNMP engine serving ``table`` on ``host:port`` (UDP) in thread busguard-snmp."""

    def __init__(self, host: str, port: int, prefix: OID, table: Table,
                 users: Mapping[str, User], allow: tuple[access.Network, ...],
                 rate: float, engine_id: bytes, v2c_community: str = "",
                 notify: NotifyConfig | None = None, nice: int = 0,
                 subtrees: tuple[OID, ...] = ()) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.subtrees = (prefix, *subtrees)  # what the agent serves (noSuchInstance there)
        self.nice = nice
        self.table = table
        self.users = dict(users)
        self.allow = allow or access.LOOPBACK
        self.rate = rate
        self.engine_id = engine_id
        self.v2c_community = v2c_community
        self.notify = notify
        self.notifier: Any = None  # busguard.snmp.notify.Notifier, set by the publisher
        self._ntf: Any = None
        self._notify_task: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = {"datagrams": 0, "requests": 0, "refused_address": 0,
                                       "refused_rate": 0, "refused_level": 0,
                                       "refused_usm": 0, "informs_acked": 0,
                                       "informs_failed": 0, "traps_sent": 0,
                                       "malformed": 0}
        self.refusals = access.RefusalLog(log)
        self._buckets: dict[str, access.TokenBucket] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Any = None
        self.bound: tuple[str, int] | None = None
        self.error = ""
        self._thread: threading.Thread | None = None

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def admit(self, host: str) -> bool:
        """Whether a datagram from ``host`` gets parsed at all (allow list, rate cap)."""
        self.count("datagrams")
        if not access.contains(self.allow, host) and not (
                self.notify and host in self.notify.hosts):  # informs' acks come back
            self.count("refused_address")
            self.refusals.note(f"snmp: refused a datagram from {host}: not in `allow`", host)
            return False
        b = self._buckets.get(host)
        now = time.monotonic()
        if b is None:
            if len(self._buckets) > 4096:
                self._buckets.clear()
            b = self._buckets[host] = access.TokenBucket(self.rate, 2 * self.rate,
                                                         2 * self.rate, now)
        if not b.try_take(now):
            self.count("refused_rate")
            self.refusals.note(f"snmp: dropped requests from {host}: over "
                               f"{self.rate:g} requests/s", host)
            return False
        return True

    def dispatch(self, transport: Any, addr: Any, datagram: bytes) -> None:
        """Hand one admitted datagram to pysnmp, at once (no extra loop turn). pysnmp 7.1
        lets some malformed BER escape as TypeError/ValueError (found by the fuzz test):
        count those and log once per streak instead of a traceback per datagram."""
        try:
            transport._callback_function(transport, addr, datagram)
        except Exception as exc:
            self.count("malformed")
            self.refusals.note(f"snmp: dropped a malformed datagram from {addr[0]} "
                               f"({type(exc).__name__})", str(addr[0]))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name="busguard-snmp", daemon=True)
        self._thread.start()
        started.wait(15.0)
        if self.error:
            raise OSError(self.error)

    def _run(self, started: threading.Event) -> None:
        if self.nice:
            self._lower_priority()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self._setup()
        except Exception as exc:
            self.error = f"snmp: cannot listen on {self.host}:{self.port}: {exc}"
            log.error("%s", self.error)
            started.set()
            return
        started.set()
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):  # closing down anyway
                self.engine.transport_dispatcher.close_dispatcher()
                self.loop.run_until_complete(asyncio.sleep(0.01))  # let cancellations run
            self.loop.close()

    def _lower_priority(self) -> None:
        """Linux nice values are per thread: raise this thread's (and so its children's) by
        ``nice``, so that on a busy machine the scan process (nice 0) gets the CPU first and
        the agent what is left. Only in the I/O process: beside the scan, a low-priority
        thread holding the GIL would make the scan wait for it (the publisher decides)."""
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                           + self.nice)
        except (OSError, AttributeError) as exc:
            log.warning("snmp: cannot lower the agent thread's priority (nice +%d): %s",
                        self.nice, exc)

    def _setup(self) -> None:
        from pysnmp.carrier.asyncio.dgram import udp
        from pysnmp.entity import config, engine
        from pysnmp.entity.rfc3413 import cmdrsp, context
        from pysnmp.proto import rfc1902

        agent = self

        class Filtered(udp.UdpTransport):  # type: ignore[misc]
            def datagram_received(self, datagram: bytes, addr: Any) -> None:
                if agent.admit(str(addr[0])) and self._callback_function is not None:
                    agent.dispatch(self, addr, datagram)

        ensure_aes()
        eng = engine.SnmpEngine(snmpEngineID=rfc1902.OctetString(self.engine_id))
        self.engine = eng
        transport = Filtered(loop=self.loop).open_server_mode((self.host, self.port))
        config.add_transport(eng, udp.DOMAIN_NAME, transport)
        auth = {"SHA-256": config.USM_AUTH_HMAC192_SHA256,
                "SHA-384": config.USM_AUTH_HMAC256_SHA384,
                "SHA-512": config.USM_AUTH_HMAC384_SHA512}
        priv = {"AES": config.USM_PRIV_CFB128_AES, "AES-192": config.USM_PRIV_CFB192_AES,
                "AES-256": config.USM_PRIV_CFB256_AES}
        for u in self.users.values():
            config.add_v3_user(eng, u.name, auth[u.auth], rfc1902.OctetString(u.auth_key),
                               priv[u.priv], rfc1902.OctetString(u.priv_key),
                               authKeyType=config.USM_KEY_TYPE_MASTER,
                               privKeyType=config.USM_KEY_TYPE_MASTER)
        if self.v2c_community:
            config.add_v1_system(eng, "lab-v2c", self.v2c_community)
        ctx = context.SnmpContext(eng)
        ctx.unregister_context_name(b"")
        ctx.register_context_name(b"", Instrum(self))  # type: ignore[arg-type]
        cmdrsp.GetCommandResponder(eng, ctx)
        cmdrsp.NextCommandResponder(eng, ctx)
        cmdrsp.BulkCommandResponder(eng, ctx)
        # open_server_mode schedules the endpoint: bind now, so an error names the address
        self.loop.run_until_complete(transport._lport)  # type: ignore[union-attr]
        sock = transport.transport.get_extra_info("socket")
        self.bound = (self.host, int(sock.getsockname()[1]))
        eng.transport_dispatcher.job_started(1)
        if self.notify and self.notify.receivers:
            self._setup_notify(eng)

    def _setup_notify(self, eng: Any) -> None:
        from pysnmp.carrier.asyncio.dgram import udp
        from pysnmp.entity import config
        from pysnmp.entity.rfc3413 import ntforg

        n = self.notify
        assert n is not None
        config.add_vacm_user(eng, 3, n.user, "authPriv", (), (), self.prefix)
        config.add_target_parameters(eng, "bg-notify-params", n.user, "authPriv", 3)
        for i, (host, port) in enumerate(n.receivers):
            config.add_target_address(eng, f"bg-receiver-{i}", udp.DOMAIN_NAME, (host, port),
                                      "bg-notify-params", timeout=n.timeout_s * 100,
                                      retryCount=n.retries, tagList="bg-notify")
        config.add_notification_target(eng, "bg-notify", "bg-notify-params", "bg-notify",
                                       n.kind)
        self._ntf = ntforg.NotificationOriginator()
        assert self.loop is not None
        self._notify_task = self.loop.create_task(self._notify_loop())

    async def _notify_loop(self) -> None:
        """Poll the event ring head (a 4-byte read) every ``poll_s``; bounded work per poll."""
        n = self.notify
        assert n is not None
        while True:
            if self.notifier is not None:
                try:
                    self.notifier.poll()
                except Exception:
                    log.exception("snmp: notification poll failed (will retry)")
            await asyncio.sleep(n.poll_s)

    def send_notification(self, kind: int, var_binds: list[tuple[OID, tree.Value]]) -> None:
        """One trap or inform to every receiver (on the agent's loop)."""
        from pysnmp.proto import rfc1902

        from busguard.snmp.notify import SNMP_TRAP_OID

        vbs = [(SNMP_TRAP_OID, rfc1902.ObjectIdentifier((*self.prefix, 0, kind)))]
        vbs += [(oid, _asn1(v)) for oid, v in var_binds]
        inform = self.notify is not None and self.notify.kind == "inform"

        def done(_eng: Any, _handle: Any, error: Any, *_rest: Any) -> None:
            if not inform:
                return
            self.count("informs_failed" if error else "informs_acked")
            if error:
                self.refusals.note(f"snmp: an inform was not acknowledged after "
                                   f"{self.notify.retries if self.notify else 0} retries "
                                   f"({error})", "inform")

        self._ntf.send_varbinds(self.engine, "bg-notify", None, b"", vbs, done)
        if not inform:
            self.count("traps_sent")

    def usm_counters(self) -> dict[str, int]:
        """USM's refusal counters (RFC 3414 usmStats): unknown users, wrong digests..."""
        out: dict[str, int] = {}
        if self.engine is None:
            return out
        mib = self.engine.get_mib_builder()
        for name in ("usmStatsUnknownUserNames", "usmStatsWrongDigests",
                     "usmStatsDecryptionErrors", "usmStatsUnsupportedSecLevels",
                     "usmStatsNotInTimeWindows", "usmStatsUnknownEngineIDs"):
            try:
                (sym,) = mib.import_symbols("__SNMP-USER-BASED-SM-MIB", name)
                out[name] = int(sym.syntax)
            except Exception:  # a counter pysnmp does not keep
                continue
        return out

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and self._thread is not None and loop.is_running():
            loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout=10.0)

    def _shutdown(self) -> None:
        if self._notify_task is not None:
            self._notify_task.cancel()
        assert self.loop is not None
        self.loop.stop()
