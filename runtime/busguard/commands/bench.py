"""`busguard bench`: measure the runtime beside baselines run in the same invocation.

The bench itself is the ``busguard_bench`` package (bench/busguard_bench in the source tree):
``pip install '.[bench]'`` (and the ``test`` extra) install it, and of the Debian packages
busguard-tools carries it, never the runtime package: without it this command says how to
get it and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util

from busguard.errors import UsageError

MISSING = ("`busguard bench` needs the bench, which is not installed: it is in the "
           "busguard-tools package (sudo apt-get install busguard-tools), or from a source "
           "tree: pip install '.[bench]' (in a checkout, make venv installs it)")


def _modules() -> tuple[str, ...] | None:
    """The measurement names, or None when the bench is not installed."""
    if importlib.util.find_spec("busguard_bench") is None:
        return None
    from busguard_bench import runner

    return tuple(runner.MODULES)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure scan determinism, polling, northbound, "
                       "input-to-output and restart times", description=(
        "Run the measurements of docs/benchmarks.md, each beside a baseline measured in the "
        "same run, and print a table with the floor each figure must reach (PASS/MISS). "
        "Load generators and the measured runtime run in separate processes. A full run "
        "takes several minutes; --quick runs each measurement for a few seconds (a smoke "
        "test: its figures are indicative only). Exit 0 when every judged figure passes, "
        "1 when one misses or a measurement fails."))
    p.add_argument("--quick", action="store_true", help="short runs (seconds, not minutes)")
    p.add_argument("--smoke", action="store_true", help="CI smoke test: every measurement "
                   "wired end to end with tiny sizes in seconds; the figures mean nothing and "
                   "only a failed measurement sets the exit code")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    modules = _modules()
    p.add_argument("--only", metavar="NAME", action="append", choices=modules,
                   help="run only this measurement (repeatable): " +
                        (", ".join(modules) if modules else "(the bench is not installed)"))
    p.add_argument("--meters", choices=("sim", "raw"), default="sim",
                   help="meter servers for the scan and input-to-output loads: the "
                        "simulator's pymodbus servers (default) or the bench's minimal "
                        "responder; polling throughput always uses the minimal responder")
    p.add_argument("--switch-interval-ms", type=float, metavar="MS",
                   help="lever: the measured runtime's GIL switch interval")
    p.add_argument("--fifo", type=int, metavar="PRIO", default=40,
                   help="SCHED_FIFO priority of the measured runtime's scan thread, when "
                        "permitted (default 40, what `busguard run` asks for; 0: normal "
                        "priority)")
    p.add_argument("--spin-ms", type=float, metavar="MS",
                   help="lever: [scan] spin_ms of every measured site (wake that long before "
                        "each deadline and busy-wait the rest)")
    p.add_argument("--io", choices=("process", "thread", "both"), default="both",
                   help="[scan] io of the measured runtime under load in (1): the I/O "
                        "process (judged), threads beside the scan, or both (default)")
    p.add_argument("--client", choices=("auto", "native", "python"), default="auto",
                   help="closed-loop DCIM client of the northbound measurement (3): the "
                        "compiled one (built with the machine's cc), the Python loop, or "
                        "auto (default: compiled when a C compiler is there)")
    p.add_argument("--profile", metavar="DIR", help="sample every measured runtime with "
                   "py-spy (pip install py-spy; needs ptrace rights) into DIR/<run>.folded")
    p.add_argument("--keep", action="store_true", help="keep the work folder (sites, logs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if _modules() is None:
        raise UsageError(MISSING)
    from busguard_bench import runner
    from busguard_bench.result import ERROR, MISS

    levers: list[str] = []
    if args.switch_interval_ms:
        levers += ["--switch-interval-ms", str(args.switch_interval_ms)]
    if args.fifo:
        levers += ["--fifo", str(args.fifo)]
    results = runner.run(args.only or runner.MODULES, quick=args.quick, json_path=args.json,
                         target_args=levers, meters_backend=args.meters,
                         keep_workdir=args.keep, spin_ms=args.spin_ms,
                         profile_dir=args.profile, smoke=args.smoke, client=args.client,
                         io_modes=("process", "thread") if args.io == "both"
                         else (args.io,))
    bad = (ERROR,) if args.smoke else (MISS, ERROR)
    return 1 if any(m.status in bad for m in results) else 0
