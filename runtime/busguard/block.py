"""The base of every logic block, built-in or third-party.

A block declares what it reads (``inputs``), what it writes (``outputs`` with their fail-safe
values), its parameters (``params``, validated from site.toml like every other section) and
what it does when an input is stale or bad (its fail-safe policy, in the class docstring and in
code). ``scan()`` is a pure function of the input snapshot, the block's own state and ``now``:
no I/O, no clocks, no randomness. That is what lets a recorded trace replay to the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, AlarmTable
from busguard.config.params import Param
from busguard.image import PointSpec, Snapshot

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

Value = float


@dataclass(slots=True)
class BlockResult:
    """What one scan of a block produced: output values and the alarm conditions that hold."""

    outputs: dict[str, Value] = field(default_factory=dict)
    alarms: list[AlarmCondition] = field(default_factory=list)


class Block:
    """Subclass this, set ``type_name`` and ``params``, implement ``scan``."""

    type_name: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    # True for a block that reads the alarm table (an annunciator): the scan engine hands it
    # the table through bind_alarms() before the first scan. Such a block sees the table as
    # the blocks before it in this scan left it, so it belongs after them.
    reads_alarms: ClassVar[bool] = False

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.p = dict(params)

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        """Build the block from its validated [[block]] section."""
        return cls(config.name, config.params)

    def inputs(self) -> tuple[str, ...]:
        """Names of the input points this block reads."""
        return ()

    def outputs(self) -> Mapping[str, Value]:
        """Names of the outputs this block writes, each with its fail-safe value.

        The fail-safe value is what the runtime forces when the block faults or stops.
        """
        return {}

    def points(self) -> list[PointSpec]:
        """Extra input points the block owns (e.g. a reset command written by the DCIM)."""
        return []

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """State that must survive a restart (latched trips); JSON-serialisable."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`state` returned before the last stop."""

    def bind_alarms(self, table: AlarmTable) -> None:
        """Receive the alarm table (only called when ``reads_alarms`` is True)."""
