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


def test_the_check_sees_an_import_where_one_is():
    assert "runtime/busguard/sim/serve.py" in importers("pymodbus")
    assert importers("busguard_no_such_module") == set()
