"""(2) Polling throughput: register reads per second through busguard's meter driver, beside
a hand-written pymodbus async client loop doing the same reads, in the same run.

Both poll the same 64 meters (:mod:`busguard_bench.meters`, the minimal responder, so the
servers are not the bottleneck) with the same read plan (the profile's two blocks), one
request in flight per meter, as fast as the meters answer. busguard: the whole runtime
(:mod:`busguard_bench.target`, scan running every 10 ms) with ``poll_ms = 1``, so each meter is
polled back to back. Baseline: :mod:`busguard_bench.pollers`. Requests are counted by the
meter servers (the same counter for both); CPU time per request is each client process's own.
"""

from __future__ import annotations

from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row, ratio_at_least
from busguard_bench.sites import SiteSpec, add_tcp_meters

KEYS = (("2-polling", "meter polling throughput (64 meters)"),)
NEEDS = ("modbus_tcp",)
METERS = 64
FLOOR_RATIO = 0.8


def run(b: Bench) -> list[Measurement]:
    dur = b.seconds(20.0, 3.0)
    warm = b.seconds(2.0, 1.0)
    with b.child("meters", ["--count", b.count(METERS), "--backend", "raw"],
                 "poll-meters") as meters:
        ports = meters.ready["ports"]
        spec = SiteSpec(name="bench-polling", stats_window=int(dur * 100) + 1000,
                        io=b.io_modes[0])
        add_tcp_meters(spec, ports, poll_ms=1.0)
        tgt = b.target(spec, "poll-busguard")
        tgt.request("measure", warmup_s=0.2, duration_s=warm, timeout_s=warm + 60)
        m0 = meters.request("stats")
        got = tgt.request("measure", warmup_s=0.0, duration_s=dur, timeout_s=dur + 60)
        m1 = meters.request("stats")
        # the meter driver's stop() can take seconds per meter polled back to back (see
        # docs/benchmarks.md); the fail-safe path is not what is measured here
        tgt.close(timeout_s=b.seconds(2.0, 2.0))
        bg_rps = (m1["requests"] - m0["requests"]) / (m1["t"] - m0["t"])
        bg_regs = (m1["registers"] - m0["registers"]) / (m1["t"] - m0["t"])
        bg_server_cpu = (m1["cpu_s"] - m0["cpu_s"]) / (m1["t"] - m0["t"])
        with b.child("pollers", ports, "poll-baseline") as base:
            base.request("run", duration_s=warm, timeout_s=warm + 60)
            m0 = meters.request("stats")
            hw = base.request("run", duration_s=dur, timeout_s=dur + 60)
            m1 = meters.request("stats")
        hw_rps = (m1["requests"] - m0["requests"]) / (m1["t"] - m0["t"])
        hw_regs = (m1["registers"] - m0["registers"]) / (m1["t"] - m0["t"])
        hw_server_cpu = (m1["cpu_s"] - m0["cpu_s"]) / (m1["t"] - m0["t"])
    io_cpu = (got.get("io_process") or {}).get("cpu_s", 0.0)  # io = "process": both count
    bg_cpu_us = 1e6 * (got["cpu_s"] + io_cpu) / max(1.0, bg_rps * got["wall_s"])
    hw_cpu_us = 1e6 * hw["cpu_s"] / max(1.0, hw["requests"])
    rows = [
        Row("read requests/s", bg_rps, "/s", hw_rps, "hand-written", f">= {FLOOR_RATIO}x",
            ratio_at_least(bg_rps, hw_rps, FLOOR_RATIO),
            f"ratio {bg_rps / hw_rps:.2f}" if hw_rps else ""),
        Row("registers/s", bg_regs, "/s", hw_regs, "hand-written"),
        Row("client CPU per request", bg_cpu_us, "us", hw_cpu_us, "hand-written",
            note="busguard's figure includes its 10 ms scan and the process image"
            + (" (both processes)" if io_cpu else "")),
        Row("client CPU share", 100.0 * (got["cpu_s"] + io_cpu) / got["wall_s"], "%",
            100.0 * hw["cpu_s"] / hw["wall_s"], "hand-written", status=INFO),
    ]
    details = {"duration_s": dur, "busguard": got | {"outputs": None},
               "handwritten": hw, "server_cpu_share": {"busguard": bg_server_cpu,
                                                       "handwritten": hw_server_cpu}}
    return [Measurement(KEYS[0][0], f"{KEYS[0][1]}, [scan] io = \"{spec.io}\"", rows,
                        details=details)]
