"""(snmp) Many SNMP managers walking at once must neither time out nor slow the scan.

The measured runtime (:mod:`busguard_bench.target`) scans every 10 ms with 32 meters on Modbus
TCP, a threshold block per meter, ``[modbus_server]`` and ``[snmp]`` (loopback, USM authPriv
SHA-256/AES-128, the per-manager rate cap lifted: every manager here shares 127.0.0.1). The
same process is measured three times, back to back: no walks (baseline A), 16 managers each
running net-snmp's ``snmpbulkwalk -v3 -l authPriv`` over the whole busguard subtree in a loop
(busy), no walks again (baseline B). Target: scan lateness p99 busy no worse than 1.2x the
baseline, overruns no more, zero timeouts. Not measured here yet: trap latency scan ->
snmptrapd (docs/snmp.md says so).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from typing import Any

from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.result import INFO, MISS, PASS, Measurement, Row, pct
from busguard_bench.sites import SiteSpec, add_limit_blocks, add_tcp_meters

KEYS = (("snmp", "scan lateness with 16 concurrent SNMPv3 bulkwalk managers"),)
NEEDS = ("modbus_server", "modbus_tcp", "threshold_alarm")
METERS, MANAGERS, PERIOD_MS, POLL_MS, RATIO = 32, 16, 10.0, 100.0, 1.2
USER, AUTH, PRIV = "bench", "bench auth passphrase", "bench priv passphrase"
OID = "1.3.6.1.4.1.32473"
# the managers stand for NMS machines elsewhere on the network: on this one box they run at
# the lowest CPU priority, so they do not take the measured scan's CPU as no remote manager
# could (the baselines run without them, so nothing is taken from the comparison)
REMOTE = ("nice", "-n", "19")


class Manager(threading.Thread):
    """One NMS: snmpbulkwalk of the whole subtree, again and again, until stopped."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop_ev = port, stop
        self.walks, self.timeouts, self.errors = 0, 0, 0
        self.lat: list[float] = []
        self.varbinds = 0

    def run(self) -> None:
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            r = subprocess.run([*REMOTE, "snmpbulkwalk", "-v3", "-l", "authPriv", "-u", USER,
                                "-a", "SHA-256", "-A", AUTH, "-x", "AES", "-X", PRIV, "-On",
                                "-Cr25", "-t", "5", "-r", "0", f"127.0.0.1:{self.port}", OID],
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
    return [_run(b, io, judged=k == 0) for k, io in enumerate(b.io_modes)]


def _udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _run(b: Bench, io: str, judged: bool) -> Measurement:
    from busguard.snmp.users import make_user, write_users

    dur = b.seconds(60.0, 8.0)
    warm = b.seconds(2.0, 1.0)
    n = b.count(METERS, 8)
    with b.child("meters", ["--count", n, "--backend", b.meters_backend],
                 f"snmp-meters-{io}") as mt:
        spec = SiteSpec(name="bench-snmp", period_ms=PERIOD_MS,
                        stats_window=int(dur * 1000 / PERIOD_MS) + 1000, io=io)
        names = add_tcp_meters(spec, mt.ready["ports"], POLL_MS)
        add_limit_blocks(spec, names, "current_l1_a", high=600.0)
        northbound_map.configure(spec)
        port = _udp_port()
        folder = b.workdir / f"snmp-{io}"
        folder.mkdir(parents=True, exist_ok=True)
        write_users(folder / "snmp.users", {USER: make_user(USER, AUTH, PRIV)})
        spec.tables["snmp"] = {"host": "127.0.0.1", "port": port,
                               "users": str(folder / "snmp.users"),
                               "max_requests_per_s": 100000.0}
        with b.target(spec, f"snmp-{io}") as tgt:
            base_a = tgt.request("measure", warmup_s=warm, duration_s=dur, timeout_s=dur + 60)
            stop = threading.Event()
            managers = [Manager(port, stop) for _ in range(MANAGERS)]
            for m in managers:
                m.start()
            try:
                busy = tgt.request("measure", warmup_s=warm, duration_s=dur,
                                   timeout_s=dur + 60)
            finally:
                stop.set()
                for m in managers:
                    m.join(130)
            base_b = tgt.request("measure", warmup_s=warm, duration_s=dur, timeout_s=dur + 60)
    return _rows(base_a, busy, base_b, managers, dur + warm, n, io, judged)


def _rows(a: dict[str, Any], busy: dict[str, Any], b: dict[str, Any], managers: list[Manager],
          dur: float, meters: int, io: str, judged: bool) -> Measurement:
    sa, s, sb = a["stats"], busy["stats"], b["stats"]
    base_p99 = (sa["lateness_p99_ms"] + sb["lateness_p99_ms"]) / 2.0
    ratio = s["lateness_p99_ms"] / base_p99 if base_p99 > 0 else float("nan")
    walks = sum(m.walks for m in managers)
    timeouts = sum(m.timeouts for m in managers)
    errors = sum(m.errors for m in managers)
    lat = [x for m in managers for x in m.lat]
    vbs = max((m.varbinds for m in managers), default=0)
    rows = [
        Row("lateness p99", s["lateness_p99_ms"], "ms", base_p99, "no walks (mean of A, B)",
            f"<= {RATIO:g}x baseline", (PASS if ratio <= RATIO else MISS) if judged else INFO,
            f"ratio {ratio:.2f}; baselines A {sa['lateness_p99_ms']:.3f} ms, "
            f"B {sb['lateness_p99_ms']:.3f} ms" + ("" if judged else
                                                    "; for comparison (not judged)")),
        Row("overruns", s["overruns"], "", sa["overruns"] + sb["overruns"], "no walks (A + B)",
            "no more than baseline",
            (PASS if s["overruns"] <= max(sa["overruns"], sb["overruns"]) else MISS)
            if judged else INFO, f"{s['cycles']} scans measured per run"),
        Row("CPU share, runtime process", 100.0 * busy["cpu_share"], "%",
            50.0 * (a["cpu_share"] + b["cpu_share"]), "no walks",
            note="of one core, user+system (scan, drivers, Modbus server, SNMP agent)"),
        Row("walks", walks / dur if dur else 0.0, "/s", status=INFO,
            note=f"{len(managers)} managers, whole subtree ({vbs} varbinds) each walk, "
                 f"GETBULK max-repetitions 25"),
        Row("timeouts", timeouts, "", floor="0",
            status=(PASS if timeouts == 0 else MISS) if judged else INFO,
            note=f"{errors} other errors"),
        Row("walk duration p99", pct(lat, 99), "s", status=INFO,
            note=f"p50 {pct(lat, 50):.2f} s, manager side (includes snmpbulkwalk's start)"),
    ]
    key = "snmp" if judged else f"snmp-{io}"
    return Measurement(key, f"{KEYS[0][1]}, [scan] io = \"{io}\"", rows, details={
        "io": io, "duration_s": dur, "meters": meters, "baseline_a": a, "busy": busy,
        "baseline_b": b, "walks": walks, "timeouts": timeouts, "errors": errors})
