"""In-memory devices: points that tests, replay and embedding code write themselves.

The memory driver is a real driver type (registered through the same entry point as the
others) for devices that have no hardware behind them: a test's meter, a value a plugin
computes, an output whose writes a test checks. Like gpiozero's mock pins it records what
happened: :attr:`MemoryOutput.history` holds every change it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from busguard.annunciator import ANNUNCIATOR_PARAMS
from busguard.config.params import Param
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import Driver, DriverContext
from busguard.image import PointSpec

POINTS = Param(list, item=str, default=(), doc="point names under the device, e.g. 'temp_c'")


class _MemoryInput(Driver):
    type_name = "memory"
    params: ClassVar[Mapping[str, Param]] = {
        "points": POINTS,
        "initial": Param(dict, default={}, doc="optional starting values by point"),
    }

    @classmethod
    def declare_points(cls, config: DeviceConfig, site: SiteConfig) -> list[PointSpec]:
        max_age = config.poll_s * site.scan.stale_after_polls
        return [PointSpec(f"{config.name}.{p}", source=config.name, max_age_s=max_age)
                for p in config.params["points"]]

    def start(self, ctx: DriverContext) -> None:
        initial: dict[str, Any] = dict(self.config.params["initial"])
        if initial:
            ctx.image.write_many([(f"{self.name}.{k}", float(v), 0) for k, v in initial.items()
                                  if f"{self.name}.{k}" in ctx.image])


class MemoryMeter(_MemoryInput):
    kind = "meter"


class MemoryProbe(_MemoryInput):
    kind = "probe"


class MemoryBreaker(_MemoryInput):
    kind = "breaker"


class MemoryOutput(Driver):
    """Takes named outputs and remembers every change (for tests and dry runs)."""

    type_name = "memory"
    kind = "output"
    params: ClassVar[Mapping[str, Param]] = {
        "outputs": Param(list, item=str, min_items=1, doc="output names this device takes"),
        **ANNUNCIATOR_PARAMS,
    }

    def __init__(self, config: DeviceConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        self.values: dict[str, float] = {}
        self.history: list[tuple[str, float]] = []

    def consumes(self) -> tuple[str, ...]:
        return tuple(self.config.params["outputs"])

    def apply(self, outputs: Mapping[str, float]) -> None:
        for name in self.consumes():
            if name in outputs and self.values.get(name) != outputs[name]:
                self.values[name] = outputs[name]
                self.history.append((name, outputs[name]))
