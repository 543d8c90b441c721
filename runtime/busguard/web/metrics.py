"""``/metrics``: the snapshot in the Prometheus text format, through prometheus-client.

The text is generated at most once per snapshot the refresher decoded (however many scrapers
ask); the only thing fed from the scan itself is the lateness histogram, whose buckets the
scan thread bumps in ``on_scan`` (a bisect and an increment: it never waits). Names, labels
and the recording/alert rules that use them: docs/web.md, packaging/prometheus/.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)  # (imported by the web publisher only when a site has [web])

from busguard.web.lateness import (
    LATENESS_BOUNDS_S,
    LatenessHistogram,
    SharedLateness,
    cumulative,
)

SEVERITY_LEVEL = {"none": 0, "info": 1, "warning": 2, "minor": 3, "major": 4, "critical": 5}
COMM = (("comm_ok", "busguard_comm_ok", "1 while the device answers its polls", 1.0),
        ("comm_loss_pct", "busguard_comm_loss_ratio", "share of polls lost", 0.01),
        ("comm_error_pct", "busguard_comm_error_ratio", "share of polls answered with an error",
         0.01),
        ("comm_latency_p99_ms", "busguard_comm_latency_p99_seconds",
         "99th percentile poll round trip", 0.001))


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


class SnapshotCollector:
    """A prometheus-client collector over the newest decoded snapshot."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]], site: str,
                 hist: Callable[[], LatenessHistogram | SharedLateness],
                 extra: Callable[[], Mapping[str, int]]) -> None:
        self.snapshot = snapshot
        self.site = site
        self.hist = hist
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        h = snap.get("header", {})
        up = GaugeMetricFamily("busguard_up", "1 while the runtime scans (state running)",
                               labels=["site", "state", "origin"])
        up.add_metric([self.site, str(h.get("runtime_state", "unknown")),
                       str(h.get("data_origin", ""))],
                      1.0 if h.get("runtime_state") == "running" else 0.0)
        yield up
        yield CounterMetricFamily("busguard_scan_cycles", "scans completed since start",
                                  value=_num(h.get("cycle_count")))
        yield CounterMetricFamily("busguard_scan_overruns", "scans that missed their deadline",
                                  value=_num(h.get("overruns")))
        p99 = h.get("scan_lateness_p99_ms")
        yield GaugeMetricFamily("busguard_scan_lateness_p99_seconds", "p99 scan lateness over "
                                "the runtime's window", value=_num(p99) / 1000.0)
        st = self.hist().state()
        if st is not None:
            hist = HistogramMetricFamily("busguard_scan_lateness_seconds",
                                         "how late each scan started after its deadline")
            buckets, total = cumulative(LATENESS_BOUNDS_S, *st)
            hist.add_metric([], buckets, total)
            yield hist
        for key, name, doc in (("active_alarms", "busguard_alarms_active", "alarms holding"),
                               ("unacked_alarms", "busguard_alarms_unacked",
                                "alarms not acknowledged"),
                               ("faulted_blocks", "busguard_blocks_faulted",
                                "blocks faulted (outputs at fail-safe)")):
            yield GaugeMetricFamily(name, doc, value=_num(h.get(key)))
        yield GaugeMetricFamily("busguard_highest_severity", "0 none .. 5 critical",
                                value=float(SEVERITY_LEVEL.get(str(h.get("highest_severity")),
                                                               0)))
        age = time.time() - h["image_utc"] if h.get("image_utc") else math.nan
        yield GaugeMetricFamily("busguard_snapshot_age_seconds",
                                "age of the register image served", value=age)
        yield from self._points(snap)
        yield from self._alarms(snap)
        refused = CounterMetricFamily("busguard_web_connections", "web connections by outcome",
                                      labels=["outcome"])
        for k, v in self.extra().items():
            refused.add_metric([k], float(v))
        yield refused

    def _points(self, snap: Mapping[str, Any]) -> Iterator[Metric]:
        pts = GaugeMetricFamily("busguard_point", "a device's point as the DCIM reads it",
                                labels=["kind", "device", "slot", "point", "quality"])
        comm = {name: GaugeMetricFamily(name, doc, labels=["device"])
                for _k, name, doc, _s in COMM}
        tripped = GaugeMetricFamily("busguard_breaker_trip_latched",
                                    "1 while a breaker's trip is latched (until reset)",
                                    labels=["device", "cause"])
        for d in snap.get("devices", ()):
            p = d["points"]
            for q, rec in p.items():
                pts.add_metric([d["kind"], d["name"], str(d["slot"]), q, rec["quality"]],
                               _num(rec["value"]))
            for key, name, _doc, scale in COMM:
                rec = p.get(key)
                if rec is not None:
                    comm[name].add_metric([d["name"]], _num(rec["value"]) * scale)
            if d["kind"] == "breaker":
                tripped.add_metric([d["name"], d.get("trip_cause_name") or ""],
                                   1.0 if "trip_latched" in d["flags"] else 0.0)
        for name, rec in snap.get("extras", {}).items():
            dev, _dot, q = name.partition(".")
            pts.add_metric(["extra", dev, "", q, rec["quality"]], _num(rec["value"]))
        for name, rec in snap.get("outputs", {}).items():
            dev, _dot, q = name.partition(".")
            pts.add_metric(["output", dev, "", q, rec["quality"]], _num(rec["value"]))
        yield pts
        yield from comm.values()
        yield tripped

    def _alarms(self, snap: Mapping[str, Any]) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "busguard_alarm", "1 per alarm table row (state: active, latched, cleared-unacked)",
            labels=["code", "severity", "device", "state", "acked"])
        for r in snap.get("alarm_table", ()):
            fam.add_metric([r["code"], r["severity"], r["device"], r["state"],
                            "true" if r["acked"] else "false"], 1.0)
        yield fam


class Metrics:
    """The exposition text, regenerated only when the snapshot changed."""

    def __init__(self, collector: SnapshotCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)  # type: ignore[arg-type]
        self._text: tuple[int, bytes] = (-1, b"")

    def stale(self, generation: int) -> bool:
        return self._text[0] != generation

    def text(self, generation: int) -> bytes:
        if self._text[0] != generation:
            self._text = (generation, generate_latest(self.registry))
        return self._text[1]
