"""`busguard version`: the runtime's version, Python, and the loaded plugins."""

from __future__ import annotations

import argparse
import json
import platform

from busguard import __version__
from busguard.plugins import build_plugin_manager, list_plugins


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="show versions and loaded plugins",
                       description="Show busguard's version, Python's, and the plugins found "
                                   "through the 'busguard' entry-point group.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    plugins = list_plugins(build_plugin_manager())
    info = {"busguard": __version__, "python": platform.python_version(),
            "pymodbus": version("pymodbus"), "plugins": plugins}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"busguard {__version__} (Python {info['python']}, pymodbus {info['pymodbus']})")
    for p in plugins:
        print(f"  plugin {p['name']}: {p['distribution']}")
    return 0
