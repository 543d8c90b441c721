"""(5) Restart to serving: from the start of a ``busguard run`` process to the first
successful read of the register map showing retained values.

A site with 64 meters (served by :mod:`busguard_bench.meters` the whole time: meters do not
restart with the runtime) and [modbus_server] runs once to write its retained state, then is
started N times with the real command line (``python -m busguard.cli run SITE``). From just
before each start, a client polls the northbound port (connect, read the header and meter
0's ``current_l1_a`` record, retry every 2 ms) until the header says the retained state is
loaded (``retained_status`` 0) and the record holds a number; then the runtime is stopped with
SIGTERM. Baseline: the same client against a plain pymodbus server process
(:mod:`busguard_bench.plainserver`) started the same way.
"""

from __future__ import annotations

import math
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row, below, pct
from busguard_bench.sites import SiteSpec, add_tcp_meters

KEYS = (("5-restart", "process start to first map read of retained values"),)
NEEDS = ("modbus_server", "modbus_tcp")
METERS = 64
FLOOR_S = 0.3  # issue 20: a restart answers the DCIM within 0.3 s (the early server)
HEADER_WORDS = 32


def wait_serving(port: int, record: int | None, deadline: float) -> dict[str, Any]:
    """Poll until the map (or, with ``record`` None, any register) reads; returns when.
    Each try is a new connection of busguard's Modbus TCP client, as a DCIM's first read."""
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        try:
            with ModbusTcpClient("127.0.0.1", port, timeout_s=1.0) as client:
                head = client.read(0, HEADER_WORDS)
                if record is None:
                    return {"t": time.monotonic(), "tries": tries}
                rec = client.read(record, 3)
                value = struct.unpack(">f", struct.pack(">HH", *rec[:2]))[0]
                if head[4] == 0 and math.isfinite(value):
                    return {"t": time.monotonic(), "tries": tries, "data_origin": head[3],
                            "quality": rec[2], "value": value}
        except (CommError, ExceptionReply):
            pass
        time.sleep(0.002)
    raise TimeoutError(f"nothing served on port {port} before the deadline ({tries} tries)")


def _runtime_cmd(site: Path) -> list[str]:
    return [sys.executable, "-m", "busguard.cli", "run", str(site), "--stats-every", "0"]


def run(b: Bench) -> list[Measurement]:
    return [_run(b, io, judged=k == 0) for k, io in enumerate(b.io_modes)]


def _run(b: Bench, io: str, judged: bool) -> Measurement:
    starts = b.count(10, 3)
    with b.child("meters", ["--count", b.count(METERS), "--backend", "raw"],
                 f"restart-meters-{io}") as meters:
        spec = SiteSpec(name="bench-restart", io=io)
        add_tcp_meters(spec, meters.ready["ports"], 100.0)
        port = northbound_map.configure(spec)
        spec.tables["retained"] = {"interval_s": 0.5}
        site = spec.write(b.workdir / f"restart-{io}" / "site.toml")
        from busguard.northbound import mapdef
        from busguard.runtime import Runtime

        regmap = mapdef.for_runtime(Runtime.from_file(site))
        rec = regmap.record_of("pqm-00.current_l1_a")
        assert rec is not None
        log = open(b.workdir / f"restart-{io}.log", "w", encoding="utf-8")  # noqa: SIM115
        try:
            prime = subprocess.run([*_runtime_cmd(site), "--duration", "2"], stdout=log,
                                   stderr=log, timeout=60)
            if prime.returncode != 0:
                raise RuntimeError(f"busguard run exited {prime.returncode} (see "
                                   f"{b.workdir / f'restart-{io}.log'})")
            bg = [_one(_runtime_cmd(site), port, rec.address, log) for _ in range(starts)]
            plain_cmd = [sys.executable, "-m", "busguard_bench.plainserver", "--registers",
                         str(regmap.size), "--port", str(port)]
            pl = [_one(plain_cmd, port, None, log) for _ in range(starts)]
        finally:
            log.close()
    bg_s = [x["s"] for x in bg]
    pl_s = [x["s"] for x in pl]
    restored = sum(1 for x in bg if x.get("data_origin") == 1)
    rows = [
        Row("start to serving, median", pct(bg_s, 50), "s", pct(pl_s, 50),
            "plain pymodbus", f"< {FLOOR_S:g} s",
            below(pct(bg_s, 50), FLOOR_S) if judged else INFO,
            f"{starts} starts; {restored} first reads showed RESTORED data"
            + ("" if judged else "; for comparison (not judged)")),
        Row("start to serving, max", max(bg_s), "s", max(pl_s), "plain pymodbus",
            status=INFO),
    ]
    key = KEYS[0][0] if judged else f"{KEYS[0][0]}-{io}"
    return Measurement(key, f"{KEYS[0][1]}, [scan] io = \"{io}\"", rows,
                       details={"busguard": bg, "plain": pl, "map_registers": regmap.size,
                                "io": io})


def _one(cmd: list[str], port: int, record: int | None, log: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log)
    try:
        got = wait_serving(port, record, t0 + 30.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        if proc.stdin is not None:
            proc.stdin.close()  # the plain server also ends at EOF on stdin
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {**got, "s": got["t"] - t0}
