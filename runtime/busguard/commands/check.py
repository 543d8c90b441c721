"""`busguard check [SITE]`: validate a site file and summarise it."""

from __future__ import annotations

import argparse
import json
import sys

from busguard.commands import add_site_argument, default_site
from busguard.commands.map import lock_diff, refusal
from busguard.errors import ConfigError
from busguard.northbound import mapdef, slots
from busguard.runtime import check_site


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a site file", description=(
        "Validate SITE (default: ./site.toml) against every loaded plugin's types. Prints "
        "'ok' and a summary, or every problem with file, key path and what would be valid "
        "(exit 2)."))
    add_site_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--accept-map-change", action="store_true",
                   help="accept a register map change that moves an existing point "
                        "(otherwise reported and refused: exit 2)")
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
    got = lock_diff(path)
    moved = bool(got and got[0].assignment and got[0].assignment.moved)
    refused = moved and not args.accept_map_change
    if args.json:
        extra: dict = {}
        if got is not None:
            assert got[0].assignment is not None
            extra = {"map": {"fingerprint": got[0].fingerprint, "changes": got[1],
                             **slots.summary_json(got[0].assignment)}}
        print(json.dumps({"ok": not refused, **summary, **extra}, indent=2))
        return 2 if refused else 0
    out = sys.stdout
    print(f"{'refused' if refused else 'ok'}: {path}: site {site.name!r}, scan period "
          f"{site.scan.period_ms:g} ms", file=out)
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
    if got is not None:
        print(f"  register map v{mapdef.MAP_VERSION}: fingerprint "
              f"0x{got[0].fingerprint:08x}", file=out)
        if got[1] and slots.lock_path(site.state_dir).exists():
            print(f"register map changes against {slots.lock_path(site.state_dir)}:", file=out)
            for line in got[1]:
                print(f"  {line}", file=out)
        elif got[1]:
            print(f"  {got[1][0]}", file=out)
    if refused:
        assert got is not None
        print(refusal(got[0]), file=sys.stderr)
        return 2
    return 0
