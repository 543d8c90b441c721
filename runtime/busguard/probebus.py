"""One worker thread reading every probe under one base folder, each on its own period: what
the 1-Wire (:class:`busguard.w1.driver.W1Bus`) and IIO (:class:`busguard.iio.driver.IioBus`)
drivers share. Reading a folder of sysfs files blocks (a 1-Wire conversion takes up to
750 ms), so each folder gets its own thread and never holds up the scan or the asyncio loop.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from busguard.clock import Clock
from busguard.image import ImageWriter

log = logging.getLogger("busguard.probebus")


class ProbeBus:
    """Subclass this; implement :meth:`poll_once` (read the due readers, return the next
    deadline on ``time.monotonic``). ``label`` names the bus in logs and its thread."""

    label = "probes"  # e.g. "1-Wire bus"
    thread_prefix = "busguard-probes"

    def __init__(self, base_dir: Path, image: ImageWriter, clock: Clock,
                 threaded: bool = True) -> None:
        self.base_dir = Path(base_dir)
        self.image = image
        self.clock = clock
        self.threaded = threaded
        self.readers: list[Any] = []  # each with ``name``, ``poll_s`` and ``next_due``
        self.passes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, reader: Any) -> None:
        with self._lock:
            self.readers.append(reader)

    def remove(self, name: str) -> bool:
        """Drop a probe; stops the thread when none is left (returns True then)."""
        with self._lock:
            self.readers = [r for r in self.readers if r.name != name]
            empty = not self.readers
        if empty:
            self.stop()
        return empty

    def poll_once(self, now: float | None = None, force: bool = False) -> float:
        raise NotImplementedError

    def start(self) -> None:
        if not self.threaded or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run,
                                        name=f"{self.thread_prefix}:{self.base_dir}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deadline = self.poll_once()
            except Exception:  # one bad pass must not end the probes' thread
                log.exception("%s %s: poll failed", self.label, self.base_dir)
                deadline = time.monotonic() + 1.0
            self._stop.wait(max(0.0, deadline - time.monotonic()))
