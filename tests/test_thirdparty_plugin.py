"""The third-party path: a separately packaged plugin, pip-installed into the test
environment, is found through the `busguard` entry points exactly like the built-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "thirdparty" / "rack_budget"

SITE = """
[site]
name = "third-party"
[[meter]]
name = "rack7"
driver = "constant"
power_kw = 132.0
[[block]]
name = "budget7"
type = "rack_budget"
point = "rack7.power_kw"
budget_kw = 120.0
[[output]]
name = "rec"
driver = "memory"
outputs = ["budget7.over"]
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site-packages")
    build = tmp_path_factory.mktemp("build")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, timeout=300, cwd=build)
    assert run.returncode == 0, run.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def busguard(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "busguard.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def test_installed_plugin_is_listed(installed, tmp_path):
    out = busguard(installed, "version", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p["distribution"] for p in json.loads(out.stdout)["plugins"]}
    assert plugins["rack_budget"] == "busguard-rack-budget 1.0.0"
    assert {"core", "blocks"} <= set(plugins)


def test_installed_plugin_types_validate_and_run(installed, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE)
    ok = busguard(installed, "check", "--json", str(site), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["blocks"] == ["budget7 (rack_budget)"]

    bad = tmp_path / "bad.toml"
    bad.write_text(SITE.replace("budget_kw = 120.0", "budget_kw = 0"))
    err = busguard(installed, "check", str(bad), cwd=tmp_path)
    assert err.returncode == 2
    assert f"{bad}: block[0].budget_kw: got 0; expected a number > 0" in err.stderr

    rec = tmp_path / "run.jsonl"
    run = busguard(installed, "run", str(site), "--cycles", "20", "--record", str(rec),
                   "--json", "--stats-every", "0", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    last = json.loads(rec.read_text().splitlines()[-1])
    assert last["out"] == {"budget7.over": 1.0}


def test_plugin_can_be_disabled_from_site_toml(installed, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.replace('[site]\nname = "third-party"',
                                 '[site]\nname = "third-party"\n[plugins]\n'
                                 'disabled = ["rack_budget"]'))
    out = busguard(installed, "check", str(site), cwd=tmp_path)
    assert out.returncode == 2
    assert "meter[0].driver: got 'constant'; expected one of " in out.stderr
