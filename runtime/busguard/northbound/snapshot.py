"""The decoded map for the other outward interfaces (web, metrics, SNMP, Sparkplug, peers).

Every outward interface serves the same scan-consistent snapshot (docs/architecture.md, "The
integration surface"): the DCIM's register image, which one scan produced and the Modbus
server already encoded. Instead of each interface copying values out of the scan, they decode
that image here, the way ``busguard status --json`` decodes it over TCP: one answer never mixes
two scans, what the web page, ``/metrics`` or an SNMP walk shows is exactly what the DCIM reads,
and nothing is computed per request (a decode happens at most once per new image, however
many clients ask).

Use :func:`map_snapshot` from a publisher's ``start`` (scan process, ``io = "threads"``) or
``start_remote`` (I/O process): it finds the ``[modbus_server]`` publisher serving in the same
process and returns its :class:`MapSnapshot`, shared by every interface in that process.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from busguard.errors import BusguardError
from busguard.northbound.reader import read_all

ImageFn = Callable[[], bytes]


class MapSnapshot:
    """The newest register image, decoded once per image (thread-safe).

    ``latest()`` returns a dict shaped as ``busguard status --json`` prints it (header,
    devices, outputs, alarms, commands, extras); callers must treat it as read-only, since the
    same object goes to every caller until the next image.
    """

    def __init__(self, image: ImageFn) -> None:
        self._image = image
        self._lock = threading.Lock()
        self._src: bytes | None = None
        self._decoded: dict[str, Any] = {}
        self.generation = 0  # +1 per new image decoded: a cheap "has it changed?" for pollers

    def raw(self) -> bytes:
        """The register image as the DCIM reads it (big-endian words, address 0 first)."""
        return self._image()

    def latest(self) -> dict[str, Any]:
        img = self._image()
        if img is self._src:
            return self._decoded
        with self._lock:
            if img is not self._src:
                self._decoded = decode(img)
                self._src = img
                self.generation += 1
            return self._decoded


def decode(image: bytes) -> dict[str, Any]:
    """Decode a whole register image (as :func:`busguard.northbound.reader.read_all`)."""
    size = len(image) // 2

    def read(address: int, count: int) -> list[int]:
        if address < 0 or address + count > size:
            raise BusguardError(f"register image: {address}+{count} beyond its {size} words")
        return list(struct.unpack_from(f">{count}H", image, 2 * address))

    return read_all(read)


def map_snapshot(publishers: Iterable[object]) -> MapSnapshot:
    """The :class:`MapSnapshot` of the ``[modbus_server]`` publisher among ``publishers``
    (``runtime.publishers``, or ``ctx.publishers`` in the I/O process). The image is looked up
    at each call, so a publisher may call this before the Modbus server has started."""
    from busguard.northbound.publisher import ModbusServerPublisher

    for pub in publishers:
        if isinstance(pub, ModbusServerPublisher):
            snap = getattr(pub, "snapshot", None)
            if snap is None:
                snap = pub.snapshot = MapSnapshot(pub.served_image)
            return snap
    raise BusguardError("this interface serves the register map's snapshot: the site needs a "
                        "[modbus_server] table (it may listen on loopback only)")
