"""One module per `busguard` subcommand; each exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from busguard.errors import BusguardError, UsageError


def add_site_argument(p: argparse.ArgumentParser) -> None:
    """The optional SITE argument of the commands that work on one site file."""
    p.add_argument("site", nargs="?", help="site file (default ./site.toml)")


def default_site(given: str | None) -> Path:
    """The site file to use: the argument, else $BUSGUARD_SITE, else ./site.toml, else the
    packaged /etc/busguard/site.toml."""
    if given:
        return Path(given)
    env = os.environ.get("BUSGUARD_SITE")
    if env:
        return Path(env)
    for candidate in (Path("site.toml"), Path("/etc/busguard/site.toml")):
        if candidate.is_file():
            return candidate
    raise UsageError("no site file given and none found (tried ./site.toml and "
                        "/etc/busguard/site.toml); pass one: busguard check PATH")


def secrets_file(site: str | None, section: str, publisher: type, param: str) -> Path:
    """Where the ``[section]`` publisher of a site keeps its secrets file (``param``: the web's
    passwords, SNMP's user keys): as the site sets it, resolved against the site, else the
    declared default (also when no site file is given and ./site.toml does not load)."""
    from busguard.loader import load

    default = publisher.params[param].default
    try:
        loaded = load(Path(site) if site else Path("site.toml")).site
    except BusguardError:
        if site:
            raise
        return Path(default)
    pub = loaded.publishers.get(section)
    return loaded.resolve(pub.params[param] if pub else default)


def simulator_scenarios() -> dict[str, object]:
    """The simulator's scenarios by name ({} when the simulator is not installed: it ships in
    the busguard-tools package, not on a production unit)."""
    try:
        from busguard.sim.scenarios import SCENARIOS
    except ImportError:
        return {}
    return dict(SCENARIOS)


def require_simulator(command: str) -> None:
    """Stop with a usage error naming the package when the simulator is not installed."""
    if not simulator_scenarios():
        raise UsageError(f"`busguard {command}` needs the simulator, which is in the "
                         f"busguard-tools package: sudo apt-get install busguard-tools (or "
                         f"pip install busguard from a source tree)")
