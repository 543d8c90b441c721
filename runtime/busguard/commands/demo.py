"""`busguard demo [SITE]`: the simulator and the runtime on one site, with a live view.

The simulator runs as a child process (``busguard simulate ... --json``), not as threads of
this one: the meters are other machines in real life, and a simulator serving dozens of
meters in this process would share the GIL with the scan and distort the very lateness
figures the view shows. The child is started in its own session (a terminal Ctrl-C reaches
only the demo, which then stops the runtime first, outputs to fail-safe, and the simulator
second) and watches its stdin: if the demo dies without cleaning up, the pipe closes and the
simulator exits by itself, so no process is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from busguard.commands import (
    add_site_argument,
    default_site,
    require_simulator,
    simulator_scenarios,
)
from busguard.commands._stop import StopOnSignal
from busguard.errors import BusguardError
from busguard.runtime import Runtime, check_site
from busguard.view import LiveView, LogTail

log = logging.getLogger("busguard.demo")

READY_TIMEOUT_S = 20.0
ANSWER_TIMEOUT_S = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulator + runtime + live view on one site",
                       description=(
        "Start `busguard simulate` on SITE (default ./site.toml) in a child process, wait "
        "until its meters answer, then run the scan on the same site with a live terminal "
        "view (plain periodic lines when stdout is not a terminal). Ctrl-C stops both."))
    add_site_argument(p)
    p.add_argument("--scenario", default="normal", choices=list(simulator_scenarios()) or None,
                   help="simulator scenario (see `busguard simulate --help`)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="simulator model seconds per wall second")
    p.add_argument("--seed", type=int, default=1, metavar="N",
                   help="seed of the simulator's model (loads, noise): the same seed replays "
                        "the same world (default 1)")
    for knob, what in (("latency-ms", "extra reply latency (ms)"),
                       ("drop-pct", "percent of requests left unanswered"),
                       ("exception-pct", "percent of reads answered with exception 0x02"),
                       ("garbage-pct", "percent of replies corrupted")):
        p.add_argument(f"--{knob}", type=float, default=0.0, metavar="X",
                       help=f"simulator fault knob: {what}")
    p.add_argument("--fault-meters", default="", metavar="NAMES",
                   help="meters the fault knobs apply to (default: all)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--ack-after", type=float, metavar="S", help=(
        "acknowledge all alarms S seconds after the scan starts, as a DCIM does (a write to "
        "cmd.ack_alarms over Modbus TCP): shows a horn that holds until acknowledged"))
    p.add_argument("--refresh", type=float, default=None, metavar="S",
                   help="view refresh period (default 0.5 s on a terminal, 5 s otherwise)")
    p.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
    p.add_argument("--keep-state", action="store_true", help=(
        "keep the retained state of the last run (latched trips...); by default it is moved "
        "aside, since every demo starts a fresh simulated world with all breakers closed"))
    p.set_defaults(func=run)


def _read_ready(proc: subprocess.Popen, timeout: float,
                stop: threading.Event | None = None) -> dict[str, Any]:
    """The simulator's JSON ready line (read in a thread so a silent child cannot hang us)."""
    box: dict[str, Any] = {}

    def reader() -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        box["line"] = line

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < deadline and not (stop and stop.is_set()):
        t.join(0.2)  # short slices: signal handlers run between them
    line = box.get("line", b"")
    if not line and stop is not None and stop.is_set():
        return {}
    if not line:
        raise BusguardError(f"the simulator did not become ready (exit code {proc.poll()})")
    try:
        return json.loads(line)
    except ValueError as exc:
        raise BusguardError(f"unexpected first line from the simulator: {line!r}") from exc


def modbus_answers(host: str, port: int, address: int = 0, function: int = 3,
                   timeout: float = 1.0) -> bool:
    """One Modbus TCP read; True when the meter answers (values or an exception reply)."""
    from busguard.modbus.tcpclient import ModbusTcpClient

    with ModbusTcpClient(host, port, timeout_s=timeout) as client:
        return client.answers(address, "holding" if function == 3 else "input")


def modbus_write_u32(host: str, port: int, address: int, value: int,
                     timeout: float = 2.0) -> int | None:
    """One FC16 write of a uint32 (high word first); None when accepted, else the Modbus
    exception code (-1: no answer)."""
    from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient

    with ModbusTcpClient(host, port, timeout_s=timeout) as client:
        try:
            client.write(address, [value >> 16, value & 0xFFFF])
        except ExceptionReply as exc:
            return exc.code
        except CommError:
            return -1
    return None


def acknowledge_all(rt: Runtime) -> str:
    """Acknowledge every alarm as a DCIM does: a write to cmd.ack_alarms in the command area
    of the unit's own Modbus map (the host must be in `write_allow`). Returns what happened."""
    pub = next((p for p in rt.publishers if getattr(p, "map", None) is not None), None)
    if pub is None:
        return "no [modbus_server]: nothing to acknowledge through"
    rec = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    last = rt.last_result  # the scan's own snapshot: taking one here would age the image
    current = last.snapshot.value("cmd.ack_alarms", 0.0) if last is not None else 0.0
    value = (int(current) + 1) & 0xFFFF
    host = pub.host if pub.host not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        port = pub.port()  # here, or with [scan] io = "process" in the I/O process
    except KeyError:
        return "the Modbus server is not listening (yet): nothing acknowledged"
    rc = modbus_write_u32(host, port, rec.address + 2, value)
    if rc is None:
        return f"acknowledged all alarms: cmd.ack_alarms = {value} (register {rec.address + 2})"
    return f"acknowledge refused (Modbus exception {rc}; is this host in write_allow?)"


def wait_for_meters(ready: dict[str, Any], site: Any, timeout: float,
                    stop: threading.Event | None = None) -> list[str]:
    """Wait until each TCP meter answers a read and each RTU link exists; returns the silent."""
    from busguard.modbus.profiles import load_profile

    first: dict[str, tuple[int, int]] = {}
    for dev in site.devices_of("meter"):
        if dev.name in ready.get("tcp", {}):
            try:
                prof = load_profile(dev.params["profile"], site.base_dir)
                p = prof.points[0]
                first[dev.name] = (p.address, 3 if p.function == "holding" else 4)
            except Exception:
                first[dev.name] = (0, 3)
    for dev in site.devices_of("output"):  # a simulated set point: read its own register
        if dev.name in ready.get("tcp", {}) and dev.driver == "modbus_write":
            first[dev.name] = (dev.params["address"] - dev.params["address_base"], 3)
    pending = dict(ready.get("tcp", {}))
    links = dict(ready.get("rtu", {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, (host, port) in list(pending.items()):
            addr, fc = first.get(name, (0, 3))
            if modbus_answers(host, port, addr, fc):
                del pending[name]
        for name, link in list(links.items()):
            if os.path.exists(link):
                del links[name]
        if (not pending and not links) or (stop is not None and stop.is_set()):
            return []
        time.sleep(0.1)
    return sorted(pending) + sorted(links)


def _tail(log_file: Path, lines: int = 2) -> str:
    """The last lines of the simulator's log, for an error message."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        text = []
    return " | ".join(text[-lines:]) + f" (log: {log_file})" if text else f"see {log_file}"


def _follow_status(proc: subprocess.Popen, latest: dict[str, Any]) -> None:
    """Keep the simulator's last status object (and drain its stdout so it never blocks)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "t_model_s" in obj:
            latest.clear()
            latest.update(obj)


def sim_line(scenario: str, speed: float, exit_code: int | None,
             st: dict[str, Any]) -> str:
    """One line about the simulator for the view: model time, breakers, injected faults."""
    head = (f"simulator {'running' if exit_code is None else f'EXITED ({exit_code})'}: "
            f"scenario {scenario} x{speed:g}")
    if not st:
        return head
    parts = [f"{head}, model t={st['t_model_s']:.0f} s"]
    brk = [f"{b} {'closed' if v['closed'] else 'OPEN (' + v['cause'] + ')'}"
           for b, v in st.get("breakers", {}).items()]
    if brk:
        parts.append(", ".join(brk))
    if st.get("setpoints"):
        parts.append(f"cooling demand {st.get('cooling_pct', 0.0):.0f}%")
    units = st.get("units", {}).values()
    req = sum(u["requests"] for u in units)
    bad = {k: sum(u[k] for u in units) for k in ("dropped", "exceptions", "garbage")}
    parts.append(f"{req} requests served" + "".join(
        f", {v} {k}" for k, v in bad.items() if v))
    return "; ".join(parts)


def _set_state_aside(site: Any) -> None:
    """Move the last run's retained state (e.g. a latched shunt trip) out of the way."""
    from busguard.statefile import slot_paths  # both slots: one alone would be restored

    for path in slot_paths(site.state_dir / site.sections["retained"]["file"]):
        if path.is_file():
            aside = path.with_name(path.name + ".before-demo")
            os.replace(path, aside)
            print(f"busguard demo: previous retained state moved to {aside} (--keep-state "
                  f"keeps it)", flush=True)


def _stop_child(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for f in (proc.stdin, proc.stdout):
        with contextlib.suppress(Exception):
            if f is not None:
                f.close()
    return proc.returncode


def run(args: argparse.Namespace) -> int:
    require_simulator("demo")
    path = Path(default_site(args.site))
    site = check_site(path)  # a config error stops us before anything starts (exit 2)
    tty = sys.stdout.isatty() and not args.plain
    log_dir = site.fault_log.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    sim_log = log_dir / "demo-simulator.log"
    tail = LogTail()
    root = logging.getLogger()
    root.addHandler(tail)
    if tty:  # log lines would tear the live view: send them to a file, show the last few
        handler = logging.FileHandler(log_dir / "demo-runtime.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                root.removeHandler(h)
        root.addHandler(handler)
    if not args.keep_state:
        _set_state_aside(site)
    cmd = [sys.executable, "-m", "busguard.cli", "simulate", str(path), "--json",
           "--scenario", args.scenario, "--speed", str(args.speed), "--seed", str(args.seed),
           "--status-every", "1", "--exit-on-stdin-eof",
           "--latency-ms", str(args.latency_ms), "--drop-pct", str(args.drop_pct),
           "--exception-pct", str(args.exception_pct), "--garbage-pct", str(args.garbage_pct)]
    if args.fault_meters:
        cmd += ["--fault-meters", args.fault_meters]
    with open(sim_log, "ab") as errf:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errf, start_new_session=True)
    stop = threading.Event()
    stopper = StopOnSignal([stop.set])
    rt: Runtime | None = None
    view_thread = None
    try:
        try:
            ready = _read_ready(proc, READY_TIMEOUT_S, stop)
        except BusguardError as exc:
            raise BusguardError(f"{exc}: {_tail(sim_log)}") from exc
        if stop.is_set():
            return 0
        print(f"busguard demo: simulator ready (pid {proc.pid}; {len(ready.get('tcp', {}))} "
              f"TCP meters, {len(ready.get('rtu', {}))} RS-485 lines, scenario "
              f"{ready.get('scenario')}); waiting for the meters to answer...", flush=True)
        sim_status: dict[str, Any] = {}
        threading.Thread(target=_follow_status, args=(proc, sim_status), name="sim-status",
                         daemon=True).start()
        silent = wait_for_meters(ready, site, ANSWER_TIMEOUT_S, stop)
        if silent:
            raise BusguardError(f"simulated devices not answering: {', '.join(silent)}")
        if stop.is_set():
            return 0
        rt = Runtime.from_file(path)
        rt.start()
        stopper.add(rt.request_stop)

        def extra() -> str:
            return sim_line(args.scenario, args.speed, proc.poll(), sim_status)

        view: Any
        if tty and "modbus_server" in rt.site.publishers:
            # the operator's live view (`busguard status --watch`), of this unit's map
            from busguard.watch import LocalWatch

            view = LocalWatch(rt, title=f"demo: scenario {args.scenario}", extra=extra,
                              log_tail=tail)
        else:  # plain lines for a pipe or a CI log
            view = LiveView(rt, tty=tty, title=f"demo: scenario {args.scenario}",
                            extra=extra, log_tail=tail if tty else None)
        every = args.refresh if args.refresh else (0.5 if tty else 5.0)
        view_thread = view.start(stop, every)
        if args.ack_after is not None:
            def ack(rt: Runtime = rt) -> None:
                print(f"busguard demo: {acknowledge_all(rt)}", flush=True)

            acker = threading.Timer(args.ack_after, ack)
            acker.daemon = True
            acker.start()
        if args.duration:
            timer = threading.Timer(args.duration, lambda: (stop.set(), rt.request_stop()))
            timer.daemon = True
            timer.start()
        if stop.is_set():
            rt.request_stop()
        rt.run()
    finally:
        stop.set()
        if view_thread is not None:
            view_thread.join(timeout=5)
        if rt is not None:
            rt.stop()
        code = _stop_child(proc)
        stopper.close()
    if rt is None:
        return 0
    st = rt.stats.snapshot()
    print(f"busguard demo: stopped ({stopper.reason or 'end'}); simulator exit {code}; "
          f"{st.line()}", flush=True)
    return 0
