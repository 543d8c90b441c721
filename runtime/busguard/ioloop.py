"""The asyncio loop the I/O runs on, and the one order in which I/O stops.

Drivers and publishers run beside the scan (``[scan] io = "thread"``, in the runtime) or in
the I/O process (``[scan] io = "process"``); both hosts give them one event loop in one
daemon thread (:class:`IoLoop`) and stop them in the same order (:func:`stop_io`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

log = logging.getLogger("busguard.io")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class IoLoop:
    """An event loop running in its own daemon thread (``busguard-io``)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.AbstractEventLoop:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="busguard-io",
                                        daemon=True)
        self._thread.start()
        return self.loop

    def stop(self, join_s: float = 5.0) -> None:
        loop, self.loop = self.loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=join_s)
        if not loop.is_running():
            loop.close()


def _stop_each(items: Iterable[_Stoppable], what: str, name: Callable[[object], str]) -> None:
    for item in items:
        try:
            item.stop()
        except Exception:  # one that fails to stop never keeps the others running
            log.exception("%s %s failed to stop cleanly", what, name(item))


def stop_io(publishers: Iterable[_Stoppable], drivers: Iterable[_Stoppable],
            loop: IoLoop | None, between: Callable[[], None] | None = None) -> None:
    """Stop I/O in the one order both hosts use: publishers first (their listeners close, so
    a reload's next server can bind the same port), then ``between`` (the I/O process closes
    its link, the runtime stops its I/O process), then the drivers, then the loop they ran on.
    """
    _stop_each(publishers, "publisher", lambda p: getattr(p, "section", repr(p)))
    if between is not None:
        between()
    _stop_each(drivers, "driver", lambda d: getattr(d, "name", repr(d)))
    if loop is not None:
        loop.stop()
