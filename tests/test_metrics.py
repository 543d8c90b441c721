"""/metrics: the snapshot in the Prometheus text format (parsed back with prometheus-client's
own parser), generated at most once per refresh."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_web_helpers import get, site_text, web_of


@pytest.fixture
def scraped(make_runtime, tmp_path, run_scans):
    rt = make_runtime(site_text(tmp_path, tls=False), start=True)
    rt.image.write("m1.current_l1_a", 150.0)
    rt.image.write("m1.power_kw", 88.5)
    run_scans(rt, 3)
    port = web_of(rt).port()
    r = get(port, "/metrics", tls=False)
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    return rt, port, fams


def samples(fams, name):
    fam = fams.get(name) or fams[name.removesuffix("_total")]  # a counter's family: no _total
    return [s for s in fam.samples if s.name == name]


def test_points_are_gauges_with_device_point_and_quality(scraped):
    _rt, _port, fams = scraped
    pts = {(s.labels["device"], s.labels["point"]): s for s in samples(fams, "busguard_point")}
    s = pts[("m1", "power_kw")]
    assert s.value == pytest.approx(88.5)
    assert s.labels["quality"] == "good" and s.labels["kind"] == "meter"
    assert s.labels["slot"] == "0"
    assert fams["busguard_point"].type == "gauge"


def test_the_alarm_is_a_series_with_code_and_severity(scraped):
    _rt, _port, fams = scraped
    (a,) = samples(fams, "busguard_alarm")
    assert a.labels == {"code": "BG-LIMIT", "severity": "warning", "device": "m1",
                        "state": "active", "acked": "false"}
    assert samples(fams, "busguard_alarms_active")[0].value == 1


def test_scan_lateness_histogram_overruns_and_state(scraped):
    _rt, _port, fams = scraped
    h = fams["busguard_scan_lateness_seconds"]
    assert h.type == "histogram"
    count = next(s for s in h.samples if s.name.endswith("_count"))
    assert count.value >= 3  # every scan observed (the fake clock's scans are on time)
    assert samples(fams, "busguard_scan_overruns_total")[0].value == 0
    (up,) = samples(fams, "busguard_up")
    assert up.value == 1 and up.labels["state"] == "running"
    assert "busguard_web_connections" in fams


def test_metrics_text_is_made_once_per_refresh_however_many_scrape(scraped):
    rt, port, _fams = scraped
    web = web_of(rt)
    calls = []
    real = web.metrics.registry.collect

    def counted():
        calls.append(1)
        return real()

    web.metrics.registry.collect = counted
    web.cache.refresh_s = 3600.0  # no new snapshot during the test
    bodies = {get(port, "/metrics", tls=False).body for _ in range(5)}
    assert len(bodies) == 1 and calls == []  # served from the text made at the last refresh
