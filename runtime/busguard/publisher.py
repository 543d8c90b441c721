"""The base of northbound publishers (the DCIM's Modbus TCP server, metrics).

A publisher type owns one top-level table of site.toml (``section``, e.g. ``[modbus_server]``),
is started after the retained state is loaded (so it serves last known values at once) and is
told about every completed scan. It must not block the scan: ``on_scan`` copies what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.firewall import Listener
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult


class Publisher:
    """Subclass this; set ``section`` and ``params``."""

    section: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    doc: ClassVar[str] = ""
    # True when the publisher can serve from the I/O process (``[scan] io = "process"``):
    # it then implements :meth:`start_remote` there and :meth:`start_local` here.
    io_process_ok: ClassVar[bool] = False

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        self.config = config
        self.site = site

    def start(self, runtime: Runtime) -> None:
        """Begin serving. Must return promptly."""

    def on_scan(self, result: CycleResult) -> None:
        """Called by the scan thread after each cycle; must return at once."""

    def stop(self) -> None:
        """Stop serving."""

    def status(self) -> dict[str, Any]:
        return {}

    def listeners(self) -> list[Listener]:
        """The ports this publisher listens on, with who may connect, from configuration
        alone (no socket is opened): ``busguard firewall`` writes kernel rules from them."""
        return []
