"""Import ``pymodbus.server`` without the aiohttp its simulator web page would pull in.

``pymodbus/server/__init__.py`` imports ``simulator.http_server``, which imports
``aiohttp.web`` whenever aiohttp is installed (busguard's ``[web]`` needs it): measured 0.15 s
on an idle 2-core machine and 0.9 s on a loaded one, added to every start of every busguard
process that serves or simulates Modbus, for a page busguard never uses (the .deb drops its
files). Importing this module first imports ``pymodbus.server`` with ``aiohttp`` marked
absent (pymodbus catches the ImportError), then takes the mark away: busguard's own web
server imports aiohttp normally, when a site has ``[web]``.
"""

from __future__ import annotations

import sys

if "pymodbus.server" not in sys.modules and "aiohttp" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # "import aiohttp" fails
    try:
        import pymodbus.server  # noqa: F401
    finally:
        if sys.modules.get("aiohttp", 0) is None:
            del sys.modules["aiohttp"]
