#!/usr/bin/env python3
"""Measure: N Modbus TCP meters polled every P ms by busguard's modbus_tcp driver, sustained?

The meters are plain asyncio Modbus TCP responders (functions 3/4, the generic-pqm map) in a
child process on 127.0.0.1 ephemeral ports, so they do not share the poller's GIL. The
runtime runs here with the real clock: its 10 ms scan in the main thread and the 64 pollers
on its I/O loop, exactly as `busguard run` does. At the end it prints, per run:

- polls done against polls due, missed polls (a poll slot that passed before the previous
  poll of that meter had finished), poll start lateness p50/p99/max;
- request latency p50/p99 over all meters, packet loss;
- the scan's own lateness p99 and overruns beside that I/O load.

Usage: .venv/bin/python tools/modbus_poll_64.py [--meters 64] [--poll-ms 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path


def serve(count: int, conn) -> None:
    from busguard.modbus import load_profile

    prof = load_profile("generic-pqm")
    tables = {"holding": {}, "input": {}}
    for i, p in enumerate(prof.points):
        for k, w in enumerate(p.encode(100.0 + i)):
            tables[p.function][p.address + k] = w

    async def client(reader, writer):
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, uid = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                addr, n = struct.unpack(">HH", pdu[1:5])
                table = tables["holding" if fc == 3 else "input"]
                data = b"".join(struct.pack(">H", table.get(addr + i, 0)) for i in range(n))
                resp = bytes([fc, len(data)]) + data
                writer.write(struct.pack(">HHHB", tid, 0, len(resp) + 1, uid) + resp)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def main():
        servers = [await asyncio.start_server(client, "127.0.0.1", 0) for _ in range(count)]
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--poll-ms", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from busguard.runtime import Runtime

    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(args.meters, child), daemon=True)
    proc.start()
    ports = parent.recv()
    tmp = Path(tempfile.mkdtemp(prefix="bg-poll64-"))
    text = f'[site]\nname = "poll64"\n[paths]\nstate_dir = "{tmp}"\n[scan]\nperiod_ms = 10\n'
    for i, port in enumerate(ports):
        text += (f'\n[[meter]]\nname = "m{i:02d}"\nhost = "127.0.0.1"\nport = {port}\n'
                 f'poll_ms = {args.poll_ms:g}\ntimeout_ms = 1000\n')
    site = tmp / "site.toml"
    site.write_text(text)
    rt = Runtime.from_file(site)
    rt.start()
    done = threading.Event()
    t = threading.Thread(target=lambda: (done.wait(), rt.request_stop()), daemon=True)
    warm = 2.0
    time.sleep(warm)
    base = {d.name: (d.comm.polls, d.comm.missed_polls) for d in rt.drivers}
    for d in rt.drivers:
        d.comm.late_s.clear()
        d.comm.latency_s.clear()
    t.start()
    timer = threading.Timer(args.seconds, done.set)
    t0 = time.monotonic()
    timer.start()
    rt.run()
    wall = time.monotonic() - t0
    scan = rt.stats.snapshot()
    drivers = list(rt.drivers)
    polls = sum(d.comm.polls - base[d.name][0] for d in drivers)
    missed = sum(d.comm.missed_polls - base[d.name][1] for d in drivers)
    late = [x * 1e3 for d in drivers for x in d.comm.late_s]
    lat = [x * 1e3 for d in drivers for x in d.comm.latency_s]
    lost = sum(d.comm.counts["timeout"] + d.comm.counts["disconnect"] for d in drivers)
    rt.stop()
    parent.send("stop")
    proc.join(timeout=5)

    def pct(xs, p):
        xs = sorted(xs)
        return xs[max(0, round(p / 100 * len(xs)) - 1)] if xs else float("nan")

    due = args.meters * wall / (args.poll_ms / 1e3)
    out = {"meters": args.meters, "poll_ms": args.poll_ms, "seconds": round(wall, 2),
           "polls": polls, "polls_due": round(due), "missed_polls": missed,
           "reads_per_s": round(polls * 2 / wall, 1), "lost_requests": lost,
           "poll_late_p50_ms": round(statistics.median(late), 3) if late else None,
           "poll_late_p99_ms": round(pct(late, 99), 3), "poll_late_max_ms": round(max(late), 3),
           "latency_p50_ms": round(pct(lat, 50), 3), "latency_p99_ms": round(pct(lat, 99), 3),
           "scan_lateness_p99_ms": round(scan.lateness_p99_ms, 3),
           "scan_overruns": scan.overruns}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
    return 0 if missed == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
