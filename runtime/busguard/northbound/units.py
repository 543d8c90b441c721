"""Modbus unit ids: which view of the register image each serves, and who it says it is.

Unit ids 1, 0 and 255 (:data:`busguard.northbound.mapdef.SITE_UNITS`) serve the whole-site
map; each device's unit id serves its block alone, from address 0, so one DCIM template per
device kind fits every device (Modbus gateways and Victron's Venus OS work the same way). A
unit id nobody has is answered with exception 0x0B (gateway target device failed to respond),
as a gateway answers for a device that is not there.

Function 43 / MEI 14 (Read Device Identification), which DCIM discovery sends, answers per
unit id from pymodbus's own identification objects (:class:`ModbusDeviceIdentification`,
``DeviceInformationFactory``, ``ReadDeviceInformationResponse``): pymodbus's request handler
reads one process-wide identity (``ModbusControlBlock`` is a singleton), which cannot tell two
unit ids, or two servers in one process, apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymodbus.constants import DeviceInformation, ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.device import DeviceInformationFactory, ModbusDeviceIdentification
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse

VENDOR = "busguard"
GATEWAY_NO_RESPONSE = ExcCodes.GATEWAY_NO_RESPONSE  # 0x0B: target device failed to respond
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

    def objects(self) -> ModbusDeviceIdentification:
        return ModbusDeviceIdentification(info={
            0x00: VENDOR, 0x01: self.product_code, 0x02: self.version,
            0x04: self.product_name, 0x05: self.model_name, 0x06: self.site_name,
            OBJ_FINGERPRINT: f"0x{self.fingerprint:08x}",
            OBJ_MAP_VERSION: str(self.map_version)})


class _Control:  # what DeviceInformationFactory reads: `.Identity`
    def __init__(self, identity: ModbusDeviceIdentification) -> None:
        self.Identity = identity  # pymodbus's attribute name


class UnitTable:
    """Unit id -> the whole map, one device's block (first register, registers), or none."""

    def __init__(self, site_units: Sequence[int], site: Identity,
                 views: Mapping[int, tuple[int, int, Identity]]) -> None:
        self.site_units = frozenset(site_units)
        self.site = site
        self.views = dict(views)
        self._controls = {u: _Control(v[2].objects()) for u, v in self.views.items()}
        self._site_control = _Control(site.objects())

    def view(self, unit: int) -> tuple[int, int | None] | None:
        """(first register, registers or None for the whole image), or None: no such unit."""
        if unit in self.site_units:
            return 0, None
        v = self.views.get(unit)
        return None if v is None else (v[0], v[1])

    def identify(self, pdu: ReadDeviceInformationRequest) -> ModbusPDU:
        """The answer to a Read Device Identification request at its unit id (pymodbus's
        own checks and encoding, this unit id's objects)."""
        unit = pdu.dev_id
        control = self._site_control if unit in self.site_units else self._controls.get(unit)
        if control is None:
            return ExceptionResponse(pdu.function_code, GATEWAY_NO_RESPONSE, device_id=unit,
                                     transaction=pdu.transaction_id)
        if not 0x00 <= pdu.object_id <= 0xFF or not 0x01 <= pdu.read_code <= 0x04:
            return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_VALUE,
                                     device_id=unit, transaction=pdu.transaction_id)
        info = DeviceInformationFactory.get(control, pdu.read_code, pdu.object_id)
        if pdu.read_code == DeviceInformation.SPECIFIC and (
                0x07 <= pdu.object_id < 0x80 or not info.get(pdu.object_id)):
            return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_ADDRESS,
                                     device_id=unit, transaction=pdu.transaction_id)
        return ReadDeviceInformationResponse(read_code=pdu.read_code, information=info,
                                             dev_id=unit, transaction_id=pdu.transaction_id)
