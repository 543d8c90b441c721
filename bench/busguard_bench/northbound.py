"""(3) Northbound: full-map read latency and map reads per second with 1, 16 and 64 concurrent
clients, beside a plain pymodbus server holding the same number of registers.

busguard: the measured runtime (:mod:`busguard_bench.target`) with 64 meters and 32 probes
(memory drivers: no field I/O here, the map is what is measured) and [modbus_server], scanning
every 10 ms while the clients read, with ``[scan] io`` as the judged mode of (1) (``process``:
the server in the I/O process, register images encoded by the scan process on demand).
Baseline: :mod:`busguard_bench.plainserver`. Clients:
:mod:`busguard_bench.clients` in its own process, closed loop (each client starts its next
map read when the last one ended), one connection each, the same reads for both servers.
"""

from __future__ import annotations

from typing import Any

from busguard.modbus.profiles import load_profile
from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.meters import nominal_values
from busguard_bench.result import INFO, Measurement, Row, below, ratio_at_least
from busguard_bench.sites import METER_PROFILE, SiteSpec, add_limit_blocks, add_memory_meters

KEYS = (("3-northbound", "northbound full-map reads"),)
NEEDS = ("modbus_server", "threshold_alarm")
CONCURRENCY = (1, 16, 64)
METERS, PROBES = 64, 32
RATIO_FLOOR, P99_FLOOR_MS, P99_AT = 0.9, 2.0, 16


def site(b: Bench) -> SiteSpec:
    profile = load_profile(METER_PROFILE)
    spec = SiteSpec(name="bench-northbound")
    names = add_memory_meters(spec, b.count(METERS), [p.name for p in profile.points],
                              nominal_values(0, profile))
    for i in range(b.count(PROBES)):
        spec.add("probe", name=f"tap-{i:02d}", driver="memory", poll_ms=1000.0,
                 points=["temp_c"], initial={"temp_c": 40.0})
    add_limit_blocks(spec, names, "current_l1_a", high=600.0, output="relay.alarm")
    spec.add("output", name="bench-out", driver="bench_output", outputs=["relay.alarm"])
    northbound_map.configure(spec)
    return spec


def run(b: Bench) -> list[Measurement]:
    dur = b.seconds(10.0, 1.5)
    concurrency = tuple(b.count(c) for c in CONCURRENCY)
    spec = site(b)
    spec.io = b.io_modes[0]  # the server where the judged mode of (1) runs it
    port = spec.tables["modbus_server"]["port"]
    path = spec.write(b.workdir / "nb-busguard" / "site.toml")
    blocks, size = northbound_map.blocks(path)
    nregs = sum(x[2] for x in blocks)
    res: dict[str, dict[int, dict[str, Any]]] = {"busguard": {}, "plain": {}}
    client_args, client = b.closed_loop_client()
    with b.target(spec, "nb-busguard") as tgt, b.child(
            "clients", ["--port", port, "--blocks", northbound_map.dumps(blocks),
                        *client_args], "nb-clients-busguard") as cl:
        for c in concurrency:
            tgt.send("measure", warmup_s=0.0, duration_s=dur + 0.2)
            got = cl.request("run", mode="closed", clients=c, duration_s=dur,
                             timeout_s=dur + 60)
            scan = tgt.reply(dur + 60)
            got["runtime_cpu_share"] = scan["cpu_share"]
            got["scan"] = scan["stats"]
            got["spin_margin_ms"] = scan.get("spin_margin_ms")
            res["busguard"][c] = got
    with b.child("plainserver", ["--registers", size], "nb-plain") as plain, b.child(
            "clients", ["--port", plain.ready["port"], "--blocks",
                        northbound_map.dumps(blocks), *client_args], "nb-clients-plain") as cl:
        for c in concurrency:
            s0 = plain.request("stats")
            got = cl.request("run", mode="closed", clients=c, duration_s=dur,
                             timeout_s=dur + 60)
            s1 = plain.request("stats")
            got["server_cpu_share"] = (s1["cpu_s"] - s0["cpu_s"]) / (s1["t"] - s0["t"])
            res["plain"][c] = got
    rows = []
    for c in concurrency:
        bg, pl = res["busguard"][c], res["plain"][c]
        rows.append(Row(f"map reads/s, {c} client{'s' if c > 1 else ''}", bg["reads_per_s"],
                        "/s", pl["reads_per_s"], "plain pymodbus", f">= {RATIO_FLOOR}x",
                        ratio_at_least(bg["reads_per_s"], pl["reads_per_s"], RATIO_FLOOR),
                        f"ratio {bg['reads_per_s'] / pl['reads_per_s']:.2f}"
                        if pl["reads_per_s"] else ""))
        rows.append(Row(f"map read p50, {c}", bg["p50_ms"], "ms", pl["p50_ms"],
                        "plain pymodbus"))
        at = c == P99_AT
        rows.append(Row(f"map read p99, {c}", bg["p99_ms"], "ms", pl["p99_ms"],
                        "plain pymodbus", status=INFO,
                        note=f"one map read is {len(blocks)} requests in sequence"
                        if at else ""))
        if at:  # the floor reads "p99 under 2 ms" per read request: a map read is 77 of them
            rows.append(Row(f"request p99, {c}", bg["request_p99_ms"], "ms",
                            pl["request_p99_ms"], "plain pymodbus", f"< {P99_FLOOR_MS:g} ms",
                            below(bg["request_p99_ms"], P99_FLOOR_MS),
                            "one read request (<= 125 registers) of a map read, send to the "
                            "reply's arrival in the client's socket (kernel receive stamp)"))
            rows.append(Row(f"request p99 as read, {c}", bg["seen_request_p99_ms"], "ms",
                            pl["seen_request_p99_ms"], "plain pymodbus", status=INFO,
                            note="send to the client loop reading the reply: adds the "
                                 "client's own scheduling on the shared cores"))
        if bg["errors"] or bg["exception_replies"]:
            rows[-1].note += f"; {bg['errors']} errors, {bg['exception_replies']} exceptions"
    details = {"duration_s": dur, "client": client, "map_registers": size,
               "registers_per_map_read": nregs,
               "requests_per_map_read": len(blocks), "blocks": blocks,
               "busguard": {str(k): v for k, v in res["busguard"].items()},
               "plain": {str(k): v for k, v in res["plain"].items()}}
    title = (f"{KEYS[0][1]} ({nregs} registers, {len(blocks)} requests per read; "
             f"[scan] io = \"{spec.io}\"; {client.split()[0]} client)")
    return [Measurement(KEYS[0][0], title, rows, details=details)]
