#!/usr/bin/env python3
"""Hostile-input figures for docs/reliability.md: a fuzz of Modbus/TCP frames and a
connection flood against a real `busguard run`, on loopback only (127.0.0.0/8), bounded in
count and time.

    python tools/hostile.py --io both --frames 100000 --flood-conns 1000 \\
        --flood-addresses 250 --flood-s 20 --json hostile.json

For each io mode ("thread", "process") it starts `busguard run` on a generated site in a
temporary folder, then

- fuzz: sends ``--frames`` seeded random frames (valid and invalid reads, writes, every
  function code, protocol ids other than 0, bad lengths, truncated frames, garbage) over a few
  connections, each batch followed by a probe read that must be answered; counts answers,
  reconnects, tracebacks and log lines of the runtime, RSS before/after;
- flood: ``--flood-conns`` connections from ``--flood-addresses`` loopback addresses
  (127.0.x.y), each trickling a byte now and then and reconnecting when dropped, while a DCIM
  (127.0.0.2, in ``priority``; 127.0.0.3, an ordinary allowed client) reads 125 registers
  every 20 ms; reports the DCIM's read latency p50/p99/max and whether it connected and read.

Tests import :class:`Target`, :func:`fuzz` and :func:`flood` (tests/test_reliability.py).
Only the standard library: it also runs against an installed busguard.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MAGIC_ADDRESS = 0
READ = struct.Struct(">HHHBBHH")

SITE = """\
[site]
name = "hostile"

[scan]
period_ms = 10
io = "{io}"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

[service]
realtime = "off"
status_every_s = 0.5

[modbus_server]
port = {port}
allow = ["127.0.0.0/8"]
write_allow = ["127.0.0.2/32"]
priority = ["127.0.0.4/32"]
{server}

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "voltage_l1_n_v"]
initial = {{ current_l1_a = 100.0, voltage_l1_n_v = 277.0 }}

[[output]]
name = "relay"
driver = "memory"
outputs = ["relay.alarm"]

[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 500.0
output = "relay.alarm"
"""
FUZZ_SERVER = "max_connections = 64\nmax_connections_per_client = 16\n" \
              "max_requests_per_s = 100000.0\nidle_timeout_s = 30.0"
FLOOD_SERVER = "max_connections = 16\nmax_connections_per_client = 4\n" \
               "max_requests_per_s = 1000.0\nidle_timeout_s = 10.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def read_request(tid: int, address: int = 0, count: int = 1, unit: int = 1) -> bytes:
    return READ.pack(tid, 0, 6, unit, 3, address, count)


def connect(port: int, source: str, timeout_s: float = 3.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s,
                                 source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def answer_to(sock: socket.socket, tid: int, deadline: float) -> bytes | None:
    """Read answer frames until the one with ``tid``; None on close, reset or timeout."""
    buf = b""
    while time.monotonic() < deadline:
        while len(buf) >= 7:
            rtid, _pid, length = struct.unpack_from(">HHH", buf)
            if len(buf) < 6 + length:
                break
            frame, buf = buf[:6 + length], buf[6 + length:]
            if rtid == tid:
                return frame
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        buf += chunk
    return None


class Target:
    """`busguard run` on a generated site, in a temporary folder; stderr to a log file."""

    def __init__(self, io: str, server: str, workdir: str | None = None) -> None:
        self.io = io
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"busguard-hostile-{io}-"))
        self.port = free_port()
        self.site = self.dir / "site.toml"
        self.site.write_text(SITE.format(io=io, port=self.port, server=server))
        self.log = self.dir / "run.log"
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "busguard.cli", "run", str(self.site),
                 "--stats-every", "0"], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=f, stderr=f)
        self.wait_serving()

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"busguard run ended: {self.log.read_text()[-2000:]}")
            if self.read_ok("127.0.0.4"):
                return
            time.sleep(0.1)
        raise RuntimeError("busguard run did not serve in time")

    def read_ok(self, source: str = "127.0.0.4") -> bool:
        try:
            with connect(self.port, source, 2.0) as s:
                s.sendall(read_request(1))
                got = answer_to(s, 1, time.monotonic() + 2.0)
                return got is not None and got[7] == 3
        except OSError:
            return False

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def rss(self) -> dict[str, int]:
        ps = self.pids()
        out = {"scan_process_kb": rss_kb(ps[0])}
        if len(ps) > 1:
            out["io_process_kb"] = rss_kb(ps[1])
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_figures(self) -> dict[str, int]:
        text = self.log.read_text(errors="replace")
        return {"log_lines": text.count("\n"), "log_bytes": len(text.encode()),
                "tracebacks": text.count("Traceback (most recent call last)"),
                "pymodbus_lines": len(re.findall(r"\bpymodbus\b", text))}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- fuzz ----------------------------------------------------------------------------------
def _mbap(tid: int, pid: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHH", tid, pid, len(body) if length is None else length) + body


def fuzz_frame(rng: random.Random, tid: int) -> tuple[bytes, bool]:
    """One fuzzed frame and whether it can break the framing of the stream (after it the
    server may wait for bytes that never come, or drop the connection)."""
    unit = rng.randrange(256)
    r = rng.random()
    if r < 0.25:  # reads, with any address and count
        fc = rng.choice((3, 4))
        return _mbap(tid, 0, struct.pack(">BBHH", unit, fc, rng.randrange(65536),
                                         rng.choice((0, 1, 125, 126, rng.randrange(65536))))), False
    if r < 0.45:  # any function code with a random payload
        fc = rng.randrange(256)
        payload = rng.randbytes(rng.randrange(0, 24))
        return _mbap(tid, 0, bytes([unit, fc]) + payload), False
    if r < 0.60:  # writes: single, multiple, read/write multiple, with random contents
        fc = rng.choice((6, 16, 23))
        if fc == 6:
            body = struct.pack(">BBHH", unit, 6, rng.randrange(65536), rng.randrange(65536))
        elif fc == 16:
            n = rng.randrange(0, 8)
            body = struct.pack(">BBHHB", unit, 16, rng.randrange(65536), rng.choice((n, 200)),
                               rng.choice((2 * n, 1, 255))) + rng.randbytes(2 * n)
        else:
            n = rng.randrange(0, 6)
            body = struct.pack(">BBHHHHB", unit, 23, rng.randrange(65536), rng.randrange(130),
                               rng.randrange(65536), n, 2 * n) + rng.randbytes(2 * n)
        return _mbap(tid, 0, body), False
    if r < 0.75:  # function codes with the exception bit
        return _mbap(tid, 0, bytes([unit, rng.randrange(0x80, 0x100)])
                     + rng.randbytes(rng.randrange(0, 6))), False
    if r < 0.90:  # protocol id other than 0
        return _mbap(tid, rng.randrange(1, 65536), bytes([unit, 3, 0, 0, 0, 1])), False
    if r < 0.97:  # length fields 0 and 1 (no function code)
        n = rng.choice((0, 1))
        return _mbap(tid, 0, bytes([unit])[:n]), False
    if r < 0.985:  # a length no Modbus frame has
        return _mbap(tid, 0, bytes([unit, 3]), rng.randrange(255, 65536)), True
    if r < 0.993:  # a truncated frame
        return _mbap(tid, 0, bytes([unit, 16, 0, 0]), rng.randrange(8, 250)), True
    return rng.randbytes(rng.randrange(1, 300)), True  # garbage


def fuzz(port: int, frames: int, seed: int = 21, sources: tuple[str, ...] = (
        "127.0.0.2", "127.0.0.10", "127.0.0.11", "127.0.0.12"), batch: int = 16,
         time_limit_s: float = 300.0) -> dict[str, Any]:
    """Send ``frames`` fuzzed frames; after each batch a probe read must be answered (on the
    same connection, or the connection was closed by the server and is opened again)."""
    rng = random.Random(seed)
    socks: dict[str, socket.socket | None] = dict.fromkeys(sources)
    sent = probes_ok = probes_lost = reconnects = refused = 0
    t0 = time.monotonic()
    tid = 0
    while sent < frames and time.monotonic() - t0 < time_limit_s:
        for src in sources:
            if sent >= frames:
                break
            s = socks[src]
            if s is None:
                try:
                    s = socks[src] = connect(port, src)
                    reconnects += 1
                except OSError:
                    refused += 1
                    time.sleep(0.01)
                    continue
            parts = []
            breaks = False
            for _ in range(min(batch, frames - sent)):
                tid = (tid + 1) % 60000 + 1
                f, breaking = fuzz_frame(rng, tid)
                sent += 1
                if breaking:  # the probe goes before it: after it the stream is garbage
                    breaks = True
                    probe_tid = 65000
                    parts.append(read_request(probe_tid))
                    parts.append(f)
                    break
                parts.append(f)
            else:
                probe_tid = 65001
                parts.append(read_request(probe_tid))
            try:
                s.sendall(b"".join(parts))
                got = answer_to(s, probe_tid, time.monotonic() + 5.0)
            except OSError:
                got = None
            if got is not None and got[7] == 3:
                probes_ok += 1
            else:
                probes_lost += 1
            if breaks or got is None:
                with contextlib.suppress(OSError):
                    s.close()
                socks[src] = None
    for s in socks.values():
        if s is not None:
            s.close()
    return {"frames": sent, "probes_answered": probes_ok, "probes_lost": probes_lost,
            "connections": reconnects, "connect_refused": refused,
            "seconds": round(time.monotonic() - t0, 1)}


# -- flood ---------------------------------------------------------------------------------
def flood_sources(n_addresses: int) -> list[str]:
    """127.0.x.y addresses, away from the ones the DCIMs and the fuzzer use."""
    return [f"127.0.{10 + i // 250}.{1 + i % 250}" for i in range(n_addresses)]


class Flood:
    """``conns`` connections spread over ``addresses``: each sends a byte every
    ``trickle_s`` and is opened again when the server drops it (one thread, a selector)."""

    def __init__(self, port: int, conns: int, addresses: int, trickle_s: float = 1.0) -> None:
        self.port = port
        srcs = flood_sources(addresses)
        self.want = [srcs[i % len(srcs)] for i in range(conns)]
        self.trickle_s = trickle_s
        self.opened = self.dropped = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _open(self, src: str) -> socket.socket | None:
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.failed += 1
            return None
        self.opened += 1
        return s

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        live: dict[socket.socket, str] = {}
        for src in self.want:
            s = self._open(src)
            if s is not None:
                live[s] = src
                sel.register(s, selectors.EVENT_READ)
        next_trickle = time.monotonic() + self.trickle_s
        while not self._stop.is_set():
            for key, _ev in sel.select(timeout=0.05):
                s = key.fileobj  # type: ignore[assignment]
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # dropped (reset at accept, evicted, idle): open another
                    sel.unregister(s)
                    src = live.pop(s)  # type: ignore[arg-type]
                    s.close()  # type: ignore[union-attr]
                    self.dropped += 1
                    if not self._stop.is_set():
                        n = self._open(src)
                        if n is not None:
                            live[n] = src
                            sel.register(n, selectors.EVENT_READ)
            now = time.monotonic()
            if now >= next_trickle:
                next_trickle = now + self.trickle_s
                for s in list(live):
                    with contextlib.suppress(OSError):
                        s.send(b"\x00")
        for s in live:
            s.close()
        sel.close()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=10)
        return {"opened": self.opened, "dropped": self.dropped, "bind_failed": self.failed}


def dcim_reads(port: int, source: str, seconds: float, period_s: float = 0.02,
               count: int = 125) -> dict[str, Any]:
    """A DCIM reading ``count`` registers every ``period_s`` for ``seconds``; reconnects
    (bounded) when refused or dropped. Latencies of completed reads, in ms."""
    lat: list[float] = []
    connects = refusals = drops = 0
    end = time.monotonic() + seconds
    first_read_s: float | None = None
    t_start = time.monotonic()
    s: socket.socket | None = None
    tid = 0
    while time.monotonic() < end:
        if s is None:
            try:
                s = connect(port, source, 2.0)
                connects += 1
            except OSError:
                refusals += 1
                time.sleep(0.05)
                continue
        tid = tid % 60000 + 1
        t0 = time.perf_counter()
        try:
            s.sendall(read_request(tid, 0, count))
            got = answer_to(s, tid, time.monotonic() + 2.0)
        except OSError:
            got = None
        if got is None or got[7] != 3:
            drops += 1
            with contextlib.suppress(OSError):
                s.close()
            s = None
            continue
        lat.append((time.perf_counter() - t0) * 1e3)
        if first_read_s is None:
            first_read_s = time.monotonic() - t_start
        time.sleep(period_s)
    if s is not None:
        s.close()
    lat.sort()

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

    return {"source": source, "reads": len(lat), "connects": connects,
            "refused": refusals, "dropped": drops,
            "first_read_s": None if first_read_s is None else round(first_read_s, 2),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None}


def flood(port: int, conns: int, addresses: int, seconds: float,
          dcims: tuple[str, ...] = ("127.0.0.4", "127.0.0.3")) -> dict[str, Any]:
    """The flood for ``seconds`` (from its own process, so the attackers' loop never holds
    the measuring process's interpreter lock) with the DCIMs reading meanwhile, each in its
    thread, from once the flood holds the slots (after 2 s)."""
    worker = subprocess.Popen([sys.executable, __file__, "--flood-worker", str(port),
                               str(conns), str(addresses), str(seconds + 3.0)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        results: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda d=d: results.__setitem__(
            d, dcim_reads(port, d, seconds)), daemon=True) for d in dcims]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 30)
        out, _err = worker.communicate(timeout=seconds + 60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    try:
        attackers = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        attackers = {"error": "no figures from the flood worker"}
    return {"attackers": attackers, "dcim": results}


def flood_worker(port: int, conns: int, addresses: int, seconds: float) -> int:
    raise_nofile()
    f = Flood(port, conns, addresses)
    f.start()
    time.sleep(seconds)
    print(json.dumps(f.stop()))
    return 0


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


def run_mode(io: str, frames: int, flood_conns: int, flood_addresses: int,
             flood_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"io": io}
    if frames:
        t = Target(io, FUZZ_SERVER)
        try:
            time.sleep(1.0)  # settled after start-up
            out["rss_before"] = t.rss()
            out["fuzz"] = fuzz(t.port, frames)
            time.sleep(1.0)
            out["rss_after"] = t.rss()
            out["alive_after_fuzz"] = t.alive() and t.read_ok()
            out["fuzz_log"] = t.log_figures()
        finally:
            t.stop()
    if flood_conns:
        t = Target(io, FLOOD_SERVER)
        try:
            out["dcim_no_flood"] = dcim_reads(t.port, "127.0.0.4", min(flood_s, 5.0))
            out["flood"] = flood(t.port, flood_conns, flood_addresses, flood_s)
            out["alive_after_flood"] = t.alive() and t.read_ok()
            out["flood_log"] = t.log_figures()
        finally:
            t.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--io", choices=("thread", "process", "both"), default="both")
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--flood-conns", type=int, default=1000)
    ap.add_argument("--flood-addresses", type=int, default=250)
    ap.add_argument("--flood-s", type=float, default=20.0)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--flood-worker", nargs=4, metavar=("PORT", "CONNS", "ADDRS", "S"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.flood_worker:
        p, c, a, sec = args.flood_worker
        return flood_worker(int(p), int(c), int(a), float(sec))
    raise_nofile()
    modes = ("thread", "process") if args.io == "both" else (args.io,)
    results = [run_mode(m, args.frames, args.flood_conns, args.flood_addresses,
                        args.flood_s) for m in modes]
    text = json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                   "load1": os.getloadavg()[0]}, "results": results}, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
