"""The scan: one deterministic cycle (:class:`ScanEngine`) and the loop that paces it
(:class:`ScanLoop`).

The engine is what live runs and replay share: given a snapshot and the time, it runs the
blocks in site.toml order, isolates a block that raises (faulted, alarm raised once, its
outputs forced to their fail-safe values, the scan goes on) and returns the output image and
the alarm edges. The loop owns time: it wakes on absolute deadlines of the injected clock
(``t0 + k * period``, so there is no drift), counts overruns and measures lateness. Nothing in
either waits on I/O.
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from busguard.alarms import AlarmCondition, AlarmEdge, AlarmTable, Severity
from busguard.block import Block
from busguard.clock import Clock
from busguard.image import Snapshot
from busguard.stats import LatenessRecorder

log = logging.getLogger("busguard.scan")

ACK_POINT = "cmd.ack_alarms"
# acknowledge one code: low word the code's number (busguard.alarmcodes), high word a count
# the writer bumps, so the same code can be acknowledged again (docs/northbound.md)
ACK_CODE_POINT = "cmd.ack_code"
RESET_FAULTS_POINT = "cmd.reset_faults"


@dataclass
class CycleResult:
    """What one scan produced."""

    cycle: int
    now: float
    t_utc: float
    snapshot: Snapshot
    outputs: dict[str, float]
    edges: list[AlarmEdge] = field(default_factory=list)
    faults: list[tuple[str, BaseException]] = field(default_factory=list)
    lateness_s: float = 0.0


def output_owners(blocks: Iterable[Block]
                  ) -> tuple[dict[str, str], list[tuple[str, str, Block]]]:
    """An output has one writer: output -> the block that writes it (the first to declare
    it), and ``(output, first writer's name, later block)`` for every later declaration."""
    owners: dict[str, str] = {}
    clashes: list[tuple[str, str, Block]] = []
    for b in blocks:
        for out in b.outputs():
            if out in owners:
                clashes.append((out, owners[out], b))
            else:
                owners[out] = b.name
    return owners, clashes


class ScanEngine:
    """Runs blocks over snapshots. Deterministic: same snapshots in, same outputs out."""

    def __init__(self, blocks: Sequence[Block], alarms: AlarmTable | None = None) -> None:
        self.blocks = list(blocks)
        self.alarms = alarms or AlarmTable()
        self.faulted: dict[str, str] = {}
        self.cycle = 0
        self.failsafe: dict[str, float] = {}
        for out, first, b in output_owners(self.blocks)[1][:1]:
            raise ValueError(f"output {out!r} is written by both {first!r} and {b.name!r}")
        for b in self.blocks:
            for out, value in b.outputs().items():
                self.failsafe[out] = float(value)
        self.outputs: dict[str, float] = dict(self.failsafe)
        self._last_cmd: dict[str, float] = {}
        # each block with the outputs it declared, taken once: a block's outputs are fixed
        # when it is built (ownership was checked above on them), and asking every block for
        # a fresh dict every scan was a tenth of the cycle on a site of 64 small blocks
        self._declared = [(b, frozenset(b.outputs())) for b in self.blocks]
        for b in self.blocks:
            if b.reads_alarms:
                b.bind_alarms(self.alarms)

    def step(self, snap: Snapshot, t_utc: float) -> CycleResult:
        """Run one cycle over ``snap`` (taken at ``snap.now``)."""
        self.cycle += 1
        now = snap.now
        result = CycleResult(self.cycle, now, t_utc, snap, self.outputs)
        edges = result.edges
        if self._command_edge(snap, ACK_POINT):
            edges.extend(self.alarms.acknowledge(t_utc))
        if self._command_edge(snap, ACK_CODE_POINT):
            raw = snap.values[snap.index[ACK_CODE_POINT]]
            code_num = int(raw) & 0xFFFF if math.isfinite(raw) else 0  # 0: acknowledges none
            acked = self.alarms.acknowledge_code(t_utc, code_num)
            edges.extend(acked)
            log.info("cmd.ack_code: acknowledged the alarms of code number 0x%04X (%d "
                     "cleared)", code_num, len(acked))
        if self._command_edge(snap, RESET_FAULTS_POINT) and self.faulted:
            log.warning("fault reset requested: re-enabling %s", ", ".join(self.faulted))
            self.faulted.clear()
        outputs = self.outputs
        update = self.alarms.update
        faulted = self.faulted
        for block, declared in self._declared:
            if faulted and block.name in faulted:
                edges.extend(update(block.name, [self._fault_alarm(block)], t_utc))
                continue
            try:
                res = block.scan(snap, now)
                for name, value in res.outputs.items():
                    if name not in declared:
                        raise KeyError(f"block wrote undeclared output {name!r}")
                    v = float(value)
                    if math.isnan(v):
                        raise ValueError(f"block wrote NaN to output {name!r}")
                    outputs[name] = v
                new_edges = update(block.name, res.alarms, t_utc)
                if new_edges:
                    edges.extend(new_edges)
            except Exception as exc:  # isolate: one bad block never stops the scan
                self.faulted[block.name] = f"{type(exc).__name__}: {exc}"
                log.error("block %s faulted at cycle %d: %s\n%s", block.name, self.cycle,
                          self.faulted[block.name], traceback.format_exc().rstrip())
                for out in block.outputs():
                    self.outputs[out] = self.failsafe[out]
                edges.extend(self.alarms.update(block.name, [self._fault_alarm(block)], t_utc))
                result.faults.append((block.name, exc))
        result.outputs = dict(self.outputs)  # this cycle's output image, not a live view
        return result

    def _fault_alarm(self, block: Block) -> AlarmCondition:
        return AlarmCondition("block-fault", Severity.MAJOR, "BG-BLOCK-FAULT",
                              f"block {block.name} ({block.type_name}) faulted: "
                              f"{self.faulted[block.name]}; outputs forced to fail-safe",
                              device=block.name, latch=True)

    def _command_edge(self, snap: Snapshot, point: str) -> bool:
        """A command is a counter point: it fires when its value changes to a new good value."""
        if point not in snap.index or not snap.is_good(point):
            return False
        value = snap.values[snap.index[point]]
        last = self._last_cmd.get(point)
        self._last_cmd[point] = value
        return last is not None and value != last


class ScanLoop:
    """Paces a cycle function on absolute deadlines of ``clock``."""

    def __init__(self, cycle: Callable[[float, float], object], period_s: float, clock: Clock,
                 stats: LatenessRecorder) -> None:
        if period_s <= 0:
            raise ValueError("period must be positive")
        self.cycle = cycle
        self.period_s = period_s
        self.clock = clock
        self.stats = stats
        self.stop_event = threading.Event()
        self.t0 = 0.0
        self.slot = 0
        self.begun = False
        self.thread_id: int | None = None  # the OS id of the thread that runs the scan

    def deadline(self) -> float:
        return self.t0 + self.slot * self.period_s

    def begin(self) -> None:
        """Put the first deadline at now: slot k is due at ``t0 + k * period``."""
        self.t0 = self.clock.monotonic()
        self.slot = 0
        self.begun = True

    def step_once(self) -> None:
        """Wait for the next deadline, run one cycle, account for overruns."""
        clock = self.clock
        deadline = self.deadline()
        clock.sleep_until(deadline)
        start = clock.monotonic()
        lateness = start - deadline
        self.stats.add(lateness)
        self.cycle(start, lateness)
        self.slot += 1
        end = clock.monotonic()
        next_deadline = self.deadline()
        if end > next_deadline:
            missed = int((end - next_deadline) // self.period_s) + 1
            self.stats.overrun(missed)
            self.slot += missed  # stay on the grid: skip the slots we could not meet

    def run(self, max_cycles: int | None = None) -> int:
        """Run until :meth:`stop` (or ``max_cycles``); returns the cycles run."""
        if not self.begun:
            self.begin()
        self.thread_id = threading.get_native_id()
        ran = 0
        while not self.stop_event.is_set() and (max_cycles is None or ran < max_cycles):
            self.step_once()
            ran += 1
        return ran

    def stop(self) -> None:
        self.stop_event.set()
