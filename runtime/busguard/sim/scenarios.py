"""Named scenarios: what happens to the simulated site, as a schedule over model time.

A scenario is data, not code: the model (:mod:`busguard.sim.model`) reads these fields, so every
value stays a pure function of (seed, scenario, t). Times are model seconds after the start of
the simulation; ``--speed`` scales model time against wall time. Indexes name the n-th meter,
probe or breaker of the site in site.toml order (wrapped if the site has fewer).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class CommFaults:
    """Fault knobs of one device's Modbus link at one instant (percentages 0..100)."""

    latency_ms: float = 0.0
    drop_pct: float = 0.0
    exception_pct: float = 0.0
    garbage_pct: float = 0.0

    def __add__(self, other: CommFaults) -> CommFaults:
        return CommFaults(self.latency_ms + other.latency_ms,
                          min(100.0, self.drop_pct + other.drop_pct),
                          min(100.0, self.exception_pct + other.exception_pct),
                          min(100.0, self.garbage_pct + other.garbage_pct))

    @property
    def any(self) -> bool:
        return bool(self.latency_ms or self.drop_pct or self.exception_pct or self.garbage_pct)


NO_FAULTS = CommFaults()


@dataclass(frozen=True)
class Scenario:
    """One scenario. Features left at None are off."""

    name: str
    description: str
    # training-spike: GPU jobs start on every rack at once, checkpoint dips, one rack overloads
    training_start_s: float | None = None
    training_level: float = 0.92
    checkpoint_every_s: float = 120.0
    checkpoint_len_s: float = 8.0
    overload_breaker: int | None = None
    overload_level: float = 1.35
    overcurrent_delay_s: float = 6.0
    # cyclic-overload: one rack cycles above and below its breaker's pickup (training steps
    # and checkpoints); the breaker's own trip unit holds (the overload is inside its
    # long-time band), busguard's inverse-time element integrates it and trips
    cyclic_breaker: int | None = None
    cyclic_start_s: float = 20.0
    cyclic_high: float = 1.3  # load in fractions of the rack's rating
    cyclic_high_s: float = 4.0
    cyclic_low: float = 0.9
    cyclic_low_s: float = 2.0
    # thd-rise: the active harmonic filter degrades between start and end
    thd_rise_start_s: float | None = None
    thd_rise_end_s: float = 140.0
    thd_v_add_pct: float = 5.5
    thd_i_add_pct: float = 22.0
    # thermal-runaway: a loose joint near one probe heats up: its resistance grows towards
    # (1 + factor) times normal with time constant runaway_time_s
    runaway_probe: int | None = None
    runaway_start_s: float = 20.0
    runaway_factor: float = 6.0
    runaway_time_s: float = 120.0
    # ground-fault: residual current on one breaker's feeder, then the breaker trips (2-blink)
    ground_fault_breaker: int | None = None
    ground_fault_s: float = 20.0
    ground_fault_ma: float = 320.0
    ground_fault_trip_delay_s: float = 0.3
    # comm-loss: one meter stops answering for a window, another gets slow
    comm_loss_meter: int | None = None
    comm_loss_start_s: float = 15.0
    comm_loss_end_s: float = 75.0
    slow_meter: int | None = None
    slow_latency_ms: float = 120.0
    # rs485-noise: garbage frames (CRC errors) and drops on the RTU lines
    rs485_noise_start_s: float | None = None
    rs485_garbage_pct: float = 3.0
    rs485_drop_pct: float = 1.0
    extra: Any = field(default_factory=lambda: MappingProxyType({}))

    def with_changes(self, **changes: Any) -> Scenario:
        return replace(self, **changes)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("normal", "steady racks: load curves with noise, THD-V ~2-3%, busbars 35-55 C"),
    Scenario("training-spike", "GPU training jobs start on every rack at t=30 s (inrush, "
             "checkpoint dips every 120 s); the first breaker's rack overloads and trips on "
             "overcurrent 6 s later (LED solid)",
             training_start_s=30.0, overload_breaker=0),
    Scenario("thd-rise", "the active harmonic filter degrades from t=20 s to t=140 s: THD-V "
             "climbs past the 5% IEEE 519 limit, THD-I past 25%",
             thd_rise_start_s=20.0),
    Scenario("thermal-runaway", "a poorly torqued joint at the first probe heats up from "
             "t=20 s; it crosses 90 C (0xCF thermal critical) within a few minutes of model time",
             runaway_probe=0),
    Scenario("cyclic-overload", "from t=20 s the first breaker's rack cycles between 130% of "
             "its rating for 4 s and 90% for 2 s (training steps and checkpoints): never long "
             "enough above pickup for a timer that restarts at each dip, but trip-a1's "
             "inverse-time element integrates it (IEC 60255-151 reset) and trips brk-a1 after "
             "a few cycles",
             cyclic_breaker=0),
    Scenario("comm-loss", "the second meter stops answering from t=15 s to t=75 s (timeouts, "
             "then recovery); the third answers 120 ms late",
             comm_loss_meter=1, slow_meter=2),
    Scenario("ground-fault", "residual current on the second breaker's feeder at t=20 s; the "
             "breaker trips 0.3 s later and its LED blinks red twice",
             ground_fault_breaker=1),
    Scenario("rs485-noise", "noise on the RS-485 lines from t=10 s: 3% garbage frames (CRC "
             "errors, the seed's limit is 0.1%) and 1% dropped replies",
             rs485_noise_start_s=10.0),
)}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
