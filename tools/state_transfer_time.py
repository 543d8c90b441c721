#!/usr/bin/env python3
"""Measure: CPU time of a reload's swap and of a restart's retained restore, the two users of
the one state export/import (busguard.statedoc), on a 64-meter site of memory drivers.

Builds FOLDER/site.toml (64 meters of 29 points, 64 breakers, 64 shunt_trip blocks, a
quarter of them latched), then N times: edits a block option and reloads (Reloader.prepare
and the swap, in this thread: the scan thread's CPU time around the swap, which includes the
old runtime's last retained save); then N times builds the site again and restores the
retained file (RetainedState.restore). Thread CPU time, not wall time, because the machine
is shared. To compare with another version, run it with PYTHONPATH pointing at that
version's runtime/ and plugins/ (a `git archive` of them):

    .venv/bin/python tools/state_transfer_time.py /tmp/st-after 10
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from busguard.clock import FakeClock
from busguard.image import Quality
from busguard.reload import Reloader
from busguard.runtime import Runtime
from busguard.service import Service
from busguard.testing import run_scans

METERS = 64
POINTS = ["current_l1_a", "current_l2_a", "current_l3_a", "residual_current_ma",
          *[f"p{i}" for i in range(25)]]


def site(pickup: float) -> str:
    names = ", ".join(f'"{p}"' for p in POINTS)
    out = ['[site]\nname = "swap"\n[paths]\nstate_dir = "state"\nfault_log = '
           '"state/fault.log"\n[scan]\nperiod_ms = 10\n']
    for m in range(METERS):
        out.append(f'[[meter]]\nname = "m{m}"\ndriver = "memory"\npoll_ms = 100\n'
                   f'points = [{names}]\n')
        out.append(f'[[breaker]]\nname = "cb{m}"\ndriver = "memory"\npoll_ms = 100\n'
                   f'points = ["led"]\n')
        out.append(f'[[block]]\nname = "st{m}"\ntype = "shunt_trip"\nbreaker = "cb{m}"\n'
                   f'meter = "m{m}"\npickup_a = {pickup}\ndelay_s = 0.0\n')
    return "\n".join(out)


def latched(rt: Runtime) -> int:
    return sum(bool(b.state().get("latched")) for b in rt.blocks if b.type_name == "shunt_trip")


def main() -> int:
    root, n = Path(sys.argv[1]), int(sys.argv[2])
    root.mkdir(parents=True, exist_ok=True)
    f = root / "site.toml"
    f.write_text(site(1000.0))
    clock = FakeClock()
    rt = Runtime.from_file(f, clock=clock)
    rt.start()
    vals = [(f"m{m}.{p}", 1500.0 if p == "current_l2_a" and m % 4 == 0 else 500.0,
             Quality.GOOD) for m in range(METERS) for p in POINTS]
    rt.image.write_many(vals)
    run_scans(rt, 5)
    swaps = []
    for k in range(n):
        f.write_text(site(1000.0 + k + 1))
        r = Reloader(f, rt, service=Service({}))
        assert r.prepare()
        c0 = time.thread_time()
        r._swap()
        swaps.append((time.thread_time() - c0) * 1e3)
        rt = r.current
        rt.image.write_many(vals)
        run_scans(rt, 2)
    held = latched(rt)
    rt.stop()
    restores = []
    for _ in range(n):
        rt2 = Runtime.from_file(f, clock=clock)
        ret = rt2.pm.get_plugin("busguard-retained")
        c0 = time.thread_time()
        ret.restore()
        restores.append((time.thread_time() - c0) * 1e3)
        assert latched(rt2) == held
    print(f"latched trips carried: {held}; reload swap CPU ms: median "
          f"{statistics.median(swaps):.1f} min {min(swaps):.1f}; restart restore CPU ms: "
          f"median {statistics.median(restores):.1f} min {min(restores):.1f} (n={n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
