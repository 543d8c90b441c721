"""The base of northbound publishers (the DCIM's Modbus TCP server, metrics).

A publisher type owns one top-level table of site.toml (``section``, e.g. ``[modbus_server]``),
is started after the retained state is loaded (so it serves last known values at once) and is
told about every completed scan. It must not block the scan: ``on_scan`` copies what it needs.

With ``[scan] io = "process"`` a publisher that declares ``io_process_ok`` serves from the I/O
process (:mod:`busguard.ioproc`): there it is built from the same site and started with
:meth:`Publisher.start_remote`; in the scan process :meth:`Publisher.start` only hands itself
to the supervisor as the frame source (``runtime.io.frame_source``) and
:meth:`Publisher.frame_payload` gives the bytes of its newest frame when the I/O process asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.firewall import Listener
    from busguard.ioproc.process import RemoteContext
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult


class Publisher:
    """Subclass this; set ``section`` and ``params``."""

    section: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    doc: ClassVar[str] = ""
    # True when the publisher can serve from the I/O process (``[scan] io = "process"``):
    # it then implements :meth:`start_remote` and :meth:`frame_payload`.
    io_process_ok: ClassVar[bool] = False
    # a block type (registered like any other) built with each table of this publisher, named
    # after the section, when the site declares no [[block]] of that type: the PLC pattern for
    # a publisher's own health (it writes input points, the block raises the alarms). The block
    # class makes it with ``for_publisher(config, site)``.
    companion_block: ClassVar[str] = ""

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        self.config = config
        self.site = site

    def start(self, runtime: Runtime) -> None:
        """Begin serving. Must return promptly."""

    def on_scan(self, result: CycleResult) -> None:
        """Called by the scan thread after each cycle; must return at once."""

    def start_remote(self, ctx: RemoteContext) -> None:
        """In the I/O process (``io_process_ok``): begin serving from the frames the scan
        process sends (``ctx.frames``, the bytes :meth:`frame_payload` made), over the scan
        process's point layout (``ctx.layout``); writes from outside go to ``ctx.image``, which
        sends them to the scan process. Must return promptly."""
        raise NotImplementedError(f"{type(self).__name__} declares io_process_ok but cannot "
                                  f"start in the I/O process")

    def frame_payload(self) -> bytes:
        """In the scan process (``io_process_ok``): the newest scan's frame for the I/O
        process, as :meth:`start_remote`'s side reads it (scan thread: copy, do not encode)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving."""

    def status(self) -> dict[str, Any]:
        return {}

    def listeners(self) -> list[Listener]:
        """The ports this publisher listens on, with who may connect, from configuration
        alone (no socket is opened): ``busguard firewall`` writes kernel rules from them."""
        return []
