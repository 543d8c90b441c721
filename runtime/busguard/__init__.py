"""busguard: a PLC-style supervisory runtime for AI-factory busway power distribution.

busguard runs beside the breakers' own trip units, never instead of them. Plugin authors import
``hookimpl`` from here; the whole plugin contract is :mod:`busguard.hookspecs`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PROJECT = "busguard"


def __getattr__(name: str) -> Any:
    """``hookimpl`` made on first use: importing pluggy costs a start that only serves the
    retained image first (``busguard run``'s early server) or prints ``--version``."""
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker(PROJECT)
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module 'busguard' has no attribute {name!r}")

__all__ = ["PROJECT", "__version__", "hookimpl"]
