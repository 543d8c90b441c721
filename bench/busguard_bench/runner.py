"""Runs the measurements, prints the table, writes the JSON.

Each measurement is a module of this package with ``KEYS`` (the figures it produces, e.g.
``("1-scan", "6-resources")``), ``NEEDS`` (parts of busguard it cannot run without) and
``run(bench) -> list[Measurement]``. A measurement whose part is missing is reported as
skipped with the reason; one that fails is reported with its error; the others still run.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from busguard import __version__
from busguard.runtime import load_types
from busguard_bench.context import Bench
from busguard_bench.result import Measurement, table
from busguard_bench.sites import parts

MODULES = ("scan", "polling", "northbound", "io_latency", "restart", "scale", "link", "web",
           "fleet", "snmp", "sparkplug")
PART_WHO = {"modbus_tcp": "the modbus_tcp meter driver (Field I/O, issue 3)",
            "w1": "the w1 probe driver (Field I/O, issue 3)",
            "modbus_server": "the [modbus_server] northbound publisher (issue 5)",
            "threshold_alarm": "the threshold_alarm block",
            "shunt_trip": "the shunt_trip block (issue 4)"}


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    info: dict[str, Any] = {"busguard": __version__, "python": platform.python_version(),
                            "pymodbus": version("pymodbus"), "kernel": platform.release(),
                            "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "Hypervisor vendor", "CPU(s)", "CPU MHz"):
                info[key.strip().lower().replace(" ", "_").replace("(s)", "s")] = val.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_cpu() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs since boot, from /proc/stat. Steal is time
    the hypervisor ran something else while this machine's virtual CPUs wanted to run: the
    one noise of a shared host that shows from inside (it moves every latency figure)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return (0, 0, 0)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields) - idle, sum(fields), steal)


def busy_pct(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Share of the machine's CPU time (all cores) that was busy between two readings."""
    total = b[1] - a[1]
    return 100.0 * (b[0] - a[0]) / total if total > 0 else float("nan")


def steal_pct(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Share of the machine's CPU time (all cores) stolen by the hypervisor between two
    readings."""
    total = b[1] - a[1]
    return 100.0 * (b[2] - a[2]) / total if total > 0 else float("nan")


def cpu_ref_ms(rounds: int = 3) -> float:
    """The best of ``rounds`` timings of a fixed pure-Python loop (1e6 iterations), in ms.

    Why: a shared host's virtual CPUs do not only lose time to steal, they also run slower
    while the neighbours load the shared caches and cores (docs/benchmarks.md, step 10, has
    how much it varied within one hour).
    Taken before and after each measurement, it says how fast the machine was while the
    figures were made."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        acc = 0
        for i in range(1_000_000):
            acc += i * i
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _byte_compile() -> None:
    """Byte-compile busguard's own modules first, as an installed package is: start-up times
    (5) must not include compiling sources, which a checkout with PYTHONDONTWRITEBYTECODE=1
    (or freshly edited files) would otherwise do in every measured process."""
    import compileall

    import busguard
    import busguard_blocks

    for pkg in (busguard, busguard_blocks):
        compileall.compile_dir(str(Path(pkg.__file__).parent), quiet=2)


def run(selected: Sequence[str] = MODULES, quick: bool = False,
        json_path: str | Path | None = None, target_args: Sequence[str] = (),
        meters_backend: str = "sim", keep_workdir: bool = False,
        profile_dir: str | Path | None = None, smoke: bool = False,
        io_modes: Sequence[str] = ("process", "thread"), spin_ms: float | None = None,
        client: str = "auto", out: Any = None) -> list[Measurement]:
    out = out or sys.stdout
    _byte_compile()
    _pm, registry = load_types()
    have = parts(registry)
    workdir = Path(tempfile.mkdtemp(prefix="busguard-bench-"))
    bench = Bench(quick=quick or smoke, smoke=smoke, workdir=workdir, registry=registry, parts=have,
                  target_args=tuple(target_args), meters_backend=meters_backend,
                  profile_dir=Path(profile_dir) if profile_dir else None,
                  io_modes=tuple(io_modes), spin_ms=spin_ms, client=client)
    results: list[Measurement] = []
    t_start = time.monotonic()
    try:
        for name in selected:
            try:
                mod = importlib.import_module(f"busguard_bench.{name}")
            except ImportError as exc:
                results.append(Measurement(name, name, error=f"cannot load: {exc}"))
                continue
            missing = [p for p in getattr(mod, "NEEDS", ()) if not have.get(p)]
            t0 = time.monotonic()
            ref0 = cpu_ref_ms() if not missing else math.nan
            cpu0 = machine_cpu()
            if missing:
                why = "skipped: needs " + "; ".join(PART_WHO.get(p, p) for p in missing)
                found = [Measurement(k, t, skipped=why) for k, t in mod.KEYS]
            else:
                bench.log(f"bench: {name} ...")
                try:
                    found = mod.run(bench)
                except Exception as exc:  # one broken measurement does not hide the others
                    found = [Measurement(k, t, error=f"{type(exc).__name__}: {exc}")
                             for k, t in mod.KEYS]
                finally:
                    bench.close_all()
            cpu1 = machine_cpu()
            busy, steal = busy_pct(cpu0, cpu1), steal_pct(cpu0, cpu1)
            refs = [ref0, cpu_ref_ms() if not missing else math.nan]
            for m in found:
                m.seconds = time.monotonic() - t0
                m.details["machine"] = {"busy_pct": busy, "steal_pct": steal,
                                        "load_avg": os.getloadavg(),
                                        "cpu_ref_ms": refs}
            results.extend(found)
    finally:
        bench.close_all()
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {"machine": machine(), "quick": quick, "smoke": smoke,
              "target_args": list(target_args), "io_modes": list(io_modes),
              "spin_ms": spin_ms, "client": client,
              "meters_backend": meters_backend, "parts": have,
              "seconds": round(time.monotonic() - t_start, 1),
              "measurements": [m.as_dict() for m in results]}
    mode = ("smoke test: tiny sizes, the figures mean nothing" if smoke else
            "quick run: figures are indicative only" if quick else "full run")
    mi = report["machine"]
    print(f"busguard bench, {mode}; {mi.get('cpus')} CPUs {mi.get('model_name', '')}, "
          f"Linux {mi['kernel']}, Python {mi['python']}, pymodbus {mi['pymodbus']}", file=out)
    if target_args:
        print(f"levers on the measured runtime: {' '.join(target_args)}", file=out)
    if spin_ms is not None:
        print(f"[scan] spin_ms of every measured site: {spin_ms:g}", file=out)
    print(table(results), file=out)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return results
