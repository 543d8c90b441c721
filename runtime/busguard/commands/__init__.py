"""One module per `busguard` subcommand; each exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import os
from pathlib import Path

from busguard.errors import UsageError


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
