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

from busguard.config.params import Param, Section
from busguard.errors import ConfigProblem
from busguard.northbound import access

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

    def reader(self) -> Section:
        """A reader over this publisher's table that collects every problem found (raise them
        together with ``Section.raise_problems``), so `busguard check` shows them all."""
        return Section(self.config.file, self.section, self.config.params, [])

    def needs_map(self, sec: Section, verb: str) -> None:
        """Note a problem unless the site has the ``[modbus_server]`` table whose snapshot this
        publisher ``verb`` (serves, records, publishes): every outward interface reads it."""
        if "modbus_server" not in self.site.publishers:
            sec.problems.append(ConfigProblem(
                self.config.file, self.section, f"{verb} the register map's snapshot: the site "
                "needs a [modbus_server] table (it may listen on loopback only)"))

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


def listener_params(*, port: int, port_doc: str, host_note: str = "", needs: str = "",
                    allow_who: str = "that may connect") -> dict[str, Param]:
    """``host``, ``port`` and ``allow`` as every listening publisher declares them (design.md:
    every listener has an ``allow`` list, empty: loopback only); a section spreads this into
    its ``params`` and adds its own options. The words differ by protocol only:
    ``host_note`` (" (UDP)"), what a non-loopback host needs besides ``allow`` (" and TLS"),
    the port's doc and who the allowed clients are."""
    return {
        "host": Param(str, default="127.0.0.1", doc=f"address to listen on{host_note}; any "
                      f"address other than loopback needs `allow`{needs}"),
        "port": Param(int, default=port, minval=0, maxval=65535, doc=port_doc),
        "allow": Param(list, item=str, default=(), doc=f"CIDRs {allow_who}; empty: "
                       "loopback only"),
    }


def cidrs(sec: Section, key: str = "allow",
          example: str = "10.0.5.0/24") -> tuple[access.Network, ...]:
    """A listener's list of CIDRs (``allow``, ``write_allow``...); a bad one is a problem
    naming the key, with an ``example`` of what is valid."""
    try:
        return access.parse_networks(sec.data[key] or ())
    except ValueError as exc:
        sec.problem(key, f"{exc}; expected CIDRs such as '{example}'")
        return ()


def listener_allow(sec: Section, who: str) -> tuple[access.Network, ...]:
    """The ``allow`` networks of a listener's table; a host other than loopback with an empty
    ``allow`` is a problem that says to list ``who`` (e.g. "the managers' networks")."""
    allow = cidrs(sec)
    host = sec.data["host"]
    if not allow and not access.is_loopback(host):
        sec.problem("host", f"{host!r} is not loopback but `allow` is empty; list {who} "
                    f"(allow = [\"10.0.5.0/24\"]) or use host = \"127.0.0.1\"")
    return allow
