"""A block that raises is isolated: faulted, alarm raised once, its outputs forced to their
fail-safe values, and the other blocks keep scanning."""

from __future__ import annotations

from busguard import hookimpl
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.image import Quality
from busguard.scan import RESET_FAULTS_POINT

SITE = """
[site]
name = "t"
[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a"]
[[output]]
name = "relays"
driver = "memory"
outputs = ["relay.alarm", "flaky.out"]
[[block]]
name = "flaky"
type = "flaky"
fail_above = 500.0
[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 640.0
output = "relay.alarm"
"""


class Flaky(Block):
    """Raises when its input is above a value: stands for a plugin with a bug."""

    type_name = "flaky"
    params = {"fail_above": Param(float)}

    def inputs(self):
        return ("m1.current_l1_a",)

    def outputs(self):
        return {"flaky.out": 0.0}  # fail-safe 0

    def scan(self, inputs, now):
        v = inputs.value("m1.current_l1_a")
        if v > self.p["fail_above"]:
            raise RuntimeError("division by a bug")
        return BlockResult(outputs={"flaky.out": 1.0})


class Observer:
    def __init__(self):
        self.raised, self.cleared, self.faults = [], [], []

    @hookimpl
    def busguard_register_types(self, registry):
        registry.add_block(Flaky)

    @hookimpl
    def busguard_alarm_raised(self, runtime, edge):
        self.raised.append(edge.alarm.id)

    @hookimpl
    def busguard_alarm_cleared(self, runtime, edge):
        self.cleared.append(edge.alarm.id)

    @hookimpl
    def busguard_fault(self, runtime, source, error, details):
        self.faults.append((source, str(error), details))


def test_faulting_block_is_isolated_and_alarms_once(make_runtime, run_scans):
    obs = Observer()
    rt = make_runtime(SITE, extra=[obs], start=True)
    relays = next(d for d in rt.drivers if d.name == "relays")

    def current(value):
        return lambda rt, i: rt.image.write("m1.current_l1_a", value)

    run_scans(rt, 3, current(400.0))
    assert relays.values == {"flaky.out": 1.0, "relay.alarm": 0.0}
    run_scans(rt, 5, current(700.0))  # flaky raises; hi must still trip its alarm
    assert rt.engine.faulted == {"flaky": "RuntimeError: division by a bug"}
    assert relays.values["flaky.out"] == 0.0  # forced to fail-safe
    assert relays.values["relay.alarm"] == 1.0  # the other block kept scanning
    assert obs.raised.count("flaky:block-fault") == 1  # once, not once per scan
    assert [f[0] for f in obs.faults] == ["flaky"]
    assert obs.faults[0][2] == {"forced": {"flaky.out": 0.0}}
    run_scans(rt, 3, current(400.0))  # stays faulted until an authorised reset
    assert "flaky" in rt.engine.faulted and relays.values["flaky.out"] == 0.0

    run_scans(rt, 1)
    assert "flaky" in rt.engine.faulted  # an unchanged command counter does nothing
    rt.image.write(RESET_FAULTS_POINT, 1.0)  # commands start at 0: the first write acts
    run_scans(rt, 2)
    assert rt.engine.faulted == {} and relays.values["flaky.out"] == 1.0
    assert rt.image.snapshot()["m1.current_l1_a"].quality is Quality.GOOD


def test_stop_forces_every_output_to_fail_safe(make_runtime, run_scans):
    rt = make_runtime(SITE, extra=[Observer()], start=True)
    relays = next(d for d in rt.drivers if d.name == "relays")
    run_scans(rt, 2, lambda rt, i: rt.image.write("m1.current_l1_a", 700.0))
    assert relays.values["relay.alarm"] == 1.0
    rt.stop()
    assert relays.values == {"relay.alarm": 0.0, "flaky.out": 0.0}


def test_stale_input_never_raises_the_limit_alarm(make_runtime, run_scans, fake_clock):
    rt = make_runtime(SITE, extra=[Observer()], start=True)
    relays = next(d for d in rt.drivers if d.name == "relays")
    rt.image.write("m1.current_l1_a", 700.0)
    run_scans(rt, 1)
    assert relays.values["relay.alarm"] == 1.0
    rt.image.write("m1.current_l1_a", 100.0)
    run_scans(rt, 1)
    fake_clock.advance(1.0)  # meter silent for > 3 poll periods
    run_scans(rt, 1)
    ids = {a.id: a.condition.code for a in rt.alarms.active()}
    assert ids.get("hi:input") == "BG-INPUT" and "hi:limit" not in ids
    assert relays.values["relay.alarm"] == 0.0  # held, not tripped by silence
