"""The plugin-author walkthrough of docs/plugins.md, kept honest: the example package in
tests/plugin_example is the one the document shows, it pip-installs offline, busguard finds it
through the entry point, validates its parameters, runs it, and its own tests pass with the
fixtures busguard ships."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "plugin_example"
DOC = HERE.parent / "docs" / "plugins.md"

SITE = """
[site]
name = "example-site"
[scan]
period_ms = 100
[paths]
fault_log = "fault.log"
state_dir = "state-example"
[[probe]]
name = "joint-a3"
driver = "memory"
poll_ms = 1000
points = ["temp_c"]
[[probe]]
name = "run-a"
driver = "memory"
poll_ms = 1000
points = ["temp_c"]
[[block]]
name = "a3-rise"
type = "joint_rise"
joint = "joint-a3"
reference = "run-a"
max_rise_c = {rise}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """pip install the example (offline, no build isolation) into a temporary target."""
    src = tmp_path_factory.mktemp("src") / "busguard-example-blocks"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site-packages")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300, cwd=src)
    assert run.returncode == 0, run.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return src, target, env


def busguard(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "busguard.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def test_installed_example_is_found_through_the_entry_point(installed, tmp_path):
    _src, _target, env = installed
    out = busguard(env, "version", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p["distribution"] for p in json.loads(out.stdout)["plugins"]}
    assert plugins["example"] == "busguard-example-blocks 0.1.0"


def test_check_validates_the_example_params(installed, tmp_path):
    _src, _target, env = installed
    (tmp_path / "site.toml").write_text(SITE.format(rise=15.0))
    ok = busguard(env, "check", "site.toml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "bad.toml").write_text(SITE.format(rise=-1.0).replace('"run-a"\nmax',
                                                                      '"run-b"\nmax'))
    bad = busguard(env, "check", "bad.toml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "block[0].max_rise_c: got -1.0; expected a number > 0 (C)" in bad.stderr + bad.stdout
    assert "block[0].reference: no probe named 'run-b'; did you mean 'run-a'?" in \
        bad.stderr + bad.stdout


def test_example_runs_in_a_runtime(installed, make_runtime, run_scans, monkeypatch, tmp_path):
    _src, target, _env = installed
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    rt = make_runtime(SITE.format(rise=15.0))
    assert rt.registry.origin["block type 'joint_rise'"] == "example"
    rt.start()
    rt.image.write("run-a.temp_c", 40.0)
    rt.image.write("joint-a3.temp_c", 58.0)
    (res,) = run_scans(rt, 1)
    rt.stop()
    assert [(e.kind, e.alarm.condition.code) for e in res.edges] == [("raised", "EX-JOINT-RISE")]
    log = (tmp_path / "fault.log").read_text()
    assert " major raised code=EX-JOINT-RISE device=joint-a3 " in log
    for name in [m for m in sys.modules if m.startswith("busguard_example")]:
        monkeypatch.delitem(sys.modules, name)


def test_example_own_tests_pass_with_busguard_fixtures(installed):
    src, _target, env = installed
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=src)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_docs_show_exactly_the_example_files():
    """Every file of the example appears verbatim in docs/plugins.md after a
    ``<!-- file: path -->`` marker, and every marked block is a file of the example."""
    text = DOC.read_text(encoding="utf-8")
    shown = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.DOTALL))
    files = {p.relative_to(EXAMPLE).as_posix(): p.read_text(encoding="utf-8")
             for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
             and not p.name.endswith(".pyc") and "egg-info" not in p.as_posix()
             and "build" not in p.parts and p.name != "conftest.py"}  # suite plumbing
    assert set(shown) == set(files)
    for name, body in files.items():
        assert shown[name] == body, f"docs/plugins.md shows a different {name}"


def test_docs_list_every_hook():
    from busguard import hookspecs
    text = DOC.read_text(encoding="utf-8")
    hooks = [n for n in dir(hookspecs) if n.startswith("busguard_")]
    assert hooks and all(f"`{h}(" in text for h in hooks), "docs/plugins.md misses a hook"
