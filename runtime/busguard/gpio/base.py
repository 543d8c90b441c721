"""One pin-backend interface for every GPIO library (gpiozero's pin-factory idea).

A :class:`PinBackend` opens lines of one GPIO chip as inputs or outputs and hands back
:class:`Line` objects that read and write *logical* values: ``1`` means active (LED lit, relay
energised), whatever the wiring. ``active_low`` is applied by the backend (by the kernel for
libgpiod), never by the caller. Backends: ``gpiod`` (libgpiod v2, the default),
``rpigpio`` (RPi.GPIO, not on a Raspberry Pi 5) and ``mock`` (files, for tests and the
simulator). Drivers only ever see this interface.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class Line(ABC):
    """One requested GPIO line."""

    def __init__(self, offset: int, output: bool, active_low: bool) -> None:
        self.offset = offset
        self.output = output
        self.active_low = active_low

    @abstractmethod
    def read(self) -> int:
        """The logical value (0/1). For an output: what the line reads back."""

    def write(self, value: int) -> None:
        """Drive an output line to a logical value (0/1); an input line refuses."""
        if not self.output:
            raise TypeError(f"line {self.offset} was requested as an input")
        self._drive(1 if value else 0)

    def _drive(self, value: int) -> None:
        """Set the output to ``value`` (logical 0/1): what a backend's line implements."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to release
        """Release the line."""

    def __repr__(self) -> str:
        kind = "output" if self.output else "input"
        low = " active-low" if self.active_low else ""
        return f"<{type(self).__name__} {self.offset} {kind}{low}>"


class PinBackend(ABC):
    """A GPIO chip seen through one library. Thread-safe to open and close lines."""

    name = ""
    #: device nodes the backend opens (the service unit must allow each: DeviceAllow=)
    device_nodes: tuple[str, ...] = ()

    def __init__(self, chip: str) -> None:
        self.chip = chip
        self._lines: dict[int, Line] = {}
        self._lock = threading.Lock()

    def open_input(self, offset: int, active_low: bool = False) -> Line:
        return self._open(offset, False, active_low, 0)

    def open_output(self, offset: int, active_low: bool = False,
                    initial: int | None = 0) -> Line:
        """``initial=None``: keep the line's present level where the backend can read it
        without driving it (mock), else inactive."""
        return self._open(offset, True, active_low, initial)

    def _open(self, offset: int, output: bool, active_low: bool, initial: int | None) -> Line:
        with self._lock:
            if offset in self._lines:
                raise ValueError(f"{self.chip} line {offset} is already in use by "
                                 f"{self._lines[offset]!r}")
            line = self._request(offset, output, active_low, initial)
            self._lines[offset] = line
            return line

    def release(self, line: Line) -> None:
        with self._lock:
            if self._lines.get(line.offset) is line:
                del self._lines[line.offset]
        line.close()

    def close(self) -> None:
        with self._lock:
            lines = list(self._lines.values())
            self._lines.clear()
        for line in lines:
            line.close()

    @abstractmethod
    def _request(self, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> Line:
        """Request one line from the library; raise DriverError with what to do on failure."""

    def describe(self) -> str:
        return f"{self.name} backend on {self.chip}"
