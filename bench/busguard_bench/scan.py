"""(1) Scan determinism under load and (6) the runtime's resources, from the same runs.

The measured runtime (:mod:`busguard_bench.target`, one process) scans every 10 ms with one
threshold block per meter. Baseline: the same loop, same points and blocks, with memory
meters and nothing else running. Load: 64 meters served by :mod:`busguard_bench.meters`
(another process) and polled by busguard's ``modbus_tcp`` driver every 100 ms, 32 1-Wire
probes (a file tree rewritten every second by :mod:`busguard_bench.probes`, read by the ``w1``
driver) and 8 DCIM clients (:mod:`busguard_bench.clients`, another process) each reading the
full northbound map 10 times a second. Lateness and overruns come from the runtime's own
:class:`busguard.stats.LatenessRecorder`; CPU and RSS from the runtime process itself.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from busguard.modbus.profiles import load_profile
from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.meters import nominal_values
from busguard_bench.probes import sensor_ids
from busguard_bench.result import INFO, MISS, PASS, Measurement, Row, below
from busguard_bench.sites import (
    METER_PROFILE,
    SiteSpec,
    add_limit_blocks,
    add_memory_meters,
    add_tcp_meters,
    add_w1_probes,
)

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

    out: list[Measurement] = []
    for k, io in enumerate(b.io_modes):
        got, missing, details = loaded(b, io, dur, warm, meters_n, probes_n)
        details["baseline"] = base
        judged = k == 0
        out.append(_scan_rows(base, got, missing, details, io, judged))
        if judged:
            out.append(_resource_rows(base, got))
    return out


def loaded(b: Bench, io: str, dur: float, warm: float, meters_n: int, probes_n: int,
           backend: str | None = None, name: str = "", dcim_max_rps: float | None = None,
           serve_map: bool = True) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The measured runtime under the full load, with ``[scan] io = io`` (also the scale
    curve's, :mod:`busguard_bench.scale`, at other meter counts). ``dcim_max_rps``: the DCIM
    clients read the map less often than ``DCIM_HZ`` when that would be more requests a
    second (the map grows with the meters). ``serve_map=False``: no ``[modbus_server]`` and
    no DCIM clients (the scan and its field I/O alone, as a unit that serves no map runs)."""
    backend = backend or b.meters_backend
    load: dict[str, Any] = {"meters": f"{meters_n} x modbus_tcp every {POLL_MS:g} ms "
                                      f"({backend} meter servers)", "io": io}
    missing = []
    name = name or f"scan-load-{io}"
    with ExitStack() as stack:
        meters = stack.enter_context(b.child("meters", ["--count", meters_n, "--backend",
                                                         backend], f"{name}-meters"))
        spec = _spec(dur)
        spec.io = io
        names = add_tcp_meters(spec, meters.ready["ports"], POLL_MS)
        add_limit_blocks(spec, names, "current_l1_a", high=600.0, output="relay.alarm")
        spec.add("output", name="bench-out", driver="bench_output", outputs=["relay.alarm"])
        probes = None
        if b.parts["w1"]:
            w1_dir = b.workdir / f"{name}-w1"
            probes = stack.enter_context(b.child("probes", ["--dir", w1_dir, "--count", probes_n],
                                                 f"{name}-probes"))
            add_w1_probes(spec, str(w1_dir), sensor_ids(probes_n), 1000.0)
            load["probes"] = f"{probes_n} x w1, files rewritten every 1 s"
        else:
            missing.append("w1 probe driver")
        nb_port = 0
        if not serve_map:
            load["dcim"] = "none: no [modbus_server] (the scan and its field I/O alone)"
        elif b.parts["modbus_server"]:
            nb_port = northbound_map.configure(spec)
        else:
            missing.append("northbound [modbus_server]")
        tgt = stack.enter_context(b.target(spec, name))
        dcim = None
        if nb_port:
            blocks, _size = northbound_map.blocks(b.workdir / name / "site.toml")
            dcim = stack.enter_context(b.child(
                "clients", ["--port", nb_port, "--blocks", northbound_map.dumps(blocks)],
                f"{name}-dcim"))
            clients = b.count(DCIM_CLIENTS)
            hz = DCIM_HZ
            if dcim_max_rps is not None:
                hz = min(hz, dcim_max_rps / (clients * len(blocks)))
            dcim.request("start", mode="paced", clients=clients, hz=hz)
            nregs = sum(x[2] for x in blocks)
            load["dcim"] = (f"{clients} clients x full map ({nregs} registers, "
                            f"{len(blocks)} requests) at {hz:.3g} Hz")
        m0 = meters.request("stats")
        got = tgt.request("measure", warmup_s=warm, duration_s=dur, timeout_s=dur + 60)
        m1 = meters.request("stats")
        dcim_stats = dcim.request("stop") if dcim else None
        probe_stats = probes.request("stats") if probes else None
    span = m1["t"] - m0["t"]
    achieved = {"meter_requests_per_s": (m1["requests"] - m0["requests"]) / span,
                "meter_server_cpu_share": (m1["cpu_s"] - m0["cpu_s"]) / span,
                "dcim": dcim_stats, "probe_writes": probe_stats and probe_stats["writes"],
                "quality": got["quality"]}
    details = {"duration_s": dur, "warmup_s": warm, "load": load, "missing_load": missing,
               "achieved": achieved, "loaded": got}
    return got, missing, details


def _scan_rows(base: dict[str, Any], got: dict[str, Any], missing: list[str],
               details: dict[str, Any], io: str, judged: bool) -> Measurement:
    s, bs = got["stats"], base["stats"]
    complete = not missing
    judged = judged and complete
    note = "" if complete else ("floor not judged: load incomplete, missing " +
                                ", ".join(missing))
    if complete and not judged:
        note = "for comparison (not judged)"

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
    m = got.get("meters") or {}
    if m.get("meters"):
        rows.append(Row("meter polls missed", m["missed_polls"], "", status=INFO,
                        note=f"{m['polls']:,} polls of {m['meters']} meters every "
                             f"{POLL_MS:g} ms, {m['timeouts']} timeouts"))
    key = "1-scan" if io == "process" else f"1-scan-{io}"
    return Measurement(key, f"{KEYS[0][1]}, [scan] io = \"{io}\"", rows, details=details)


def _resource_rows(base: dict[str, Any], got: dict[str, Any]) -> Measurement:
    """RSS and CPU of the runtime: with ``io = "process"``, of both its processes."""
    rss = got["memory"].get("vmhwm_mb") or 0.0
    io_res = got.get("io_process")
    rows: list[Row] = []
    if io_res:
        io_rss = io_res["memory"].get("vmhwm_mb") or 0.0
        rows += [Row("RSS (peak), scan + I/O processes", rss + io_rss, "MB",
                     base["memory"].get("vmhwm_mb"), "idle", f"< {RSS_FLOOR_MB:g} MB",
                     below(rss + io_rss, RSS_FLOOR_MB)),
                 Row("RSS (peak), scan process", rss, "MB", base["memory"].get("vmhwm_mb"),
                     "idle"),
                 Row("CPU share, I/O process", 100.0 * io_res["cpu_share"], "%",
                     note="of one core, user+system")]
    else:
        rows.append(Row("RSS (peak)", rss, "MB", base["memory"].get("vmhwm_mb"), "idle",
                        f"< {RSS_FLOOR_MB:g} MB", below(rss, RSS_FLOOR_MB)))
    rows += [
        Row("CPU share" + (", scan process" if io_res else ""), 100.0 * got["cpu_share"], "%",
            100.0 * base["cpu_share"], "idle",
            note="of one core, user+system, runtime process only"),
        Row("threads" + (", scan process" if io_res else ""), got["threads"], "",
            base["threads"], "idle"),
    ]
    return Measurement("6-resources", KEYS[1][1], rows,
                       details={"loaded_memory": got["memory"], "idle_memory": base["memory"],
                                "io_process": io_res})
