"""(1) Scan determinism under load and (6) the runtime's resources, from the same runs.

The measured runtime (:mod:`busguard.bench.target`, one process) scans every 10 ms with one
threshold block per meter. Baseline: the same loop, same points and blocks, with memory
meters and nothing else running. Load: 64 meters served by :mod:`busguard.bench.meters`
(another process) and polled by busguard's ``modbus_tcp`` driver every 100 ms, 32 1-Wire
probes (a file tree rewritten every second by :mod:`busguard.bench.probes`, read by the ``w1``
driver) and 8 DCIM clients (:mod:`busguard.bench.clients`, another process) each reading the
full northbound map 10 times a second. Lateness and overruns come from the runtime's own
:class:`busguard.stats.LatenessRecorder`; CPU and RSS from the runtime process itself.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from busguard.bench import northbound_map
from busguard.bench.context import Bench
from busguard.bench.meters import nominal_values
from busguard.bench.probes import sensor_ids
from busguard.bench.result import INFO, MISS, PASS, Measurement, Row, below
from busguard.bench.sites import (
    METER_PROFILE,
    SiteSpec,
    add_limit_blocks,
    add_memory_meters,
    add_tcp_meters,
    add_w1_probes,
)
from busguard.modbus.profiles import load_profile

KEYS = (("1-scan", "scan determinism under load, 10 ms period"),
        ("6-resources", "runtime process resources during (1)"))
NEEDS = ("modbus_tcp", "threshold_alarm")
METERS, PROBES, DCIM_CLIENTS, DCIM_HZ, POLL_MS, PERIOD_MS = 64, 32, 8, 10.0, 100.0, 10.0
RSS_FLOOR_MB = 100.0


def _spec(duration_s: float) -> SiteSpec:
    return SiteSpec(name="bench-scan", period_ms=PERIOD_MS,
                    stats_window=int(duration_s * 1000 / PERIOD_MS) + 1000)


def run(b: Bench) -> list[Measurement]:
    dur = b.seconds(60.0, 5.0)
    warm = b.seconds(3.0, 1.0)
    profile = load_profile(METER_PROFILE)
    points = [p.name for p in profile.points]

    # Baseline: the same loop, same image and blocks, no I/O load.
    idle = _spec(dur)
    meters_n, probes_n = b.count(METERS), b.count(PROBES)
    names = add_memory_meters(idle, meters_n, points, nominal_values(0, profile))
    add_limit_blocks(idle, names, "current_l1_a", high=600.0, output="relay.alarm")
    idle.add("output", name="bench-out", driver="bench_output", outputs=["relay.alarm"])
    t = b.target(idle, "scan-idle")
    base = t.request("measure", warmup_s=warm, duration_s=dur, timeout_s=dur + 60)
    t.close()

    load: dict[str, Any] = {"meters": f"{meters_n} x modbus_tcp every {POLL_MS:g} ms "
                                      f"({b.meters_backend} meter servers)"}
    missing = []
    with ExitStack() as stack:
        meters = stack.enter_context(b.child("meters", ["--count", meters_n, "--backend",
                                                         b.meters_backend], "scan-meters"))
        spec = _spec(dur)
        names = add_tcp_meters(spec, meters.ready["ports"], POLL_MS)
        add_limit_blocks(spec, names, "current_l1_a", high=600.0, output="relay.alarm")
        spec.add("output", name="bench-out", driver="bench_output", outputs=["relay.alarm"])
        probes = None
        if b.parts["w1"]:
            w1_dir = b.workdir / "scan-w1"
            probes = stack.enter_context(b.child("probes", ["--dir", w1_dir, "--count", probes_n],
                                                 "scan-probes"))
            add_w1_probes(spec, str(w1_dir), sensor_ids(probes_n), 1000.0)
            load["probes"] = f"{probes_n} x w1, files rewritten every 1 s"
        else:
            missing.append("w1 probe driver")
        nb_port = 0
        if b.parts["modbus_server"]:
            nb_port = northbound_map.configure(spec)
        else:
            missing.append("northbound [modbus_server]")
        io_proc = None
        if b.split_scan:  # prototype: drivers + northbound in one process, the scan in another
            shm = f"busguard-bench-{os.getpid()}"
            io_proc = stack.enter_context(b.target(spec, "scan-load", ["--shm-export", shm],
                                                   levers=False))
            tgt = stack.enter_context(b.target(b.workdir / "scan-load" / "site.toml",
                                               "scan-load-scan", ["--shm-import", shm]))
            load["split"] = ("prototype: scan in its own process, image through shared "
                             "memory; the I/O process keeps its own 10 ms loop for the "
                             "northbound frames")
        else:
            tgt = stack.enter_context(b.target(spec, "scan-load"))
        dcim = None
        if nb_port:
            blocks, _size = northbound_map.blocks(b.workdir / "scan-load" / "site.toml")
            dcim = stack.enter_context(b.child(
                "clients", ["--port", nb_port, "--blocks", northbound_map.dumps(blocks)],
                "scan-dcim"))
            dcim.request("start", mode="paced", clients=b.count(DCIM_CLIENTS), hz=DCIM_HZ)
            nregs = sum(x[2] for x in blocks)
            load["dcim"] = (f"{b.count(DCIM_CLIENTS)} clients x full map ({nregs} registers, "
                            f"{len(blocks)} requests) at {DCIM_HZ:g} Hz")
        if io_proc is not None:
            io_proc.send("measure", warmup_s=0.0, duration_s=dur + 2 * warm + 1.0)
        m0 = meters.request("stats")
        got = tgt.request("measure", warmup_s=warm, duration_s=dur, timeout_s=dur + 60)
        m1 = meters.request("stats")
        io_res = io_proc.reply(dur + 60) if io_proc is not None else None
        dcim_stats = dcim.request("stop") if dcim else None
        probe_stats = probes.request("stats") if probes else None
    span = m1["t"] - m0["t"]
    achieved = {"meter_requests_per_s": (m1["requests"] - m0["requests"]) / span,
                "meter_server_cpu_share": (m1["cpu_s"] - m0["cpu_s"]) / span,
                "dcim": dcim_stats, "probe_writes": probe_stats and probe_stats["writes"],
                "quality": got["quality"]}
    details = {"duration_s": dur, "warmup_s": warm, "load": load, "missing_load": missing,
               "achieved": achieved, "baseline": base, "loaded": got, "io_process": io_res}
    return [_scan_rows(base, got, missing, details), _resource_rows(base, got, io_res)]


def _scan_rows(base: dict[str, Any], got: dict[str, Any], missing: list[str],
               details: dict[str, Any]) -> Measurement:
    s, bs = got["stats"], base["stats"]
    judged = not missing
    note = "" if judged else ("floor not judged: load incomplete, missing " +
                              ", ".join(missing))

    def judge(status: str) -> str:
        return status if judged else INFO

    rows = [
        Row("lateness p50", s["lateness_p50_ms"], "ms", bs["lateness_p50_ms"], "idle"),
        Row("lateness p99", s["lateness_p99_ms"], "ms", bs["lateness_p99_ms"], "idle", "< 1 ms",
            judge(below(s["lateness_p99_ms"], 1.0)), note),
        Row("lateness max", s["lateness_max_ms"], "ms", bs["lateness_max_ms"], "idle"),
        Row("overruns", s["overruns"], "", bs["overruns"], "idle", "0",
            judge(PASS if s["overruns"] == 0 else MISS),
            f"{s['cycles']} scans measured"),
    ]
    return Measurement("1-scan", KEYS[0][1], rows, details=details)


def _resource_rows(base: dict[str, Any], got: dict[str, Any],
                   io_res: dict[str, Any] | None) -> Measurement:
    rss = got["memory"].get("vmhwm_mb")
    rows: list[Row] = []
    if io_res is not None:  # split prototype: both processes are the runtime
        io_rss = io_res["memory"].get("vmhwm_mb")
        rows += [Row("RSS (peak), scan + I/O processes", (rss or 0.0) + (io_rss or 0.0), "MB",
                     base["memory"].get("vmhwm_mb"), "idle", f"< {RSS_FLOOR_MB:g} MB",
                     below((rss or 0.0) + (io_rss or 0.0), RSS_FLOOR_MB)),
                 Row("CPU share, I/O process", 100.0 * io_res["cpu_share"], "%")]
        rss = None
    rows += [
        Row("RSS (peak)" + (", scan process" if rss is None else ""),
            rss if rss is not None else got["memory"].get("vmhwm_mb"), "MB",
            base["memory"].get("vmhwm_mb"), "idle", "" if rss is None else
            f"< {RSS_FLOOR_MB:g} MB", INFO if rss is None else below(rss, RSS_FLOOR_MB)),
        Row("CPU share", 100.0 * got["cpu_share"], "%", 100.0 * base["cpu_share"], "idle",
            note="of one core, user+system, runtime process only"),
        Row("threads", got["threads"], "", base["threads"], "idle"),
    ]
    return Measurement("6-resources", KEYS[1][1], rows,
                       details={"loaded_memory": got["memory"], "idle_memory": base["memory"],
                                "io_process_memory": io_res and io_res["memory"]})
