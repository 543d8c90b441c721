"""pymodbus is pinned to a tested minor range and its APIs move between minors (design.md), so
it is imported by the modules that talk Modbus and nowhere else: the client transport, the
server and the simulator's server (issue 14). Read from the source with ``ast``, so a lazy
import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"runtime/busguard/modbus/transport.py", "runtime/busguard/northbound/server.py",
           "runtime/busguard/sim/serve.py"}


def importers(top: str) -> set[str]:
    found = set()
    for folder in ("runtime", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and \
                    not node.level else []
                if any(n == top or n.startswith(top + ".") for n in names):
                    found.add(path.relative_to(ROOT).as_posix())
    return found


def test_pymodbus_is_imported_only_by_the_transport_the_server_and_the_simulator():
    assert importers("pymodbus") == ALLOWED


def test_the_literal_grep_of_the_issue_lists_only_those_modules():
    """issue 14's check, as written: `grep -rn "import pymodbus\\|from pymodbus" runtime
    plugins` (docstrings included) names no other module."""
    hits = set()
    for folder in ("runtime", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "import pymodbus" in text or "from pymodbus" in text:
                hits.add(path.relative_to(ROOT).as_posix())
    assert hits <= ALLOWED, hits - ALLOWED


def test_pymodbus_server_is_loaded_without_aiohttp():
    """The server imports pymodbus.server with aiohttp hidden (busguard.hiddenimport): a
    process that serves Modbus does not pay for pymodbus's simulator web page."""
    import subprocess
    import sys

    code = ("import sys, busguard.northbound.server, busguard.sim.serve; "
            "print('aiohttp' in sys.modules, 'pymodbus.server' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "True"]


def test_the_check_sees_an_import_where_one_is():
    assert "runtime/busguard/sim/serve.py" in importers("pymodbus")
    assert importers("busguard_no_such_module") == set()
