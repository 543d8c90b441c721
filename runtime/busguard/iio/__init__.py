"""Linux IIO temperature channels (PT100/PT1000 through a MAX31865) for busguard.

- :mod:`busguard.iio.tree`: the sysfs tree as the kernel shows it; the simulator and tests
  write devices with :func:`write_max31865` and remove them with :func:`remove_device`.
- :mod:`busguard.iio.rtd`: the IEC 60751 RTD curve and the MAX31865 code.
- :mod:`busguard.iio.driver`: the probe driver type ``iio``.
"""

from busguard.iio.tree import (
    find_device,
    remove_device,
    write_abi_device,
    write_max31865,
    write_raw_code,
)

__all__ = ["find_device", "remove_device", "write_abi_device", "write_max31865",
           "write_raw_code"]
