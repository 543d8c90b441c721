"""The base of every I/O driver (meters, probes, breaker LEDs, relays).

A driver type answers to ``driver = "..."`` in a device section ([[meter]], [[probe]],
[[breaker]], [[output]]). It declares its points from configuration alone (so `busguard check`
can validate references without touching hardware), then, once started, fills the process
image in the background: its own thread or tasks on the runtime's I/O event loop. It never
blocks the scan. Output-capable drivers receive the output image through :meth:`apply`, which
must return at once (queue the write, do it in the background).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.clock import Clock
from busguard.config.params import Param
from busguard.image import ImageWriter, PointSpec

if TYPE_CHECKING:
    from busguard.config.site import DeviceConfig, SiteConfig
    from busguard.registry import TypeRegistry


@dataclass
class DriverContext:
    """What a started driver may use: the image (to write), the clock, the shared I/O loop and
    resources. The image is the scan process's :class:`~busguard.image.ProcessImage`, or in the
    I/O process the link's writer: the same calls either way.

    ``shared(key, factory)`` returns one object per key for all drivers, e.g. one RS-485 line
    that several meters on different unit ids share.
    """

    image: ImageWriter
    clock: Clock
    loop: asyncio.AbstractEventLoop
    site: SiteConfig
    registry: TypeRegistry | None = None  # the types the site was read with (GPIO backends)
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._shared:
                self._shared[key] = factory()
            return self._shared[key]


class Driver:
    """Subclass this; set ``type_name``, ``kind`` and ``params``."""

    type_name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "meter", "probe", "breaker" or "output"
    params: ClassVar[Mapping[str, Param]] = {}
    default_poll_ms: ClassVar[float] = 1000.0
    # True for input-only drivers that only write the image (write/write_many/set_quality)
    # and never read it or take outputs: with ``[scan] io = "process"`` they run in the I/O
    # process (busguard.ioproc) instead of beside the scan.
    io_process_ok: ClassVar[bool] = False

    @property
    def runs_in_io_process(self) -> bool:
        """Whether ``[scan] io = "process"`` runs this driver in the I/O process: declared
        ``io_process_ok`` and taking no outputs (outputs are applied beside the scan)."""
        return self.io_process_ok and not self.consumes()

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        self.config = config
        self.site = site
        self.name = config.name

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        """The input points this device will write, from configuration alone (no I/O).

        Raise :class:`busguard.errors.ConfigError` for problems only the driver can see
        (e.g. a meter profile that does not exist).
        """
        return []

    def consumes(self) -> tuple[str, ...]:
        """Output names this driver applies (for output-capable drivers)."""
        return ()

    def start(self, ctx: DriverContext) -> None:
        """Begin background I/O. Must return promptly."""

    def apply(self, outputs: Mapping[str, float]) -> None:
        """Take the output image of a scan. Must return at once (no I/O wait)."""

    def stop(self) -> None:
        """Stop background I/O; called once at shutdown."""

    def stats(self) -> dict[str, Any]:
        """Health figures (latency, packet loss...) for status views and comm-health blocks."""
        return {}
