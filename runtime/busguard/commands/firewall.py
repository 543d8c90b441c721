"""`busguard firewall [SITE] --format nft|iptables|ip6tables`: kernel rules for the site's
listeners, admitting each port only from its `allow` list (see :mod:`busguard.firewall`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from busguard.commands import add_site_argument, default_site
from busguard.firewall import FORMATS, render
from busguard.runtime import check_site, load_types


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("firewall", help="kernel firewall rules from the site's listeners",
                       description=(
        "Write firewall rules for SITE (default ./site.toml): every port busguard listens on "
        "(the DCIM's Modbus TCP server, its TLS port, and later SNMP and web) admits only the "
        "networks in its `allow` list (empty: loopback only) and drops the rest, in front of "
        "busguard's own allowlist. nft: a table 'inet busguard' of its own (nft -f FILE; "
        "undo: nft delete table inet busguard); iptables/ip6tables: a chain BUSGUARD-INPUT "
        "for iptables-restore --noflush. See docs/operations.md for enabling them at boot."))
    add_site_argument(p)
    p.add_argument("--format", choices=FORMATS, default="nft", help="rule format (default nft)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = default_site(args.site)
    site = check_site(path)  # a configuration error exits 2 before anything is written
    _pm, registry = load_types(disabled=site.disabled_plugins)
    listeners = [ls for name, cfg in site.publishers.items()
                 for ls in registry.publishers[name](cfg, site).listeners()]
    if not listeners:
        print(f"busguard firewall: {path} declares no listener; the rules admit nothing and "
              f"drop nothing", file=sys.stderr)
    text = render(args.format, site.name, str(path), listeners)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
