"""How retained.json here was made: with busguard as of main 590615e (2026-12-04, before the
one state export/import), so tests/test_state_upgrade.py can prove that a unit upgraded in the
field restores its latched trips from a file its old version wrote. Kept for the record; run
it only with that old version:  python make_state.py  (writes state/retained.json{,.b})."""

from pathlib import Path

from busguard.clock import FakeClock
from busguard.image import Quality
from busguard.runtime import Runtime
from busguard.testing import run_scans

here = Path(__file__).resolve().parent
rt = Runtime.from_file(here / "site.toml", clock=FakeClock())
rt.start()
normal = [(f"{m}.{p}", v, Quality.GOOD) for m in ("m1", "m2")
          for p, v in (("current_l1_a", 500.0), ("current_l2_a", 510.0),
                       ("current_l3_a", 490.0), ("residual_current_ma", 20.0))]
normal += [("cb1.led", 0.0, Quality.GOOD), ("cb2.led", 0.0, Quality.GOOD)]
rt.image.write_many(normal)
run_scans(rt, 2)
rt.image.write("m1.current_l2_a", 1500.0)  # an overcurrent on m1: cb1 trips and latches
run_scans(rt, 3)
rt.image.write_many(normal)  # the cause goes; the trip stays latched
run_scans(rt, 3)
rt.image.write("cmd.ack_alarms", 1.0)  # the DCIM acknowledges the alarms (command counter 1)
run_scans(rt, 3)
assert rt.last_result.outputs["cb1.shunt_trip"] == 1.0
assert rt.last_result.outputs["cb2.shunt_trip"] == 0.0
rt.stop()
print(rt.alarms.events.seq, [a.as_dict() for a in rt.alarms.active()])
