"""Shunt-trip interlock: opens a busway tap-off breaker through its shunt-trip coil.

Protects the busway and the racks behind one breaker against overcurrent (current above a
pickup along an IEC 60255-151 / IEEE C37.112 curve or a definite time, integrated with the
standards' reset characteristic so a cycling load is not forgotten: :mod:`idmt`), thermal
overload with thermal memory (IEC 60255-149 replica, optional: :mod:`thermal_image`), ground
faults (the breaker LED's 2-blink pattern, or residual current from a meter), an overcurrent
trip the breaker's own trip unit shows on its LED (solid red) and a thermal critical busbar (at
or above 90 C, the seed's Thermal-Critical 0xCF). busguard runs beside the breaker's own trip
unit, never instead of it.

A trip latches: ``{breaker}.shunt_trip`` stays 1 until an authorised reset (the DCIM changes
the counter ``{breaker}.cmd_reset``; the fault log's ``command`` line records who wrote it and
from where); the reset is refused while any trip condition persists or cannot be verified.
A ground-fault trip cannot be verified from a dead feeder (an open breaker reads 0 mA), so its
reset puts the breaker *on trial* for ``trial_s``: residual current above pickup in that time
trips again at once, without ``residual_delay_s``. Every trip records its cause, the values
that caused it and the UTC time, in the retained state and in the alarm's values (so in the
fault log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult, BreakerStatus, BreakerView
from busguard.config.params import Param
from busguard.errors import ConfigError
from busguard.image import PointSpec, Snapshot
from busguard.inputwatch import OnDelay, input_code, lost_inputs
from busguard_blocks._common import CommandCounter, check_order, iso_utc, rnd, wall_utc
from busguard_blocks.idmt import (
    CURVES,
    RESETS,
    OvercurrentIntegrator,
    operate_time_s,
    reset_constant_s,
)
from busguard_blocks.thermal_image import ThermalReplica

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

__all__ = ["CAUSES", "CURVES", "ShuntTrip", "operate_time_s"]

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
    "thermal-overload": ("BG-TRIP-THERMAL", "thermal overload (I^2t thermal replica at 100 %)"),
    "input-loss": ("BG-TRIP-INPUT-LOSS", "protection inputs lost (trip_on_input_loss)"),
}
GROUND_FAULTS = frozenset({"ground-fault-led", "ground-fault-residual"})


class ShuntTrip(Block):
    """Shunt-trip interlock for one breaker (see the module docstring)."""

    type_name = "shunt_trip"
    failsafe_policy: ClassVar[str] = (
        "Stale, bad or missing inputs raise a BG-INPUT warning and are left out of the "
        "decision; they never trip unless `trip_on_input_loss = true`, which trips once inputs "
        "have been lost for `input_loss_delay_s`. With no good current reading the "
        "overcurrent integrator and the thermal replica hold their value (neither advance nor "
        "reset). A latched trip holds through input loss. A bad permissive or inhibit input "
        "counts as 'trip allowed' (protection wins). A reset is refused while a cause persists "
        "or cannot be verified. If the block faults, `{breaker}.shunt_trip` is forced to 0 "
        "(the breaker's own trip unit still protects).")
    codes: ClassVar[Mapping[str, str]] = {
        **{code: f"critical, breaker-trip: {words}" for code, words in CAUSES.values()},
        "BG-OC-PICKUP": "major: current above pickup, trip timing (values: time_to_trip_s, "
                        "integrator_pct)",
        "BG-THERMAL-OL": "major: thermal replica at or above thermal_alarm_pct of the trip "
                         "level (values: thermal_pct, time_to_trip_s)",
        "BG-TRIP-INHIBITED": "major: a trip condition holds but the inhibit/permissive input "
                             "blocks the trip",
        "BG-RESET-REFUSED": "warning: a reset was refused because a cause persists",
        "BG-RECLOSE-TRIAL": "warning: reset after a ground-fault trip, the breaker is on trial "
                            "for trial_s (residual current above pickup trips at once)",
        "BG-LED-PATTERN": "minor: the breaker LED shows a pattern other than off/1/2",
        **input_code(),
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
                       doc="overcurrent characteristic (IEC 60255-151 / IEEE C37.112)"),
        "time_multiplier": Param(float, default=1.0, above=0.0, maxval=100.0,
                                 doc="TMS (IEC) or time dial TD (IEEE) of the curve"),
        "reset": Param(str, default="inverse", choices=RESETS,
                       doc="reset characteristic once the current is back below pickup: "
                           "inverse (IEC 60255-151 / IEEE C37.112 dependent time), definite "
                           "(held for reset_delay_s, then reset), instantaneous"),
        "reset_time_s": Param(float, default=0.0, minval=0.0, maxval=36000.0, unit="s",
                              doc="inverse reset: time of a full reset at zero current; 0: "
                                  "the curve's tr x time_multiplier (definite: delay_s)"),
        "reset_delay_s": Param(float, default=1.0, minval=0.0, maxval=3600.0, unit="s",
                               doc="definite reset: time below pickup before the element "
                                   "resets"),
        "thermal_ib_a": Param(float, default=0.0, minval=0.0, unit="A",
                              doc="thermal overload element (IEC 60255-149): basic current "
                                  "Ib, e.g. the feeder rating; 0 disables"),
        "thermal_k": Param(float, default=1.0, minval=0.5, maxval=2.0,
                           doc="k: k x Ib is the largest current that never trips"),
        "thermal_tau_s": Param(float, default=900.0, above=0.0, maxval=86400.0, unit="s",
                               doc="heating time constant of the thermal replica"),
        "thermal_cool_tau_s": Param(float, default=0.0, minval=0.0, maxval=86400.0, unit="s",
                                    doc="cooling time constant; 0: the heating one"),
        "thermal_alarm_pct": Param(float, default=80.0, minval=1.0, maxval=100.0, unit="%",
                                   doc="BG-THERMAL-OL alarm level, % of the trip level"),
        "thermal_reset_pct": Param(float, default=60.0, minval=0.0, maxval=100.0, unit="%",
                                   doc="a thermal-overload trip may be reset only below this"),
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
        "trial_s": Param(float, default=10.0, minval=0.0, maxval=3600.0, unit="s",
                         doc="after the reset of a ground-fault trip the breaker is on trial "
                             "this long: residual current above pickup trips at once; 0 "
                             "disables"),
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
        for key, what in (("pickup_a", "an overcurrent pickup"),
                          ("thermal_ib_a", "a thermal overload element")):
            if p[key] > 0 and not (p["meter"] or p["currents"]):
                problems.append(config.problem(f"{key}",
                                               f"{what} needs `meter` or `currents`"))
        if p["residual_pickup_ma"] > 0 and not (p["meter"] or p["residual_point"]):
            problems.append(config.problem("residual_pickup_ma",
                                           "a residual pickup needs `meter` or `residual_point`"))
        if problems:
            raise ConfigError(problems)
        return super().from_config(config, site)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        p = self.p
        br, meter = p["breaker"], p["meter"]
        self.out = f"{br}.shunt_trip"
        self.reset_point = f"{br}.cmd_reset"
        judged = p["pickup_a"] > 0 or p["thermal_ib_a"] > 0
        self.currents = tuple(p["currents"]) or (
            tuple(f"{meter}.current_l{n}_a" for n in (1, 2, 3)) if meter and judged else ())
        self.led = (p["led_point"] or f"{br}.led") if (
            p["overcurrent_led"] or p["ground_fault_led"]) else ""
        self.residual = (p["residual_point"] or (f"{meter}.residual_current_ma" if meter else "")
                         ) if p["residual_pickup_ma"] > 0 else ""
        self.temps = tuple(f"{pr}.temp_c" for pr in p["probes"])
        self.protect = tuple(x for x in (*self.currents, self.led, self.residual, *self.temps)
                             if x)
        self.aux = tuple(x for x in (p["permissive"], p["inhibit"]) if x)
        self.reset_cmd = CommandCounter(self.reset_point)
        self.oc = OvercurrentIntegrator(
            p["curve"], p["time_multiplier"], p["delay_s"], p["reset"], p["reset_delay_s"],
            reset_constant_s(p["curve"], p["time_multiplier"], p["delay_s"],
                             p["reset_time_s"]))
        self.thermal: ThermalReplica | None = None
        self.thermal_out = f"{name}.thermal_pct"
        if p["thermal_ib_a"] > 0:
            self.thermal = ThermalReplica(p["thermal_k"] * p["thermal_ib_a"], p["thermal_tau_s"],
                                          p["thermal_cool_tau_s"] or p["thermal_tau_s"])
        self.thermal_saved_utc: float | None = None  # restored theta waits for its cooling
        self.residual_timer = OnDelay(p["residual_delay_s"])
        self.loss_timer = OnDelay(p["input_loss_delay_s"])
        self.last_now: float | None = None
        self.last_utc = math.nan
        self.latched = False
        self.trip: dict[str, Any] = {}
        self.trips = 0
        self.resets = 0
        self.refused: dict[str, Any] = {}
        self.trial: dict[str, Any] = {}  # reclose on trial after a ground-fault reset
        self.trial_until = -math.inf

    def inputs(self) -> tuple[str, ...]:
        return (*self.protect, *self.aux)

    def outputs(self) -> Mapping[str, float]:
        outs = {self.out: 0.0}
        if self.thermal is not None:
            outs[self.thermal_out] = -1.0  # on a fault: -1, "unknown"
        return outs

    def points(self) -> list[PointSpec]:
        return [PointSpec(self.reset_point, source="command", command=True, minval=0,
                          maxval=65535, doc=f"change (e.g. increment) to reset a latched "
                                            f"shunt trip of {self.p['breaker']}")]

    def map_breakers(self) -> tuple[BreakerView, ...]:
        return (BreakerView(self.p["breaker"], self.out, self.reset_point),)

    def breakers(self) -> Mapping[str, BreakerStatus]:
        if not self.latched:
            return {self.p["breaker"]: BreakerStatus(False)}
        t = self.trip.get("t_utc")  # retained with the trip (an old file may lack it)
        return {self.p["breaker"]: BreakerStatus(
            True, str(self.trip.get("code", "")),
            float(t) if isinstance(t, (int, float)) and math.isfinite(t) else None)}

    # -- the scan ------------------------------------------------------------------------------
    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        snap = inputs
        dt = 0.0 if self.last_now is None else max(0.0, now - self.last_now)
        self.last_now = now
        res = self.begin_scan(now)
        lost = lost_inputs(snap, self.inputs())
        good = {x: snap.values[snap.index[x]] for x in self.protect if x not in lost}

        raw: dict[str, dict[str, Any]] = {}  # conditions present now, before any delay
        tripping: dict[str, dict[str, Any]] = {}  # conditions whose delay has run out

        amps = {x: good[x] for x in self.currents if x in good}
        i_max = max(amps.values()) if amps else None
        # a current not read well may be the highest: elements that would fall (reset, cool)
        # on the good phases alone hold instead (their failsafe policy)
        partial = len(amps) < len(self.currents)
        if p["pickup_a"] > 0:
            self._overcurrent(res, amps, i_max, partial, dt, raw, tripping)
        if self.thermal is not None:
            self._thermal_overload(res, snap, now, amps, i_max, partial, dt, raw, tripping)

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

        on_trial = now < self.trial_until
        if self.residual and self.residual in good:
            ma = good[self.residual]
            over = ma > p["residual_pickup_ma"]
            vals = {"residual_ma": rnd(ma), "pickup_ma": p["residual_pickup_ma"]}
            if over:
                raw["ground-fault-residual"] = vals
            if self.residual_timer.update(over, now):
                tripping["ground-fault-residual"] = vals
            elif over and on_trial:  # reclosed on trial: no delay
                tripping["ground-fault-residual"] = {**vals, "on_trial": True}
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
                self._accept_reset(snap, now)
                on_trial = now < self.trial_until

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
                on_trial = False

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
        elif on_trial:
            res.alarms.append(AlarmCondition(
                "reclose-trial", Severity.WARNING, "BG-RECLOSE-TRIAL",
                f"{p['breaker']}: reset after a ground-fault trip "
                f"({self.trial.get('reset_cause', '')}), reclosed on trial for "
                f"{p['trial_s']:g} s: residual current above pickup trips at once",
                device=p["breaker"], values=dict(self.trial)))
        elif self.trial:
            self.trial = {}
        what = ("trip on input loss armed" if p["trip_on_input_loss"] else
                "left out of the trip decision, no trip because of the loss")
        res.add(self.input_watch.alarm(lost, now, what, device=p["breaker"]))
        res.outputs[self.out] = 1.0 if self.latched else 0.0
        return res

    def _overcurrent(self, res: BlockResult, amps: dict[str, float], i_max: float | None,
                     partial: bool, dt: float, raw: dict[str, dict[str, Any]],
                     tripping: dict[str, dict[str, Any]]) -> None:
        """The inverse-time element: integrate the last interval, then judge this scan."""
        p = self.p
        oc = self.oc
        oc.advance(dt)
        m = None if i_max is None else i_max / p["pickup_a"]
        oc.observe(None if partial and (m is None or m <= 1.0) else m)
        if m is None or m <= 1.0:
            if oc.operated and not self.latched:  # operated on the interval that just ended
                tripping["overcurrent"] = {"integrator_pct": 100.0, "curve": p["curve"]}
            return
        t_op = operate_time_s(p["curve"], m, p["time_multiplier"], p["delay_s"])
        vals = {"currents_a": {k: rnd(v) for k, v in amps.items()},
                "pickup_a": p["pickup_a"], "multiple": rnd(m), "curve": p["curve"],
                "operate_s": rnd(t_op), "integrator_pct": rnd(100.0 * oc.g, 1)}
        raw["overcurrent"] = vals
        if oc.operated:
            tripping["overcurrent"] = vals
        elif not self.latched:
            ttt = max(0.0, (1.0 - oc.g) * t_op)
            res.alarms.append(AlarmCondition(
                "oc-pickup", Severity.MAJOR, "BG-OC-PICKUP",
                f"{p['breaker']}: current {i_max:.1f} A above pickup "
                f"{p['pickup_a']:g} A, trip in {ttt:.2f} s", device=p["breaker"],
                values={**vals, "time_to_trip_s": rnd(ttt, 2)}))

    def _thermal_overload(self, res: BlockResult, snap: Snapshot, now: float,
                          amps: dict[str, float], i_max: float | None, partial: bool,
                          dt: float, raw: dict[str, dict[str, Any]],
                          tripping: dict[str, dict[str, Any]]) -> None:
        """The thermal replica: cool for a restart's downtime once, integrate, judge."""
        p = self.p
        th = self.thermal
        assert th is not None
        if amps:
            self.last_utc = wall_utc(snap, now, amps)
        if self.thermal_saved_utc is not None and math.isfinite(self.last_utc):
            th.cool(self.last_utc - self.thermal_saved_utc)  # down: no current flowed
            self.thermal_saved_utc = None
        th.advance(dt)
        th.current_a = None if i_max is None or (partial and th.steady(i_max) < th.theta) \
            else i_max
        pct = 100.0 * th.theta
        res.outputs[self.thermal_out] = pct
        ttt = th.time_to_trip_s()
        vals = {"thermal_pct": rnd(pct, 1), "current_a": rnd(i_max) if i_max is not None
                else None, "k_ib_a": rnd(th.k_ib_a), "tau_s": th.tau_s,
                "time_to_trip_s": rnd(ttt, 1)}
        if th.theta >= 1.0 - 1e-9:
            raw["thermal-overload"] = tripping["thermal-overload"] = vals
        elif self.latched and self.trip.get("cause") == "thermal-overload" and \
                pct >= p["thermal_reset_pct"]:
            raw["thermal-overload"] = vals  # not cool enough to reset yet
        if pct >= p["thermal_alarm_pct"] and not self.latched:
            res.alarms.append(AlarmCondition(
                "thermal-ol", Severity.MAJOR, "BG-THERMAL-OL",
                f"{p['breaker']}: thermal replica at {pct:.0f} % of the trip level (alarm "
                f"{p['thermal_alarm_pct']:g} %)" + (f", trip in {ttt:.0f} s"
                                                    if math.isfinite(ttt) else ""),
                device=p["breaker"], values=vals))

    def _accept_reset(self, snap: Snapshot, now: float) -> None:
        """An authorised reset with no cause present: unlatch; a ground fault recloses on
        trial, because a dead feeder cannot show whether the fault is gone."""
        cause = self.trip.get("cause", "")
        t = iso_utc(wall_utc(snap, now, (self.reset_point,)))
        self.latched = False
        self.trip = {}
        self.refused = {}
        self.resets += 1
        self.oc.clear()
        if cause in GROUND_FAULTS and self.p["trial_s"] > 0:
            self.trial_until = now + self.p["trial_s"]
            self.trial = {"reset_cause": cause, "reset_utc": t, "trial_s": self.p["trial_s"],
                          "reset_point": self.reset_point}

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
        self.trial = {}
        self.trial_until = -math.inf
        self.trip = {"cause": cause, "code": CAUSES[cause][0], "breaker": self.p["breaker"],
                     "time_utc": iso_utc(t), "t_utc": rnd(t, 3), "values": tripping[cause],
                     "causes": sorted(tripping)}

    # -- retained state ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        st = {"latched": self.latched, "trip": dict(self.trip), "trips": self.trips,
              "resets": self.resets}
        if self.thermal is not None:  # thermal memory: the replica's level and its UTC time
            st["thermal"] = {"theta": self.thermal.theta,
                             "t_utc": self.last_utc if math.isfinite(self.last_utc) else None}
        return st

    def restore(self, state: Mapping[str, Any]) -> None:
        self.latched = bool(state.get("latched", False))
        trip = dict(state.get("trip") or {})
        trip.setdefault("cause", "restored")
        trip.setdefault("code", "BG-TRIP")
        self.trip = trip
        self.trips = int(state.get("trips", 0))
        self.resets = int(state.get("resets", 0))
        saved = state.get("thermal")
        if self.thermal is not None and isinstance(saved, Mapping):
            theta = float(saved.get("theta") or 0.0)
            self.thermal.theta = theta if math.isfinite(theta) and theta > 0 else 0.0
            t = saved.get("t_utc")
            # cooled at the first scan for the time the unit was down (no current then)
            self.thermal_saved_utc = float(t) if isinstance(t, (int, float)) else None
