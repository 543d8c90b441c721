"""`busguard check [SITE]`: validate a site file and summarise it."""

from __future__ import annotations

import argparse
import json
import sys

from busguard.commands import default_site
from busguard.errors import ConfigError
from busguard.runtime import check_site


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a site file", description=(
        "Validate SITE (default: ./site.toml) against every loaded plugin's types. Prints "
        "'ok' and a summary, or every problem with file, key path and what would be valid "
        "(exit 2)."))
    p.add_argument("site", nargs="?", help="site file (default ./site.toml)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = default_site(args.site)
    try:
        site = check_site(path)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": str(path), "problems": [
                {"file": p.file, "key": p.key, "message": p.message} for p in exc.problems]},
                indent=2))
            return 2
        raise
    summary = site.summary()
    if args.json:
        print(json.dumps({"ok": True, **summary}, indent=2))
        return 0
    out = sys.stdout
    print(f"ok: {path}: site {site.name!r}, scan period {site.scan.period_ms:g} ms", file=out)
    for kind in ("meter", "probe", "breaker", "output"):
        names = summary[f"{kind}s"]
        if names:
            print(f"  {len(names):3d} {kind}{'s' if len(names) != 1 else ''}: "
                  f"{', '.join(names)}", file=out)
    print(f"  {len(site.blocks):3d} blocks, in scan order: {', '.join(summary['blocks'])}",
          file=out)
    if site.publishers:
        print(f"  publishers: {', '.join(summary['publishers'])}", file=out)
    print(f"  {len(site.points):3d} input points; config hash {site.config_hash[:12]}", file=out)
    return 0
