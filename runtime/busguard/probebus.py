"""One worker thread reading every probe under one base folder, each on its own period: what
the 1-Wire (:class:`busguard.w1.driver.W1Bus`) and IIO (:class:`busguard.iio.driver.IioBus`)
drivers share. Reading a folder of sysfs files blocks (a 1-Wire conversion takes up to
750 ms), so each folder gets its own thread and never holds up the scan or the asyncio loop.
:class:`BusProbe` is the probe driver both put on such a bus (one point, ``{probe}.temp_c``).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from busguard.clock import Clock
from busguard.config.params import Param
from busguard.driver import Driver, DriverContext
from busguard.image import ImageWriter, PointSpec

if TYPE_CHECKING:
    from busguard.config.site import DeviceConfig, SiteConfig

log = logging.getLogger("busguard.probebus")


def folder_section(default: str, what: str, sim_dir: str) -> dict[str, Param]:
    """The params of a probe bus's table ([onewire], [iio]): the folder its probes are in."""
    return {"base_dir": Param(str, default=default,
                              doc=f"{what} folder (relative: to the site file; the simulator "
                                  f"uses {sim_dir})")}


class ProbeState:
    """The state word a probe reader keeps ("unread", "good", "bad (...)", "not-connected")
    and logs once per change, never once per read: the base of the 1-Wire and IIO readers.
    A subclass sets ``name``, ``log`` (its driver's logger) and :meth:`where`."""

    name: str
    state = "unread"
    log = log

    def where(self) -> str:
        """The probe's hardware, as the log line names it (e.g. "28-0000071cbb3e")."""
        return ""

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            lvl = logging.INFO if state == "good" else logging.WARNING
            self.log.log(lvl, "probe %s (%s): %s%s", self.name, self.where(), state,
                         f": {detail}" if detail else "")
            self.state = state


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


class BusProbe(Driver):
    """A temperature probe read on a :class:`ProbeBus` shared by every probe under the same
    folder: one point ``{probe}.temp_c``. A subclass sets ``bus_class`` and ``bus_key``
    (the shared-object name), ``conversion_s`` (added to the point's stale age) and
    ``point_doc``, and makes ``self.reader`` and ``self.base_dir`` in ``__init__``."""

    io_process_ok = True  # input only: may run in the I/O process
    kind = "probe"
    default_poll_ms = 1000.0
    bus_class: type[ProbeBus] = ProbeBus
    bus_key = "probes.bus"
    conversion_s = 0.0
    point_doc = "probe temperature"
    reader: Any
    base_dir: Path
    bus: ProbeBus | None = None

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        max_age = config.poll_s * site.scan.stale_after_polls + cls.conversion_s
        return [PointSpec(f"{config.name}.temp_c", source=config.name, unit="degC",
                          max_age_s=max_age, doc=cls.point_doc)]

    def shared_bus(self, ctx: DriverContext) -> ProbeBus:
        """The bus of this probe's folder, made by the first probe that asks for it."""
        bus = ctx.shared(f"{self.bus_key}:{self.base_dir}",
                         lambda: self.bus_class(self.base_dir, ctx.image, ctx.clock))
        assert isinstance(bus, self.bus_class)
        return bus

    def start(self, ctx: DriverContext) -> None:
        self.bus = self.shared_bus(ctx)
        self.bus.add(self.reader)
        self.bus.start()

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.remove(self.name)
            self.bus = None

    def stats(self) -> dict[str, Any]:
        return self.reader.stats()
