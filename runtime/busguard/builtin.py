"""The runtime's own plugin: registered through the ``busguard`` entry point ("core"),
exactly like a third party's, so built-ins have no private path into the runtime.

Everything it offers goes through ``busguard_register_types``: driver, publisher and section
types, the GPIO backends, and the observers each runtime gets (the fault log, retained state),
registered as explicit objects rather than as module-level hooks kept alive by imports.
"""

from __future__ import annotations

from busguard import hookimpl
from busguard.drivers_memory import MemoryBreaker, MemoryMeter, MemoryOutput, MemoryProbe
from busguard.faultlog import OBSERVER_NAME as FAULTLOG_OBSERVER
from busguard.faultlog import FaultLogObserver
from busguard.gpio.drivers import register_types as register_gpio
from busguard.history.publisher import HistoryPublisher
from busguard.iio.driver import register_types as register_iio
from busguard.journal import OBSERVER_NAME as JOURNAL_OBSERVER
from busguard.journal import JournalObserver
from busguard.modbus.plugin import register_types as register_modbus
from busguard.modbus.rtdprobe import ModbusRtdProbe
from busguard.northbound.publisher import ModbusServerPublisher
from busguard.peer import register_types as register_peer
from busguard.registry import TypeRegistry
from busguard.retained import PARAMS as RETAINED_PARAMS
from busguard.retained import PLUGIN_NAME as RETAINED_OBSERVER
from busguard.retained import RetainedState
from busguard.service import SERVICE_PARAMS
from busguard.snmp.publisher import SnmpPublisher
from busguard.w1.driver import register_types as register_w1
from busguard.web.publisher import WebPublisher


@hookimpl
def busguard_register_types(registry: TypeRegistry) -> None:
    for cls in (MemoryMeter, MemoryProbe, MemoryBreaker, MemoryOutput):
        registry.add_driver(cls)
    register_modbus(registry)  # modbus_tcp (default meter), modbus_rtu, modbus_write
    register_w1(registry)  # w1 (default probe), [onewire]
    register_iio(registry)  # iio (PT100 through a MAX31865 and other IIO probes), [iio]
    registry.add_driver(ModbusRtdProbe)  # modbus_rtd: a channel of an RS-485 RTD module
    register_gpio(registry)  # gpio (default breaker), gpio_relay, [gpio], its backends
    registry.add_publisher(ModbusServerPublisher)  # [modbus_server]: the DCIM's map
    registry.add_publisher(WebPublisher)  # [web]: the operator's page and /metrics
    registry.add_publisher(SnmpPublisher)  # [snmp]: SNMPv3 agent for the BMS/NMS
    registry.add_publisher(HistoryPublisher)  # [history]: 1 s / 1 min on-box history
    register_peer(registry)  # busguard_peer: another busguard's map (row/hall aggregators)
    registry.add_section("retained", RETAINED_PARAMS, doc="retained state across restarts")
    registry.add_section("service", SERVICE_PARAMS, doc="systemd service: watchdog, status, "
                         "real-time priority")
    registry.add_observer(FAULTLOG_OBSERVER, FaultLogObserver)  # one line per alarm edge
    registry.add_observer(RETAINED_OBSERVER, RetainedState)  # restore at startup, then save
    registry.add_observer(JOURNAL_OBSERVER, JournalObserver)  # alarm edges, syslog priorities
