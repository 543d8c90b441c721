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
# imports pymodbus.server early with aiohttp hidden (a start-up time fix) and uses none of its
# names: not a fourth module that talks Modbus
IMPORT_SHIMS = {"runtime/busguard/web/nosim.py"}


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
    assert importers("pymodbus") == ALLOWED | IMPORT_SHIMS


def test_an_import_shim_uses_no_pymodbus_name():
    for rel in IMPORT_SHIMS:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        froms = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and (n.module or "").startswith("pymodbus")]
        used = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "pymodbus"]
        assert not froms and not used, rel


def test_the_check_sees_an_import_where_one_is():
    assert "runtime/busguard/sim/serve.py" in importers("pymodbus")
    assert importers("busguard_no_such_module") == set()
