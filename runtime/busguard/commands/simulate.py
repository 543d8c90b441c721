"""`busguard simulate [SITE]`: bring a site to life on loopback (see docs/simulator.md)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from busguard.commands import (
    add_site_argument,
    default_site,
    require_simulator,
    simulator_scenarios,
)
from busguard.commands._stop import StopOnSignal

if TYPE_CHECKING:
    from busguard.sim.scenarios import CommFaults

log = logging.getLogger("busguard.simulate")

WAIT_SLICE_S = 0.2


def add_parser(sub: argparse._SubParsersAction) -> None:
    scenarios: dict[str, Any] = simulator_scenarios()  # {}: the busguard-tools package is absent
    p = sub.add_parser("simulate", help="serve a simulated site on loopback", description=(
        "Serve every modbus_tcp meter of SITE as a Modbus TCP server on its host:port, every "
        "RS-485 line as an RTU slave on a pty (symlinked at the line's port path), the 1-Wire "
        "probes as files under [onewire] base_dir and the breaker LEDs as mock GPIO lines under "
        "[gpio] mock_dir, with values from a deterministic physical model. Runs until Ctrl-C / "
        "SIGTERM (or --duration). Scenarios: " + "; ".join(
            f"{s.name}: {s.description}" for s in scenarios.values())))
    add_site_argument(p)
    p.add_argument("--scenario", default="normal", choices=list(scenarios) or None,
                   help="what happens to the site (default normal)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="model seconds per wall second (default 1)")
    p.add_argument("--seed", type=int, default=1, metavar="N",
                   help="seed of the model's noise and fault decisions (default 1)")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                   help="extra reply latency on every meter")
    p.add_argument("--drop-pct", type=float, default=0.0, metavar="P",
                   help="percent of requests left unanswered (a timeout for the client)")
    p.add_argument("--exception-pct", type=float, default=0.0, metavar="P",
                   help="percent of reads answered with exception 0x02")
    p.add_argument("--garbage-pct", type=float, default=0.0, metavar="P",
                   help="percent of replies corrupted (CRC errors on RTU)")
    p.add_argument("--fault-meters", metavar="NAMES", default="",
                   help="comma-separated meters the four knobs above apply to (default: all)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--status-every", type=float, default=0.0, metavar="S",
                   help="print the simulator's status every S seconds (0: never)")
    p.add_argument("--json", action="store_true",
                   help="print the ready line and status as JSON (one object per line)")
    p.add_argument("--hall", metavar="ROWSxUNITS",
                   help="a fleet instead of SITE: write the site files of ROWS x UNITS "
                        "controllers, their row aggregators and a hall aggregator under --out "
                        "and serve every controller's meters (docs/scaling.md)")
    p.add_argument("--meters-per-unit", type=int, default=2, metavar="K",
                   help="--hall: meters per controller (default 2)")
    p.add_argument("--out", default="hall", metavar="DIR",
                   help="--hall: where the site files go (default ./hall)")
    p.add_argument("--base-port", type=int, default=21000, metavar="PORT",
                   help="--hall: first meter port on 127.0.0.1 (default 21000)")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def faults_of(args: argparse.Namespace) -> CommFaults:
    from busguard.sim.scenarios import CommFaults

    for name in ("drop_pct", "exception_pct", "garbage_pct"):
        v = getattr(args, name)
        if not 0.0 <= v <= 100.0:
            raise SystemExit(f"busguard simulate: --{name.replace('_', '-')} must be in "
                             f"0..100, got {v}")
    return CommFaults(max(0.0, args.latency_ms), args.drop_pct, args.exception_pct,
                      args.garbage_pct)


def run(args: argparse.Namespace) -> int:
    require_simulator("simulate")
    from busguard.sim.runner import Simulator, load_site_for_sim

    if args.speed <= 0:
        print("busguard simulate: --speed must be > 0", file=sys.stderr)
        return 2
    faults = faults_of(args)
    logging.getLogger("pymodbus").setLevel(logging.WARNING)  # "Server listening." x N
    if args.hall:
        from busguard.sim.hall import parse_hall, write_hall

        rows, units = parse_hall(args.hall)
        if not 1 <= args.meters_per_unit <= 16:
            print("busguard simulate: --meters-per-unit must be in 1..16", file=sys.stderr)
            return 2
        plan = write_hall(args.out, rows, units, args.meters_per_unit,
                          meter_base_port=args.base_port)
        print(f"busguard simulate: hall {rows}x{units} ({len(plan.controllers)} controllers, "
              f"{len(plan.meter_ports)} meters) written under {plan.out}; run each with "
              f"`busguard run {plan.out}/NAME/site.toml`: "
              + " ".join(n.name for n in (*plan.controllers, *plan.row_aggs, plan.hall) if n),
              flush=True)
        site = load_site_for_sim(plan.sim_site)
    else:
        site = load_site_for_sim(default_site(args.site))
    names = frozenset(n.strip() for n in args.fault_meters.split(",") if n.strip())
    sim = Simulator(site, args.scenario, speed=args.speed, seed=args.seed, faults=faults,
                    fault_meters=names or None)
    done = threading.Event()
    stopper = StopOnSignal([done.set])
    if args.exit_on_stdin_eof:  # the demo's child: die with the parent, whatever happens to it
        def watch() -> None:
            try:  # os.read, not sys.stdin: no buffer lock held at interpreter shutdown
                while os.read(0, 512):
                    pass
            except OSError:
                pass
            done.set()

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    sim.start()
    try:
        info = sim.ready_info()
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"busguard simulate: site {site.name!r}, scenario {sim.scenario.name} "
                  f"at x{args.speed:g}, seed {args.seed}", flush=True)
            for name, (host, port) in info["tcp"].items():
                if name not in info["setpoints"]:
                    print(f"  meter {name}: modbus tcp {host}:{port}")
            for name, where in info["setpoints"].items():
                print(f"  output {name}: writable set point at {where}")
            for name, link in info["rtu"].items():
                print(f"  rs485 line {name}: rtu slave on {link}")
            if info["probes"]:
                print(f"  {info['probes']} 1-Wire probes under {info['onewire_dir']}")
            if info["leds"]:
                print(f"  {info['leds']} breaker LEDs under {info['gpio_dir']}")
            for s in info["skipped"]:
                print(f"  not simulated: {s}")
            print("ready (Ctrl-C to stop)", flush=True)
        # Wait in short slices: a signal the kernel hands to another thread only runs its
        # Python handler once the main thread executes bytecode again.
        deadline = time.monotonic() + args.duration if args.duration else math.inf
        every = args.status_every if args.status_every > 0 else math.inf
        next_status = time.monotonic() + every
        while not done.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_status:
                st = sim.status()
                print(json.dumps(st) if args.json else _status_line(st), flush=True)
                next_status += every
            done.wait(max(0.0, min(WAIT_SLICE_S, deadline - now, next_status - now)))
    finally:
        sim.stop()
        stopper.close()
    if not args.json:
        print("busguard simulate: stopped", flush=True)
    return 0


def _status_line(st: dict) -> str:
    units = st["units"]
    req = sum(u["requests"] for u in units.values())
    bad = sum(u["dropped"] + u["exceptions"] + u["garbage"] for u in units.values())
    brk = " ".join(f"{b}={'closed' if s['closed'] else 'OPEN(' + s['cause'] + ')'}"
                   for b, s in st["breakers"].items())
    return f"t={st['t_model_s']:.1f}s requests={req} faulted={bad} {brk}"
