"""Thermal overload with thermal memory (IEC 60255-149 style): a first-order thermal replica.

A busway joint or a tap-off cable heats with I^2 t, not with the instantaneous current: a
load that cycles around its rating heats it as its RMS does, and a conductor that has just
carried a heavy load trips sooner on the next one. The replica keeps ``theta``, the thermal
level in per unit of the trip level (1.0 = 100 % = trip), with

    d theta / dt = ((I / (k * Ib))^2 - theta) / tau

(``Ib`` the basic current, ``k`` the overload factor, so ``k * Ib`` is the largest current
that never trips; ``tau`` the heating time constant, ``tau_cool`` used while theta falls).
At a constant current from a level ``theta_0 = (Ip / (k * Ib))^2`` (the preload current Ip)
the trip comes after

    t = tau * ln((I^2 - Ip^2) / (I^2 - (k * Ib)^2))

which is IEC 60255-149's operate-time equation. Each scan interval is integrated exactly
(``theta_ss + (theta - theta_ss) * exp(-dt / tau)``) with the current seen at its start, so
the result does not depend on the scan period. No good current reading: theta holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def trip_time_s(i_a: float, preload_a: float, k_ib_a: float, tau_s: float) -> float:
    """IEC 60255-149: seconds to trip at a constant ``i_a`` from the steady level of
    ``preload_a`` (inf when ``i_a`` never trips)."""
    if i_a <= k_ib_a:
        return math.inf
    if preload_a >= i_a:
        return 0.0
    return tau_s * math.log((i_a ** 2 - preload_a ** 2) / (i_a ** 2 - k_ib_a ** 2))


@dataclass
class ThermalReplica:
    """theta of one feeder (see the module docstring)."""

    k_ib_a: float
    tau_s: float
    tau_cool_s: float
    theta: float = 0.0
    current_a: float | None = None  # the current seen at the last scan (None: no reading)

    def steady(self, i_a: float) -> float:
        """The level ``i_a`` would settle at."""
        return (i_a / self.k_ib_a) ** 2

    def advance(self, dt: float) -> None:
        """Integrate the interval that just ended with the current seen at its start."""
        if self.current_a is None or dt <= 0.0:
            return
        target = self.steady(self.current_a)
        tau = self.tau_s if target >= self.theta else self.tau_cool_s
        self.theta = target + (self.theta - target) * math.exp(-dt / tau)

    def cool(self, elapsed_s: float) -> None:
        """Cool for ``elapsed_s`` without current (the time a restart kept the unit down)."""
        if elapsed_s > 0.0 and math.isfinite(elapsed_s):
            self.theta *= math.exp(-elapsed_s / self.tau_cool_s)

    def time_to_trip_s(self) -> float:
        """Seconds to trip if the current stays as seen (inf when it would not trip)."""
        i = self.current_a
        if i is None:
            return math.inf
        target = self.steady(i)
        if self.theta >= 1.0:
            return 0.0
        if target <= 1.0:
            return math.inf
        return self.tau_s * math.log((target - self.theta) / (target - 1.0))
