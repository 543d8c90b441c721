"""Joint temperature rise: a busbar joint running hotter than its neighbour.

A joint with poor torque heats locally long before the busbar as a whole is hot, so compare
the joint's probe with a reference probe on the same run and alarm on the difference.

Fail-safe policy: if either probe is stale, bad or missing, the block raises a warning
(EX-INPUT) and keeps its last decision; it never alarms because a sensor went quiet.
"""

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param


class JointRise(Block):
    """Alarm when ``joint`` is more than ``max_rise_c`` above ``reference``."""

    type_name = "joint_rise"
    params = {
        "joint": Param(str, ref="probe", doc="probe on the joint"),
        "reference": Param(str, ref="probe", doc="probe on the same busbar run"),
        "max_rise_c": Param(float, default=15.0, above=0.0, unit="C",
                            doc="alarm above this temperature difference"),
        "hysteresis_c": Param(float, default=2.0, minval=0.0, unit="C"),
    }

    def __init__(self, name, params):
        super().__init__(name, params)
        self.joint = f"{self.p['joint']}.temp_c"
        self.reference = f"{self.p['reference']}.temp_c"
        self.active = False

    def inputs(self):
        return (self.joint, self.reference)

    def scan(self, inputs, now):
        res = BlockResult()
        if not (inputs.is_good(self.joint) and inputs.is_good(self.reference)):
            res.alarms.append(AlarmCondition(
                "input", Severity.WARNING, "EX-INPUT",
                f"{self.joint} or {self.reference} is not good; decision held",
                device=self.p["joint"]))
        else:
            rise = inputs.value(self.joint) - inputs.value(self.reference)
            limit = self.p["max_rise_c"]
            if self.active:
                self.active = rise > limit - self.p["hysteresis_c"]
            else:
                self.active = rise > limit
        if self.active:
            res.alarms.append(AlarmCondition(
                "rise", Severity.MAJOR, "EX-JOINT-RISE",
                f"joint {self.p['joint']} runs hot against {self.p['reference']}",
                device=self.p["joint"], values={"max_rise_c": self.p["max_rise_c"]}))
        return res

    def state(self):
        return {"active": self.active}

    def restore(self, state):
        self.active = bool(state.get("active", False))
