"""`busguard run [SITE]`: run the scan cycle until Ctrl-C / SIGTERM (or --duration)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from busguard.commands import add_site_argument, default_site

if TYPE_CHECKING:  # the rest is imported once the early server answers (see run())
    from pathlib import Path

    from busguard.ioproc.supervisor import Spawned
    from busguard.northbound.earlyserve import EarlyServer
    from busguard.reload import Reloader
    from busguard.runtime import Runtime
    from busguard.service import Service

log = logging.getLogger("busguard.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the scan cycle", description=(
        "Load SITE (default ./site.toml), start drivers and publishers, and scan every "
        "[scan] period_ms until Ctrl-C or SIGTERM (outputs to fail-safe, then exit). SIGHUP "
        "reloads SITE: a file that fails `busguard check` is refused and the running site "
        "goes on; a good one takes over without a trip through fail-safe. Under systemd "
        "(Type=notify) it reports READY=1, STATUS= and watchdog pings."))
    add_site_argument(p)
    p.add_argument("--record", metavar="FILE", help="record every scanned input snapshot "
                   "and the outputs to FILE (JSON Lines) for `busguard replay`")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--cycles", type=int, metavar="N", help="stop after N scans")
    p.add_argument("--stats-every", type=float, default=10.0, metavar="S",
                   help="log scan statistics every S seconds (0: only at exit)")
    p.add_argument("--json", action="store_true", help="print final statistics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Only the site file is read before the early server answers from the restart image
    # (busguard.northbound.earlyserve): pymodbus, the plugins and the runtime are imported
    # while it serves, so a restarted unit answers the DCIM within tens of milliseconds.
    from busguard.config.document import read_document
    from busguard.northbound import earlyserve

    path = default_site(args.site)
    doc = read_document(path)  # parsed once: for the I/O process's start and the runtime
    early = earlyserve.start(doc.data, doc.base_dir, doc.config_hash)
    early_io = None
    try:
        from busguard.config.site import scan_options
        from busguard.ioproc.supervisor import prespawn
        from busguard.runtime import Runtime
        from busguard.service import Service

        if early is not None and scan_options(doc.data).io != "process":
            early.inherit_here()  # the runtime's own server takes the listening sockets
        early_io = prespawn(path, doc, early)  # [scan] io = "process": it builds meanwhile
        service = Service()  # systemd notify/watchdog/status; inert outside systemd
        rt = Runtime.from_file(doc, extra=[service])
    except BaseException:
        if early_io is not None:
            early_io.close()
        if early is not None:
            early.close()
            earlyserve.drop_inherited()
        raise
    try:
        return _run(args, path, rt, service, early, early_io)
    finally:
        if early is not None:
            early.close()  # nobody took over (e.g. the I/O process never came up)


def _run(args: argparse.Namespace, path: Path, rt: Runtime, service: Service,
         early: EarlyServer | None, early_io: Spawned | None) -> int:
    import json
    import signal
    import sys
    import threading

    from busguard.northbound import earlyserve
    from busguard.reload import Reloader
    from busguard.service import clear_realtime

    reloader = Reloader(path, rt, extra=[service], service=service)
    stop_reason = {"why": "end"}

    def _stop(signum: int, _frame: object) -> None:
        stop_reason["why"] = signal.Signals(signum).name
        reloader.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    signal.signal(signal.SIGHUP, lambda _s, _f: reloader.request_reload())
    timers: list[threading.Timer] = []
    if args.duration:
        t = threading.Timer(args.duration, reloader.request_stop)
        t.daemon = True
        timers.append(t)
    try:
        rt.start(record=args.record, io=early_io)
    finally:
        earlyserve.drop_inherited()  # a listening socket no server took
    if early is not None:
        _hand_over(early, rt)
    for t in timers:
        t.start()
    if args.stats_every > 0:
        _start_stats_logger(reloader, args.stats_every)
    try:
        reloader.run(max_cycles=args.cycles)
    finally:
        for t in timers:
            t.cancel()
        rt = reloader.current
        clear_realtime()
        service.reloading = False  # a SIGTERM during a reload is a real stop
        rt.stop()
    st = rt.stats.snapshot()
    if args.json:
        print(json.dumps({"stopped_by": stop_reason["why"], **st.as_dict()}))
    else:
        print(f"busguard: stopped ({stop_reason['why']}): {st.line()}", file=sys.stdout)
    return 0


def _hand_over(early: EarlyServer, rt: Runtime) -> None:
    """Threads: give the early server's connections to the runtime's server (it has the
    listening socket already). With the I/O process that one asks for them itself (the
    handover channel); if no server took the socket, the early server closes."""
    if rt.io is not None:
        return
    servers = [s for s in (getattr(p, "server", None) for p in rt.publishers)
               if hasattr(s, "adopt")]
    if servers:
        early.hand_over(servers[0].adopt)
    else:
        early.close()


def _start_stats_logger(reloader: Reloader, every_s: float) -> None:
    import threading

    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(every_s) and not reloader.terminating:
            rt = reloader.current
            log.info("scan %s; alarms active %d", rt.stats.snapshot().line(), rt.alarms.count())

    threading.Thread(target=loop, name="busguard-stats", daemon=True).start()
