"""The Modbus driver types and the tables they own, as the "core" plugin registers them."""

from __future__ import annotations

from typing import Any

from busguard.modbus.driver import ModbusRtuMeter, ModbusTcpMeter
from busguard.modbus.shared import MODBUS_PARAMS, RS485_PARAMS
from busguard.modbus.write import ModbusWrite


def register_types(registry: Any) -> None:
    """Register the Modbus driver types and their shared tables (called from builtin)."""
    registry.add_driver(ModbusTcpMeter, default=True)
    registry.add_driver(ModbusRtuMeter)
    registry.add_driver(ModbusWrite)
    registry.add_section("rs485", RS485_PARAMS, many=True, keyed=True,
                         doc="RS-485 lines shared by modbus_rtu devices")
    registry.add_section("modbus", MODBUS_PARAMS, doc="Modbus client settings")
