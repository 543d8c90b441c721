"""Who may connect, who may write, and how much: the northbound server's access policy.

- ``allow``: client networks (CIDRs) that may connect; everyone else is closed at accept,
  before any TLS handshake or Modbus byte. An empty list means loopback only.
- ``write_allow``: the smaller set that may write the command area; other clients get
  exception 0x01 (illegal function) for any write.
- connection caps: in total and per client address, so one host (even an allowed one) cannot
  hold every slot; new connections over a cap are closed at once.
- slots a DCIM can always get: ``reserved_connections`` of the total are held back for
  *priority* clients (``write_allow`` and ``priority`` CIDRs); when the cap is full, a newcomer
  takes the slot of the oldest idle-ish connection of the address holding the most
  connections (see :meth:`Clients.victim`); a connection that completes no request for
  ``idle_timeout_s`` is closed (bytes that never make a whole request do not count).
- a per-client request rate (token bucket shared by the client's connections): over the rate
  the server stops reading that connection until tokens return (TCP back-pressure), so a noisy
  poller slows itself down instead of starving the others.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from busguard.stats import Counts

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128"))


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings to networks; a bare address means that host. Raises ValueError."""
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in items)


def _addr(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        a = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def contains(nets: Iterable[Network], host: str) -> bool:
    a = _addr(host)
    return a is not None and any(a.version == n.version and a in n for n in nets)


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches this host only ("localhost", 127/8, ::1)."""
    return host == "localhost" or contains(LOOPBACK, host)


def inside(inner: Network, outer: Iterable[Network]) -> bool:
    return any(inner.version == o.version and inner.subnet_of(o) for o in outer)  # type: ignore[arg-type]


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """Take one token; returns 0.0 when allowed now, else seconds until it would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0.0 else -self.tokens / self.rate

    def try_take(self, now: float) -> bool:
        """Take one token if one is there now; else take nothing and return False (the
        caller then queues the request and :meth:`take` computes its wait). The server's
        read fast path answers at once when this is True, without a task or a sleep."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


@dataclass
class Policy:
    allow: tuple[Network, ...]
    write_allow: tuple[Network, ...]
    max_connections: int = 16
    max_connections_per_client: int = 4
    idle_timeout_s: float = 60.0
    max_requests_per_s: float = 200.0
    priority: tuple[Network, ...] = ()
    reserved_connections: int = 2

    def may_connect(self, host: str) -> bool:
        return contains(self.allow or LOOPBACK, host)

    def may_write(self, host: str) -> bool:
        return contains(self.write_allow, host)

    def is_priority(self, host: str) -> bool:
        """A client the reserve is for: in ``write_allow`` or ``priority``."""
        return contains(self.write_allow, host) or contains(self.priority, host)

    @property
    def reserve(self) -> int:
        """Slots other clients may not take: none when no client could use them, and never
        all of them."""
        if not (self.write_allow or self.priority):
            return 0
        return max(0, min(self.reserved_connections, self.max_connections - 1))

    @property
    def evict_idle_s(self) -> float:
        """A connection that completed no request for this long may give its slot to a
        newcomer when the cap is full ("idle-ish"): a quarter of the idle timeout, at most
        5 s, so a DCIM polling every few seconds is never idle-ish, a parked one soon is."""
        return min(5.0, self.idle_timeout_s / 4)


@dataclass
class Counters(Counts):
    """What the northbound server counts (``busguard status --json``'s ``northbound``)."""

    accepted: int = 0
    refused_allowlist: int = 0
    refused_cap: int = 0
    closed_idle: int = 0
    tls_failed: int = 0
    requests: int = 0
    reads: int = 0
    writes: int = 0
    write_refused: int = 0
    exceptions: int = 0
    throttled: int = 0
    evicted: int = 0
    dropped_frames: int = 0


@dataclass
class Clients:
    """Connections per client address and their shared rate buckets (I/O thread only)."""

    policy: Policy
    per_client: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    total: int = 0

    def admit(self, host: str) -> str:
        """'' when ``host`` may open one more connection, else the reason it may not:
        "allowlist", "client cap" (its own address holds its share) or "cap" (no free slot
        for it: the caller may make one with :meth:`victim`)."""
        pol = self.policy
        if not pol.may_connect(host):
            return "allowlist"
        if self.per_client.get(host, 0) >= pol.max_connections_per_client:
            return "client cap"
        limit = pol.max_connections if pol.is_priority(host) else \
            pol.max_connections - pol.reserve
        if self.total >= limit:
            return "cap"
        self.total += 1
        self.per_client[host] = self.per_client.get(host, 0) + 1
        return ""

    def victim(self, host: str, conns: Iterable[Slot], now: float) -> Slot | None:
        """The connection whose slot a newcomer from ``host`` takes when the cap is full: an
        idle-ish one (no complete request for :attr:`Policy.evict_idle_s`) of an ordinary
        client, from the address holding the most connections, and of those the one whose
        last request is oldest. Only from an address that would still hold more connections
        than ``host`` after the swap, so eviction evens shares out: it never swaps equals back
        and forth, and a lone connection is never taken (a flood from many addresses, one
        connection each, cannot churn the slots; the reserve is what keeps a DCIM in then).
        Priority clients' connections are never taken. None: nobody may be evicted."""
        pol = self.policy
        mine = self.per_client.get(host, 0)
        grace = pol.evict_idle_s
        best: Slot | None = None
        best_key: tuple[int, float] = (0, 0.0)
        for c in conns:
            n = self.per_client.get(c.host, 0)
            idle = now - c.last_request
            if n <= mine + 1 or idle < grace or pol.is_priority(c.host):
                continue
            key = (n, idle)
            if best is None or key > best_key:
                best, best_key = c, key
        return best

    def release(self, host: str) -> None:
        self.total = max(0, self.total - 1)
        n = self.per_client.get(host, 0) - 1
        if n > 0:
            self.per_client[host] = n
        else:
            self.per_client.pop(host, None)  # its bucket stays: reconnecting resets nothing

    def prune(self, now: float, keep_s: float = 60.0) -> None:
        """Forget the buckets of clients gone for ``keep_s`` (bounded memory)."""
        for host in [h for h, b in self.buckets.items()
                     if h not in self.per_client and now - b.stamp > keep_s]:
            del self.buckets[host]

    def bucket(self, host: str, now: float) -> TokenBucket:
        b = self.buckets.get(host)
        if b is None:
            rate = self.policy.max_requests_per_s
            burst = max(1.0, rate)
            b = self.buckets[host] = TokenBucket(rate, burst, burst, now)
        return b


class Slot(Protocol):
    """What :meth:`Clients.victim` needs of a connection."""

    host: str
    last_request: float


class RefusalLog:
    """Refusals and dropped frames, logged once per streak: the first of a kind at WARNING,
    then one summary line per ``every_s`` while they go on, never one line per event (a
    flood must not push busguard's own lines out of journald's rate limit)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.log = logger
        self.every_s = every_s
        self._counts: dict[str, int] = {}
        self._last: dict[str, tuple[float, str]] = {}

    def note(self, kind: str, who: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        seen = self._last.get(kind)
        if seen is None or now - seen[0] >= self.every_s:
            n = self._counts.pop(kind, 0)
            if n:
                self.log.warning("northbound: %s: %d more in the last %.0f s (latest from %s)",
                                 kind, n, now - seen[0] if seen else 0.0, who)
            else:
                self.log.warning("northbound: %s (%s); further ones are summed up every "
                                 "%.0f s", kind, who, self.every_s)
            self._last[kind] = (now, who)
        else:
            self._counts[kind] = self._counts.get(kind, 0) + 1
