"""The physical model of a simulated busway: a pure function of (seed, scenario, t).

Nothing here keeps time or state that depends on the order of calls: ``SiteModel.meter(i, t)``
gives the same numbers for the same arguments, at any speed, in any order. That is what makes
the model testable without sockets and scenario runs reproducible.

- Rack load (fraction of the tap-off rating): a per-rack base, a slow swing and smooth value
  noise; scenarios add GPU training ramps, checkpoint dips and overloads.
- Three phases with a fixed per-rack imbalance; voltage sags with load; neutral current from
  imbalance plus triplen harmonics. Per phase P = V * I * PF, S = V * I, Q = sqrt(S^2 - P^2)
  (GPU power supplies with PFC: lagging, quadrant 1); totals are the sums of the phases.
- Energies integrate the active and reactive power over model time (trapezoids on a fixed
  grid from t = 0, cached as running sums: the same floats whatever the order of the calls).
- THD rises with the GPU PSU share of the load (switch-mode supplies); thd-rise adds a drift.
- Busbar / tap-off temperature: first-order thermal inertia, computed as the exact discrete
  convolution of the I^2 R heat input with the exponential kernel over the last 6 time
  constants (so still a pure function of t, not an integrator with state).
- Breakers open on overcurrent (LED solid), ground fault (LED 2-blink) or a shunt-trip command
  (an external event given to the model with its time); an open breaker's rack carries no load.
- Cooling: demand set points the BMS received (external events with their times) take heat
  away from every probe's point, with the same thermal inertia.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from busguard.modbus.codec import quadrant_of
from busguard.northbound.mapdef import METER_MEASURED
from busguard.sim.scenarios import NO_FAULTS, SCENARIOS, CommFaults, Scenario

V_LL_NOMINAL = 480.0  # a site that does not say ([site] nominal_voltage_ll_v)
F_NOMINAL = 60.0  # ([site] nominal_hz)
T_AMBIENT_C = 26.0
KERNEL_SAMPLES = 72
KERNEL_SPAN_TAU = 6.0
COOLING_EFFECT = 0.2  # full cooling demand takes away 20% of a full-load heat input

LED_OFF, LED_SOLID, LED_TWO_BLINK = 0, 1, 2

# what a simulated meter measures: the map's standard meter quantities less link health and
# what busguard computes itself (demand, neutral_measured): one list, in mapdef
METER_QUANTITIES = METER_MEASURED
ENERGY_STEP_S = 5.0  # integration grid of the energy counters
ENERGY_CHECKPOINT_STEPS = 64  # running sums kept every 64 steps (320 s) for earlier times


def _mix(x: int) -> int:
    """splitmix64 finaliser: a good 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def uniform(seed: int, channel: int, k: int) -> float:
    """A deterministic pseudo-random number in [-1, 1) for (seed, channel, k)."""
    h = _mix((seed * 0x100000001B3) ^ _mix((channel << 32) ^ (k & 0xFFFFFFFF)))
    return (h >> 11) * (2.0 / 9007199254740992.0) - 1.0


def value_noise(seed: int, channel: int, x: float) -> float:
    """Smooth noise in [-1, 1]: random values at integers, smoothstep in between."""
    k = math.floor(x)
    f = x - k
    a, b = uniform(seed, channel, k), uniform(seed, channel, k + 1)
    return a + (b - a) * f * f * (3.0 - 2.0 * f)


def channel_of(*parts: object) -> int:
    """A stable channel number for a name (crc32, not hash(): the same in every process)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


@dataclass(frozen=True)
class MeterSpec:
    name: str
    rated_a: float = 400.0
    bus: str = "tcp"  # "tcp" or "rtu": rs485-noise hits the RTU ones


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    meter: int  # the index of the rack/tap-off whose current heats this point
    rise_c: float = 48.0  # temperature rise at full rated load
    tau_s: float = 60.0  # thermal time constant


@dataclass(frozen=True)
class BreakerSpec:
    name: str
    meter: int  # the rack/tap-off this breaker feeds


@dataclass(frozen=True)
class BreakerState:
    closed: bool
    led: int  # LED_OFF, LED_SOLID (overcurrent) or LED_TWO_BLINK (ground fault)
    cause: str = ""  # "", "overcurrent", "ground-fault", "shunt-trip"
    since_s: float = math.inf


@dataclass
class SiteModel:
    """The model of one site. ``shunt_trips`` are external events: breaker index -> model time."""

    meters: Sequence[MeterSpec]
    probes: Sequence[ProbeSpec] = ()
    breakers: Sequence[BreakerSpec] = ()
    scenario: Scenario = SCENARIOS["normal"]
    seed: int = 1
    faults: CommFaults = NO_FAULTS  # added to the scenario's faults (the CLI knobs)
    fault_meters: frozenset[str] | None = None  # meters the knobs apply to (None: all)
    shunt_trips: dict[int, float] = field(default_factory=dict)
    cooling: list[tuple[float, float]] = field(default_factory=list)  # (t, demand %) set points
    v_ll_nominal: float = V_LL_NOMINAL  # the site's nominals: the meters read around them
    f_nominal: float = F_NOMINAL

    def __post_init__(self) -> None:
        s, n = self.seed, max(1, len(self.meters))
        self.v_ln = self.v_ll_nominal / math.sqrt(3.0)
        self._base = [0.38 + 0.22 * (0.5 + 0.5 * uniform(s, 11, i)) for i in range(n)]
        self._gpu = [0.70 + 0.25 * (0.5 + 0.5 * uniform(s, 12, i)) for i in range(n)]
        self._phase = [0.5 + 0.5 * uniform(s, 13, i) for i in range(n)]
        self._imb = [(0.025 * uniform(s, 14, i), 0.025 * uniform(s, 15, i)) for i in range(n)]
        self._energy0 = [50_000.0 + 150_000.0 * (0.5 + 0.5 * uniform(s, 16, i))
                         for i in range(n)]
        self._ch = [channel_of(m.name) for m in self.meters]
        # energy running sums per meter: checkpoints {step: (p_wh, q_imp_varh, q_exp_varh,
        # p_exp_wh)} and the frontier (last step summed), cleared when the events change
        self._e_key: object = None
        self._e_check: list[dict[int, tuple[float, float, float, float]]] = []
        self._e_front: list[tuple[int, tuple[float, float, float, float]]] = []

    # -- indexes a scenario names, wrapped to the site's size -------------------------------
    def _nth(self, idx: int | None, count: int) -> int | None:
        return None if idx is None or count == 0 else idx % count

    def breaker_of_meter(self, m: int) -> int | None:
        for b, spec in enumerate(self.breakers):
            if spec.meter == m:
                return b
        return None

    # -- load -------------------------------------------------------------------------------
    def demand(self, m: int, t: float) -> float:
        """What rack ``m`` asks for (fraction of its rating), whether or not its breaker holds."""
        sc = self.scenario
        base = self._base[m]
        swing = 0.06 * math.sin(2 * math.pi * (t / 900.0 + self._phase[m]))
        noise = 0.03 * value_noise(self.seed, self._ch[m], t / 4.0)
        load = base + swing + noise
        ts = sc.training_start_s
        if ts is not None and t >= ts:
            dt = t - ts
            ramp = min(1.0, dt / 2.0)
            target = sc.training_level + 0.04 * uniform(self.seed, 17, m)
            load += ramp * (target - base) * self._gpu[m] / 0.85
            if dt < 0.6:
                load += 0.12  # inrush of thousands of PSUs at once
            if dt > sc.checkpoint_len_s and (dt % sc.checkpoint_every_s) < sc.checkpoint_len_s:
                load *= 0.65  # checkpoint: GPUs wait on storage
            ob = self._nth(sc.overload_breaker, len(self.breakers))
            if ob is not None and self.breakers[ob].meter == m and dt >= 2.0:
                load = sc.overload_level + 0.02 * noise
        cb = self._nth(sc.cyclic_breaker, len(self.breakers))
        if cb is not None and self.breakers[cb].meter == m and t >= sc.cyclic_start_s:
            phase = (t - sc.cyclic_start_s) % (sc.cyclic_high_s + sc.cyclic_low_s)
            load = (sc.cyclic_high if phase < sc.cyclic_high_s else sc.cyclic_low) + \
                0.01 * noise
        return max(0.0, load)

    def load(self, m: int, t: float) -> float:
        """The load rack ``m`` carries: its demand while its breaker is closed, else 0."""
        b = self.breaker_of_meter(m)
        if b is not None and not self.breaker(b, t).closed:
            return 0.0
        return self.demand(m, t)

    # -- breakers ---------------------------------------------------------------------------
    def breaker(self, b: int, t: float) -> BreakerState:
        sc = self.scenario
        events: list[tuple[float, str, int]] = []
        if self._nth(sc.overload_breaker, len(self.breakers)) == b and \
                sc.training_start_s is not None:
            events.append((sc.training_start_s + 2.0 + sc.overcurrent_delay_s, "overcurrent",
                           LED_SOLID))
        if self._nth(sc.ground_fault_breaker, len(self.breakers)) == b:
            events.append((sc.ground_fault_s + sc.ground_fault_trip_delay_s, "ground-fault",
                           LED_TWO_BLINK))
        if b in self.shunt_trips:
            events.append((self.shunt_trips[b], "shunt-trip", LED_OFF))
        past = sorted(e for e in events if e[0] <= t)
        if not past:
            return BreakerState(True, LED_OFF)
        when, cause, led = past[0]
        return BreakerState(False, led, cause, when)

    # -- meters -----------------------------------------------------------------------------
    def thd_add(self, t: float) -> tuple[float, float]:
        sc = self.scenario
        if sc.thd_rise_start_s is None or t <= sc.thd_rise_start_s:
            return 0.0, 0.0
        span = max(1e-9, sc.thd_rise_end_s - sc.thd_rise_start_s)
        r = min(1.0, (t - sc.thd_rise_start_s) / span)
        return r * sc.thd_v_add_pct, r * sc.thd_i_add_pct

    def _electrical(self, m: int, t: float) -> dict[str, float]:
        """Every instantaneous quantity of meter ``m`` at ``t`` (no energy counters)."""
        spec, s, ch = self.meters[m], self.seed, self._ch[m]
        load = self.load(m, t)
        gpu = self._gpu[m]
        add_v, add_i = self.thd_add(t)
        n = value_noise
        v = [self.v_ln * (1.0 - 0.018 * load) + 0.7 * n(s, ch + p, t / 2.0)
             for p in (1, 2, 3)]
        d1, d2 = self._imb[m]
        imb = (1.0 + d1, 1.0 + d2, 1.0 - d1 - d2)
        i_ph = [load * spec.rated_a * k * (1.0 + 0.004 * n(s, ch + 10 + p, t)) for p, k in
                enumerate(imb)]
        on = 1.0 if load > 0 else 0.0
        thd_v = [max(0.3, 1.0 + 2.6 * load * gpu + add_v + 0.12 * n(s, ch + 20 + p, t / 3.0))
                 for p in range(3)]
        thd_i = [on * max(0.5, 3.0 + 14.0 * load * gpu + add_i + 0.4 * n(s, ch + 30 + p, t / 3.0))
                 for p in range(3)]
        pf_ph = [on * max(0.80, min(1.0, 0.988 - 0.0012 * thd_i[p] + 0.002 * d))
                 for p, d in enumerate((d1, d2, -d1 - d2))]
        s_ph = [vv * ii for vv, ii in zip(v, i_ph, strict=True)]  # VA
        p_ph = [sa * pf for sa, pf in zip(s_ph, pf_ph, strict=True)]  # W
        q_ph = [math.sqrt(max(0.0, sa * sa - pa * pa)) for sa, pa in zip(s_ph, p_ph, strict=True)]
        va, w, var = sum(s_ph), sum(p_ph), sum(q_ph)
        ll = [math.sqrt(a * a + b * b + a * b) for a, b in ((v[0], v[1]), (v[1], v[2]),
                                                           (v[2], v[0]))]
        i_n = load * spec.rated_a * (math.hypot(d1, d2) + 0.004 * sum(thd_i))
        residual = on * (6.0 + 14.0 * load + 1.5 * n(s, ch + 40, t / 5.0))
        gb = self._nth(self.scenario.ground_fault_breaker, len(self.breakers))
        if gb is not None and self.breakers[gb].meter == m and t >= self.scenario.ground_fault_s:
            residual = on * self.scenario.ground_fault_ma
        out = {
            "voltage_l1_n_v": v[0], "voltage_l2_n_v": v[1], "voltage_l3_n_v": v[2],
            "voltage_l1_l2_v": ll[0], "voltage_l2_l3_v": ll[1], "voltage_l3_l1_v": ll[2],
            "current_l1_a": i_ph[0], "current_l2_a": i_ph[1], "current_l3_a": i_ph[2],
            "current_n_a": i_n, "power_kw": w / 1000.0, "apparent_power_kva": va / 1000.0,
            "power_factor": w / va if va > 0 else 0.0,
            "frequency_hz": self.f_nominal + 0.015 * n(s, ch + 50, t / 2.0),
            "thd_v_l1_pct": thd_v[0], "thd_v_l2_pct": thd_v[1], "thd_v_l3_pct": thd_v[2],
            "thd_i_l1_pct": thd_i[0], "thd_i_l2_pct": thd_i[1], "thd_i_l3_pct": thd_i[2],
            "temp_c": 29.0 + 11.0 * load + 0.3 * n(s, ch + 60, t / 7.0),
            "residual_current_ma": max(0.0, residual),
            "reactive_power_kvar": var / 1000.0,
            "power_factor_quadrant": float(quadrant_of(w, var)),
        }
        for k in range(3):
            ph = k + 1
            out[f"power_l{ph}_kw"] = p_ph[k] / 1000.0
            out[f"reactive_power_l{ph}_kvar"] = q_ph[k] / 1000.0
            out[f"apparent_power_l{ph}_kva"] = s_ph[k] / 1000.0
            out[f"power_factor_l{ph}"] = pf_ph[k]
        return out

    def _power(self, m: int, t: float) -> tuple[float, float, float, float]:
        """(active import W, reactive import var, reactive export var, active export W)."""
        e = self._electrical(m, t)
        w, var = e["power_kw"] * 1000.0, e["reactive_power_kvar"] * 1000.0
        return max(0.0, w), max(0.0, var), max(0.0, -var), max(0.0, -w)

    def energy(self, m: int, t: float) -> tuple[float, float, float, float]:
        """Energy since t = 0: (import Wh, import varh, export varh, export Wh), the
        trapezoid integral of the powers on an ENERGY_STEP_S grid (the last part step to
        ``t`` included). Cached running sums: calls in time order cost one step each."""
        key = tuple(sorted(self.shunt_trips.items()))
        if key != self._e_key or len(self._e_check) != len(self.meters):
            self._e_key = key
            zero = (0.0, 0.0, 0.0, 0.0)
            self._e_check = [{0: zero} for _ in self.meters]
            self._e_front = [(0, zero) for _ in self.meters]
        t = max(0.0, t)
        h = ENERGY_STEP_S
        target = int(t // h)
        k, acc = self._e_front[m]
        if k > target:  # earlier than the frontier: from the last checkpoint before it
            k = target - target % ENERGY_CHECKPOINT_STEPS
            acc = self._e_check[m][k]
        prev = self._power(m, k * h)
        while k < target:
            nxt = self._power(m, (k + 1) * h)
            acc = tuple(a + (p0 + p1) * h / 7200.0 for a, p0, p1 in
                        zip(acc, prev, nxt, strict=True))  # type: ignore[assignment]
            k += 1
            prev = nxt
            if k % ENERGY_CHECKPOINT_STEPS == 0:
                self._e_check[m][k] = acc
        if k >= self._e_front[m][0]:
            self._e_front[m] = (k, acc)
        rest = t - k * h
        if rest <= 0:
            return acc
        last = self._power(m, t)
        return tuple(a + (p0 + p1) * rest / 7200.0  # type: ignore[return-value]
                     for a, p0, p1 in zip(acc, prev, last, strict=True))

    def meter(self, m: int, t: float) -> dict[str, float]:
        """Every generic power-quality quantity of meter ``m`` at model time ``t``."""
        out = self._electrical(m, t)
        imp_wh, imp_varh, exp_varh, exp_wh = self.energy(m, t)
        imp_wh += self._energy0[m] * 1000.0
        out.update({"energy_import_wh": imp_wh, "energy_export_wh": exp_wh,
                    "energy_import_varh": imp_varh, "energy_export_varh": exp_varh,
                    "energy_kwh": imp_wh / 1000.0})
        return out

    # -- probes -----------------------------------------------------------------------------
    def joint_factor(self, p: int, t: float) -> float:
        """How much hotter than normal a joint runs (1 = healthy; grows in thermal-runaway)."""
        sc = self.scenario
        if self._nth(sc.runaway_probe, len(self.probes)) != p or t <= sc.runaway_start_s:
            return 1.0
        x = (t - sc.runaway_start_s) / sc.runaway_time_s
        return 1.0 + sc.runaway_factor * (1.0 - math.exp(-x))

    def set_cooling(self, t: float, pct: float) -> None:
        """The BMS got a new cooling demand at model time ``t`` (events arrive in time order).
        Events older than the thermal kernel's span are folded into one (bounded memory)."""
        self.cooling.append((t, pct))
        horizon = t - KERNEL_SPAN_TAU * max((p.tau_s for p in self.probes), default=60.0) - 1
        old = [e for e in self.cooling if e[0] < horizon]
        if len(old) > 1:
            self.cooling[:] = [(horizon, old[-1][1])] + [e for e in self.cooling
                                                         if e[0] >= horizon]

    def cooling_pct(self, t: float) -> float:
        """The cooling demand the BMS was given last before ``t`` (0 before any)."""
        pct = 0.0
        for when, value in self.cooling:
            if when > t:
                break
            pct = value
        return pct

    def heat(self, p: int, t: float) -> float:
        """Net heat of probe ``p``'s point, in units of its full-load I^2 R: the rack's I^2 R
        (times a loose joint's factor) less what the cooling takes away."""
        spec = self.probes[p]
        load = self.load(spec.meter % len(self.meters), t) if self.meters else 0.0
        cool = COOLING_EFFECT * max(0.0, min(100.0, self.cooling_pct(t))) / 100.0
        return load * load * self.joint_factor(p, t) - cool

    def probe(self, p: int, t: float) -> float:
        """Temperature (C) with first-order thermal inertia: T = T_amb + rise * (k * heat)(t),
        k the normalised exponential kernel of time constant tau, sampled on a fixed grid
        backwards from t."""
        spec = self.probes[p]
        dt = KERNEL_SPAN_TAU * spec.tau_s / KERNEL_SAMPLES
        a = math.exp(-dt / spec.tau_s)
        acc = wsum = 0.0
        w = 1.0
        for k in range(KERNEL_SAMPLES):
            acc += w * self.heat(p, t - k * dt)
            wsum += w
            w *= a
        offset = 1.5 * uniform(self.seed, 21, p)
        noise = 0.08 * value_noise(self.seed, channel_of("probe", spec.name), t / 3.0)
        return T_AMBIENT_C + offset + spec.rise_c * acc / wsum + noise

    # -- comm faults ------------------------------------------------------------------------
    def comm_faults(self, m: int, t: float) -> CommFaults:
        sc, n = self.scenario, len(self.meters)
        f = self.faults if self.fault_meters is None or \
            self.meters[m].name in self.fault_meters else NO_FAULTS
        if self._nth(sc.comm_loss_meter, n) == m and sc.comm_loss_start_s <= t < sc.comm_loss_end_s:
            f = f + CommFaults(drop_pct=100.0)
        if self._nth(sc.slow_meter, n) == m and t >= sc.comm_loss_start_s:
            f = f + CommFaults(latency_ms=sc.slow_latency_ms)
        if sc.rs485_noise_start_s is not None and t >= sc.rs485_noise_start_s and \
                self.meters[m].bus == "rtu":
            f = f + CommFaults(drop_pct=sc.rs485_drop_pct, garbage_pct=sc.rs485_garbage_pct)
        return f

    def snapshot(self, t: float) -> Mapping[str, float]:
        """Every value of the site at ``t`` by point name (``{device}.{quantity}``)."""
        out: dict[str, float] = {}
        for i, spec in enumerate(self.meters):
            out.update({f"{spec.name}.{k}": v for k, v in self.meter(i, t).items()})
        for i, spec in enumerate(self.probes):
            out[f"{spec.name}.temp_c"] = self.probe(i, t)
        for i, spec in enumerate(self.breakers):
            out[f"{spec.name}.led"] = float(self.breaker(i, t).led)
        return out

