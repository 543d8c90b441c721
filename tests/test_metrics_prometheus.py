"""A real Prometheus server (Debian's `prometheus`) scrapes busguard's /metrics over HTTPS
with basic auth on loopback, and a point and an alarm come back through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from busguard.testing import running
from test_sim_site import free_ports
from test_web_helpers import PASSWORD, USER, site_text, web_of

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package) is not installed")]


@pytest.fixture
def live(tmp_path):
    """The runtime on the real clock, scanning in a thread."""
    site = tmp_path / "site.toml"
    site.write_text(site_text(tmp_path), encoding="utf-8")
    with running(site) as rt:
        done = threading.Event()

        def poll() -> None:  # what a meter driver does: fresh values, so they stay good
            while not done.wait(0.2):
                rt.image.write("m1.power_kw", 88.5)
                rt.image.write("m1.current_l1_a", 150.0)  # over 100 A: BG-LIMIT (warning)

        w = threading.Thread(target=poll, daemon=True)
        w.start()
        yield rt
        done.set()
        w.join(5)


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_a_point_and_an_alarm(live, tmp_path):
    rt = live
    web_port = web_of(rt).port()
    (tmp_path / "scrape.pw").write_text(PASSWORD)
    (prom_port,) = free_ports(1)
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{Path(__file__).resolve().parent.parent}/packaging/prometheus/busguard.rules.yml"]
scrape_configs:
  - job_name: busguard
    scheme: https
    tls_config:
      ca_file: {tmp_path}/web.pem
      insecure_skip_verify: false
    basic_auth:
      username: {USER}
      password_file: {tmp_path}/scrape.pw
    static_configs:
      - targets: ["127.0.0.1:{web_port}"]
""")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path}/prometheus.yml",
         f"--storage.tsdb.path={tmp_path}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        point = alarm = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                point = query(prom_port, 'busguard_point{device="m1", point="power_kw"}')
                alarm = query(prom_port, 'busguard_alarm{code="BG-LIMIT"}')
            except OSError:
                continue  # not listening yet
            if point and alarm:
                break
        assert point, "Prometheus never got busguard_point for m1.power_kw"
        assert float(point[0]["value"][1]) == pytest.approx(88.5)
        assert point[0]["metric"]["quality"] == "good"
        assert alarm and alarm[0]["metric"]["severity"] == "warning"
        assert alarm[0]["metric"]["device"] == "m1"
        up = query(prom_port, 'up{job="busguard"}')
        assert up and up[0]["value"][1] == "1"  # scraped over TLS with the user's password
        # the recording rule over the same series
        deadline = time.monotonic() + 20
        while not (rec := query(prom_port, "busguard:power_kw:sum")):
            assert time.monotonic() < deadline, "recording rule never evaluated"
            time.sleep(0.5)
        assert float(rec[0]["value"][1]) == pytest.approx(88.5)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
