"""`busguard bench --only web`: wired end to end (smoke sizes: the figures mean nothing, the
rows and the page clients' answers do)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_web_bench_measures_busy_beside_idle_and_the_clients_got_answers(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "bench", "--smoke", "--only",
                          "web", "--json", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    ms = json.loads(out.read_text())["measurements"]
    assert [x["key"] for x in ms] == ["web", "web-thread"]  # io = "process" judged, "thread"
    m = ms[0]
    assert not m["error"] and not ms[1]["error"], (m["error"], ms[1]["error"])
    rows = {r["metric"]: r for r in m["rows"]}
    p99 = rows["lateness p99"]
    assert p99["value"] is not None and p99["baseline"] is not None
    assert p99["floor"] == "<= 1.2x baseline" and p99["status"] in ("PASS", "MISS")
    assert rows["overruns"]["status"] in ("PASS", "MISS")
    d = m["details"]
    assert d["errors"] == 0 and d["statuses"].get("200", 0) >= 5  # pages and scrapes served
    assert d["busy"]["stats"]["cycles"] > 0 and d["baseline_a"]["stats"]["cycles"] > 0
    assert "503" not in d["statuses"] and "404" not in d["statuses"]  # trends served
    scrapes = rows["/metrics scrapes"]
    assert scrapes["value"] > 0 and d["scrapes"][0] > 0, (scrapes, d["scraper"])
    assert len(d["load_avg"]) == 2
