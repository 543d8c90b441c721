"""Modbus unit ids: which view of the register image each serves, and who it says it is.

Unit ids 1, 0 and 255 (:data:`busguard.northbound.mapdef.SITE_UNITS`) serve the whole-site
map; each device's unit id serves its block alone, from address 0, so one DCIM template per
device kind fits every device (Modbus gateways and Victron's Venus OS work the same way). A
unit id nobody has is answered with exception 0x0B (gateway target device failed to respond),
as a gateway answers for a device that is not there.

Function 43 / MEI 14 (Read Device Identification), which DCIM discovery sends, answers per
unit id with the objects :meth:`Identity.info` lists; the server
(:func:`busguard.northbound.server.identify`) encodes them with pymodbus's own identification
objects, so this module stays free of pymodbus (only the client transport, the server and the
simulator import it). pymodbus's request handler reads one process-wide identity
(``ModbusControlBlock`` is a singleton), which cannot tell two unit ids, or two servers in one
process, apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

VENDOR = "busguard"
GATEWAY_NO_RESPONSE = 0x0B  # exception code: gateway target device failed to respond
# private objects (0x80..0xFF) of Read Device Identification
OBJ_FINGERPRINT, OBJ_MAP_VERSION, OBJ_SLOT = 0x80, 0x81, 0x82


@dataclass(frozen=True)
class Identity:
    """What Read Device Identification says at one unit id."""

    product_code: str  # BG-SITE, BG-METER, BG-PROBE, BG-BREAKER: the DCIM template's key
    product_name: str
    model_name: str  # the device's name ("site" for the whole map)
    site_name: str
    fingerprint: int
    version: str
    map_version: int = 2

    def info(self) -> dict[int, str]:
        """The identification objects, by object id (0x00..0x06 standard, 0x80.. private)."""
        return {0x00: VENDOR, 0x01: self.product_code, 0x02: self.version,
                0x04: self.product_name, 0x05: self.model_name, 0x06: self.site_name,
                OBJ_FINGERPRINT: f"0x{self.fingerprint:08x}",
                OBJ_MAP_VERSION: str(self.map_version)}


class UnitTable:
    """Unit id -> the whole map, one device's block (first register, registers), or none."""

    def __init__(self, site_units: Sequence[int], site: Identity,
                 views: Mapping[int, tuple[int, int, Identity]]) -> None:
        self.site_units = frozenset(site_units)
        self.site = site
        self.views = dict(views)

    def view(self, unit: int) -> tuple[int, int | None] | None:
        """(first register, registers or None for the whole image), or None: no such unit."""
        if unit in self.site_units:
            return 0, None
        v = self.views.get(unit)
        return None if v is None else (v[0], v[1])

    def identity(self, unit: int) -> Identity | None:
        """Who unit id ``unit`` says it is (None: nobody has it)."""
        if unit in self.site_units:
            return self.site
        v = self.views.get(unit)
        return None if v is None else v[2]
