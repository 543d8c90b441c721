"""busguard's built-in logic blocks, one block per module.

Registered through the ``busguard`` entry point ("blocks") like any third-party plugin.
"""

from __future__ import annotations

from busguard import hookimpl
from busguard.registry import TypeRegistry
from busguard_blocks.comm_health import CommHealth
from busguard_blocks.power_quality import PowerQuality
from busguard_blocks.predictive_cooling import PredictiveCooling
from busguard_blocks.row_summary import RowSummary
from busguard_blocks.shunt_trip import ShuntTrip
from busguard_blocks.sparkplug_health import SparkplugHealth
from busguard_blocks.thermal_interlock import ThermalInterlock
from busguard_blocks.threshold import ThresholdAlarm
from busguard_blocks.transient_events import TransientEvents

# Every built-in block type, in the order docs/blocks.md lists them.
BLOCKS = (ShuntTrip, ThermalInterlock, PowerQuality, TransientEvents, PredictiveCooling,
          CommHealth, ThresholdAlarm, RowSummary, SparkplugHealth)


@hookimpl
def busguard_register_types(registry: TypeRegistry) -> None:
    for cls in BLOCKS:
        registry.add_block(cls)
