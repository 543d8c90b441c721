"""busguard: a PLC-style supervisory runtime for AI-factory busway power distribution.

busguard runs beside the breakers' own trip units, never instead of them. Plugin authors import
``hookimpl`` from here; the whole plugin contract is :mod:`busguard.hookspecs`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "busguard"
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "__version__", "hookimpl"]
