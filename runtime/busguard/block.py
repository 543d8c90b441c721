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
from busguard.inputwatch import InputWatch

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

Value = float


@dataclass(slots=True)
class BlockResult:
    """What one scan of a block produced: output values and the alarm conditions that hold."""

    outputs: dict[str, Value] = field(default_factory=dict)
    alarms: list[AlarmCondition] = field(default_factory=list)

    def add(self, alarm: AlarmCondition | None) -> None:
        """Add an alarm condition that holds; ``None`` (a check that found nothing) is skipped."""
        if alarm is not None:
            self.alarms.append(alarm)


@dataclass(frozen=True)
class BreakerView:
    """What the register map shows about one breaker a block protects, declared by the block
    (:meth:`Block.map_breakers`), so the northbound never reads a block's params or state.

    :param breaker: the ``[[breaker]]`` device name.
    :param trip_output: the block output that commands the trip (>= 0.5: tripping); the
        device's ``shunt_trip`` flag.
    :param reset_command: the command point that resets a latched trip ("" if none); its
        address is the device's ``reset_command`` word.
    """

    breaker: str
    trip_output: str
    reset_command: str = ""


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker's trip state now, from the block that protects it (:meth:`Block.breakers`).

    The register map shows it in the breaker's block (the ``trip_latched`` flag, the
    ``trip_cause`` number of :mod:`busguard.alarmcodes` and the trip's UTC time), so a DCIM
    reads *why* a breaker tripped and when, not only that it did.

    :param latched: a trip is latched until an authorised reset (the ``trip_latched`` flag).
    :param cause: the code of the trip that is latched, or that the block commands now (e.g.
        ``0xCF``, ``BG-TRIP-OC``: the fault log's code), "" when none.
    :param t_utc: UTC time (epoch s) the trip was commanded; ``None`` when none. Retained
        with the latch, so it survives a restart.
    """

    latched: bool
    cause: str = ""
    t_utc: float | None = None


class Block:
    """Subclass this, set ``type_name`` and ``params``, implement ``scan``."""

    type_name: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    #: what the block does when an input is stale, bad or missing, and which outputs it
    #: forces when it faults (one paragraph; docs/blocks.md shows it)
    failsafe_policy: ClassVar[str] = ""
    #: alarm code -> "severity: meaning" for every code the block raises (docs/blocks.md)
    codes: ClassVar[Mapping[str, str]] = {}
    # True for a block that reads the alarm table (an annunciator): the scan engine hands it
    # the table through bind_alarms() before the first scan. Such a block sees the table as
    # the blocks before it in this scan left it, so it belongs after them.
    reads_alarms: ClassVar[bool] = False

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        #: the validated options (frozen :class:`busguard.config.params.Values` from
        #: site.toml, every declared default applied): read as ``self.p["name"]``
        self.p: Mapping[str, Any] = params
        #: the block's debounced ``BG-INPUT`` alarm (:mod:`busguard.inputwatch`): a scan
        #: reports what it lost with ``res.add(self.input_watch.alarm(lost, now, what))``
        self.input_watch = InputWatch()

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

    def begin_scan(self, now: float) -> BlockResult:
        """The start of a :meth:`scan`: starts the input watch's clock (its start-up grace
        counts from the first scan) and returns this scan's empty result."""
        self.input_watch.tick(now)
        return BlockResult()

    def map_breakers(self) -> tuple[BreakerView, ...]:
        """The breakers this block protects, as the register map shows them (trip output,
        reset command). Asked once, when the map is laid out."""
        return ()

    def breakers(self) -> Mapping[str, BreakerStatus]:
        """Breaker name -> its trip state now, for every breaker of :meth:`map_breakers`.
        Asked by the northbound from the scan thread when alarms change; must be cheap."""
        return {}

    def state(self) -> dict[str, Any]:
        """State that must survive a restart (latched trips); JSON-serialisable."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`state` returned before the last stop."""

    def bind_alarms(self, table: AlarmTable) -> None:
        """Receive the alarm table (only called when ``reads_alarms`` is True)."""
