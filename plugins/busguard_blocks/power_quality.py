"""Power-quality alarms for one busway meter.

Protects the busway and the GPU power supplies from the slow harms the seed names: voltage
harmonic distortion from GPU PSUs (THD-V above the site limit, default 5% as the seed asks; the
preset ``ieee519-2014-lv`` gives IEEE 519-2014's limits at or under 1 kV: 8% THD and 5% for any
single harmonic), current distortion as TDD against the IEEE 519-2014 table for the site's
Isc/IL ratio, continuous load above 80% of the busway's rated ampacity, line-to-line voltage
off the site's nominal (``[site] nominal_voltage_ll_v``: a warning outside +-5 %, an alarm
outside +-10 %, the IEC 60038 band; ANSI C84.1 Range B is -8.3/+5.8 % at 480 V: set the
percentages for it), phase imbalance and frequency off ``[site] nominal_hz``. The nominals are
the site's, in one place: a block that needs one of them fails ``busguard check`` without it.

Each check has an on-delay and hysteresis, so an alarm is raised once and cleared once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import Snapshot
from busguard.inputwatch import input_code, lost_inputs
from busguard_blocks._common import HighLimit, LowLimit, check_order, rnd

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

PRESETS = {"seed": {"thd_v": 5.0, "individual": 5.0},
           "ieee519-2014-lv": {"thd_v": 8.0, "individual": 5.0}}

# IEEE 519-2014 Table 2 (120 V to 69 kV): Isc/IL upper bound -> (TDD %, individual h<11 %)
IEEE519_CURRENT = ((20.0, 5.0, 4.0), (50.0, 8.0, 7.0), (100.0, 12.0, 10.0),
                   (1000.0, 15.0, 12.0), (float("inf"), 20.0, 15.0))

CHECKS = ("thd_v", "voltage", "imbalance", "frequency")
PHASES = (1, 2, 3)


def tdd_limit_pct(isc_a: float, il_a: float) -> float:
    """The TDD limit of IEEE 519-2014 Table 2 for a ratio Isc/IL."""
    ratio = isc_a / il_a
    for upper, tdd, _h in IEEE519_CURRENT:
        if ratio < upper:
            return tdd
    return IEEE519_CURRENT[-1][1]


def imbalance_pct(values: Sequence[float]) -> float:
    """NEMA unbalance: largest deviation from the average, in % of the average."""
    avg = sum(values) / len(values)
    return 0.0 if avg <= 0 else max(abs(v - avg) for v in values) / avg * 100.0


class PowerQuality(Block):
    """Power-quality checks of one meter (see the module docstring)."""

    type_name = "power_quality"
    failsafe_policy: ClassVar[str] = (
        "A stale, bad or missing input raises BG-INPUT. Checks that take the worst phase go on "
        "with the good phases; a check with no good input (and imbalance, which needs all "
        "three phases) is suspended and holds its alarm state: an alarm neither clears nor "
        "raises because the meter went quiet. The block has no outputs.")
    codes: ClassVar[Mapping[str, str]] = {
        "BG-THD-V": "major: voltage THD above thd_v_limit_pct (seed 5%, IEEE 519 LV 8%)",
        "BG-HARMONIC": "minor: an individual voltage harmonic above individual_limit_pct",
        "BG-TDD": "minor: current TDD above the IEEE 519-2014 limit for Isc/IL",
        "BG-LOAD-80": "major: continuous load above load_limit_pct of the rated ampacity",
        "BG-VOLTAGE-HIGH": "major: a line-to-line voltage above nominal + voltage_alarm_pct",
        "BG-VOLTAGE-LOW": "major: a line-to-line voltage below nominal - voltage_alarm_pct",
        "BG-VOLTAGE-HIGH-WARN": "warning: a line-to-line voltage above nominal + "
                                "voltage_warn_pct",
        "BG-VOLTAGE-LOW-WARN": "warning: a line-to-line voltage below nominal - "
                               "voltage_warn_pct",
        "BG-IMBALANCE-V": "minor: voltage unbalance above voltage_imbalance_pct",
        "BG-IMBALANCE-I": "minor: current unbalance above current_imbalance_pct",
        "BG-FREQUENCY": "major: frequency outside [site] nominal_hz +- "
                        "frequency_tolerance_hz",
        **input_code(),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "meter": Param(str, ref="meter", doc="the power-quality meter (generic profile names)"),
        "checks": Param(list, item=str, choices=CHECKS, default=CHECKS,
                        doc="checks to run; tdd, load and harmonics run when configured"),
        "preset": Param(str, default="seed", choices=tuple(PRESETS),
                        doc="THD-V limits: seed 5%, ieee519-2014-lv 8% THD / 5% individual"),
        "thd_v_limit_pct": Param(float, default=None, minval=0.1, maxval=100.0, unit="%",
                                 doc="overrides the preset's THD-V limit"),
        "harmonic_points": Param(list, item=str, ref="point", default=(),
                                 doc="individual voltage harmonic points (%), if the meter has "
                                     "them"),
        "individual_limit_pct": Param(float, default=None, minval=0.1, maxval=100.0, unit="%",
                                      doc="overrides the preset's individual harmonic limit"),
        "isc_a": Param(float, default=0.0, minval=0.0, unit="A",
                       doc="short-circuit current at the PCC; with il_a enables TDD"),
        "il_a": Param(float, default=0.0, minval=0.0, unit="A",
                      doc="maximum demand load current (IEEE 519 IL)"),
        "rated_ampacity_a": Param(float, default=0.0, minval=0.0, maxval=10000.0, unit="A",
                                  doc="busway rating (seed: 800-4000 A); 0 disables the load "
                                      "check"),
        "load_limit_pct": Param(float, default=80.0, minval=1.0, maxval=125.0, unit="%",
                                doc="continuous load limit, % of rated ampacity (seed: 80%)"),
        "load_delay_s": Param(float, default=60.0, minval=0.0, unit="s",
                              doc="how long the load must stay above the limit (continuous "
                                  "load)"),
        "voltage_alarm_pct": Param(float, default=10.0, above=0.0, maxval=30.0, unit="%",
                                   doc="alarm (major) when a line-to-line voltage is further "
                                       "than this from [site] nominal_voltage_ll_v (IEC "
                                       "60038: 10 %)"),
        "voltage_warn_pct": Param(float, default=5.0, above=0.0, maxval=30.0, unit="%",
                                  doc="warning band around the nominal, inside the alarm band"),
        "voltage_imbalance_pct": Param(float, default=2.0, above=0.0, unit="%",
                                       doc="NEMA voltage unbalance limit"),
        "current_imbalance_pct": Param(float, default=20.0, above=0.0, unit="%",
                                       doc="current unbalance limit"),
        "imbalance_min_current_a": Param(float, default=10.0, minval=0.0, unit="A",
                                         doc="current imbalance is judged above this average"),
        "frequency_tolerance_hz": Param(float, default=0.5, above=0.0, maxval=5.0, unit="Hz",
                                        doc="alarm when further than this from nominal"),
        "delay_s": Param(float, default=1.0, minval=0.0, unit="s",
                         doc="on-delay of every check except load"),
        "hysteresis_pct": Param(float, default=5.0, minval=0.0, maxval=50.0, unit="%",
                                doc="a check clears this far (relative) inside its limit"),
    }

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        check_order(config, "voltage_warn_pct", "voltage_alarm_pct")
        checks = set(config.params["checks"])
        problems = []
        for check, key, valid in (("voltage", "nominal_voltage_ll_v", "the busway's nominal "
                                   "line-to-line voltage in V, e.g. 415 or 480"),
                                  ("frequency", "nominal_hz", "50 or 60")):
            if check in checks and getattr(site, key) is None:
                problems.append(ConfigProblem(
                    site.file, f"site.{key}", f"missing; {config.path} ({config.name}, "
                    f"power_quality) needs it for its {check} check; valid: {valid} (or "
                    f"leave {check!r} out of its `checks`)"))
        if problems:
            raise ConfigError(problems)
        return cls(config.name, config.params, site.nominal_voltage_ll_v or 0.0,
                   site.nominal_hz or 0.0)

    def __init__(self, name: str, params: Mapping[str, Any], nominal_v: float = 0.0,
                 nominal_hz: float = 0.0) -> None:
        """``nominal_v`` / ``nominal_hz``: the site's [site] nominals (0: that check off)."""
        super().__init__(name, params)
        self.nominal_v = nominal_v
        self.nominal_hz = nominal_hz
        p = self.p
        m = p["meter"]
        preset = PRESETS[p["preset"]]
        self.thd_limit = p["thd_v_limit_pct"] or preset["thd_v"]
        self.h_limit = p["individual_limit_pct"] or preset["individual"]
        checks = set(p["checks"])
        h = p["hysteresis_pct"] / 100.0
        d = p["delay_s"]
        self.vll = tuple(f"{m}.voltage_{a}_{b}_v" for a, b in (("l1", "l2"), ("l2", "l3"),
                                                               ("l3", "l1")))
        self.amps = tuple(f"{m}.current_l{n}_a" for n in PHASES)
        # check name -> (points, limit object, severity, code)
        self.checks: dict[str, tuple[tuple[str, ...], Any, Severity, str]] = {}
        if "thd_v" in checks:
            self.checks["thd-v"] = (tuple(f"{m}.thd_v_l{n}_pct" for n in PHASES),
                                    HighLimit(self.thd_limit, self.thd_limit * h, d),
                                    Severity.MAJOR, "BG-THD-V")
        if p["harmonic_points"]:
            self.checks["harmonic"] = (tuple(p["harmonic_points"]),
                                       HighLimit(self.h_limit, self.h_limit * h, d),
                                       Severity.MINOR, "BG-HARMONIC")
        if p["isc_a"] > 0 and p["il_a"] > 0:
            lim = tdd_limit_pct(p["isc_a"], p["il_a"])
            self.checks["tdd"] = (tuple(f"{m}.thd_i_l{n}_pct" for n in PHASES) + self.amps,
                                  HighLimit(lim, lim * h, d), Severity.MINOR, "BG-TDD")
        if p["rated_ampacity_a"] > 0:
            lim = p["rated_ampacity_a"] * p["load_limit_pct"] / 100.0
            self.checks["load"] = (self.amps, HighLimit(lim, lim * h, p["load_delay_s"]),
                                   Severity.MAJOR, "BG-LOAD-80")
        if "voltage" in checks and nominal_v > 0:
            # a warning band inside an alarm band; the warning is shown only while the alarm
            # of the same side is not (one alarm per side, escalating)
            # (the alarm bands first: a warning's scan reads its alarm band of this scan)
            for word, pct, sev, suffix in (("", p["voltage_alarm_pct"], Severity.MAJOR, ""),
                                           ("-warn", p["voltage_warn_pct"], Severity.WARNING,
                                            "-WARN")):
                hi = nominal_v * (1 + pct / 100.0)
                lo = nominal_v * (1 - pct / 100.0)
                self.checks[f"voltage-high{word}"] = (self.vll, HighLimit(hi, hi * h * 0.1, d),
                                                      sev, f"BG-VOLTAGE-HIGH{suffix}")
                self.checks[f"voltage-low{word}"] = (self.vll, LowLimit(lo, lo * h * 0.1, d),
                                                     sev, f"BG-VOLTAGE-LOW{suffix}")
        if "imbalance" in checks:
            lim_v, lim_i = p["voltage_imbalance_pct"], p["current_imbalance_pct"]
            self.checks["imbalance-v"] = (self.vll, HighLimit(lim_v, lim_v * h, d),
                                          Severity.MINOR, "BG-IMBALANCE-V")
            self.checks["imbalance-i"] = (self.amps, HighLimit(lim_i, lim_i * h, d),
                                          Severity.MINOR, "BG-IMBALANCE-I")
        if "frequency" in checks and nominal_hz > 0:
            tol_hz = p["frequency_tolerance_hz"]
            self.checks["frequency"] = ((f"{m}.frequency_hz",), HighLimit(tol_hz, tol_hz * h, d),
                                        Severity.MAJOR, "BG-FREQUENCY")
        self._inputs = tuple(dict.fromkeys(x for pts, *_ in self.checks.values() for x in pts))

    def inputs(self) -> tuple[str, ...]:
        return self._inputs

    def _measure(self, check: str, vals: dict[str, float], pts: tuple[str, ...]
                 ) -> tuple[float, dict[str, Any]] | None:
        """The judged figure of one check from its good inputs (None: suspended)."""
        p = self.p
        got = {x: vals[x] for x in pts if x in vals}
        if not got:
            return None
        if check == "tdd":
            tdd = {}
            for n in PHASES:
                thd = got.get(f"{p['meter']}.thd_i_l{n}_pct")
                amps = got.get(f"{p['meter']}.current_l{n}_a")
                if thd is not None and amps is not None:
                    tdd[f"l{n}"] = thd * amps / p["il_a"]
            if not tdd:
                return None
            return max(tdd.values()), {"tdd_pct": {k: rnd(v, 2) for k, v in tdd.items()},
                                       "isc_il": rnd(p["isc_a"] / p["il_a"], 1)}
        if check in ("imbalance-v", "imbalance-i"):
            if len(got) < 3:
                return None
            if check == "imbalance-i" and sum(got.values()) / 3 < p["imbalance_min_current_a"]:
                return 0.0, {}
            return imbalance_pct(list(got.values())), {"values": {k: rnd(v, 2)
                                                                  for k, v in got.items()}}
        if check == "frequency":
            (hz,) = got.values()
            return abs(hz - self.nominal_hz), {"frequency_hz": rnd(hz, 3),
                                               "nominal_hz": self.nominal_hz}
        if check.startswith("voltage-low"):
            return min(got.values()), {"values": {k: rnd(v, 2) for k, v in got.items()}}
        return max(got.values()), {"values": {k: rnd(v, 2) for k, v in got.items()}}

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        res = self.begin_scan(now)
        meter = self.p["meter"]
        lost = lost_inputs(inputs, self._inputs)
        vals = {x: inputs.values[inputs.index[x]] for x in self._inputs if x not in lost}
        checks = self.checks
        for check, (pts, limit, sev, code) in checks.items():
            measured = self._measure(check, vals, pts)
            if measured is not None:
                figure, values = measured
                limit.update(figure, now)
            else:
                figure, values = float("nan"), {"suspended": "inputs lost"}
            if limit.active:
                if check.endswith("-warn") and checks[check[:-5]][1].active:
                    continue  # the alarm band of the same side holds: one alarm, escalated
                res.alarms.append(AlarmCondition(
                    check, sev, code, self._text(check, figure, limit.limit), device=meter,
                    values={**values, "figure": rnd(figure, 3), "limit": rnd(limit.limit, 3)}))
        res.add(self.input_watch.alarm(
            lost, now, "checks go on with the good phases or hold", device=meter))
        return res

    def _text(self, check: str, figure: float, limit: float) -> str:
        m = self.p["meter"]
        words = {
            "thd-v": f"{m}: voltage THD {figure:.2f}% above {limit:g}% (harmonic distortion "
                     f"from GPU PSUs; check the active harmonic filters)",
            "harmonic": f"{m}: individual voltage harmonic {figure:.2f}% above {limit:g}%",
            "tdd": f"{m}: current TDD {figure:.2f}% above the IEEE 519 limit {limit:g}%",
            "load": f"{m}: load {figure:.0f} A above {self.p['load_limit_pct']:g}% of the "
                    f"rated {self.p['rated_ampacity_a']:g} A ({limit:g} A)",
            "voltage-high": f"{m}: line-to-line voltage {figure:.1f} V above {limit:.1f} V "
                            f"(nominal {self.nominal_v:g} V + {self.p['voltage_alarm_pct']:g}%)",
            "voltage-low": f"{m}: line-to-line voltage {figure:.1f} V below {limit:.1f} V "
                           f"(nominal {self.nominal_v:g} V - {self.p['voltage_alarm_pct']:g}%)",
            "voltage-high-warn": f"{m}: line-to-line voltage {figure:.1f} V above {limit:.1f} V "
                                 f"(nominal {self.nominal_v:g} V + "
                                 f"{self.p['voltage_warn_pct']:g}%)",
            "voltage-low-warn": f"{m}: line-to-line voltage {figure:.1f} V below {limit:.1f} V "
                                f"(nominal {self.nominal_v:g} V - "
                                f"{self.p['voltage_warn_pct']:g}%)",
            "imbalance-v": f"{m}: voltage unbalance {figure:.2f}% above {limit:g}%",
            "imbalance-i": f"{m}: current unbalance {figure:.1f}% above {limit:g}%",
            "frequency": f"{m}: frequency off nominal {self.nominal_hz:g} Hz by "
                         f"{figure:.3f} Hz (limit {limit:g} Hz)",
        }
        return words[check]
