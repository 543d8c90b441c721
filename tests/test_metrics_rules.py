"""packaging/prometheus: the rules pass `promtool check rules` and their own `promtool test
rules`, and every busguard metric they use is one /metrics really serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_web_helpers import get, site_text, web_of

RULES = Path(__file__).resolve().parent.parent / "packaging" / "prometheus"
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool (Debian package prometheus) is not installed")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120)


def test_promtool_check_rules():
    r = promtool("check", "rules", "busguard.rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules():
    r = promtool("test", "rules", "busguard.rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_rules_use_only_metrics_busguard_serves(make_runtime, tmp_path, run_scans):
    rt = make_runtime(site_text(tmp_path, tls=False), start=True)
    run_scans(rt, 2)
    text = get(web_of(rt).port(), "/metrics", tls=False).body.decode()
    served = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.MULTILINE))
    names = {n for n, _t in served}
    names |= {f"{n}_total" for n, t in served if t == "counter"}
    names |= {f"{n}_bucket" for n, t in served if t == "histogram"}
    used = set(re.findall(r"\b(busguard_[a-z0-9_]+)", (RULES / "busguard.rules.yml").read_text()))
    assert used and used <= names, used - names
