"""Annunciator outputs: a horn or a beacon that follows the alarm table, not a level.

An alarm relay driven by a block's instantaneous level drops back to 0 when the busbar cools,
while the 0xCF alarm it announced is still latched and nobody has acknowledged it. An
annunciator (ISA-18.2's audible and visual alarm indication) follows the *alarm table*
instead: an output device with ``follows = "alarms"`` is on while an alarm it watches is
active, or latched and unacknowledged; as a horn (``unacked_only = true``) it is on only while
an alarm it watches waits for acknowledgement, so an acknowledgement silences it and the next
new alarm sounds it again.

The runtime appends one :class:`Annunciator` block per such output after the site's own
blocks, so it reads the table as this scan's blocks left it. Its value is a function of the
alarm table, which is a function of the blocks' results: a recorded trace still replays to the
same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmTable, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import Snapshot

if TYPE_CHECKING:
    from busguard.config.site import DeviceConfig

SEVERITY_WORDS = tuple(s.word for s in Severity if s > Severity.INFO)

# Options every output driver accepts (merged into each output driver's params).
ANNUNCIATOR_PARAMS: Mapping[str, Param] = {
    "follows": Param(str, default="", choices=("", "alarms"),
                     doc="\"alarms\": the output follows the alarm table (an annunciator: "
                         "horn or beacon) instead of a block's output of the same name"),
    "severity": Param(str, default="critical", choices=SEVERITY_WORDS,
                      doc="with follows: the lowest severity that drives the output"),
    "latched_unacked": Param(bool, default=True,
                             doc="with follows: a latched alarm whose condition has gone "
                                 "keeps the output on until acknowledged"),
    "unacked_only": Param(bool, default=False,
                          doc="with follows: a horn: only unacknowledged alarms drive it, so "
                              "an acknowledgement (cmd.ack_alarms) silences it"),
    "codes": Param(list, item=str, default=(),
                   doc="with follows: only alarms with these codes (e.g. [\"0xCF\"]); empty: "
                       "any code"),
}


class Annunciator(Block):
    """One output that is 1 while an alarm it watches is on (see the module docstring)."""

    type_name = "annunciator"
    failsafe_policy: ClassVar[str] = (
        "Reads the alarm table, not inputs, so input loss does not reach it directly (a lost "
        "input raises BG-INPUT, which drives it when its severity is watched). If it faults "
        "its output is forced to 0.")
    reads_alarms: ClassVar[bool] = True

    def __init__(self, name: str, params: Mapping[str, Any], output: str) -> None:
        super().__init__(name, params)
        self.output = output
        self.min_severity = Severity[str(params["severity"]).upper()]
        self.latched_unacked = bool(params["latched_unacked"])
        self.unacked_only = bool(params["unacked_only"])
        self.codes = frozenset(params["codes"] or ())
        self.table: AlarmTable | None = None

    @classmethod
    def from_device(cls, dev: DeviceConfig) -> list[Annunciator]:
        """The annunciators of an ``[[output]]`` with ``follows = "alarms"``: one per output
        name it takes (``output``, or each of ``outputs``)."""
        p = dev.params
        names = [str(p["output"])] if "output" in p else [str(x) for x in p.get("outputs", ())]
        return [cls(dev.name if len(names) == 1 else f"{dev.name}.{out}", p, out)
                for out in names]

    def bind_alarms(self, table: AlarmTable) -> None:
        """The scan engine hands over the table it updates (before the first scan)."""
        self.table = table

    def outputs(self) -> Mapping[str, float]:
        return {self.output: 0.0}

    def on(self) -> bool:
        """Whether an alarm this annunciator watches is on now."""
        if self.table is None:
            return False
        for a in self.table.alarms.values():
            c = a.condition
            if c.severity < self.min_severity or (self.codes and c.code not in self.codes):
                continue
            if self.unacked_only:
                if not a.acked:
                    return True
            elif a.active or (self.latched_unacked and not a.acked):
                return True
        return False

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        res = BlockResult()
        res.outputs[self.output] = 1.0 if self.on() else 0.0
        return res


def annunciators(devices: tuple[DeviceConfig, ...], block_outputs: Mapping[str, str]
                 ) -> list[Annunciator]:
    """One annunciator per output device that follows the alarm table.

    ``block_outputs`` maps each output the site's blocks write to the block's name: an output
    that follows the alarms has no other writer."""
    made = []
    problems = []
    for dev in devices:
        if dev.kind != "output" or dev.params.get("follows") != "alarms":
            continue
        for ann in Annunciator.from_device(dev):
            if ann.output in block_outputs:
                problems.append(ConfigProblem(
                    dev.file, f"{dev.path}.follows", f"output {ann.output!r} follows the alarm "
                    f"table but block {block_outputs[ann.output]!r} also writes it; an output "
                    f"has one writer: remove the block's `output` or this `follows`"))
                continue
            made.append(ann)
    if problems:
        raise ConfigError(problems)
    return made
