"""Modbus client side: meter profiles, read planning, the meter and write drivers.

pymodbus is used only in :mod:`busguard.modbus.transport` (the client side) and in the
northbound server module, pinned to a tested minor range (see design.md).
"""

from busguard.modbus.codec import TYPES, WORD_ORDERS, decode, encode
from busguard.modbus.profiles import PointDef, Profile, bundled_names, load_profile

__all__ = ["TYPES", "WORD_ORDERS", "PointDef", "Profile", "bundled_names", "decode", "encode",
           "load_profile"]
