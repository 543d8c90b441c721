"""Kernel firewall rules generated from a site's listeners and their `allow` lists.

busguard's own allowlist closes a connection from outside `allow` at accept, after the kernel
has completed the TCP handshake. The seed asks for more: "restrict Port 502 access only to the
IP address of the authorized DCIM-Server" with the kernel's filter in front. Each publisher
declares its listeners (:class:`Listener`: protocol, address, port, who may connect) and this
module writes them as rules that admit each port only from its allowed networks and drop the
rest, in nftables or iptables-restore form:

- nft: one table ``inet busguard`` with its own input chain (priority filter - 1, policy
  accept): it drops only traffic to busguard's ports from outside their lists and touches
  nothing else; ``nft delete table inet busguard`` undoes it;
- iptables / ip6tables: a chain ``BUSGUARD-INPUT`` jumped to from INPUT for busguard's ports,
  for ``iptables-restore --noflush``.

An empty `allow` means loopback only, as the server itself applies it. The rules are shipped
disabled (packaging/systemd/busguard-firewall.service); docs/operations.md says how to enable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from busguard import __version__
from busguard.northbound.access import LOOPBACK, Network

FORMATS = ("nft", "iptables", "ip6tables")
CHAIN = "BUSGUARD-INPUT"


@dataclass(frozen=True)
class Listener:
    """One port a publisher listens on, and the networks that may reach it."""

    protocol: str  # "tcp" or "udp"
    host: str
    port: int
    allow: tuple[Network, ...]  # empty: loopback only
    what: str  # e.g. "modbus_server: Modbus TCP for the DCIM"

    @property
    def sources(self) -> tuple[Network, ...]:
        return self.allow or LOOPBACK


def _set(nets: Iterable[Network]) -> str:
    return "{ " + ", ".join(str(n) for n in nets) + " }"


def nft_rules(site_name: str, site_file: str, listeners: Sequence[Listener]) -> str:
    """An nft script (``nft -f``) for the listeners."""
    out = [f"# busguard {__version__} firewall for site {site_name!r} ({site_file}): each",
           "# listener's port admits only its `allow` networks (empty: loopback only).",
           "# Apply: nft -f FILE; undo: nft delete table inet busguard",
           "table inet busguard", "delete table inet busguard", "table inet busguard {",
           "\tchain input {", "\t\ttype filter hook input priority filter - 1; policy accept;"]
    for ls in listeners:
        out.append(f"\t\t# {ls.what} on {ls.host}:{ls.port}/{ls.protocol}")
        v4 = [n for n in ls.sources if n.version == 4]
        v6 = [n for n in ls.sources if n.version == 6]
        if v4:
            out.append(f"\t\t{ls.protocol} dport {ls.port} ip saddr {_set(v4)} accept")
        if v6:
            out.append(f"\t\t{ls.protocol} dport {ls.port} ip6 saddr {_set(v6)} accept")
        out.append(f"\t\t{ls.protocol} dport {ls.port} counter drop")
    out += ["\t}", "}", ""]
    return "\n".join(out)


def iptables_rules(site_name: str, site_file: str, listeners: Sequence[Listener],
                   version: int = 4) -> str:
    """An ``iptables-restore --noflush`` (or ip6tables, ``version=6``) file."""
    tool = "iptables" if version == 4 else "ip6tables"
    out = [f"# busguard {__version__} {tool} rules for site {site_name!r} ({site_file}); apply "
           f"with {tool}-restore --noflush FILE", "*filter", f":{CHAIN} - [0:0]",
           f"-F {CHAIN}"]
    jumps = []
    for ls in listeners:
        nets = [n for n in ls.sources if n.version == version]
        dport = f"-p {ls.protocol} -m {ls.protocol} --dport {ls.port}"
        jumps.append(f"-I INPUT {dport} -j {CHAIN}")
        out += [f"-A {CHAIN} {dport} -s {n} -m comment --comment \"{ls.what[:200]}\" -j ACCEPT"
                for n in nets]
        out.append(f"-A {CHAIN} {dport} -j DROP")
    out[3:3] = jumps
    out += ["COMMIT", ""]
    return "\n".join(out)


def render(fmt: str, site_name: str, site_file: str, listeners: Sequence[Listener]) -> str:
    if fmt == "nft":
        return nft_rules(site_name, site_file, listeners)
    if fmt in ("iptables", "ip6tables"):
        return iptables_rules(site_name, site_file, listeners, 4 if fmt == "iptables" else 6)
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
