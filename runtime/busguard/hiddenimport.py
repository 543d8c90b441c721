"""Import a library with one of its optional dependencies hidden.

Why: ``pymodbus/server/__init__.py`` imports its simulator's ``http_server``, which imports
``aiohttp.web`` whenever aiohttp is installed (busguard's ``[web]`` needs it): measured 0.15 s
on an idle 2-core machine and 0.9 s on a loaded one, added to every start of every busguard
process that serves or simulates Modbus, for a page busguard never uses (the .deb drops its
files). The Modbus server and the simulator load pymodbus inside ``hidden("aiohttp")``:
there ``import aiohttp`` fails and pymodbus catches the ImportError; busguard's own web server
imports aiohttp normally afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hidden(name: str) -> Iterator[None]:
    """While the block runs, ``import name`` raises ImportError (unless it is imported
    already, in which case there is nothing to save and nothing is hidden)."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]  # "import name" fails
    try:
        yield
    finally:
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]
