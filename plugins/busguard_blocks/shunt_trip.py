"""Shunt-trip interlock: opens a busway tap-off breaker through its shunt-trip coil.

Protects the busway and the racks behind one breaker against overcurrent (current above a
pickup for longer than a delay, or along an IEC 60255 / IEEE C37.112 inverse-time curve),
ground faults (the breaker LED's 2-blink pattern, or residual current from a meter), an
overcurrent trip the breaker's own trip unit shows on its LED (solid red) and a thermal
critical busbar (at or above 90 C, the seed's Thermal-Critical 0xCF). busguard runs beside the
breaker's own trip unit, never instead of it.

A trip latches: ``{breaker}.shunt_trip`` stays 1 until an authorised reset (the DCIM changes
the counter ``{breaker}.cmd_reset``); the reset is refused while any trip condition persists
or cannot be verified. Every trip records its cause, the values that caused it and the UTC
time, in the retained state and in the alarm's values (so in the fault log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult, BreakerStatus, BreakerView
from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec, Snapshot
from busguard_blocks._common import (
    CommandCounter,
    InputWatch,
    OnDelay,
    check_order,
    iso_utc,
    lost_inputs,
    rnd,
    wall_utc,
)

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

# name -> (k or A, alpha or p, B); IEC: t = TMS*k/(M^a - 1); IEEE: t = TD*(A/(M^p - 1) + B)
CURVES: dict[str, tuple[float, float, float]] = {
    "iec-standard-inverse": (0.14, 0.02, 0.0),
    "iec-very-inverse": (13.5, 1.0, 0.0),
    "iec-extremely-inverse": (80.0, 2.0, 0.0),
    "iec-long-time-inverse": (120.0, 1.0, 0.0),
    "ieee-moderately-inverse": (0.0515, 0.02, 0.114),
    "ieee-very-inverse": (19.61, 2.0, 0.491),
    "ieee-extremely-inverse": (28.2, 2.0, 0.1217),
}

# cause -> (code, words); all trip messages carry "breaker-trip" for operators who grep it
CAUSES: dict[str, tuple[str, str]] = {
    "thermal-critical": ("0xCF", "Thermal-Critical (0xCF): busbar at or above the trip "
                                 "temperature"),
    "ground-fault-led": ("BG-TRIP-GF", "ground fault (breaker LED 2-blink)"),
    "ground-fault-residual": ("BG-TRIP-RCM", "ground fault (residual current above pickup)"),
    "overcurrent-led": ("BG-TRIP-OC-LED", "overcurrent trip shown by the breaker LED (solid "
                                          "red)"),
    "overcurrent": ("BG-TRIP-OC", "overcurrent (above pickup for longer than the delay or "
                                  "curve)"),
    "input-loss": ("BG-TRIP-INPUT-LOSS", "protection inputs lost (trip_on_input_loss)"),
}


def operate_time_s(curve: str, multiple: float, tms: float, delay_s: float) -> float:
    """Seconds to trip at ``multiple`` x pickup; ``definite`` is ``delay_s`` at any multiple."""
    if multiple <= 1.0:
        return math.inf
    if curve == "definite":
        return delay_s
    a, p, b = CURVES[curve]
    return max(tms * (a / (multiple ** p - 1.0) + b), delay_s)


class ShuntTrip(Block):
    """Shunt-trip interlock for one breaker (see the module docstring)."""

    type_name = "shunt_trip"
    failsafe_policy: ClassVar[str] = (
        "Stale, bad or missing inputs raise a BG-INPUT warning and are left out of the "
        "decision; they never trip unless `trip_on_input_loss = true`, which trips once inputs "
        "have been lost for `input_loss_delay_s`. A latched trip holds through input loss. A "
        "bad permissive or inhibit input counts as 'trip allowed' (protection wins). A reset is "
        "refused while a cause persists or cannot be verified. If the block faults, "
        "`{breaker}.shunt_trip` is forced to 0 (the breaker's own trip unit still protects).")
    codes: ClassVar[Mapping[str, str]] = {
        **{code: f"critical, breaker-trip: {words}" for code, words in CAUSES.values()},
        "BG-OC-PICKUP": "major: current above pickup, trip timing (values: time_to_trip_s)",
        "BG-TRIP-INHIBITED": "major: a trip condition holds but the inhibit/permissive input "
                             "blocks the trip",
        "BG-RESET-REFUSED": "warning: a reset was refused because a cause persists",
        "BG-LED-PATTERN": "minor: the breaker LED shows a pattern other than off/1/2",
        "BG-INPUT": "warning: an input is stale, bad or not connected",
    }
    params: ClassVar[Mapping[str, Param]] = {
        "breaker": Param(str, ref="breaker", doc="breaker whose `{breaker}.shunt_trip` this "
                                                 "block drives"),
        "meter": Param(str, default="", ref="meter",
                       doc="meter on the breaker's feeder; gives the current_l1..l3_a points "
                           "when `currents` is empty"),
        "currents": Param(list, item=str, ref="point", default=(),
                          doc="current points (A) judged for overcurrent; default the meter's "
                              "three phases"),
        "pickup_a": Param(float, default=0.0, minval=0.0, unit="A",
                          doc="overcurrent pickup; 0 disables the overcurrent element"),
        "delay_s": Param(float, default=0.5, minval=0.0, maxval=3600.0, unit="s",
                         doc="definite-time delay; with a curve, the minimum operate time"),
        "curve": Param(str, default="definite", choices=("definite", *CURVES),
                       doc="overcurrent characteristic (IEC 60255 / IEEE C37.112)"),
        "time_multiplier": Param(float, default=1.0, above=0.0, maxval=100.0,
                                 doc="TMS (IEC) or time dial TD (IEEE) of the curve"),
        "overcurrent_led": Param(bool, default=True,
                                 doc="trip on LED pattern 1 (solid red: breaker overcurrent "
                                     "trip)"),
        "ground_fault_led": Param(bool, default=True,
                                  doc="trip on LED pattern 2 (2-blink: ground fault)"),
        "led_point": Param(str, default="", ref="point",
                           doc="LED pattern point; default `{breaker}.led`"),
        "residual_pickup_ma": Param(float, default=0.0, minval=0.0, unit="mA",
                                    doc="residual (ground-fault) current pickup; 0 disables"),
        "residual_point": Param(str, default="", ref="point",
                                doc="residual current point; default "
                                    "`{meter}.residual_current_ma`"),
        "residual_delay_s": Param(float, default=0.1, minval=0.0, maxval=60.0, unit="s",
                                  doc="how long the residual current must stay above pickup"),
        "probes": Param(list, item=str, ref="probe", default=(),
                        doc="busbar probes whose temp_c is judged for thermal critical"),
        "thermal_trip_c": Param(float, default=90.0, minval=40.0, maxval=200.0, unit="C",
                                doc="thermal critical trip temperature (seed: 90 C, 0xCF)"),
        "thermal_reset_c": Param(float, default=85.0, minval=0.0, maxval=200.0, unit="C",
                                 doc="a thermal trip may be reset only below this"),
        "permissive": Param(str, default="", ref="point",
                            doc="optional point: trips only while it is non-zero"),
        "inhibit": Param(str, default="", ref="point",
                         doc="optional point: no trip while it is non-zero (maintenance)"),
        "trip_on_input_loss": Param(bool, default=False,
                                    doc="trip when protection inputs stay lost"),
        "input_loss_delay_s": Param(float, default=5.0, minval=0.0, maxval=3600.0, unit="s",
                                    doc="how long inputs must stay lost before that trip"),
    }

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        check_order(config, "thermal_reset_c", "thermal_trip_c")
        p = config.params
        problems = []
        if p["pickup_a"] > 0 and not (p["meter"] or p["currents"]):
            problems.append(ConfigProblem(config.file, f"{config.path}.pickup_a",
                                          "an overcurrent pickup needs `meter` or `currents`"))
        if p["residual_pickup_ma"] > 0 and not (p["meter"] or p["residual_point"]):
            problems.append(ConfigProblem(config.file, f"{config.path}.residual_pickup_ma",
                                          "a residual pickup needs `meter` or `residual_point`"))
        if problems:
            raise ConfigError(problems)
        return super().from_config(config, site)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.input_watch = InputWatch()
        p = self.p
        br, meter = p["breaker"], p["meter"]
        self.out = f"{br}.shunt_trip"
        self.reset_point = f"{br}.cmd_reset"
        self.currents = tuple(p["currents"]) or (
            tuple(f"{meter}.current_l{n}_a" for n in (1, 2, 3)) if meter and p["pickup_a"] > 0
            else ())
        self.led = (p["led_point"] or f"{br}.led") if (
            p["overcurrent_led"] or p["ground_fault_led"]) else ""
        self.residual = (p["residual_point"] or (f"{meter}.residual_current_ma" if meter else "")
                         ) if p["residual_pickup_ma"] > 0 else ""
        self.temps = tuple(f"{pr}.temp_c" for pr in p["probes"])
        self.protect = tuple(x for x in (*self.currents, self.led, self.residual, *self.temps)
                             if x)
        self.aux = tuple(x for x in (p["permissive"], p["inhibit"]) if x)
        self.reset_cmd = CommandCounter(self.reset_point)
        self.oc_acc = 0.0
        self.oc_above = False
        self.residual_timer = OnDelay(p["residual_delay_s"])
        self.loss_timer = OnDelay(p["input_loss_delay_s"])
        self.last_now: float | None = None
        self.latched = False
        self.trip: dict[str, Any] = {}
        self.trips = 0
        self.resets = 0
        self.refused: dict[str, Any] = {}

    def inputs(self) -> tuple[str, ...]:
        return (*self.protect, *self.aux)

    def outputs(self) -> Mapping[str, float]:
        return {self.out: 0.0}

    def points(self) -> list[PointSpec]:
        return [PointSpec(self.reset_point, source="command", command=True, minval=0,
                          maxval=65535, doc=f"change (e.g. increment) to reset a latched "
                                            f"shunt trip of {self.p['breaker']}")]

    def map_breakers(self) -> tuple[BreakerView, ...]:
        return (BreakerView(self.p["breaker"], self.out, self.reset_point),)

    def breakers(self) -> Mapping[str, BreakerStatus]:
        return {self.p["breaker"]: BreakerStatus(
            self.latched, str(self.trip.get("code", "")) if self.latched else "")}

    # -- the scan ------------------------------------------------------------------------------
    @staticmethod
    def _add(res: BlockResult, alarm: AlarmCondition | None) -> None:
        if alarm is not None:
            res.alarms.append(alarm)

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        snap = inputs
        dt = 0.0 if self.last_now is None else max(0.0, now - self.last_now)
        self.last_now = now
        self.input_watch.tick(now)
        res = BlockResult()
        lost = lost_inputs(snap, self.inputs())
        good = {x: snap.values[snap.index[x]] for x in self.protect if x not in lost}

        raw: dict[str, dict[str, Any]] = {}  # conditions present now, before any delay
        tripping: dict[str, dict[str, Any]] = {}  # conditions whose delay has run out

        # overcurrent, definite time or inverse curve (integrated so the current may vary)
        amps = {x: good[x] for x in self.currents if x in good}
        if p["pickup_a"] > 0 and amps:
            i_max = max(amps.values())
            m = i_max / p["pickup_a"]
            if m > 1.0:
                t_op = operate_time_s(p["curve"], m, p["time_multiplier"], p["delay_s"])
                if self.oc_above:  # time counts from the first scan that saw it
                    self.oc_acc += dt / t_op if t_op > 0 else math.inf
                elif t_op <= 0:
                    self.oc_acc = math.inf
                self.oc_above = True
                vals = {"currents_a": {k: rnd(v) for k, v in amps.items()},
                        "pickup_a": p["pickup_a"], "multiple": rnd(m), "curve": p["curve"],
                        "operate_s": rnd(t_op)}
                raw["overcurrent"] = vals
                if self.oc_acc >= 1.0 - 1e-9:
                    tripping["overcurrent"] = vals
                elif not self.latched:
                    ttt = max(0.0, (1.0 - self.oc_acc) * t_op)
                    res.alarms.append(AlarmCondition(
                        "oc-pickup", Severity.MAJOR, "BG-OC-PICKUP",
                        f"{p['breaker']}: current {i_max:.1f} A above pickup "
                        f"{p['pickup_a']:g} A, trip in {ttt:.2f} s", device=p["breaker"],
                        values={**vals, "time_to_trip_s": rnd(ttt, 2)}))
            else:
                self.oc_acc = 0.0
                self.oc_above = False
        else:
            self.oc_acc = 0.0
            self.oc_above = False

        if self.led and self.led in good:
            pattern = round(good[self.led])
            if pattern == 1 and p["overcurrent_led"]:
                raw["overcurrent-led"] = tripping["overcurrent-led"] = {"led": 1}
            elif pattern == 2 and p["ground_fault_led"]:
                raw["ground-fault-led"] = tripping["ground-fault-led"] = {"led": 2}
            elif pattern >= 3 or (pattern in (1, 2)):
                res.alarms.append(AlarmCondition(
                    "led-pattern", Severity.MINOR, "BG-LED-PATTERN",
                    f"{p['breaker']}: LED shows pattern {pattern} (no trip configured for it)",
                    device=p["breaker"], values={"led": pattern}))

        if self.residual and self.residual in good:
            ma = good[self.residual]
            over = ma > p["residual_pickup_ma"]
            vals = {"residual_ma": rnd(ma), "pickup_ma": p["residual_pickup_ma"]}
            if over:
                raw["ground-fault-residual"] = vals
            if self.residual_timer.update(over, now):
                tripping["ground-fault-residual"] = vals
        else:
            self.residual_timer.update(False, now)

        temps = {x: good[x] for x in self.temps if x in good}
        if temps:
            t_max = max(temps.values())
            vals = {"temps_c": {k: rnd(v, 2) for k, v in temps.items()},
                    "trip_c": p["thermal_trip_c"]}
            if t_max >= p["thermal_trip_c"]:
                raw["thermal-critical"] = tripping["thermal-critical"] = vals
            elif self.latched and t_max >= p["thermal_reset_c"] and \
                    self.trip.get("cause") == "thermal-critical":
                raw["thermal-critical"] = vals  # not cool enough to reset yet

        lost_protect = {k: v for k, v in lost.items() if k in self.protect}
        if p["trip_on_input_loss"]:
            if lost_protect:
                raw["input-loss"] = {"lost": lost_protect}
            if self.loss_timer.update(bool(lost_protect), now):
                tripping["input-loss"] = {"lost": lost_protect}

        # authorised reset: refused while a cause persists or cannot be verified
        if self.reset_cmd.fired(snap) and self.latched:
            if raw or lost_protect:
                why = sorted(raw) + [f"{k} {v}" for k, v in sorted(lost_protect.items())]
                self.refused = {"time_utc": iso_utc(wall_utc(snap, now, (self.reset_point,))),
                                "persisting": why}
            else:
                self.latched = False
                self.trip = {}
                self.refused = {}
                self.resets += 1
                self.oc_acc = 0.0

        inhibited = self._inhibited(snap, lost)
        if tripping and not self.latched:
            if inhibited:
                res.alarms.append(AlarmCondition(
                    "inhibited", Severity.MAJOR, "BG-TRIP-INHIBITED",
                    f"{p['breaker']}: trip condition {', '.join(sorted(tripping))} held off by "
                    f"{inhibited}", device=p["breaker"],
                    values={"causes": sorted(tripping), "by": inhibited}))
            else:
                self._latch(snap, now, tripping)

        if self.latched:
            cause = self.trip["cause"]
            res.alarms.append(AlarmCondition(
                "trip", Severity.CRITICAL, self.trip["code"],
                f"breaker-trip: {p['breaker']} shunt trip latched: "
                f"{CAUSES.get(cause, ('', cause))[1]}; reset "
                f"with {self.reset_point}", device=p["breaker"], values=dict(self.trip)))
            if self.refused:
                res.alarms.append(AlarmCondition(
                    "reset-refused", Severity.WARNING, "BG-RESET-REFUSED",
                    f"{p['breaker']}: reset refused, still present: "
                    f"{', '.join(self.refused['persisting'])}", device=p["breaker"],
                    values=dict(self.refused)))
        what = ("trip on input loss armed" if p["trip_on_input_loss"] else
                "left out of the trip decision, no trip because of the loss")
        self._add(res, self.input_watch.alarm(lost, now, what, device=p["breaker"]))
        res.outputs[self.out] = 1.0 if self.latched else 0.0
        return res

    def _inhibited(self, snap: Snapshot, lost: dict[str, str]) -> str:
        p = self.p
        if p["inhibit"] and p["inhibit"] not in lost and snap.value(p["inhibit"]) != 0:
            return f"inhibit {p['inhibit']}"
        if p["permissive"] and p["permissive"] not in lost and snap.value(p["permissive"]) == 0:
            return f"permissive {p['permissive']} off"
        return ""

    def _latch(self, snap: Snapshot, now: float, tripping: dict[str, dict[str, Any]]) -> None:
        cause = next(c for c in CAUSES if c in tripping)
        t = wall_utc(snap, now, self.protect)
        self.latched = True
        self.trips += 1
        self.refused = {}
        self.trip = {"cause": cause, "code": CAUSES[cause][0], "breaker": self.p["breaker"],
                     "time_utc": iso_utc(t), "t_utc": rnd(t, 3), "values": tripping[cause],
                     "causes": sorted(tripping)}

    # -- retained state ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"latched": self.latched, "trip": dict(self.trip), "trips": self.trips,
                "resets": self.resets}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.latched = bool(state.get("latched", False))
        trip = dict(state.get("trip") or {})
        trip.setdefault("cause", "restored")
        trip.setdefault("code", "BG-TRIP")
        self.trip = trip
        self.trips = int(state.get("trips", 0))
        self.resets = int(state.get("resets", 0))
