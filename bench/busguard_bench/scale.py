"""(7) The scale curve: (1)'s scan under load at 16, 64 and 128 meters, so how the cost grows
with the site is measured, not assumed, and a second series at 128 and 256 meters without the
map. 128 is the most one unit holds when it serves register map v2 (its stable meter slots,
shared by every outward interface; docs/northbound.md); a unit that serves no map (local
interlocks and relays only) may hold more, and the second series measures the scan and its
field I/O alone at 256 meters, with 128 beside it so the step is like for like.

The same load as (1) (meters polled every 100 ms, 32 probes, 8 DCIM clients reading the whole
map), with ``[scan] io = "process"``, at each meter count, with two differences that keep the
curve about the site and not about the load generators on a 2-core machine:

- the meters are the bench's minimal responder (:mod:`busguard_bench.meters` ``--backend
  raw``) at every size: 128 pymodbus servers in one process take a core of the two;
- the DCIM clients read at 10 Hz while that is at most (1)'s request rate at 64 meters, and
  less often above (the map grows with the meters: at 128 meters 8 clients at 10 Hz would be
  many more requests a second than the server and its clients can do on two cores).

Per size: scan lateness p99 and overruns; CPU of both runtime processes per meter poll (which
includes the scan's and the DCIM's fixed costs, so it falls with size) and the marginal CPU
per poll between two sizes (what one more poll costs); peak RSS of each process. Reported,
not judged: the floors are (1)'s, at 64 meters.
"""

from __future__ import annotations

from busguard_bench import scan
from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row

KEYS = (("7-scale", "scale curve: (1) at 16, 64 and 128 meters, [scan] io = \"process\""),
        ("7-scale-nomap", "scale curve without the map: (1)'s field load at 128 and 256 meters, "
                          "no [modbus_server], no DCIM clients"))
NEEDS = ("modbus_tcp", "threshold_alarm")
SIZES = (16, 64, 128)  # 128: the most one unit holds when it serves the register map
SIZES_NO_MAP = (128, 256)  # a unit that serves no map: the scan and its field I/O alone
DCIM_MAX_RPS = 8 * 10.0 * 77  # (1) at 64 meters: 8 clients x 10 Hz x 77 requests a map


def run(b: Bench) -> list[Measurement]:
    return [_series(b, KEYS[0], SIZES, serve_map=True),
            _series(b, KEYS[1], SIZES_NO_MAP, serve_map=False)]


def _series(b: Bench, key: tuple[str, str], sizes: tuple[int, ...], serve_map: bool
            ) -> Measurement:
    dur = b.seconds(30.0, 5.0)
    warm = b.seconds(3.0, 1.0)
    rows: list[Row] = []
    details: dict[str, object] = {"duration_s": dur, "sizes": {}}
    prev: tuple[int, float, float] | None = None  # meters, CPU s per s, polls per s
    tag = "" if serve_map else "-nomap"
    for n in sizes:
        meters_n = max(1, n // 32) if b.smoke else b.count(n)  # smoke: 1, 2, 4 (4, 8)
        got, missing, det = scan.loaded(b, "process", dur, warm, meters_n,
                                        b.count(scan.PROBES), backend="raw",
                                        name=f"scale{tag}-{meters_n}", dcim_max_rps=DCIM_MAX_RPS,
                                        serve_map=serve_map)
        details["sizes"][str(meters_n)] = det  # type: ignore[index]
        st, polls = got["stats"], got["meters"]
        io = got.get("io_process") or {}
        cpu_s = got["cpu_s"] + float(io.get("cpu_s") or 0.0)
        per_poll = 1e6 * cpu_s / polls["polls"] if polls.get("polls") else None
        wall = float(got["wall_s"])
        marginal = None
        if prev is not None and polls.get("polls"):
            d_polls = polls["polls"] / wall - prev[2]
            if d_polls > 0:
                marginal = 1e6 * (cpu_s / wall - prev[1]) / d_polls
        rss_scan = got["memory"].get("vmhwm_mb")
        rss_io = (io.get("memory") or {}).get("vmhwm_mb")
        head = f"{meters_n} meters"
        note = ("" if not missing else "load incomplete: missing " + ", ".join(missing))
        rows += [
            Row(f"{head}: lateness p99", st["lateness_p99_ms"], "ms", status=INFO, note=note),
            Row(f"{head}: overruns", st["overruns"], "", status=INFO,
                note=f"{st['cycles']} scans; lateness max {st['lateness_max_ms']:.3f} ms"),
            Row(f"{head}: CPU per meter poll", per_poll, "us", status=INFO,
                note=f"both processes, user+system; {polls['polls']:,} polls, "
                     f"{polls['missed_polls']} missed"),
            *([Row(f"{head}: marginal CPU per poll", marginal, "us", status=INFO,
                   note=f"from {prev[0]} meters: extra CPU / extra polls")]
              if prev is not None else []),
            Row(f"{head}: RSS peak, scan process", rss_scan, "MB", status=INFO),
            Row(f"{head}: RSS peak, I/O process", rss_io, "MB", status=INFO),
        ]
        if polls.get("polls"):
            prev = (meters_n, cpu_s / wall, polls["polls"] / wall)
    return Measurement(key[0], key[1], rows, details=details)
