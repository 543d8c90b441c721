"""1-Wire temperature probes (DS18B20 family) for busguard.

- :mod:`busguard.w1.tree`: the sysfs file tree as the kernel shows it; the simulator and tests
  write probes with :func:`write_sensor_file` and remove them with :func:`remove_sensor`.
- :mod:`busguard.w1.driver`: the probe driver type ``w1`` (reads through w1thermsensor in one
  worker thread per bus).
"""

from busguard.w1.tree import (
    FAMILIES,
    POWER_ON_C,
    crc8,
    list_sensors,
    remove_sensor,
    split_sensor_id,
    w1_slave_text,
    write_not_ready,
    write_power_on_value,
    write_sensor_file,
)

__all__ = [
    "FAMILIES", "POWER_ON_C", "crc8", "list_sensors", "remove_sensor", "split_sensor_id",
    "w1_slave_text", "write_not_ready", "write_power_on_value", "write_sensor_file",
]
