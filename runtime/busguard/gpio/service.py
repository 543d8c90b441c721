"""One GPIO I/O thread per runtime: samples input lines, writes output lines.

Every GPIO driver of a site registers its lines here instead of starting a thread of its own,
so twenty breakers cost one thread waking at the shortest sample period, not twenty. Inputs
are sampled on their own periods and handed to a callback (in this thread). Outputs are
written on change (``set`` from the scan thread only stores the wish and wakes the thread,
so ``Driver.apply`` returns at once), rewritten every ``refresh_s`` (a line reset by
something else is put back), and read back after every write; a mismatch makes the output
BAD until a read-back agrees again.

For deterministic tests, build it with ``threaded=False`` and call :meth:`step` with your
own times.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from busguard.errors import DriverError
from busguard.gpio.base import Line, PinBackend
from busguard.image import Quality

log = logging.getLogger("busguard.gpio")

InputCallback = Callable[[float, "int | None"], None]
OutputCallback = Callable[["OutputChannel"], None]


@dataclass
class InputWatch:
    owner: str
    line: Line
    period_s: float
    callback: InputCallback
    next_due: float = -math.inf
    errors: int = 0


@dataclass
class OutputChannel:
    """One output line and what we know about it. ``quality``: GOOD when read back agrees."""

    owner: str
    name: str
    line: Line
    refresh_s: float
    on_result: OutputCallback | None = None
    desired: int | None = None
    written: int | None = None
    readback: int | None = None
    quality: Quality = Quality.NOT_CONNECTED
    last_write: float = -math.inf
    writes: int = 0
    refreshes: int = 0
    mismatches: int = 0
    errors: int = 0
    feedback: Line | None = None  # an input wired to the relay's auxiliary contact
    settle_s: float = 0.0  # how long the contact may take to follow (feedback only)
    verify_due: float | None = None
    _reported: bool = field(default=False, repr=False)

    def stats(self) -> dict[str, Any]:
        out = {"line": self.line.offset, "desired": self.desired, "readback": self.readback,
               "quality": self.quality.word, "writes": self.writes,
               "refreshes": self.refreshes, "mismatches": self.mismatches,
               "errors": self.errors}
        if self.feedback is not None:
            out["feedback_line"] = self.feedback.offset
        return out


class GpioService:
    def __init__(self, backend: PinBackend, ticks: Callable[[], float] = time.monotonic,
                 threaded: bool = True) -> None:
        self.backend = backend
        self.ticks = ticks
        self.threaded = threaded
        self.inputs: list[InputWatch] = []
        self.outputs: list[OutputChannel] = []
        self._owners: set[str] = set()
        self._lock = threading.Lock()  # the registration lists
        self._io = threading.Lock()  # line I/O (gpiod requests need external synchronisation)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0

    # -- registration (driver start/stop) --------------------------------------------------
    def add_input(self, owner: str, offset: int, active_low: bool, period_s: float,
                  callback: InputCallback) -> InputWatch:
        line = self.backend.open_input(offset, active_low)
        watch = InputWatch(owner, line, period_s, callback)
        with self._lock:
            self.inputs.append(watch)
            self._owners.add(owner)
        self._wake.set()
        return watch

    def add_output(self, owner: str, name: str, offset: int, active_low: bool,
                   refresh_s: float, on_result: OutputCallback | None = None,
                   feedback: tuple[int, bool] | None = None,
                   settle_s: float = 0.0) -> OutputChannel:
        """``feedback=(offset, active_low)``: verify against that input (a relay's auxiliary
        contact), ``settle_s`` after each write, instead of reading the output line back."""
        fb = self.backend.open_input(*feedback) if feedback is not None else None
        # keep the present level where the backend can tell (a reload hands over from the
        # previous runtime without a glitch), else inactive; the first scan says what it wants
        try:
            line = self.backend.open_output(offset, active_low, initial=None)
        except Exception:
            if fb is not None:
                self.backend.release(fb)
            raise
        try:
            level = line.read()
        except (OSError, DriverError, RuntimeError):
            level = 0
        chan = OutputChannel(owner, name, line, refresh_s, on_result, desired=level,
                             feedback=fb, settle_s=settle_s if fb is not None else 0.0)
        with self._lock:
            self.outputs.append(chan)
            self._owners.add(owner)
        return chan

    def set_output(self, chan: OutputChannel, value: float) -> None:
        """From the scan thread: remember the wish, wake the I/O thread. Never blocks on I/O."""
        v = 1 if value >= 0.5 else 0
        if v != chan.desired:
            chan.desired = v
            self._wake.set()

    def start(self) -> None:
        if not self.threaded or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="busguard-gpio", daemon=True)
        self._thread.start()

    def remove_owner(self, owner: str) -> bool:
        """Release an owner's lines; returns True when nobody is left (service stopped).

        Output values still pending (the fail-safe values a stopping runtime applied just
        before) are written first, in the caller's thread."""
        with self._io:  # the GPIO thread is not using any line meanwhile
            for c in [c for c in self.outputs if c.owner == owner]:
                if c.desired is not None and c.desired != c.written:
                    self._service(c, self.ticks())
            with self._lock:
                mine = [w.line for w in self.inputs if w.owner == owner]
                mine += [c.line for c in self.outputs if c.owner == owner]
                mine += [c.feedback for c in self.outputs if c.owner == owner and c.feedback]
                self.inputs = [w for w in self.inputs if w.owner != owner]
                self.outputs = [c for c in self.outputs if c.owner != owner]
                self._owners.discard(owner)
                empty = not self._owners
            for line in mine:
                self.backend.release(line)
        if empty:
            self.stop()
            self.backend.close()
        return empty

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._thread = None

    # -- the work ----------------------------------------------------------------------------
    def step(self, now: float | None = None) -> float:
        """Sample due inputs, service outputs; returns the next deadline."""
        with self._io:
            return self._step(self.ticks() if now is None else now)

    def _step(self, now: float) -> float:
        with self._lock:
            inputs = list(self.inputs)
            outputs = list(self.outputs)
        deadline = now + 1.0
        for w in inputs:
            if now >= w.next_due:
                w.next_due = now + w.period_s if w.next_due == -math.inf or \
                    now - w.next_due > w.period_s else w.next_due + w.period_s
                try:
                    level: int | None = w.line.read()
                except (OSError, DriverError, RuntimeError) as exc:
                    w.errors += 1
                    if w.errors == 1:
                        log.warning("%s: reading GPIO line %d failed: %s", w.owner,
                                    w.line.offset, exc)
                    level = None
                else:
                    w.errors = 0
                w.callback(now, level)
            deadline = min(deadline, w.next_due)
        for c in outputs:
            self._service(c, now)
            if c.desired is not None:
                deadline = min(deadline, c.last_write + c.refresh_s)
            if c.verify_due is not None:
                deadline = min(deadline, c.verify_due)
        self.steps += 1
        return deadline

    def _service(self, c: OutputChannel, now: float) -> None:
        if c.verify_due is not None and now >= c.verify_due:
            self._verify(c)
        if c.desired is None:
            return
        changed = c.desired != c.written
        if not changed and now < c.last_write + c.refresh_s:
            return
        want = c.desired
        c.last_write = now
        try:
            c.line.write(want)
        except (OSError, DriverError, RuntimeError) as exc:
            c.errors += 1
            c.written = None
            c.verify_due = None
            if c.errors == 1:
                log.warning("%s: writing %s to GPIO line %d failed: %s", c.owner, c.name,
                            c.line.offset, exc)
            self._result(c, Quality.NOT_CONNECTED)
            return
        c.errors = 0
        c.written = want
        if changed:
            c.writes += 1
        else:
            c.refreshes += 1
        if c.settle_s > 0:
            c.verify_due = now + c.settle_s  # the contact takes a moment to follow
        else:
            self._verify(c)

    def _verify(self, c: OutputChannel) -> None:
        """Read back (the output line, or its feedback contact) and judge the output."""
        c.verify_due = None
        src = c.feedback or c.line
        try:
            back = src.read()
        except (OSError, DriverError, RuntimeError) as exc:
            c.errors += 1
            if c.errors == 1:
                log.warning("%s: reading back %s on GPIO line %d failed: %s", c.owner, c.name,
                            src.offset, exc)
            self._result(c, Quality.NOT_CONNECTED)
            return
        c.readback = back
        if back == c.written:
            if c._reported:
                log.warning("%s: %s on GPIO line %d reads back %d again", c.owner, c.name,
                            src.offset, back)
                c._reported = False
            self._result(c, Quality.GOOD)
            return
        c.mismatches += 1
        if not c._reported:
            what = "feedback contact" if c.feedback is not None else "line"
            log.warning("%s: %s written %d but its %s (GPIO line %d) reads back %d (stuck "
                        "contact, wiring or driver stage)", c.owner, c.name, c.written, what,
                        src.offset, back)
            c._reported = True
        self._result(c, Quality.BAD)

    def _result(self, c: OutputChannel, quality: Quality) -> None:
        c.quality = quality
        if c.on_result is not None:
            c.on_result(c)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deadline = self.step()
            except Exception:  # keep sampling whatever one callback did
                log.exception("GPIO service step failed")
                deadline = self.ticks() + 0.1
            timeout = deadline - self.ticks()
            if timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()
