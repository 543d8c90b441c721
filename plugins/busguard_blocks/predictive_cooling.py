"""Predictive cooling: raise the cooling demand before a training job starts.

Protects the busway and the racks from the temperature overshoot a large job causes when
cooling only reacts once the heat is there (thermal inertia). The DCIM writes the next job's
start time (``{prefix}.cmd_job_start_utc``, UTC seconds since the epoch, 0 = none) and its
expected load (``{prefix}.cmd_job_load_kw``); the block raises ``{prefix}.demand_pct``
``lead_s`` (default 30 s, as the seed asks) before the start, scaled to the expected load, and
releases it once the job has settled: measured power within a band of the expected load for
``settle_s`` (or ``settle_s`` after the start without a power point), at the latest after
``max_hold_s``. Time comes from the snapshot (the command point's own stamps), never a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.image import PointSpec, Snapshot
from busguard.inputwatch import OnDelay, input_code, lost_inputs
from busguard_blocks._common import check_order, iso_utc, rnd, wall_utc

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

MAX_EPOCH = 4102444800.0  # 2100-01-01


class PredictiveCooling(Block):
    """Cooling demand ahead of scheduled jobs (see the module docstring)."""

    type_name = "predictive_cooling"
    failsafe_policy: ClassVar[str] = (
        "Command points never written mean no job (demand at base_pct). A bad command value "
        "keeps the schedule already known. A lost power point keeps the demand up until it "
        "returns or max_hold_s passes (more cooling is the safe side). If the block faults, "
        "`{prefix}.demand_pct` is forced to output_failsafe (default 100%).")
    codes: ClassVar[Mapping[str, str]] = {
        "BG-COOL-PRE": "info: cooling demand raised for a scheduled job (values: start, "
                       "load, demand, phase)",
        **input_code("a command or power point", "bad or not connected"),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "prefix": Param(str, default="cooling",
                        doc="names the points: {prefix}.cmd_job_start_utc, "
                            "{prefix}.cmd_job_load_kw, {prefix}.demand_pct"),
        "lead_s": Param(float, default=30.0, minval=0.0, maxval=3600.0, unit="s",
                        doc="raise the demand this long before the job starts (seed: 30 s)"),
        "full_load_kw": Param(float, default=1000.0, above=0.0, unit="kW",
                              doc="expected load that calls for 100% demand"),
        "min_job_pct": Param(float, default=20.0, minval=0.0, maxval=100.0, unit="%",
                             doc="demand for any job, however small"),
        "base_pct": Param(float, default=0.0, minval=0.0, maxval=100.0, unit="%",
                          doc="demand with no job pending (the BMS's own loop leads)"),
        "max_pct": Param(float, default=100.0, minval=0.0, maxval=100.0, unit="%",
                         doc="cap on the demand"),
        "power_point": Param(str, default="", ref="point",
                             doc="measured load (kW) used to see the job settle"),
        "settle_band_pct": Param(float, default=10.0, above=0.0, maxval=100.0, unit="%",
                                 doc="settled: power within this band of the expected load"),
        "settle_s": Param(float, default=120.0, minval=0.0, maxval=86400.0, unit="s",
                          doc="how long the load must stay settled before release"),
        "max_hold_s": Param(float, default=1800.0, minval=0.0, maxval=86400.0, unit="s",
                            doc="release at the latest this long after the start"),
        "output_failsafe": Param(float, default=100.0, minval=0.0, maxval=100.0, unit="%",
                                 doc="demand forced when the block faults"),
    }

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        check_order(config, "min_job_pct", "max_pct", strict=False)
        return super().from_config(config, site)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        pre = self.p["prefix"]
        self.start_point = f"{pre}.cmd_job_start_utc"
        self.load_point = f"{pre}.cmd_job_load_kw"
        self.out = f"{pre}.demand_pct"
        self.job_start = 0.0
        self.job_kw = 0.0
        self.released_for = 0.0
        self.settle = OnDelay(self.p["settle_s"])

    def inputs(self) -> tuple[str, ...]:
        return (self.p["power_point"],) if self.p["power_point"] else ()

    def outputs(self) -> Mapping[str, float]:
        return {self.out: float(self.p["output_failsafe"])}

    def points(self) -> list[PointSpec]:
        return [
            PointSpec(self.start_point, source="command", unit="s", command=True, minval=0.0,
                      maxval=MAX_EPOCH, doc="next training job's start, UTC seconds since the "
                                            "epoch (0: none)"),
            PointSpec(self.load_point, source="command", unit="kW", command=True, minval=0.0,
                      maxval=1e6, doc="next training job's expected load"),
        ]

    def demand_for(self, kw: float) -> float:
        p = self.p
        pct = max(p["min_job_pct"], min(100.0, kw / p["full_load_kw"] * 100.0))
        return min(pct, p["max_pct"])

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        res = self.begin_scan(now)
        bad = {k: v for k, v in lost_inputs(inputs, (self.start_point, self.load_point)).items()
               if v != "not-connected"}
        if inputs.is_good(self.start_point):
            start = inputs.values[inputs.index[self.start_point]]
            if start != self.job_start:
                self.job_start = start
                self.settle.update(False, now)
        if inputs.is_good(self.load_point):
            self.job_kw = inputs.values[inputs.index[self.load_point]]
        demand = p["base_pct"]
        phase = "idle"
        pending = self.job_start > 0 and self.released_for != self.job_start
        wall = wall_utc(inputs, now, (self.start_point, self.load_point)) if pending else math.nan
        if pending and math.isfinite(wall):
            since = wall - self.job_start
            if -p["lead_s"] <= since < 0:
                phase = "pre"
            elif 0 <= since < p["max_hold_s"]:
                phase = "running"
                if p["power_point"]:
                    settled = False
                    if inputs.is_good(p["power_point"]):
                        kw = inputs.values[inputs.index[p["power_point"]]]
                        band = self.job_kw * p["settle_band_pct"] / 100.0
                        settled = abs(kw - self.job_kw) <= band
                    if self.settle.update(settled, now):
                        phase = "released"
                elif since >= p["settle_s"]:
                    phase = "released"
            elif since >= p["max_hold_s"]:
                phase = "released"
            if phase == "released":
                self.released_for = self.job_start
            elif phase in ("pre", "running"):
                demand = self.demand_for(self.job_kw)
                res.alarms.append(AlarmCondition(
                    "job", Severity.INFO, "BG-COOL-PRE",
                    f"cooling demand {demand:.0f}% for the job starting "
                    f"{iso_utc(self.job_start)} ({self.job_kw:g} kW expected, {phase})",
                    device=p["prefix"],
                    values={"start_utc": iso_utc(self.job_start), "load_kw": self.job_kw,
                            "demand_pct": rnd(demand, 1), "phase": phase}))
        if p["power_point"]:
            lost = lost_inputs(inputs, (p["power_point"],))
            if lost and phase == "running":
                bad.update(lost)
        res.add(self.input_watch.alarm(bad, now, "schedule held; demand kept up"))
        res.outputs[self.out] = demand
        return res

    def state(self) -> dict[str, Any]:
        return {"job_start": self.job_start, "job_kw": self.job_kw,
                "released_for": self.released_for}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.job_start = float(state.get("job_start", 0.0))
        self.job_kw = float(state.get("job_kw", 0.0))
        self.released_for = float(state.get("released_for", 0.0))
