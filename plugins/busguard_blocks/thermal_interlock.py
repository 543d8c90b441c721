"""Thermal interlock: busbar and tap-off temperatures against warn / alarm / trip levels.

Protects busbar joints and tap-off units from overheating (poor joint torque heats locally and
fails catastrophically). Levels with hysteresis (warning, major, and Thermal-Critical 0xCF at
the trip level, default 90 C as the seed), a rate-of-rise alarm in C/min, disagreement between
redundant probes (on the same joint: one interlock per joint), and a time-to-trip estimate from
a first-order thermal model (thermal
inertia): fitting the recent slope, the temperature heads for ``T_inf = T + tau * dT/dt``; if
that is above the trip level, the trip comes in ``tau * ln((T_inf - T) / (T_inf - T_trip))``.
Operators see a trip coming minutes ahead, as ``{block}.time_to_trip_s`` and in the alarms.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult, BreakerStatus, BreakerView
from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import Snapshot
from busguard.inputwatch import input_code, lost_inputs
from busguard_blocks._common import check_order, rnd, wall_utc

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

LEVELS = (("warn", Severity.WARNING, "BG-TEMP-WARN"), ("alarm", Severity.MAJOR, "BG-TEMP-ALARM"),
          ("trip", Severity.CRITICAL, "0xCF"))
NO_ESTIMATE = -1.0


def time_to_trip_s(temp: float, slope_c_per_s: float, trip_c: float, tau_s: float) -> float:
    """First-order estimate of seconds until ``trip_c`` (0 at or above it, -1 if never)."""
    if temp >= trip_c:
        return 0.0
    if slope_c_per_s <= 0:
        return NO_ESTIMATE
    t_inf = temp + tau_s * slope_c_per_s
    if t_inf <= trip_c:
        return NO_ESTIMATE
    return tau_s * math.log((t_inf - temp) / (t_inf - trip_c))


def slope(samples: deque[tuple[float, float]]) -> float:
    """Least-squares slope (C/s) of (time, temperature) samples."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den <= 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / den


class ThermalInterlock(Block):
    """Thermal levels, rate of rise, probe disagreement and time to trip (see the module)."""

    type_name = "thermal_interlock"
    failsafe_policy: ClassVar[str] = (
        "Judges the hottest good probe. A stale, bad or missing probe raises BG-INPUT and is "
        "left out; with no good probe left, `on_input_loss = \"hold\"` (default) keeps the "
        "last level and output (a trip never clears because the sensor went quiet), \"trip\" "
        "drives the trip output to 1. Time to trip reads -1 (no estimate) without good data. "
        "If the block faults the trip output is forced to `output_failsafe` (default 0).")
    codes: ClassVar[Mapping[str, str]] = {
        "BG-TEMP-WARN": "warning: hottest probe at or above warn_c",
        "BG-TEMP-ALARM": "major: hottest probe at or above alarm_c",
        "0xCF": "critical: Thermal-Critical (0xCF), hottest probe at or above trip_c",
        "BG-TEMP-RATE": "major: temperature rising faster than rate_alarm_c_per_min",
        "BG-TEMP-TTT": "major: estimated time to trip below ttt_alarm_s (values: "
                       "time_to_trip_s)",
        "BG-PROBE-DISAGREE": "minor: redundant probes differ by more than disagreement_c",
        **input_code("a probe"),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "probes": Param(list, item=str, ref="probe", min_items=1,
                        doc="probes on the same busbar section (redundant probes compared)"),
        "warn_c": Param(float, default=70.0, minval=0.0, maxval=200.0, unit="C",
                        doc="warning level"),
        "alarm_c": Param(float, default=80.0, minval=0.0, maxval=200.0, unit="C",
                         doc="alarm (major) level"),
        "trip_c": Param(float, default=90.0, minval=0.0, maxval=200.0, unit="C",
                        doc="Thermal-Critical (0xCF) level, seed: 90 C"),
        "hysteresis_c": Param(float, default=2.0, minval=0.0, maxval=20.0, unit="C",
                              doc="a level clears once below it by this much"),
        "rate_alarm_c_per_min": Param(float, default=5.0, minval=0.0, unit="C/min",
                                      doc="rate-of-rise alarm; 0 disables"),
        "rate_window_s": Param(float, default=60.0, minval=2.0, maxval=3600.0, unit="s",
                               doc="window of the slope fit; readings are taken every 1/30 "
                                   "of it and the rate is judged from the first two"),
        "resolution_c": Param(float, default=0.0625, above=0.0, maxval=5.0, unit="C",
                              doc="probe resolution (DS18B20 12-bit: 0.0625 C): the rate's "
                                  "noise floor is this over the span of the readings"),
        "disagreement_c": Param(float, default=10.0, minval=0.0, unit="C",
                                doc="redundant probes further apart alarm; 0 disables"),
        "tau_s": Param(float, default=900.0, above=0.0, unit="s",
                       doc="thermal time constant of the busbar (thermal inertia)"),
        "ttt_alarm_s": Param(float, default=600.0, minval=0.0, unit="s",
                             doc="alarm when the estimated time to trip is below this; 0 "
                                 "disables"),
        "output": Param(str, default="",
                        doc="optional output set to 1 at the trip level (e.g. relay.critical)"),
        "output_failsafe": Param(float, default=0.0, doc="trip output value on block fault"),
        "breaker": Param(str, default="", ref="breaker",
                         doc="optional: the breaker whose shunt trip `output` drives; the "
                             "register map then shows its trip cause 0xCF and the trip's "
                             "UTC time while the output trips (needs `output`)"),
        "latch_trip_alarm": Param(bool, default=True,
                                  doc="the 0xCF alarm stays until acknowledged (cmd.ack_alarms), "
                                      "even once the busbar has cooled"),
        "on_input_loss": Param(str, default="hold", choices=("hold", "trip"),
                               doc="with no good probe left: hold the last level, or trip"),
    }

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        check_order(config, "warn_c", "alarm_c", "trip_c")
        if config.params["breaker"] and not config.params["output"]:
            raise ConfigError([ConfigProblem(
                config.file, f"{config.path}.breaker", "a breaker needs `output`: the point "
                "that drives its shunt trip (e.g. a relay's output)")])
        return super().from_config(config, site)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        p = self.p
        self.temps = tuple(f"{pr}.temp_c" for pr in p["probes"])
        self.ttt_out = f"{name}.time_to_trip_s"
        self.level = 0  # 0 normal, 1 warn, 2 alarm, 3 trip
        self.rate_active = False
        self.disagree = False
        self.samples: deque[tuple[float, float]] = deque()
        self.sample_every = p["rate_window_s"] / 30.0
        self.out = float(p["output_failsafe"])
        self.trip_utc: float | None = None  # UTC time the trip level was reached

    def inputs(self) -> tuple[str, ...]:
        return self.temps

    def outputs(self) -> Mapping[str, float]:
        outs = {self.ttt_out: NO_ESTIMATE}
        if self.p["output"]:
            outs[self.p["output"]] = float(self.p["output_failsafe"])
        return outs

    def _slope(self, now: float) -> float:
        """The rise rate (C/s): the smaller of the whole window's fit and its recent half's,
        so a temperature that has turned down (a trip, a load drop) stops counting as rising
        at once instead of after the window has slid past the peak."""
        full = slope(self.samples)
        half = now - self.p["rate_window_s"] / 2
        recent: deque[tuple[float, float]] = deque(x for x in self.samples if x[0] >= half)
        return min(full, slope(recent)) if len(recent) >= 3 else full

    def _level_of(self, t: float) -> int:
        p = self.p
        limits = (p["warn_c"], p["alarm_c"], p["trip_c"])
        up = sum(1 for lim in limits if t >= lim)
        if up >= self.level:
            return up
        # going down: each level clears only once below its limit by the hysteresis
        level = self.level
        while level > up and t < limits[level - 1] - p["hysteresis_c"]:
            level -= 1
        return level

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        res = self.begin_scan(now)
        lost = lost_inputs(inputs, self.temps)
        good = {x: inputs.values[inputs.index[x]] for x in self.temps if x not in lost}
        ttt = NO_ESTIMATE
        if good:
            hot_point, hot = max(good.items(), key=lambda kv: kv[1])
            device = hot_point.rsplit(".", 1)[0]
            self.level = self._level_of(hot)
            if not self.samples or now - self.samples[-1][0] >= self.sample_every:
                self.samples.append((now, hot))
            while self.samples and now - self.samples[0][0] > p["rate_window_s"]:
                self.samples.popleft()
            # the rate from the first two readings on; what it can tell apart from the
            # probe's quantisation shrinks as the span grows (noise floor in C/min)
            span = self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0
            rate_ok = len(self.samples) >= 2 and span > 0.0
            noise_min = 60.0 * p["resolution_c"] / span if rate_ok else math.inf
            s = self._slope(now) if rate_ok else 0.0
            rate_min = s * 60.0
            if rate_ok and rate_min > noise_min:
                ttt = time_to_trip_s(hot, s, p["trip_c"], p["tau_s"])
            if p["rate_alarm_c_per_min"] > 0 and rate_ok:
                lim = p["rate_alarm_c_per_min"]
                self.rate_active = rate_min - noise_min >= (lim * 0.8 if self.rate_active
                                                            else lim)
            elif not rate_ok:
                self.rate_active = False
            if len(good) >= 2 and p["disagreement_c"] > 0:
                spread = max(good.values()) - min(good.values())
                lim = p["disagreement_c"]
                self.disagree = spread > (lim - 1.0 if self.disagree else lim)
                if self.disagree:
                    res.alarms.append(AlarmCondition(
                        "disagree", Severity.MINOR, "BG-PROBE-DISAGREE",
                        f"probes disagree by {spread:.1f} C (limit {lim:g} C)", device=device,
                        values={"temps_c": {k: rnd(v, 2) for k, v in good.items()},
                                "spread_c": rnd(spread, 2)}))
            else:
                self.disagree = False
            values = {"temp_c": rnd(hot, 2), "probe": hot_point,
                      "rate_c_per_min": rnd(rate_min, 2),
                      "rate_noise_c_per_min": rnd(noise_min, 2), "time_to_trip_s": rnd(ttt, 1)}
            if self.rate_active:
                res.alarms.append(AlarmCondition(
                    "rate", Severity.MAJOR, "BG-TEMP-RATE",
                    f"{hot_point} rising {rate_min:.1f} C/min (limit "
                    f"{p['rate_alarm_c_per_min']:g} C/min)", device=device, values=values))
            if 0 < ttt < p["ttt_alarm_s"] and self.level < 3:
                res.alarms.append(AlarmCondition(
                    "ttt", Severity.MAJOR, "BG-TEMP-TTT",
                    f"{hot_point} at {hot:.1f} C heading for {p['trip_c']:g} C in about "
                    f"{ttt / 60:.1f} min", device=device, values=values))
            self._level_alarm(res, hot_point, hot, values)
            self.out = 1.0 if self.level >= 3 else 0.0
            if self.level < 3:
                self.trip_utc = None
            elif self.trip_utc is None:
                t = wall_utc(inputs, now, (hot_point,))
                self.trip_utc = t if math.isfinite(t) else None
        else:
            self.samples.clear()
            self.rate_active = self.disagree = False
            if p["on_input_loss"] == "trip":
                self.level, self.out = 3, 1.0
            if self.level:
                self._level_alarm(res, "", math.nan, {"held": True})
        what = ("no probe left: " + ("levels held" if p["on_input_loss"] == "hold" else
                                     "trip on input loss")) if not good else \
            "judged on the remaining probes"
        res.add(self.input_watch.alarm(lost, now, what))
        res.outputs[self.ttt_out] = ttt
        if p["output"]:
            res.outputs[p["output"]] = self.out
        return res

    def _level_alarm(self, res: BlockResult, point: str, temp: float,
                     values: dict[str, Any]) -> None:
        if not self.level:
            return
        word, sev, code = LEVELS[self.level - 1]
        lim = self.p[f"{word}_c"]
        where = f"{point} at {temp:.1f} C" if point else "probes lost, level held"
        text = (f"Thermal-Critical (0xCF): {where}, trip level {lim:g} C" if self.level == 3
                else f"{where}, {word} level {lim:g} C")
        res.alarms.append(AlarmCondition(  # one key per level: escalation is a new edge
            word, sev, code, text, device=point.rsplit(".", 1)[0] if point else self.name,
            values={**values, "level": word, "limit_c": lim},
            latch=self.level == 3 and self.p["latch_trip_alarm"]))

    def map_breakers(self) -> tuple[BreakerView, ...]:
        if not self.p["breaker"]:
            return ()
        return (BreakerView(self.p["breaker"], self.p["output"]),)

    def breakers(self) -> Mapping[str, BreakerStatus]:
        """While the trip level holds, the breaker's trip cause is 0xCF (Thermal-Critical);
        the trip follows the temperature (no latch of its own: the 0xCF alarm latches)."""
        if not self.p["breaker"]:
            return {}
        tripping = self.level >= 3 and self.out >= 0.5
        return {self.p["breaker"]: BreakerStatus(False, "0xCF" if tripping else "",
                                                 self.trip_utc if tripping else None)}

    def state(self) -> dict[str, Any]:
        return {"level": self.level, "trip_utc": self.trip_utc}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.level = int(state.get("level", 0))
        self.out = 1.0 if self.level >= 3 else self.out
        t = state.get("trip_utc")
        self.trip_utc = float(t) if isinstance(t, (int, float)) and self.level >= 3 else None
