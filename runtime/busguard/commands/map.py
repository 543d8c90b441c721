"""`busguard map [SITE] [--format md|csv|json]`: the DCIM's register map of a site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from busguard.commands import default_site
from busguard.northbound import docs, mapdef
from busguard.runtime import Runtime


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="print the Modbus register map of a site", description=(
        "Print the register map the [modbus_server] publisher serves for SITE (default "
        "./site.toml): every address, type and meaning, generated from the map definition in "
        "code. docs/register-map.md is this command's md output for the bundled site."))
    p.add_argument("site", nargs="?", help="site file (default ./site.toml)")
    p.add_argument("--format", choices=("md", "csv", "json"), default="md",
                   help="output format (default md)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def build(path: str | Path) -> tuple[mapdef.RegisterMap, str, int]:
    """The map of a site file (built, not started: no I/O), its site name and server port."""
    rt = Runtime.from_file(path)
    ms = rt.site.publishers.get("modbus_server")
    port = int(ms.params["port"]) if ms is not None else 502
    return mapdef.for_runtime(rt), rt.site.name, port


def run(args: argparse.Namespace) -> int:
    path = default_site(args.site)
    regmap, name, port = build(path)
    text = docs.render(regmap, args.format, name, Path(path).name, port)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
