"""busguard's built-in logic blocks, one block per module.

Registered through the ``busguard`` entry point ("blocks") like any third-party plugin.
"""

from __future__ import annotations

from busguard import hookimpl
from busguard.registry import TypeRegistry
from busguard_blocks.threshold import ThresholdAlarm


@hookimpl
def busguard_register_types(registry: TypeRegistry) -> None:
    for cls in (ThresholdAlarm,):
        registry.add_block(cls)
