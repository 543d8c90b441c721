#!/usr/bin/env python3
"""Measure: bytes the on-box history writes to flash per day on a site (docs/history.md).

Runs the simulator on SITE (ports moved to free ones) and `busguard run` on a copy whose
[paths] state_dir is STATE_DIR and whose [service] run_dir (the 1 s ring) is a tmpfs folder,
twice at the same time: once with [history] and once with `enable = false` (the baseline),
for --seconds. Prints (1) what the recorder reports it wrote to the minutes ring, (2) each
run's ``/proc/<pid>/io`` write_bytes (everything the process sent to block devices, retained
state included; the difference is the history's), and with --ext4-dev (STATE_DIR of the
*history* run on a loop-mounted ext4 nothing else writes to) (3) the file system's own count
(data and journal), all extrapolated to 24 h.

    truncate -s 512M /tmp/hflash.img && mkfs.ext4 -q -b 4096 /tmp/hflash.img
    mount -o loop /tmp/hflash.img /mnt/hflash          # /sys/fs/ext4/loopN
    .venv/bin/python tools/history_writes.py site.toml /mnt/hflash/state --ext4-dev loopN
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flash_writes import fs_kbytes  # tools/ is the script's folder: the same ext4 counter

WROTE = re.compile(r"history: (\d+) samples this run; (\d+) batches, (\d+) bytes written")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("--seconds", type=float, default=1800.0)
    ap.add_argument("--ext4-dev", default=None, help="e.g. loop0 (see /sys/fs/ext4)")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("busguard")
    base = args.site.read_text(encoding="utf-8")
    web = re.search(r"^\[web\]\n(.*?\n)\n", base, re.S | re.M)
    if web:  # not what is measured here
        base = base.replace(web.group(0), "")
    fixed = sorted({int(p) for p in re.findall(r"^port = (\d+)$", base, re.MULTILINE)})
    with tempfile.TemporaryDirectory(dir="/dev/shm") as ram, \
            tempfile.TemporaryDirectory() as tmp:
        sites = {}
        for name, state, enable in (("history", args.state_dir, "true"),
                                    ("baseline", Path(tmp) / "state", "false")):
            t = base  # each run: its own simulator, ports and pty folder
            for old, new in zip(fixed, free_ports(len(fixed)), strict=True):
                t = re.sub(rf"^port = {old}$", f"port = {new}", t, flags=re.MULTILINE)
            t = re.sub(r'^state_dir = .*$', f'state_dir = "{state}"', t, flags=re.M)
            t = t.replace("[history]\n", f"[history]\nenable = {enable}\n")
            t += f'\n[service]\nrun_dir = "{ram}/{name}"\n'
            (Path(tmp) / name).mkdir()
            sites[name] = Path(tmp) / name / "site.toml"
            sites[name].write_text(t, encoding="utf-8")
        sims = [subprocess.Popen([str(exe), "simulate", str(site)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for site in sites.values()]
        runs: dict[str, subprocess.Popen] = {}
        try:
            time.sleep(5.0)
            for name, site in sites.items():
                runs[name] = subprocess.Popen(
                    [str(exe), "run", str(site), "--stats-every", "0", "--duration",
                     str(args.seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
            time.sleep(min(10.0, args.seconds / 10))
            w0 = {n: write_bytes(p.pid) for n, p in runs.items()}
            k0, t0 = fs_kbytes(args.ext4_dev), time.monotonic()
            time.sleep(max(0.0, args.seconds - 15.0))
            w1 = {n: write_bytes(p.pid) for n, p in runs.items()}
            k1, t1 = fs_kbytes(args.ext4_dev), time.monotonic()
            outs = {n: p.communicate(timeout=120)[0] for n, p in runs.items()}
        finally:
            for p in runs.values():
                if p.poll() is None:
                    p.kill()
            for sim in sims:
                sim.terminate()
                sim.wait(timeout=30)
    window = t1 - t0
    per_day = 86400.0 / window
    m = WROTE.search(outs["history"])
    if m is None:
        print("no 'history: ... bytes written' line in the run's output:\n"
              + outs["history"][-2000:])
        return 1
    samples, batches, nbytes = (int(g) for g in m.groups())
    print(f"recorder: {samples} samples, {batches} batches ({nbytes / max(1, batches):.0f} "
          f"bytes each), {nbytes} bytes in a {args.seconds:g} s run: "
          f"{nbytes * 86400.0 / args.seconds / 1e6:.2f} MB/day")
    for n in runs:
        print(f"/proc/<pid>/io write_bytes, {n}: {w1[n] - w0[n]} in {window:.0f} s: "
              f"{(w1[n] - w0[n]) * per_day / 1e6:.2f} MB/day")
    d = (w1["history"] - w0["history"]) - (w1["baseline"] - w0["baseline"])
    print(f"difference (the history's share): {d * per_day / 1e6:.2f} MB/day")
    if k0 is not None and k1 is not None:
        print(f"file system {args.ext4_dev}: {k1 - k0} KiB in {window:.0f} s: "
              f"{(k1 - k0) * 1024 * per_day / 1e6:.2f} MB/day (data and journal, history "
              f"run's state_dir)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
