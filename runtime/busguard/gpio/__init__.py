"""GPIO for busguard: one pin-backend interface (cdev, gpiod, RPi.GPIO, mock), the breaker-LED
decoder, and the drivers built on them (breaker type ``gpio``, output type ``gpio_relay``).

The simulator's side of the mock backend is :mod:`busguard.gpio.mock` (``write_line``,
``read_line``, ``MockLines``) and :func:`busguard.gpio.led.pattern_level`.
"""

from busguard.gpio.base import Line, PinBackend
from busguard.gpio.led import LedDecoder, LedReading, LedTiming, pattern_edges, pattern_level
from busguard.gpio.mock import (
    MockBackend,
    MockLine,
    MockLines,
    level_for,
    read_line,
    stick_line,
    unstick_line,
    write_line,
)

__all__ = [
    "LedDecoder", "LedReading", "LedTiming", "Line", "MockBackend", "MockLine", "MockLines",
    "PinBackend", "level_for", "pattern_edges", "pattern_level", "read_line", "stick_line",
    "unstick_line", "write_line",
]
