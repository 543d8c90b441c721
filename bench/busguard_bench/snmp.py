"""(snmp) Many SNMP managers walking at once must neither time out nor slow the scan.

The measured runtime (:mod:`busguard_bench.target`) scans every 10 ms with 32 meters on Modbus
TCP, a threshold block per meter, ``[modbus_server]`` and ``[snmp]`` (loopback, USM authPriv
SHA-256/AES-128, the default per-manager rate cap: each manager walks from its own loopback
address). The same process is measured three times, back to back: no walks (baseline A), 16
managers each running net-snmp's ``snmpbulkwalk -v3 -l authPriv`` over the whole busguard
subtree in a loop (busy), no walks again (baseline B). The managers run at nice 19: they
stand for NMS machines elsewhere, which take no CPU from the unit (see ``REMOTE``). Target:
scan lateness p99 busy no worse than 1.2x the baseline, overruns no more, zero timeouts.

``snmp-trap``: the time from the scan that raised (or cleared) an alarm to the SNMPv3 trap's
arrival at net-snmp's snmptrapd, p50/p99 over every edge of 30 threshold crossings up and
down (60 edges; the seed asks < 100 ms). The scan stamps the alarm's output in the cycle
that raised it (``bench_output``), the bench stamps snmptrapd's line for the notification as
it arrives on a pipe; both CLOCK_MONOTONIC.
"""

from __future__ import annotations

import random
import re
import resource
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from busguard_bench import beside, northbound_map, procs
from busguard_bench.context import Bench
from busguard_bench.result import INFO, MISS, PASS, Measurement, Row, at_most, pct
from busguard_bench.sites import SiteSpec, add_limit_blocks, add_tcp_meters

KEYS = (("snmp", "scan lateness with 16 concurrent SNMPv3 bulkwalk managers"),
        ("snmp-trap", "alarm edge: the scan that raised or cleared it -> the trap at "
                      "snmptrapd"))
NEEDS = ("modbus_server", "modbus_tcp", "threshold_alarm")
METERS, MANAGERS, PERIOD_MS, POLL_MS = 32, 16, beside.PERIOD_MS, beside.POLL_MS
USER, AUTH, PRIV = "bench", "bench auth passphrase", "bench priv passphrase"
OID = "1.3.6.1.4.1.32473"
# trap latency: a threshold crossing on meter 0 up and down, each edge a notification
TRIPS, TRAP_METERS, TRAP_MS = 30, 8, 100.0
LOW_A, HIGH_A, TRIP_A, TRAP_OUTPUT = 200.0, 700.0, 600.0, "relay.alarm"
# the managers stand for NMS machines elsewhere on the network: on this one box they run at
# the lowest CPU priority, so they do not take the measured scan's CPU as no remote manager
# could (the baselines run without them, so nothing is taken from the comparison)
REMOTE = ("nice", "-n", "19")


class Manager(threading.Thread):
    """One NMS: snmpbulkwalk of the whole subtree, again and again, until stopped."""

    def __init__(self, port: int, stop: threading.Event, source: str) -> None:
        super().__init__(daemon=True)
        self.port, self.stop_ev, self.source = port, stop, source
        self.walks, self.timeouts, self.errors = 0, 0, 0
        self.lat: list[float] = []
        self.varbinds = 0

    def run(self) -> None:
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            r = subprocess.run([*REMOTE, "snmpbulkwalk", "-v3", "-l", "authPriv", "-u", USER,
                                "-a", "SHA-256", "-A", AUTH, "-x", "AES", "-X", PRIV, "-On",
                                "-Cr25", "-t", "5", "-r", "0", f"--clientaddr={self.source}",
                                f"127.0.0.1:{self.port}", OID],
                               capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                self.walks += 1
                self.lat.append(time.monotonic() - t0)
                self.varbinds = r.stdout.count("\n")
            elif "Timeout" in r.stderr:
                self.timeouts += 1
            else:
                self.errors += 1


def run(b: Bench) -> list[Measurement]:
    if shutil.which("snmpbulkwalk") is None:
        raise RuntimeError("snmp bench: net-snmp's snmpbulkwalk (Debian `snmp`) is missing")
    return [*(_run(b, io, judged=k == 0) for k, io in enumerate(b.io_modes)),
            trap_latency(b)]


def _udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Managers:
    """The busy run's load (a :class:`beside.Load`): ``MANAGERS`` NMSes walking at once, each
    from its own loopback address, so the default per-manager rate cap applies."""

    def __init__(self, port: int) -> None:
        self.stop_ev = threading.Event()
        self.all = [Manager(port, self.stop_ev, f"127.0.0.{2 + i}") for i in range(MANAGERS)]
        self.started: list[Manager] = []
        self.ru0, self.t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()

    def start(self) -> None:
        self.ru0, self.t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        for m in self.all:
            m.start()
            self.started.append(m)

    def stop(self, busy: dict[str, Any] | None) -> None:
        self.stop_ev.set()
        for m in self.started:
            m.join(130)
        if busy is None:
            return
        # the walks' processes are the only children that ended meanwhile (the meters and
        # the target run on): their CPU is what 16 managers on this box took
        ru1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        busy["managers_cpu_share"] = ((ru1.ru_utime - self.ru0.ru_utime) + (
            ru1.ru_stime - self.ru0.ru_stime)) / max(t1 - self.t0, 1e-9)


def _run(b: Bench, io: str, judged: bool) -> Measurement:
    from busguard.snmp.users import make_user, write_users

    dur = b.seconds(60.0, 8.0)
    warm = b.seconds(2.0, 1.0)
    with beside.site(b, "snmp", io, dur, warm, METERS) as s:
        port = _udp_port()
        write_users(s.folder / "snmp.users", {USER: make_user(USER, AUTH, PRIV)})
        # each manager its own address, so the default per-manager rate cap applies
        s.spec.tables["snmp"] = {"host": "127.0.0.1", "port": port,
                                 "allow": ["127.0.0.0/8"], "users": str(s.folder / "snmp.users")}
        load = Managers(port)
        runs = beside.measure(b, s, load)
    return _rows(s, runs, load.all, dur + warm, judged)


def _rows(s: beside.Site, r: beside.Runs, managers: list[Manager], dur: float,
          judged: bool) -> Measurement:
    walks = sum(m.walks for m in managers)
    timeouts = sum(m.timeouts for m in managers)
    errors = sum(m.errors for m in managers)
    lat = [x for m in managers for x in m.lat]
    vbs = max((m.varbinds for m in managers), default=0)
    rows = [
        *beside.scan_rows(r, "no walks", judged,
                          "scan, drivers, Modbus server, SNMP agent",
                          io_note="of one core: the SNMP agent, the Modbus server and the "
                                  "pollers"),
        Row("CPU share, 16 managers", 100.0 * r.busy.get("managers_cpu_share", 0.0), "%",
            status=INFO, note="the snmpbulkwalk processes, at nice 19 (remote NMSes)"),
        Row("walks", walks / dur if dur else 0.0, "/s", status=INFO,
            note=f"{len(managers)} managers, whole subtree ({vbs} varbinds) each walk, "
                 f"GETBULK max-repetitions 25"),
        Row("timeouts", timeouts, "", floor="0",
            status=(PASS if timeouts == 0 else MISS) if judged else INFO,
            note=f"{errors} other errors"),
        Row("walk duration p99", pct(lat, 99), "s", status=INFO,
            note=f"p50 {pct(lat, 50):.2f} s, manager side (includes snmpbulkwalk's start)"),
    ]
    return beside.measurement("snmp", KEYS[0][1], s, judged, r, rows, dur, walks=walks,
                              timeouts=timeouts, errors=errors)


class TrapReceiver:
    """net-snmp's snmptrapd in the foreground, one line per notification on a pipe, each
    stamped with ``time.monotonic()`` as it arrives (the bench's clock, CLOCK_MONOTONIC, the
    one the measured runtime stamps its outputs with)."""

    def __init__(self, folder: Path, site_name: str) -> None:
        from busguard.snmp.publisher import engine_id

        self.port = _udp_port()
        conf = folder / "snmptrapd.conf"
        conf.write_text(f'createUser -e 0x{engine_id(site_name).hex()} {USER} SHA-256 '
                        f'"{AUTH}" AES "{PRIV}"\nauthUser log {USER} priv\n')
        persist = folder / "snmptrapd-persist"
        persist.mkdir(exist_ok=True)
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["snmptrapd", "-f", "-n", "-On", "-C", "-c", str(conf), "-Lo", "-F", "TRAP %v\n",
             f"udp:127.0.0.1:{self.port}"],
            env={"SNMP_PERSISTENT_DIR": str(persist), "PATH": "/usr/sbin:/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.started.wait(15.0):
            self.close()
            raise RuntimeError("snmp bench: snmptrapd did not start within 15 s")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            if line.startswith("TRAP "):
                self.lines.append((t, line))
            elif "NET-SNMP version" in line:
                self.started.set()

    def edges(self, code: str, device: str) -> dict[int, list[float]]:
        """Arrival times of the raise (1) and clear (2) notifications of ``code`` on
        ``device``, in arrival order."""
        out: dict[int, list[float]] = {1: [], 2: []}
        for t, line in self.lines:
            kind = re.search(rf"1\.1\.4\.1\.0 = OID: \.{re.escape(OID)}\.0\.(\d+)", line)
            if (kind and int(kind.group(1)) in out and f'1.6.2.0 = STRING: "{code}"' in line
                    and f'1.6.5.0 = STRING: "{device}"' in line):
                out[int(kind.group(1))].append(t)
        return out

    def close(self) -> None:
        procs.end(self.proc)


def trap_latency(b: Bench) -> Measurement:
    """Alarm edges from a threshold crossing: the scan that raised (or cleared) the alarm
    stamps its output, snmptrapd's line for the notification is stamped on arrival."""
    if shutil.which("snmptrapd") is None:
        raise RuntimeError("snmp bench: net-snmp's snmptrapd (Debian `snmptrapd`) is missing")
    from busguard.snmp.users import make_user, write_users

    io = b.io_modes[0]
    trips = 2 if b.smoke else b.count(TRIPS, 10)
    rng = random.Random(17)
    folder = b.workdir / "snmp-trap"
    folder.mkdir(parents=True, exist_ok=True)
    write_users(folder / "snmp.users", {USER: make_user(USER, AUTH, PRIV)})
    name = "bench-snmp-trap"
    rcv = TrapReceiver(folder, name)
    try:
        with b.child("meters", ["--count", b.count(TRAP_METERS, 4), "--backend",
                                b.meters_backend], "snmp-trap-meters") as mt:
            spec = SiteSpec(name=name, period_ms=PERIOD_MS, io=io)
            names = add_tcp_meters(spec, mt.ready["ports"], POLL_MS)
            add_limit_blocks(spec, names, "current_l1_a", high=TRIP_A, output=TRAP_OUTPUT)
            spec.add("output", name="bench-out", driver="bench_output", outputs=[TRAP_OUTPUT])
            northbound_map.configure(spec)
            spec.tables["snmp"] = {"host": "127.0.0.1", "port": 0,
                                   "users": str(folder / "snmp.users"),
                                   "receivers": [f"127.0.0.1:{rcv.port}"], "notify": "trap",
                                   "notify_user": USER}
            with b.target(spec, "snmp-trap") as tgt:
                mt.request("set", meter=0, point="current_l1_a", value=LOW_A)
                warm = b.seconds(2.0, 1.0)
                budget = trips * 1.0 + 1.0
                tgt.send("measure", warmup_s=warm, duration_s=budget)
                time.sleep(warm + 0.3)
                for _ in range(trips):  # up and down at random phases vs poll and scan
                    mt.request("set", meter=0, point="current_l1_a", value=HIGH_A)
                    time.sleep(rng.uniform(0.4, 0.5))
                    mt.request("set", meter=0, point="current_l1_a", value=LOW_A)
                    time.sleep(rng.uniform(0.4, 0.5))
                got = tgt.reply(budget + 60)
                time.sleep(0.5)  # the last notification's way
        arrivals = rcv.edges("BG-BENCH", names[0])
    finally:
        rcv.close()
    scans = {1: [t for n, v, t in got["outputs"] if n == TRAP_OUTPUT and v == 1.0],
             2: [t for n, v, t in got["outputs"] if n == TRAP_OUTPUT and v == 0.0]}
    lat: list[float] = []
    missing = 0
    for kind in (1, 2):
        late = [t for t in arrivals[kind] if t >= (scans[kind][0] if scans[kind] else 0.0)]
        for ts in scans[kind]:  # the k-th edge's scan, the first notification after it
            nxt = next((t for t in late if t >= ts), None)
            if nxt is None or nxt - ts > 5.0:
                missing += 1
                continue
            late.remove(nxt)
            lat.append((nxt - ts) * 1e3)
    p50, p99 = pct(lat, 50), pct(lat, 99)
    edges = len(scans[1]) + len(scans[2])
    rows = [
        Row("trap latency p50", p50, "ms", status=INFO,
            note=f"{len(lat)} alarm edges (raise and clear) measured of {edges}"),
        Row("trap latency p99", p99, "ms", floor=f"< {TRAP_MS:g} ms (seed)",
            status=at_most(p99, TRAP_MS) if lat and not missing else MISS,
            note=f"{missing} edges without a notification" if missing else
            "every edge's notification arrived"),
        Row("trap latency max", max(lat) if lat else None, "ms", status=INFO),
    ]
    return Measurement(KEYS[1][0], KEYS[1][1] + f" (SNMPv3 authPriv trap, [scan] io = "
                       f"\"{io}\")", rows, details={
                           "io": io, "trips": trips, "edges": edges, "missing": missing,
                           "latencies_ms": lat, "scan": got["stats"]})
