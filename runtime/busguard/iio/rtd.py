"""Platinum RTD arithmetic (IEC 60751 Callendar-Van Dusen) and the MAX31865 RTD code.

Why here and not the kernel's scale: the mainline ``max31865`` IIO driver reports the
converter's 15-bit RTD code as ``in_temp_raw`` with ``in_temp_scale = 31.25`` (m°C per count)
and no offset, i.e. the datasheet's straight line ``code / 32 - 256`` °C without its ``-256``.
The code is a resistance ratio (``R_rtd = code * R_ref / 32768``); the temperature follows
from the RTD curve and the board's reference resistor (430 Ω on common PT100 boards), which the
straight line (made for 400 Ω) ignores.
So busguard converts the code itself, exactly, with the board's reference resistor.
"""

from __future__ import annotations

import math

# IEC 60751 coefficients (alpha = 0.00385)
A = 3.9083e-3
B = -5.775e-7
C = -4.183e-12  # below 0 °C only
FULL_SCALE = 1 << 15  # the MAX31865 RTD code is 15 bits


def resistance_ohm(temp_c: float, r0_ohm: float = 100.0) -> float:
    """R(T) of a platinum RTD (PT100: r0 = 100, PT1000: r0 = 1000)."""
    t = temp_c
    r = 1.0 + A * t + B * t * t
    if t < 0:
        r += C * (t - 100.0) * t ** 3
    return r0_ohm * r


def temperature_c(r_ohm: float, r0_ohm: float = 100.0) -> float:
    """T(R): the quadratic's root above 0 °C, a few Newton steps on the full curve below."""
    ratio = r_ohm / r0_ohm
    disc = A * A - 4.0 * B * (1.0 - ratio)
    if disc < 0:
        return math.nan
    t = (-A + math.sqrt(disc)) / (2.0 * B)
    if t >= 0:
        return t
    for _ in range(8):  # the C term: Newton on R(T) - R, converges in 2-3 steps
        f = resistance_ohm(t, r0_ohm) - r_ohm
        d = r0_ohm * (A + 2 * B * t + C * (4 * t ** 3 - 300.0 * t * t))
        t -= f / d
    return t


def code_of(temp_c: float, r_ref_ohm: float = 430.0, r0_ohm: float = 100.0) -> int:
    """The MAX31865 15-bit RTD code for a temperature (what the simulator writes)."""
    code = round(resistance_ohm(temp_c, r0_ohm) * FULL_SCALE / r_ref_ohm)
    return max(0, min(FULL_SCALE - 1, code))


def temperature_of_code(code: float, r_ref_ohm: float = 430.0, r0_ohm: float = 100.0) -> float:
    return temperature_c(code * r_ref_ohm / FULL_SCALE, r0_ohm)
