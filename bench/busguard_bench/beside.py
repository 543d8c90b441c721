"""What runs *beside* the scan must not slow it: one A/busy/B harness for the bench modules
that measure an outward interface under load (web, snmp).

Why once: the measurement's meaning lives here, not in each interface's module. The same
measured runtime (:mod:`busguard_bench.target`) is measured three times back to back: the
interface idle (baseline A), busy under the caller's load, idle again (baseline B), so drift
of a shared machine shows as a gap between A and B instead of hiding in the comparison. The
site is the same for every caller: ``N`` simulated meters on Modbus TCP polled every 100 ms, a
threshold block per meter and ``[modbus_server]``, scanning every 10 ms; the caller adds its
own table. The common rows are judged the same way for every caller: lateness p99 against
the mean of A and B (at most 1.2x), overruns against the worse of A and B; only the first
``[scan] io`` mode of the bench is judged, the others are shown for comparison (INFO).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.result import INFO, MISS, PASS, Measurement, Row
from busguard_bench.sites import SiteSpec, add_limit_blocks, add_tcp_meters

PERIOD_MS, POLL_MS, RATIO = 10.0, 100.0, 1.2


class Load(Protocol):
    """The caller's load: started after baseline A, stopped after the busy run."""

    def start(self) -> None: ...

    def stop(self, busy: dict[str, Any] | None) -> None:
        """Stop the load (always called); ``busy`` is the busy run's result (None when the
        measurement failed), to which the load may add what it measured of itself."""


@dataclass
class Site:
    """One run's site, before the target starts: the caller adds its table to ``spec``."""

    spec: SiteSpec
    names: list[str]  # the meters' names
    folder: Path  # the caller's work folder for this run
    meters: int
    io: str
    dur: float
    warm: float


@contextmanager
def site(b: Bench, name: str, io: str, dur: float, warm: float, meters: int,
         quick_meters: int = 8) -> Iterator[Site]:
    """The simulated meters running (until the block ends) and the site around them."""
    n = b.count(meters, quick_meters)
    with b.child("meters", ["--count", n, "--backend", b.meters_backend],
                 f"{name}-meters-{io}") as mt:
        spec = SiteSpec(name=f"bench-{name}", period_ms=PERIOD_MS,
                        stats_window=int(dur * 1000 / PERIOD_MS) + 1000, io=io)
        names = add_tcp_meters(spec, mt.ready["ports"], POLL_MS)
        add_limit_blocks(spec, names, "current_l1_a", high=600.0)
        northbound_map.configure(spec)
        folder = b.workdir / f"{name}-{io}"
        folder.mkdir(parents=True, exist_ok=True)
        yield Site(spec, names, folder, n, io, dur, warm)


@dataclass
class Runs:
    """The three measurements of one run (each the target's ``measure`` reply)."""

    a: dict[str, Any]
    busy: dict[str, Any]
    b: dict[str, Any]


def measure(b: Bench, s: Site, load: Load) -> Runs:
    """Start the measured runtime on ``s``; A, then ``load`` started, busy, ``load`` stopped,
    then B."""
    with b.target(s.spec, s.folder.name) as tgt:
        def one() -> dict[str, Any]:
            return tgt.request("measure", warmup_s=s.warm, duration_s=s.dur,
                               timeout_s=s.dur + 60)

        base_a = one()
        busy: dict[str, Any] | None = None
        try:
            load.start()
            busy = one()
        finally:
            load.stop(busy)
        return Runs(base_a, busy, one())


def io_share(m: dict[str, Any]) -> float:
    """CPU share of the I/O process in one measurement (0 with ``io = "thread"``)."""
    io = m.get("io_process")
    return float(io["cpu_share"]) if io else 0.0


def scan_rows(r: Runs, idle: str, judged: bool, runtime_note: str,
              extremes: bool = False, io_note: str | None = None) -> list[Row]:
    """The common rows: lateness p99 (ratio verdict), p50 and max when ``extremes``, overruns
    (verdict), CPU share of the runtime process and, with ``io_note``, of the I/O process.
    ``idle`` names the baselines ("web idle", "no walks")."""
    sa, s, sb = r.a["stats"], r.busy["stats"], r.b["stats"]
    base_p99 = (sa["lateness_p99_ms"] + sb["lateness_p99_ms"]) / 2.0
    ratio = s["lateness_p99_ms"] / base_p99 if base_p99 > 0 else float("nan")
    rows = [
        Row("lateness p99", s["lateness_p99_ms"], "ms", base_p99, f"{idle} (mean of A, B)",
            f"<= {RATIO:g}x baseline", (PASS if ratio <= RATIO else MISS) if judged else INFO,
            f"ratio {ratio:.2f}; baselines A {sa['lateness_p99_ms']:.3f} ms, "
            f"B {sb['lateness_p99_ms']:.3f} ms" + ("" if judged else
                                                    "; for comparison (not judged)")),
    ]
    if extremes:
        rows += [
            Row("lateness p50", s["lateness_p50_ms"], "ms",
                (sa["lateness_p50_ms"] + sb["lateness_p50_ms"]) / 2.0, idle),
            Row("lateness max", s["lateness_max_ms"], "ms",
                max(sa["lateness_max_ms"], sb["lateness_max_ms"]), f"{idle} (worse of A, B)"),
        ]
    rows += [
        Row("overruns", s["overruns"], "", sa["overruns"] + sb["overruns"], f"{idle} (A + B)",
            "no more than baseline",
            (PASS if s["overruns"] <= max(sa["overruns"], sb["overruns"]) else MISS)
            if judged else INFO, f"{s['cycles']} scans measured per run"),
        Row("CPU share, runtime process", 100.0 * r.busy["cpu_share"], "%",
            50.0 * (r.a["cpu_share"] + r.b["cpu_share"]), idle,
            note=f"of one core, user+system ({runtime_note})"),
    ]
    if io_note is not None:
        rows.append(Row("CPU share, I/O process", 100.0 * io_share(r.busy), "%",
                        50.0 * (io_share(r.a) + io_share(r.b)), idle,
                        note=io_note if r.busy.get("io_process")
                        else "no I/O process (io = \"thread\")"))
    return rows


def measurement(key: str, title: str, s: Site, judged: bool, r: Runs, rows: list[Row],
                dur: float, **details: Any) -> Measurement:
    """The run's Measurement: ``key`` when judged, ``key-io`` otherwise; the details start
    with io, duration_s, meters, baseline_a, busy, baseline_b, then the caller's."""
    return Measurement(key if judged else f"{key}-{s.io}", f"{title}, [scan] io = \"{s.io}\"",
                       rows, details={"io": s.io, "duration_s": dur, "meters": s.meters,
                                      "baseline_a": r.a, "busy": r.busy, "baseline_b": r.b,
                                      **details})
