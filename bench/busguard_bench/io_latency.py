"""(4) Input to output: from a meter value crossing a trip threshold to the output changing.

The measured runtime (:mod:`busguard_bench.target`) polls 64 simulated meters every 100 ms and
scans every 10 ms; a ``threshold_alarm`` block on meter 0's ``current_l1_a`` drives
``relay.alarm``, taken by the ``bench_output`` driver, which stamps each change with
``time.monotonic()`` inside ``apply()`` (where a relay driver queues its write). The meter
process moves the value across the threshold at random phases relative to the poll and stamps
the instant the new registers became readable. Latency = output stamp - crossing stamp (one
clock, CLOCK_MONOTONIC, for both processes). The runtime runs with ``[scan] io`` as the judged
mode of (1): with ``process`` the reading also crosses the link to the scan process.
Theoretical bound: one poll period (the value waits for the next poll) + one scan period (the
reading waits for the next scan), plus the Modbus round trip; floor: p99 within poll + two scan
periods.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from typing import Any

from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row, at_most, pct
from busguard_bench.sites import SiteSpec, add_limit_blocks, add_tcp_meters

KEYS = (("4-input-output", "meter threshold crossing to output change"),)
NEEDS = ("modbus_tcp", "threshold_alarm")
METERS, POLL_MS, PERIOD_MS = 64, 100.0, 10.0
LOW_A, HIGH_A, TRIP_A = 200.0, 700.0, 600.0
OUTPUT = "relay.alarm"


def run(b: Bench) -> list[Measurement]:
    trips = 3 if b.smoke else b.count(100, 12)
    rng = random.Random(7)
    with ExitStack() as stack:
        meters = stack.enter_context(b.child(
            "meters", ["--count", b.count(METERS), "--backend", b.meters_backend], "io-meters"))
        spec = SiteSpec(name="bench-io", period_ms=PERIOD_MS, io=b.io_modes[0])
        names = add_tcp_meters(spec, meters.ready["ports"], POLL_MS)
        add_limit_blocks(spec, names, "current_l1_a", high=TRIP_A, output=OUTPUT)
        spec.add("output", name="bench-out", driver="bench_output", outputs=[OUTPUT])
        tgt = stack.enter_context(b.target(spec, "io-busguard"))
        meters.request("set", meter=0, point="current_l1_a", value=LOW_A)
        # each trip: up for 0.25..0.35 s, down for 0.25..0.35 s (random phase vs the poll)
        warm = b.seconds(1.0, 1.0)
        budget = trips * 0.7 + 1.0
        tgt.send("measure", warmup_s=warm, duration_s=budget)
        time.sleep(warm + 0.3)
        crossings: list[float] = []
        for _ in range(trips):
            crossings.append(meters.request("set", meter=0, point="current_l1_a",
                                            value=HIGH_A)["t"])
            time.sleep(rng.uniform(0.25, 0.35))
            meters.request("set", meter=0, point="current_l1_a", value=LOW_A)
            time.sleep(rng.uniform(0.25, 0.35))
        got = tgt.reply(budget + 60)
    rises = [t for name, v, t in got["outputs"] if name == OUTPUT and v == 1.0]
    lat = []
    unmatched = 0
    for tc in crossings:
        after = [t for t in rises if t >= tc]
        if after and after[0] - tc < 2.0:
            lat.append((after[0] - tc) * 1e3)
        else:
            unmatched += 1
    bound = POLL_MS + PERIOD_MS
    floor = POLL_MS + 2 * PERIOD_MS
    p50, p99 = pct(lat, 50), pct(lat, 99)
    rows = [
        Row("latency p50", p50, "ms", bound, "theoretical bound"),
        Row("latency p99", p99, "ms", bound, "theoretical bound", f"<= {floor:g} ms",
            at_most(p99, floor), f"{len(lat)} crossings measured"
            + (f", {unmatched} without an output change" if unmatched else "")),
        Row("latency max", max(lat) if lat else None, "ms", bound, "theoretical bound",
            status=INFO),
    ]
    details: dict[str, Any] = {"trips": trips, "latencies_ms": lat, "unmatched": unmatched,
                               "scan": got["stats"], "meters_backend": b.meters_backend}
    return [Measurement(KEYS[0][0], KEYS[0][1] + f" (poll {POLL_MS:g} ms, scan "
                        f"{PERIOD_MS:g} ms, [scan] io = \"{spec.io}\")", rows,
                        details=details)]
