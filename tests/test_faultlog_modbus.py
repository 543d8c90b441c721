"""The seed's Modbus codes end to end through real interfaces: the simulator's Modbus TCP
meter on 127.0.0.1 answers exception 0x02 for a register block, then stops answering; the
modbus_tcp meter driver marks the points and writes its comm_* points; comm_health raises 0x02
and errno 110; the fault log gets one line per raise and per clear with the words operators
grep for."""

from __future__ import annotations

from busguard.image import Quality
from busguard.sim.testing import distinct_values
from busguard.testing import point, wait_until

GEN, VALUES = distinct_values()



def site(port: int) -> str:
    return (f'[site]\nname = "t"\n[paths]\nfault_log = "fault.log"\nstate_dir = "st-ml"\n'
            f'[[meter]]\nname = "m1"\nhost = "127.0.0.1"\nport = {port}\npoll_ms = 50\n'
            f'timeout_ms = 150\nbackoff_ms = 50\nbackoff_max_ms = 200\nloss_limit = 3\n'
            f'retries = 0\n[[block]]\nname = "comm"\ntype = "comm_health"\n')


def test_0x02_and_errno_110_from_a_real_slave_reach_the_fault_log(modbus_meter, make_runtime,
                                                                  run_scans, tmp_path):
    unit = modbus_meter(GEN, VALUES)
    unit.fill_gaps(0)  # only the refusal below is a 0x02
    port = unit.port
    unit.refuse(4, 100, 103, 0x02)  # the meter has no such input registers
    rt = make_runtime(site(port), start=True)
    wait_until(lambda: point(rt, "m1.temp_c")[1] == Quality.BAD, what="block BAD")
    wait_until(lambda: point(rt, "m1.comm_ok") == (1.0, Quality.GOOD), what="comm ok")
    (res,) = run_scans(rt, 1)
    assert [(e.kind, e.alarm.condition.code) for e in res.edges] == [("raised", "0x02")]

    unit.accept()
    unit.faults(drop_pct=100.0)  # the meter stops answering
    wait_until(lambda: point(rt, "m1.comm_ok") == (0.0, Quality.GOOD), what="timeouts")
    (res,) = run_scans(rt, 1)
    kinds = sorted((e.kind, e.alarm.condition.code) for e in res.edges)
    assert ("raised", "errno 110") in kinds

    unit.faults()
    wait_until(lambda: point(rt, "m1.comm_ok") == (1.0, Quality.GOOD)
               and point(rt, "m1.temp_c")[1] == Quality.GOOD, what="recovery")
    run_scans(rt, 1)
    assert not [a for a in rt.alarms.active() if a.condition.code in ("0x02", "errno 110")]
    rt.stop()

    lines = (tmp_path / "fault.log").read_text().splitlines()
    address = [ln for ln in lines if "code=0x02" in ln]
    timeout = [ln for ln in lines if 'code="errno 110"' in ln]
    assert [ln.split()[2] for ln in address] == ["raised", "cleared"]
    assert [ln.split()[2] for ln in timeout] == ["raised", "cleared"]
    assert "0x80 (Illegal Data Address)" in address[0] and "m1.temp_c" in address[0]
    assert "Connection Timeout (Errno 110)" in timeout[0] and "device=m1" in timeout[0]
    assert all(" major " in ln for ln in address + timeout)
