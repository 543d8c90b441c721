"""The DCIM-facing side: the register map, its Modbus server and its snapshot."""

import busguard.web.nosim  # noqa: F401  (pymodbus.server without aiohttp: see there)
