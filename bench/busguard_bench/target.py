"""The measured runtime, in its own process: ``busguard.runtime.Runtime`` on the real clock.

It builds the runtime from a site file exactly as ``busguard run`` does (plus one observing
output driver, ``bench_output``, that stamps every output change with ``time.monotonic()``),
starts drivers and publishers, then answers ``measure``: scan for a warm-up, swap in a fresh
:class:`busguard.stats.LatenessRecorder`, scan for the measured cycles, and report the
recorder's figures, this process's CPU time and RSS, and the output changes seen.

Levers (for the design experiments in docs/benchmarks.md): ``--switch-interval-ms`` (the
interpreter's GIL switch interval), ``--fifo PRIO`` (SCHED_FIFO for the scan thread only,
set after the I/O thread exists so it stays at normal priority). Start-up objects are frozen
out of the collector's reach before measuring, as ``busguard run`` does (:mod:`busguard.gcpolicy`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from busguard import gcpolicy, hookimpl
from busguard.config.params import Param
from busguard.driver import Driver
from busguard.image import Quality
from busguard.registry import TypeRegistry
from busguard.retained import RetainedState
from busguard.runtime import Runtime
from busguard.stats import LatenessRecorder


class BenchOutput(Driver):
    """An output device that remembers when each output changed (monotonic seconds)."""

    type_name = "bench_output"
    kind = "output"
    params: ClassVar[Mapping[str, Param]] = {
        "outputs": Param(list, item=str, min_items=1, doc="output names this device takes"),
    }
    changes: ClassVar[list[tuple[str, float, float]]] = []

    def consumes(self) -> tuple[str, ...]:
        return tuple(self.config.params["outputs"])

    def __init__(self, config: Any, site: Any) -> None:
        super().__init__(config, site)
        self.last: dict[str, float] = {}

    def apply(self, outputs: Mapping[str, float]) -> None:
        t = time.monotonic()
        for name in self.consumes():
            v = outputs.get(name)
            if v is not None and self.last.get(name) != v:
                self.last[name] = v
                self.changes.append((name, v, t))


class BenchPlugin:
    io_process_ok = True  # the I/O process of [scan] io = "process" needs the type too
    @hookimpl
    def busguard_register_types(self, registry: TypeRegistry) -> None:
        registry.add_driver(BenchOutput)


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def quality_summary(rt: Runtime) -> dict[str, dict[str, int]]:
    """Per source kind (meter, probe...): how many points are good, stale, bad..."""
    kinds = {d.name: d.kind for d in rt.site.devices}
    out: dict[str, dict[str, int]] = {}
    for spec, q in zip(rt.image.specs, rt.image.quality, strict=False):
        kind = kinds.get(spec.source, spec.source)
        if kind not in ("meter", "probe", "breaker"):
            continue
        row = out.setdefault(kind, {})
        word = Quality(q).word
        row[word] = row.get(word, 0) + 1
    return out


def _gc_counts() -> list[int]:
    return [s["collections"] for s in gc.get_stats()]


def poll_totals(rt: Runtime) -> dict[str, int]:
    """Polls, missed polls and lost requests summed over the runtime's meters (the drivers'
    own counters; from the I/O process when they run there)."""
    out = {"meters": 0, "polls": 0, "missed_polls": 0, "timeouts": 0}
    for d in rt.drivers:
        if d.kind != "meter":
            continue
        st = rt.driver_stats(d)
        out["meters"] += 1
        out["polls"] += int(st.get("polls") or 0)
        out["missed_polls"] += int(st.get("missed_polls") or 0)
        out["timeouts"] += int(st.get("timeout_count") or 0)
    return out


def _retained_saves(rt: Runtime) -> int:
    """Saves of retained state so far (each one a burst of work beside the scan)."""
    return sum(p.saves for p in rt.pm.get_plugins() if isinstance(p, RetainedState))


def fresh_io_stats(rt: Runtime) -> None:
    """With an I/O process, scan until its next statistics report (once a second) is in, so
    driver counters are current."""
    if rt.io is None:
        return
    seen = rt.io.stats
    t_end = time.monotonic() + 2.5
    while rt.io.stats is seen and time.monotonic() < t_end:
        rt.run(max_cycles=5)


def measure(rt: Runtime, warmup_s: float, duration_s: float) -> dict[str, Any]:
    period = rt.site.scan.period_s
    rt.run(max_cycles=max(1, round(warmup_s / period)))
    fresh_io_stats(rt)
    polls0 = poll_totals(rt)
    cycles = max(1, round(duration_s / period))
    rec = LatenessRecorder(cycles, rt.site.scan.period_ms)
    rt.stats = rt.loop.stats = rec
    BenchOutput.changes.clear()
    gc_before = _gc_counts()
    saves0 = _retained_saves(rt)
    io_pid = rt.io.pid if rt.io is not None else None
    from busguard_bench.procs import proc_cpu_s, proc_memory

    io_c0 = proc_cpu_s(io_pid) if io_pid else 0.0
    t0, c0 = time.monotonic(), os.times()
    rt.run(max_cycles=cycles)
    t1, c1 = time.monotonic(), os.times()
    io_c1 = proc_cpu_s(io_pid) if io_pid else 0.0
    wall = t1 - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    st = rec.snapshot()
    gc_after = _gc_counts()
    saves = _retained_saves(rt) - saves0
    outputs = [list(c) for c in BenchOutput.changes]
    fresh_io_stats(rt)  # (scans after the measured ones are not in ``st``)
    polls1 = poll_totals(rt)
    io_res = None
    if io_pid:  # [scan] io = "process": the runtime is two processes
        io_res = {"pid": io_pid, "cpu_s": io_c1 - io_c0, "cpu_share": (io_c1 - io_c0) / wall,
                  "memory": proc_memory(io_pid), "restarts": rt.io.starts - 1}
    meters = {k: polls1[k] - polls0[k] for k in polls1}
    meters["meters"] = polls1["meters"]
    return {"io_process": io_res, "meters": meters,
            "stats": st.as_dict(), "wall_s": wall, "cpu_s": cpu, "cpu_share": cpu / wall,
            "memory": proc_memory("self"), "threads": len(os.listdir("/proc/self/task")),
            "gc_collections": [a - b for a, b in zip(gc_after, gc_before, strict=True)],
            "retained_saves": saves,
            "spin_margin_ms": getattr(rt.clock, "margin_s", 0.0) * 1000.0,
            "quality": quality_summary(rt), "outputs": outputs,
            "drivers": {d.name: rt.driver_stats(d) for d in rt.drivers[:2]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m busguard_bench.target")
    ap.add_argument("site")
    ap.add_argument("--switch-interval-ms", type=float, default=0.0)
    ap.add_argument("--fifo", type=int, default=0, metavar="PRIO")
    args = ap.parse_args(argv)
    rt = Runtime.from_file(args.site, extra=[BenchPlugin()])
    rt.start()
    if args.switch_interval_ms > 0:  # the lever, over what Runtime.start set
        sys.setswitchinterval(args.switch_interval_ms / 1000.0)
    if rt.io is not None:  # scan until the I/O process serves (it waits for a first frame)
        t_end = time.monotonic() + 20.0
        while not rt.io.ready and time.monotonic() < t_end:
            rt.run(max_cycles=10)
    fifo = "off"
    if args.fifo:
        try:  # Linux: applies to the calling (scan) thread only
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.fifo))
            fifo = f"on (priority {args.fifo})"
        except (OSError, AttributeError) as exc:
            fifo = f"refused ({exc})"
    gcpolicy.settle()  # as busguard run does before it scans
    say({"ready": True, "pid": os.getpid(), "points": len(rt.image), "fifo": fifo,
         "switch_interval_ms": sys.getswitchinterval() * 1000.0})
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("cmd") == "measure":
                say(measure(rt, float(msg.get("warmup_s", 1.0)), float(msg["duration_s"])))
            elif msg.get("cmd") == "quality":
                say({"quality": quality_summary(rt)})
            elif msg.get("cmd") == "quit":
                say({"ok": True})
                break
            else:
                say({"error": f"unknown command {msg.get('cmd')!r}"})
    finally:
        rt.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
