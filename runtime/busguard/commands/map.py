"""`busguard map [SITE] [--format md|csv|json] [--diff OLD.json]`: the DCIM's register map of
a site, and what changed against an earlier one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from busguard.commands import add_site_argument, default_site
from busguard.errors import BusguardError
from busguard.northbound import docs, mapdef, slots
from busguard.runtime import Runtime


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="print the Modbus register map of a site", description=(
        "Print the register map the [modbus_server] publisher serves for SITE (default "
        "./site.toml): every address, type and meaning, generated from the map definition in "
        "code, with the slots recorded in the site's {state_dir}/map.lock. "
        "docs/register-map.md is this command's md output for the bundled site. With --diff "
        "OLD.json (an earlier `busguard map --format json`): the points that moved, were "
        "added or removed; exit 1 when one moved."))
    add_site_argument(p)
    p.add_argument("--format", choices=("md", "csv", "json"), default="md",
                   help="output format (default md)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--diff", metavar="OLD.json", help="compare with an earlier map (json)")
    p.set_defaults(func=run)


def build(path: str | Path) -> tuple[mapdef.RegisterMap, str, int]:
    """The map of a site file (built, not started: no I/O), its site name and server port."""
    rt = Runtime.from_file(path)
    ms = rt.site.publishers.get("modbus_server")
    port = int(ms.params["port"]) if ms is not None else 502
    return mapdef.for_runtime(rt), rt.site.name, port


def lock_diff(path: str | Path) -> tuple[mapdef.RegisterMap, list[str]] | None:
    """The map of a site file and its changes against the site's map.lock (one line each,
    moves first); None when the site serves no register map."""
    rt = Runtime.from_file(path)
    if "modbus_server" not in rt.site.publishers:
        return None
    m = mapdef.for_runtime(rt)
    assert m.assignment is not None
    lock = slots.lock_path(rt.site.state_dir)
    if not lock.exists():
        n = sum(len(t) for t in m.assignment.slots.values())
        return m, [f"no {lock} yet: the first start records the slots of {n} records "
                   f"(in site order)"]
    where = {k: (b, st) for k, (b, _c, st) in mapdef.LAYOUT.items()}
    return m, slots.describe(m.assignment, where)


def refusal(m: mapdef.RegisterMap) -> str:
    a = m.assignment
    n = len(a.moved) if a is not None else 0
    return (f"refused: this change moves {n} record(s) of the register map that a DCIM may "
            f"read (see MOVED above); give --accept-map-change to apply it anyway and "
            f"update the DCIM's register table")


def run(args: argparse.Namespace) -> int:
    path = default_site(args.site)
    regmap, name, port = build(path)
    if args.diff:
        return _diff(regmap, Path(args.diff))
    text = docs.render(regmap, args.format, name, Path(path).name, port)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _diff(regmap: mapdef.RegisterMap, old_path: Path) -> int:
    try:
        old: Any = json.loads(old_path.read_text(encoding="utf-8"))
        old_fields = old["fields"]
        if not isinstance(old_fields, list):
            raise TypeError("fields is not a list")
    except OSError as exc:
        raise BusguardError(f"cannot read {old_path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise BusguardError(f"{old_path}: not a `busguard map --format json` output "
                            f"({type(exc).__name__}: {exc})") from None
    new_fields = [f.as_dict() for f in regmap.fields()]
    d = slots.diff_fields(old_fields, new_fields)
    print(f"map v{old.get('map_version', '?')} ({old_path}) -> map v{mapdef.MAP_VERSION}: "
          f"{len(d['moved'])} moved, {len(d['added'])} added, {len(d['removed'])} removed")
    for line in d["moved"] + d["added"] + d["removed"]:
        print("  " + line)
    return 1 if d["moved"] else 0
