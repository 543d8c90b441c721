"""A third-party plugin, installed like any distribution: a block and a driver type."""

from __future__ import annotations

from busguard import hookimpl
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.driver import Driver
from busguard.image import PointSpec, Quality


class RackBudget(Block):
    """Sets `<name>.over` while a rack draws more than its power budget."""

    type_name = "rack_budget"
    params = {"point": Param(str, ref="point"), "budget_kw": Param(float, above=0.0)}

    def inputs(self):
        return (self.p["point"],)

    def outputs(self):
        return {f"{self.name}.over": 0.0}

    def scan(self, inputs, now):
        over = inputs.value(self.p["point"], 0.0) > self.p["budget_kw"]
        return BlockResult(outputs={f"{self.name}.over": 1.0 if over else 0.0})


class ConstantMeter(Driver):
    """A meter driver that reports a fixed power (stands for a vendor's own protocol)."""

    type_name = "constant"
    kind = "meter"
    params = {"power_kw": Param(float)}

    @classmethod
    def declare_points(cls, config, site):
        return [PointSpec(f"{config.name}.power_kw", source=config.name, unit="kW")]

    def start(self, ctx):
        ctx.image.write(f"{self.name}.power_kw", self.config.params["power_kw"], Quality.GOOD)


@hookimpl
def busguard_register_types(registry):
    registry.add_block(RackBudget)
    registry.add_driver(ConstantMeter)
