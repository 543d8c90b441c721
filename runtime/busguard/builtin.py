"""The runtime's own plugin: registered through the ``busguard`` entry point ("core"),
exactly like a third party's, so built-ins have no private path into the runtime."""

from __future__ import annotations

from busguard import hookimpl
from busguard.drivers_memory import MemoryBreaker, MemoryMeter, MemoryOutput, MemoryProbe
from busguard.faultlog import (  # noqa: F401  (the fault log's observer hooks)
    faultlog_alarm_cleared,
    faultlog_alarm_raised,
    faultlog_command_written,
    faultlog_fault,
    faultlog_shutdown,
    faultlog_startup,
)
from busguard.gpio.drivers import register_types as register_gpio
from busguard.iio.driver import register_types as register_iio
from busguard.modbus.driver import register_types as register_modbus
from busguard.modbus.rtdprobe import ModbusRtdProbe
from busguard.northbound.publisher import ModbusServerPublisher
from busguard.registry import TypeRegistry
from busguard.retained import PARAMS as RETAINED_PARAMS
from busguard.retained import retained_startup  # noqa: F401  (restore/save retained state)
from busguard.service import SERVICE_PARAMS
from busguard.w1.driver import register_types as register_w1


@hookimpl
def busguard_register_types(registry: TypeRegistry) -> None:
    for cls in (MemoryMeter, MemoryProbe, MemoryBreaker, MemoryOutput):
        registry.add_driver(cls)
    register_modbus(registry)  # modbus_tcp (default meter), modbus_rtu, modbus_write
    register_w1(registry)  # w1 (default probe), [onewire]
    register_iio(registry)  # iio (PT100 through a MAX31865 and other IIO probes), [iio]
    registry.add_driver(ModbusRtdProbe)  # modbus_rtd: a channel of an RS-485 RTD module
    register_gpio(registry)  # gpio (default breaker), gpio_relay, [gpio]
    registry.add_publisher(ModbusServerPublisher)  # [modbus_server]: the DCIM's map
    registry.add_section("retained", RETAINED_PARAMS, doc="retained state across restarts")
    registry.add_section("service", SERVICE_PARAMS, doc="systemd service: watchdog, status, "
                         "real-time priority")
