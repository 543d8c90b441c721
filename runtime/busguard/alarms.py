"""One alarm model for every block: conditions in, edges out.

A block reports the alarm *conditions* that hold in this scan; the :class:`AlarmTable` turns
them into raise and clear *edges*, so an alarm is logged and published once when it starts and
once when it ends, never once per scan. Latching alarms stay active after their condition goes
until an operator acknowledges them; acknowledging never clears a condition that still holds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any


class Severity(IntEnum):
    """Priority of an alarm; the word is what the fault log prints (`grep -i critical`)."""

    INFO = 0
    WARNING = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class AlarmCondition:
    """An alarm condition a block sees in one scan.

    ``key`` is unique within the block; ``code`` is the stable, greppable code (the seed's
    ``0x02``, ``errno 110``, ``0xCF``, or a busguard code such as ``BG-THD``).
    """

    key: str
    severity: Severity
    code: str
    message: str
    device: str = ""
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    latch: bool = False


@dataclass
class AlarmState:
    """An alarm the table knows about (active, or latched waiting for acknowledgement)."""

    id: str
    block: str
    condition: AlarmCondition
    raised_utc: float
    active: bool = True
    acked: bool = False
    # restored from retained state: kept as it is (no clear edge) while the block has not
    # yet reported it again, until this UTC time (see AlarmTable.adopt)
    hold_until_utc: float = field(default=-math.inf, compare=False)

    def as_dict(self) -> dict[str, Any]:
        c = self.condition
        return {"id": self.id, "block": self.block, "key": c.key, "severity": c.severity.word,
                "code": c.code, "message": c.message, "device": c.device,
                "values": dict(c.values), "latch": c.latch, "raised_utc": self.raised_utc,
                "active": self.active, "acked": self.acked}


@dataclass(frozen=True)
class AlarmEdge:
    """A change of an alarm: ``raised`` or ``cleared``."""

    kind: str
    alarm: AlarmState
    t_utc: float


EVENT_CAPACITY = 64  # edges the ring keeps (the register map's event_ring area)
SEQ_MASK = 0xFFFFFFFF  # sequence numbers are uint32; after 2^32 - 1 comes 1 (0: none yet)
SEQ_RESERVE = 256  # sequence numbers a save reserves ahead (see EventRing.state)


@dataclass(frozen=True)
class EventRecord:
    """One alarm edge as the event ring keeps it (plain values: it crosses processes)."""

    seq: int
    kind: str  # "raised" | "cleared"
    code: str
    severity: int  # Severity value, 0 info .. 4 critical
    device: str
    block: str
    t_utc: float

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "code": self.code,
                "severity": self.severity, "device": self.device, "block": self.block,
                "t_utc": self.t_utc}


def seq_after(seq: int, n: int = 1) -> int:
    """``seq`` advanced by ``n`` (at most 2^32 - 1) in uint32 arithmetic, skipping 0 (which
    means "none yet"): after 4294967295 comes 1."""
    nxt = seq + n
    return nxt if nxt <= SEQ_MASK else nxt - SEQ_MASK


def seq_distance(newer: int, older: int) -> int:
    """How many numbers ``newer`` is ahead of ``older`` (modulo the wrap)."""
    return (newer - older) % SEQ_MASK


class EventRing:
    """The last :data:`EVENT_CAPACITY` alarm edges, each with a uint32 sequence number.

    Why: the alarm table only says what holds now, so a DCIM that polls every 10 s misses an
    alarm that came and went between two polls. The ring keeps every raise and clear with a
    sequence number one higher than the last: the poller reads the edges after the last
    number it saw, in order, and a jump in the numbers tells it that more edges came than the
    ring holds (or that some were lost in a crash).

    The numbers never go back, across restarts too: a save records the number it reached and
    a reservation :data:`SEQ_RESERVE` ahead (:meth:`state`); a restart after a crash continues
    after the reservation (a visible gap: edges since the last save are lost), a clean stop
    saves the exact number (no gap). :meth:`wants_save` asks the retained state to save again
    before the numbers run past half the reservation.
    """

    def __init__(self, capacity: int = EVENT_CAPACITY) -> None:
        self.capacity = capacity
        self.seq = 0  # the newest edge's number; 0: none yet
        self.edges: deque[EventRecord] = deque(maxlen=capacity)
        self.reserved = 0  # the reservation of the last state() taken for a save

    def add(self, edge: AlarmEdge) -> EventRecord:
        a = edge.alarm
        c = a.condition
        self.seq = seq_after(self.seq)
        rec = EventRecord(self.seq, edge.kind, c.code, int(c.severity), c.device or a.block,
                          a.block, edge.t_utc)
        self.edges.append(rec)
        return rec

    def extend(self, edges: Iterable[AlarmEdge]) -> None:
        for e in edges:
            self.add(e)

    def view(self) -> tuple[int, tuple[EventRecord, ...]]:
        """(newest number, the edges oldest first): what the register map shows."""
        return self.seq, tuple(self.edges)

    def wants_save(self) -> bool:
        """True when fewer than half of the saved reservation's numbers are left."""
        left = seq_distance(self.reserved, self.seq)  # huge once seq has passed it
        return self.seq != 0 and (left < SEQ_RESERVE // 2 or left > SEQ_RESERVE)

    def state(self, clean: bool = False) -> dict[str, Any]:
        """For the retained state: the edges, the number reached and the reservation (the
        number reached itself at a clean stop, where nothing can follow the save)."""
        self.reserved = self.seq if clean else seq_after(self.seq, SEQ_RESERVE)
        return {"seq": self.seq, "reserved": self.reserved,
                "edges": [e.as_dict() for e in self.edges]}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue after a saved :meth:`state`: numbers go on after its reservation."""
        seq = int(state.get("seq", 0)) & SEQ_MASK
        reserved = int(state.get("reserved", seq)) & SEQ_MASK
        edges = []
        for e in state.get("edges") or ():
            edges.append(EventRecord(int(e["seq"]) & SEQ_MASK, str(e["kind"]), str(e["code"]),
                                     max(0, min(4, int(e["severity"]))), str(e["device"]),
                                     str(e.get("block", "")), float(e.get("t_utc") or 0.0)))
        self.edges.clear()
        self.edges.extend(edges[-self.capacity:])
        self.seq = reserved if seq_distance(reserved, seq) <= SEQ_RESERVE else seq
        self.reserved = self.seq


class AlarmTable:
    """All alarms of a runtime; updated by the scan, read by publishers and the fault log."""

    def __init__(self) -> None:
        self.alarms: dict[str, AlarmState] = {}  # read freely; add through adopt()
        #: every raise and clear, numbered (the register map's event ring)
        self.events = EventRing()
        #: +1 on every change a reader of the table can see (an edge, a latched alarm whose
        #: condition went, an acknowledgement, an adopted alarm): publishers rebuild their
        #: view of the table only when it moved
        self.changes = 0
        # alarm ids per block: update() runs for every block every scan and must not walk
        # every alarm of the site to find the block's own (it was O(blocks x alarms))
        self._ids: dict[str, set[str]] = {}
        # per block holding exactly one alarm: its state, so a block that reports the same
        # condition object scan after scan (a held alarm) costs a look-up, not an update
        self._held: dict[str, AlarmState] = {}

    def adopt(self, state: AlarmState, hold_until_utc: float | None = None) -> None:
        """Take over an alarm known from elsewhere (retained state, the runtime before a
        reload) as it is: no edge, it was raised before.

        ``hold_until_utc``: after a restart a block's inputs are restored values, stale until
        read again, so for its first scans a block may not report a condition that still
        holds. Until that time the adopted alarm is kept as it is (active, acknowledged or
        not) when its block does not report it, instead of being cleared and raised again a
        second later (a raise/clear pair in the fault log and a lost acknowledgement). Once
        the block reports it again the hold ends; if it never does, it clears at that time."""
        if hold_until_utc is not None:
            state.hold_until_utc = hold_until_utc
        self.changes += 1
        self.alarms[state.id] = state
        self._ids.setdefault(state.block, set()).add(state.id)
        self._held.pop(state.block, None)

    def _drop(self, state: AlarmState) -> None:
        del self.alarms[state.id]
        ids = self._ids.get(state.block)
        if ids is not None:
            ids.discard(state.id)

    def update(self, block: str, conditions: Iterable[AlarmCondition],
               t_utc: float) -> list[AlarmEdge]:
        """Replace ``block``'s current conditions; return the edges that produces."""
        ids = self._ids.get(block)
        if not conditions and not ids:  # the common case: nothing held, nothing to clear
            return []
        if ids is not None and len(ids) == 1 and isinstance(conditions, list) and \
                len(conditions) == 1:  # the next most common: one alarm that still holds
            state = self._held.get(block)
            if state is not None and state.condition is conditions[0] and state.active and \
                    state.id in ids:
                return []
        edges: list[AlarmEdge] = []
        seen: set[str] = set()
        for cond in conditions:
            aid = f"{block}:{cond.key}"
            seen.add(aid)
            state = self.alarms.get(aid)
            if state is None:
                state = AlarmState(aid, block, cond, t_utc)
                self.adopt(state)
                edges.append(AlarmEdge("raised", state, t_utc))
            elif (cond.severity, cond.code) != (state.condition.severity,
                                                state.condition.code):
                # an escalation (or de-escalation) under the same key is a new event: the old
                # one clears and the new one is raised, so the log and the DCIM both see it
                edges.append(AlarmEdge("cleared", state, t_utc))
                state = AlarmState(aid, block, cond, t_utc)
                self.alarms[aid] = state
                edges.append(AlarmEdge("raised", state, t_utc))
            else:
                state.condition = cond
                state.hold_until_utc = -math.inf  # reported again: an ordinary alarm now
                if not state.active:
                    state.active = True
                    state.acked = False
                    state.raised_utc = t_utc
                    edges.append(AlarmEdge("raised", state, t_utc))
        ids = self._ids.get(block)  # again: adopt() may have made the set
        for aid in [a for a in ids if a not in seen] if ids and not ids <= seen else ():
            state = self.alarms[aid]
            if state.hold_until_utc > t_utc:
                continue  # restored, its block's inputs not read yet: keep it as it is
            if state.condition.latch and not state.acked:
                if state.active:
                    state.active = False  # condition gone, kept until acknowledged
                    self.changes += 1
                continue
            self._drop(state)
            edges.append(AlarmEdge("cleared", state, t_utc))
        if ids is not None and len(ids) == 1 and len(seen) == 1:
            self._held[block] = self.alarms[next(iter(seen))]
        else:
            self._held.pop(block, None)
        if edges:
            self.changes += 1
            self.events.extend(edges)
        return edges

    def acknowledge(self, t_utc: float, alarm_id: str | None = None) -> list[AlarmEdge]:
        """Acknowledge one alarm or all; latched alarms whose condition is gone clear now."""
        edges = []
        for aid in list(self.alarms):
            if alarm_id is not None and aid != alarm_id:
                continue
            state = self.alarms[aid]
            if not state.acked:
                state.acked = True
                self.changes += 1
            if not state.active:
                self._drop(state)
                edges.append(AlarmEdge("cleared", state, t_utc))
        self.events.extend(edges)
        return edges

    def acknowledge_code(self, t_utc: float, code_num: int) -> list[AlarmEdge]:
        """Acknowledge every alarm whose code has register-map number ``code_num``
        (:func:`busguard.alarmcodes.code_number`; ``cmd.ack_code``), whatever device or block
        raised it; none for 0 or :data:`~busguard.alarmcodes.OTHER`, which name no one code.
        Latched alarms of that code whose condition is gone clear now."""
        from busguard.alarmcodes import NONE, OTHER, code_number

        if code_num in (NONE, OTHER):
            return []
        edges: list[AlarmEdge] = []
        for aid in [a for a, s in self.alarms.items()
                    if code_number(s.condition.code) == code_num]:
            edges.extend(self.acknowledge(t_utc, aid))
        return edges

    def active(self) -> list[AlarmState]:
        return list(self.alarms.values())

    def by_priority(self) -> list[AlarmState]:
        """Alarms most urgent first: severity (critical first), unacknowledged before
        acknowledged, condition still present before latched-only, then oldest first."""
        return sorted(self.alarms.values(),
                      key=lambda a: (-int(a.condition.severity), a.acked, not a.active,
                                     a.raised_utc, a.id))

    def count(self) -> int:
        return len(self.alarms)
