"""A generic high/low limit alarm on one point, with hysteresis and an optional relay output.

Fail-safe policy: a stale or bad input never raises the limit alarm (nothing alarms because a
sensor went quiet); it raises a separate ``BG-INPUT`` warning and holds the output at its
previous value, unless ``on_bad_input = "failsafe"`` which drives the output to its fail-safe
value (``output_failsafe``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.image import Snapshot

SEVERITIES = tuple(s.word for s in Severity)


class ThresholdAlarm(Block):
    type_name = "threshold_alarm"
    params: ClassVar[Mapping[str, Param]] = {
        "point": Param(str, ref="point", doc="input point to watch"),
        "high": Param(float, default=math.inf, doc="alarm at or above this value"),
        "low": Param(float, default=-math.inf, doc="alarm at or below this value"),
        "hysteresis": Param(float, default=0.0, minval=0.0,
                            doc="the value must come back this far inside the limit to clear"),
        "severity": Param(str, default="warning", choices=SEVERITIES),
        "code": Param(str, default="BG-LIMIT", doc="stable code for the fault log"),
        "output": Param(str, default="", doc="optional output set to 1 while in alarm"),
        "output_failsafe": Param(float, default=0.0, doc="output value on fault"),
        "on_bad_input": Param(str, default="hold", choices=("hold", "failsafe")),
        "use_peak": Param(bool, default=True,
                          doc="judge the highest value seen since the last scan, so a spike "
                              "between two scans still counts"),
    }

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.active = False
        self.out = float(self.p["output_failsafe"])

    def inputs(self) -> tuple[str, ...]:
        return (self.p["point"],)

    def outputs(self) -> Mapping[str, float]:
        return {self.p["output"]: float(self.p["output_failsafe"])} if self.p["output"] else {}

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        point = self.p["point"]
        res = BlockResult()
        if not inputs.is_good(point):
            q = inputs[point].quality.word
            res.alarms.append(AlarmCondition("input", Severity.WARNING, "BG-INPUT",
                                             f"{point} is {q}; limit check suspended",
                                             device=inputs[point].source))
            if self.p["on_bad_input"] == "failsafe":
                self.out = float(self.p["output_failsafe"])
        else:
            v = inputs.peak(point) if self.p["use_peak"] else inputs.value(point)
            hi, lo, hyst = self.p["high"], self.p["low"], self.p["hysteresis"]
            if self.active:
                self.active = v >= hi - hyst or v <= lo + hyst
            else:
                self.active = v >= hi or v <= lo
            self.out = 1.0 if self.active else 0.0
            if self.active:
                res.alarms.append(AlarmCondition(
                    "limit", Severity[self.p["severity"].upper()], self.p["code"],
                    f"{point} = {v:g} outside [{lo:g}, {hi:g}]", device=inputs[point].source,
                    values={"value": v, "high": hi, "low": lo}))
        if self.p["output"]:
            res.outputs[self.p["output"]] = self.out
        return res
