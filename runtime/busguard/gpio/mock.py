"""The mock GPIO backend: lines are small files, so another process can drive them.

gpiozero's MockFactory keeps its pins in memory; ours must cross a process boundary because the
simulator (``busguard simulate``) lights the breaker LEDs that the runtime reads, and reads the
shunt-trip lines the runtime drives. So each line is a file ``<mock_dir>/<offset>`` holding the
*physical* level, ``0`` or ``1``, replaced atomically (temp file + rename) on every write. A
file ``<mock_dir>/<offset>.stuck`` (holding 0 or 1) pins the physical level whatever is written:
a welded relay contact or a broken driver stage, for read-back tests.

In-process, a :class:`MockLine` can be driven (:meth:`MockLine.drive_high`,
:meth:`MockLine.drive_low`) and records every level it saw or set (:attr:`MockLine.history`,
:meth:`MockLine.assert_states`), like gpiozero's MockPin. The module-level functions
(:func:`write_line`, :func:`read_line`, :func:`stick_line`, :func:`unstick_line`) are the
simulator's side: they need nothing but the folder.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from busguard.atomicfile import replace_text
from busguard.gpio.base import Line, PinBackend

HISTORY_MAX = 10_000


def line_path(mock_dir: str | os.PathLike[str], offset: int) -> Path:
    return Path(mock_dir) / str(int(offset))


def level_for(value: int, active_low: bool = False) -> int:
    """The physical level that shows a logical value on a line wired ``active_low`` or not."""
    return (1 if value else 0) ^ (1 if active_low else 0)


def write_line(mock_dir: str | os.PathLike[str], offset: int, level: int) -> None:
    """Set the physical level of a line (atomic; any process may call it)."""
    path = line_path(mock_dir, offset)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, "1\n" if level else "0\n")


def read_line(mock_dir: str | os.PathLike[str], offset: int, default: int = 0) -> int:
    """The physical level of a line: the stuck level if stuck, else the file, else ``default``."""
    path = line_path(mock_dir, offset)
    for candidate in (path.with_name(path.name + ".stuck"), path):
        try:
            text = candidate.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            continue
        except OSError:
            return default
        return 1 if text == "1" else 0
    return default


def stick_line(mock_dir: str | os.PathLike[str], offset: int, level: int) -> None:
    """Pin a line's physical level (writes no longer change what it reads)."""
    path = line_path(mock_dir, offset)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path.with_name(path.name + ".stuck"), "1\n" if level else "0\n")


def unstick_line(mock_dir: str | os.PathLike[str], offset: int) -> None:
    path = line_path(mock_dir, offset)
    path.with_name(path.name + ".stuck").unlink(missing_ok=True)


class MockLines:
    """The simulator's handle on a mock GPIO folder (physical levels by line offset)."""

    def __init__(self, mock_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(mock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, offset: int, level: int) -> None:
        write_line(self.dir, offset, level)

    def read(self, offset: int, default: int = 0) -> int:
        return read_line(self.dir, offset, default)

    def write_logical(self, offset: int, value: int, active_low: bool = False) -> None:
        write_line(self.dir, offset, level_for(value, active_low))

    def read_logical(self, offset: int, active_low: bool = False, default: int = 0) -> int:
        return read_line(self.dir, offset, default) ^ (1 if active_low else 0)

    def stick(self, offset: int, level: int) -> None:
        stick_line(self.dir, offset, level)

    def unstick(self, offset: int) -> None:
        unstick_line(self.dir, offset)


class MockLine(Line):
    """A line of the mock backend; levels live in ``<mock_dir>/<offset>``."""

    def __init__(self, backend: MockBackend, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> None:
        super().__init__(offset, output, active_low)
        self.backend = backend
        # (ticks, logical value) on each change; bounded, the simulator runs for days
        self.history: deque[tuple[float, int]] = deque(maxlen=HISTORY_MAX)
        self._lock = threading.Lock()
        if output and (initial is not None or not line_path(backend.dir, offset).exists()):
            self.write(initial or 0)
        else:
            self.read()  # an input, or an output that keeps the level it has

    def _note(self, value: int) -> None:
        with self._lock:
            if not self.history or self.history[-1][1] != value:
                self.history.append((self.backend.ticks(), value))

    def read(self) -> int:
        value = read_line(self.backend.dir, self.offset) ^ (1 if self.active_low else 0)
        self._note(value)
        return value

    def _drive(self, value: int) -> None:
        write_line(self.backend.dir, self.offset, level_for(value, self.active_low))
        self._note(value)

    # -- gpiozero MockPin-style helpers --------------------------------------------------
    def drive_high(self) -> None:
        """Drive the physical level high (as external hardware would)."""
        write_line(self.backend.dir, self.offset, 1)
        self._note(1 ^ (1 if self.active_low else 0))

    def drive_low(self) -> None:
        write_line(self.backend.dir, self.offset, 0)
        self._note(0 ^ (1 if self.active_low else 0))

    def states(self) -> list[int]:
        with self._lock:
            return [v for _t, v in self.history]

    def assert_states(self, expected: Sequence[int]) -> None:
        """Assert the logical values this line went through, in order (gpiozero's idea)."""
        got = self.states()
        assert got == list(expected), f"line {self.offset}: states {got} != {list(expected)}"


class MockBackend(PinBackend):
    """GPIO lines backed by files in ``mock_dir`` (see the module docstring)."""

    name = "mock"

    def __init__(self, chip: str = "mock", mock_dir: str | os.PathLike[str] = "var/sim/gpio",
                 ticks: Callable[[], float] = time.monotonic) -> None:
        super().__init__(chip)
        self.dir = Path(mock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ticks = ticks

    def _request(self, offset: int, output: bool, active_low: bool,
                 initial: int | None) -> Line:
        return MockLine(self, offset, output, active_low, initial)

    def line(self, offset: int) -> MockLine:
        """The open line at ``offset`` (for tests)."""
        with self._lock:
            line = self._lines[offset]
        assert isinstance(line, MockLine)
        return line

    def describe(self) -> str:
        return f"mock backend in {self.dir}"
