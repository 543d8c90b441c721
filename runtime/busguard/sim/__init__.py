"""The site simulator: a whole site brought to life on loopback from its site.toml.

- :mod:`busguard.sim.model`: the physical model (rack load curves, three-phase currents, THD
  rising with GPU PSU load, busbar temperatures with first-order thermal inertia, breaker trips).
  Every value is a pure function of the seed, the scenario and the model time ``t``.
- :mod:`busguard.sim.scenarios`: named scenarios (normal, training-spike, thd-rise, ...) as
  schedules over model time, plus the comm fault knobs.
- :mod:`busguard.sim.serve`: the only module that talks Modbus (pymodbus server side): one TCP
  server per ``modbus_tcp`` meter, one RTU slave per RS-485 line on a pty pair.
- :mod:`busguard.sim.files`: the 1-Wire sysfs tree and the mock GPIO LED lines.
- :mod:`busguard.sim.runner`: :class:`Simulator`, tying the above to a site file.

Importing this package does not load pymodbus (only :mod:`busguard.sim.serve` does).
"""

from __future__ import annotations

from busguard.sim.model import SiteModel
from busguard.sim.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Scenario", "SiteModel"]
