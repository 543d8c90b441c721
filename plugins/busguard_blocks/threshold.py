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
from busguard.image import Quality, Snapshot

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
        p = self.p
        # the parameters as attributes, read once: a site runs one of these per meter every
        # scan, and the dict look-ups per scan were a large share of its cost
        self.point: str = p["point"]
        self.high, self.low = float(p["high"]), float(p["low"])
        self.hysteresis = float(p["hysteresis"])
        self.severity = Severity[p["severity"].upper()]
        self.output: str = p["output"]
        self.failsafe = float(p["output_failsafe"])
        self.failsafe_on_bad = p["on_bad_input"] == "failsafe"
        self.use_peak = bool(p["use_peak"])
        self.active = False
        self.out = self.failsafe
        # the BG-INPUT condition of the last bad quality: the same object while the input
        # stays bad the same way (a dead meter network must not make the scan dearer)
        self._input_alarm: tuple[int, AlarmCondition] | None = None

    def inputs(self) -> tuple[str, ...]:
        return (self.point,)

    def outputs(self) -> Mapping[str, float]:
        return {self.output: self.failsafe} if self.output else {}

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        point = self.point
        res = BlockResult()
        i = inputs.index[point]
        q = inputs.quality[i]
        if q != 0:
            cached = self._input_alarm
            if cached is None or cached[0] != q:
                cached = (q, AlarmCondition(
                    "input", Severity.WARNING, "BG-INPUT",
                    f"{point} is {Quality(q).word}; limit check suspended",
                    device=inputs.specs[i].source))
                self._input_alarm = cached
            res.alarms.append(cached[1])
            if self.failsafe_on_bad:
                self.out = self.failsafe
        else:
            v = inputs.values[i]
            if self.use_peak:  # Snapshot.peak, inline: the highest value since the last scan
                top = inputs.vmax[i]
                if top > v:  # False for NaN (nothing written in the window)
                    v = top
            hi, lo = self.high, self.low
            if self.active:
                hyst = self.hysteresis
                self.active = v >= hi - hyst or v <= lo + hyst
            else:
                self.active = v >= hi or v <= lo
            self.out = 1.0 if self.active else 0.0
            if self.active:
                res.alarms.append(AlarmCondition(
                    "limit", self.severity, self.p["code"],
                    f"{point} = {v:g} outside [{lo:g}, {hi:g}]", device=inputs.specs[i].source,
                    values={"value": v, "high": hi, "low": lo}))
        if self.output:
            res.outputs[self.output] = self.out
        return res
