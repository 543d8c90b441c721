"""Stopping on SIGINT / SIGTERM without taking a lock inside the signal handler.

Python runs a signal handler in the main thread between two bytecodes, possibly while that
thread holds a lock, e.g. inside ``Event.set()`` run by the *previous* handler when Ctrl-C is
pressed twice. A handler that calls ``Event.set()`` then waits forever on a lock its own thread
holds (seen: a simulator stuck after two signals). So the handler here only notes the reason
and writes one byte to a pipe; a helper thread reads it and runs the stop callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger("busguard.stop")


class StopOnSignal:
    """Run ``callbacks`` (in a helper thread) when one of ``signals`` arrives."""

    def __init__(self, callbacks: Iterable[Callable[[], object]] = (),
                 signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.reason: str | None = None
        self._callbacks = list(callbacks)
        self._lock = threading.Lock()
        self._fired = False
        self._closing = False
        self._r, self._w = os.pipe()
        self._signals = list(signals)
        for sig in self._signals:
            signal.signal(sig, self._handler)
        self._thread = threading.Thread(target=self._wait, name="busguard-stop", daemon=True)
        self._thread.start()

    def _handler(self, signum: int, _frame: object) -> None:  # no locks in here
        if self.reason is None:
            self.reason = signal.Signals(signum).name
        with contextlib.suppress(OSError):
            os.write(self._w, b"s")

    def _wait(self) -> None:
        try:
            os.read(self._r, 1)
        except OSError:
            return
        if self._closing:
            return
        with self._lock:
            self._fired = True
            callbacks = list(self._callbacks)
        for cb in callbacks:
            self._run(cb)

    @staticmethod
    def _run(cb: Callable[[], object]) -> None:
        try:
            cb()
        except Exception:
            log.exception("stop callback %r failed", cb)

    def add(self, cb: Callable[[], object]) -> None:
        """Also run ``cb`` on a stop (at once if the stop already happened)."""
        with self._lock:
            fired = self._fired
            if not fired:
                self._callbacks.append(cb)
        if fired:
            self._run(cb)

    def close(self) -> None:
        """End the helper thread. Later signals are ignored: the process is on its way out
        already, and a default SIGTERM there would turn a clean exit 0 into a kill."""
        for sig in self._signals:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, _ignore)
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._w, b"c")
        self._thread.join(timeout=2)
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _ignore(_signum: int, _frame: object) -> None:
    """A handler for signals that arrive once the stop is done."""
