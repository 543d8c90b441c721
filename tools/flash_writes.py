#!/usr/bin/env python3
"""Measure: bytes the retained state writes per day on a site, as docs/operations.md states.

Runs the simulator on SITE and `busguard run` on a copy of SITE whose [paths] state_dir is
STATE_DIR and whose [service] run_dir is a temp folder (tmpfs on a unit), for --seconds, then
prints what the retained-state writer reports (saves by reason, bytes handed to the kernel)
and, with --ext4-dev, what the file system holding STATE_DIR wrote in that time
(/sys/fs/ext4/<dev>/lifetime_write_kbytes after `sync`: data and journal), both extrapolated
to 24 h. For the file-system figure STATE_DIR must be on an ext4 file system nothing else
writes to, e.g. a loop-mounted image:

    truncate -s 64M /tmp/flash.img && mkfs.ext4 -q -b 4096 -E lazy_itable_init=0 /tmp/flash.img
    sudo mount -o loop /tmp/flash.img /mnt/flash      # /sys/fs/ext4/loop0
    .venv/bin/python tools/flash_writes.py site.toml /mnt/flash/state --ext4-dev loop0

The site's Modbus ports must be free (the simulator serves them).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAVED = re.compile(r"retained state saved to .* \((\d+) saves this run, (\d+) bytes; by reason "
                   r"(\{.*\})\)")


def fs_kbytes(dev: str | None) -> int | None:
    if dev is None:
        return None
    os.sync()
    return int(Path(f"/sys/fs/ext4/{dev}/lifetime_write_kbytes").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--ext4-dev", default=None, help="e.g. loop0 (see /sys/fs/ext4)")
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("busguard")
    text = args.site.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        text = re.sub(r'^state_dir = .*$', f'state_dir = "{args.state_dir}"', text, flags=re.M)
        text += f'\n[service]\nrun_dir = "{tmp}/run"\n' if "[service]" not in text else ""
        site = args.site.resolve().with_name(".flash-writes-site.toml")
        site.write_text(text, encoding="utf-8")
        sim = subprocess.Popen([str(exe), "simulate", str(site)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            time.sleep(4.0)
            run = subprocess.Popen([str(exe), "run", str(site), "--stats-every", "0",
                                    "--duration", str(args.seconds)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(min(10.0, args.seconds / 10))  # past the start and its first save
            k0, t0 = fs_kbytes(args.ext4_dev), time.monotonic()
            out, _ = run.communicate(timeout=args.seconds + 60)
            k1, t1 = fs_kbytes(args.ext4_dev), time.monotonic()
        finally:
            sim.terminate()
            sim.wait(timeout=30)
            site.unlink(missing_ok=True)
    m = SAVED.search(out)
    if m is None:
        print("no 'retained state saved' line in the run's output:\n" + out[-2000:])
        return 1
    saves, nbytes, reasons = int(m.group(1)), int(m.group(2)), ast.literal_eval(m.group(3))
    per_day = 86400.0 / args.seconds
    # the start's save and the clean stop's are once per run, not per day
    steady = reasons.get("values", 0) + max(0, reasons.get("change", 0) - 1)
    per_save = nbytes / max(1, saves)
    print(f"writer: {saves} saves in {args.seconds:g} s ({reasons}), {nbytes} bytes, "
          f"{per_save:.0f} per save; steady state {steady} saves: "
          f"{steady * per_save * per_day / 1e6:.2f} MB/day")
    if k0 is not None and k1 is not None:
        window = t1 - t0
        print(f"file system {args.ext4_dev}: {k1 - k0} KiB in {window:.0f} s: "
              f"{(k1 - k0) * 1024 * 86400.0 / window / 1e6:.2f} MB/day (data and journal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
