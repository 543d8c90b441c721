"""`busguard history POINT --since 1h [--csv]`: the real command in a subprocess, against a
store the recorder wrote, and (integration) against the bundled site's running demo."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from busguard.history.recorder import Recorder

PTS = ["pqm-a1.power_kw", "pqm-a1.temp_c", "tap-a1.temp_c"]


def busguard(*args: str, cwd: Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "busguard.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, int]:
    """Half an hour of samples ending now: power_kw = 100 + the second within the minute."""
    now = int(time.time())
    r = Recorder(tmp_path, PTS, seconds_dir=None, retention_days=1.0, batch_min=10,
                 seconds_keep_s=3600, now=now - 1800)
    for t in range(now - 1800, now):
        r.record(t, [100.0 + t % 60, 41.5, math.nan], [0, 0, 3])
    r.close()
    return tmp_path, now


def test_csv_of_the_last_minutes_is_one_row_per_second(store):
    d, _now = store
    out = busguard("history", "pqm-a1.power_kw", "--since", "2m", "--csv", "--state-dir",
                   str(d))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["t_utc", "time", "min", "avg", "max", "quality"]
    assert 100 <= len(rows) <= 121
    for r in rows:
        assert float(r["avg"]) == 100.0 + int(r["t_utc"]) % 60 and r["quality"] == "good"


def test_a_day_is_minutes_with_min_avg_max(store):
    d, _now = store
    out = busguard("history", "pqm-a1.power_kw", "--since", "1d", "--state-dir", str(d))
    assert out.returncode == 0, out.stderr
    assert "1 min min/avg/max" in out.stdout.splitlines()[0]
    full = [ln for ln in out.stdout.splitlines()[1:] if "avg      129.5" in ln]
    assert len(full) >= 25  # every whole minute: min 100, avg 129.5, max 159
    assert "min        100" in full[0] and "max        159" in full[0]


def test_json_and_an_absent_value_is_null_with_its_quality(store):
    d, _now = store
    out = busguard("history", "tap-a1.temp_c", "--since", "10s", "--json", "--state-dir",
                   str(d))
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout)
    assert got and all(s["avg"] is None and s["quality"] == "not-connected" for s in got)


def test_list_unknown_point_and_bad_since_say_what_to_do(store, tmp_path):
    d, _now = store
    out = busguard("history", "--list", "--state-dir", str(d))
    assert out.stdout.split() == PTS
    out = busguard("history", "pqm-a1.power_k", "--state-dir", str(d))
    assert out.returncode == 1
    assert "no history for point 'pqm-a1.power_k'; did you mean pqm-a1.power_kw" in out.stderr
    out = busguard("history", "pqm-a1.power_kw", "--since", "yesterday", "--state-dir", str(d))
    assert out.returncode == 2 and "expected a span such as 90s, 15m, 1h, 7d" in out.stderr
    out = busguard("history", "pqm-a1.power_kw", "--state-dir", str(tmp_path / "none"))
    assert out.returncode == 1 and "no history in" in out.stderr


@pytest.mark.integration
def test_the_bundled_demo_records_and_busguard_history_reads_it(tmp_path):
    from test_demo import bundled_site_on_free_ports

    site = bundled_site_on_free_ports(tmp_path)
    demo = busguard("demo", str(site), "--duration", "10", "--plain", timeout=120)
    assert demo.returncode == 0, demo.stderr[-2000:]
    out = busguard("history", "pqm-a1.power_kw", "--since", "5m", "--csv", "--site", str(site))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    good = [r for r in rows if r["quality"] == "good"]
    assert len(good) >= 3, out.stdout
    assert all(float(r["avg"]) > 0 for r in good)  # the simulator's GPU racks draw power
    out = busguard("history", "tap-a1.temp_c", "--since", "1d", "--site", str(site))
    assert out.returncode == 0 and "1 min min/avg/max" in out.stdout
