"""A meter that does not implement a register between two of its points (the bundled
generic-pqm profile leaves 169 unused between power_factor_quadrant and energy_import_wh, and
the simulator, like many meters, refuses it with exception 0x02): the driver finds the gap
without marking any point BAD and without a 0x02 alarm, and reads the meter in its contiguous
runs afterwards, not one request per point. This is what `make demo` showed at every start."""

from __future__ import annotations

import time

from busguard.image import Quality
from busguard.testing import run_scans


def site(port: int, state: str) -> str:
    return (f'[site]\nname = "gap"\n[paths]\nstate_dir = "{state}"\n'
            f'[[meter]]\nname = "m1"\nhost = "127.0.0.1"\nport = {port}\npoll_ms = 50\n'
            f'timeout_ms = 500\n'
            f'[[block]]\nname = "comm"\ntype = "comm_health"\n')


def test_a_gap_between_points_is_found_without_bad_points_or_a_0x02_alarm(
        modbus_meter, make_runtime, tmp_path):
    meter = modbus_meter("generic-pqm", {"current_l1_a": 312.5, "energy_import_wh": 123456789})
    rt = make_runtime(site(meter.port, str(tmp_path / "state")), start=True)
    drv = rt.drivers[0]
    names = [s.name for s in rt.image.specs if s.name.startswith("m1.")]
    served = [n for n in names if n.split(".", 1)[1] in meter.profile]
    assert len(served) > 30
    seen_bad: set[str] = set()
    codes: set[str] = set()
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:  # bounded: real polls every 50 ms, a scan per check
        snap = rt.image.snapshot()
        seen_bad |= {n for n in names if snap[n].quality is Quality.BAD}
        run_scans(rt, 1)
        codes |= {a.condition.code for a in rt.alarms.active()}
        st = drv.stats()
        if st["polls"] >= 6 and all(snap[n].quality is Quality.GOOD for n in served):
            break
        time.sleep(0.02)
    st = drv.stats()
    assert st["bad_blocks"] == {}, st
    assert seen_bad == set(), f"points marked BAD while the gap was searched: {seen_bad}"
    assert "0x02" not in codes, codes
    snap = rt.image.snapshot()
    assert snap["m1.current_l1_a"].value == 312.5
    assert snap["m1.current_l1_a"].quality is Quality.GOOD
    assert snap["m1.energy_import_wh"].value == 123456789
    # the holding registers in two runs (100..168 and 170..185) beside the input registers:
    # not one read per point
    holding = [b for b in drv.plan if b.function == "holding"]
    assert [(b.address, b.end - 1) for b in holding] == [(100, 168), (170, 185)], holding
