"""`busguard peer-accept SITE PEER`: accept a peer's new layout fingerprint.

The busguard_peer driver refuses a peer whose map layout changed (its fingerprint differs
from the one recorded in ``{state_dir}/peers/PEER.fingerprint``) until an operator looks at
the change and accepts it; this command reads the peer's header now and records its
fingerprint. A running aggregator picks the new file up at its next poll.
"""

from __future__ import annotations

import argparse

from busguard.commands import add_site_argument, default_site
from busguard.errors import BusguardError, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peer-accept", help="accept a peer busguard's changed map layout",
                       description="Read a busguard_peer entry's peer header and record its "
                                   "layout fingerprint as the accepted one.")
    add_site_argument(p)
    p.add_argument("peer", help="name of the [[meter]] entry with driver busguard_peer")
    p.add_argument("--fingerprint", help="accept this fingerprint (hex) without reading it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
    from busguard.peer import driver as pd
    from busguard.peer import layout as ly
    from busguard.runtime import check_site

    site = check_site(default_site(args.site))
    entry = next((d for d in site.devices if d.name == args.peer
                  and d.driver == pd.PeerDriver.type_name), None)
    if entry is None:
        peers = [d.name for d in site.devices if d.driver == pd.PeerDriver.type_name]
        raise UsageError(f"{site.file}: no busguard_peer entry named {args.peer!r}; known: "
                         f"{', '.join(peers) or 'none'}")
    if args.fingerprint:
        fp = pd.parse_fingerprint(args.fingerprint)
        if fp is None:
            raise UsageError(f"--fingerprint {args.fingerprint!r}: expected a 32-bit hex "
                             f"number such as 0x1a2b3c4d")
    else:
        p = entry.params
        client = ModbusTcpClient(p["host"], p["port"], p["timeout_ms"] / 1e3, p["unit"])
        try:
            fp = ly.header(client.read)["fingerprint"]
        except (CommError, ExceptionReply, ly.NotBusguard) as exc:
            raise BusguardError(f"peer {args.peer} at {p['host']}:{p['port']}: {exc}") from exc
        finally:
            client.close()
    path = pd.accept(site.state_dir, args.peer, fp)
    print(f"peer {args.peer}: fingerprint {fp:#010x} accepted ({path})")
    return 0
