"""Turning a retained-state body into a restore that happens whole or not at all.

Why: a file whose checksum is valid can still hold content this runtime cannot take (a bug in
an older version, a block whose state format changed, a hand edit). Applying it piece by piece
would leave the runtime half-restored: some values and alarms from the file, a block that
raised in the middle left in whatever state it had reached. So the body is first parsed into a
:class:`RestorePlan` with every value converted and checked (``build_plan`` raises ValueError,
TypeError or KeyError and touches nothing), then block states are restored with a roll-back
(``apply_blocks``), and only then the image and the alarm table (``apply_rest``, which cannot
fail on a checked plan).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from busguard.alarms import AlarmCondition, AlarmState, EventRing, Severity
from busguard.block import Block
from busguard.image import Quality

if TYPE_CHECKING:
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.retained")


@dataclass
class RestorePlan:
    points: list[tuple[str, float, float, bool]] = field(default_factory=list)
    blocks: list[tuple[Block, Mapping[str, Any]]] = field(default_factory=list)
    alarms: list[AlarmState] = field(default_factory=list)
    starts: int = 0
    cycles_total: int = 0
    saved_utc: float = 0.0
    restored_points: int = 0
    events: EventRing | None = None  # the alarm event ring, checked (numbers go on from it)

    def apply_blocks(self, rt: Runtime) -> None:
        """Restore every block state or none: a block that raises puts back the states of
        the blocks restored before it, and its own, and the error propagates."""
        done: list[tuple[Block, Any]] = []
        for block, state in self.blocks:
            before = block.state()
            try:
                block.restore(state)
            except Exception as exc:
                for b, old in [*done, (block, before)]:
                    try:
                        b.restore(old)
                    except Exception:  # its own state must restore; log, never mask exc
                        log.exception("block %s: could not roll back its state", b.name)
                raise ValueError(f"block {block.name} ({block.type_name}) refused its "
                                 f"state: {type(exc).__name__}: {exc}") from exc
            done.append((block, before))

    def apply_rest(self, rt: Runtime, hold_until: Mapping[str, float]) -> None:
        image = rt.image
        for name, value, t_utc, command in self.points:
            if command:
                image.write(name, value, Quality.GOOD, t_utc=t_utc)
            else:
                image.restore(name, value, t_utc)
        for st in self.alarms:
            rt.alarms.adopt(st, hold_until_utc=hold_until.get(st.block))
        if self.events is not None:
            rt.alarms.events = self.events


def ring_of(events: Any) -> EventRing:
    """The event ring a body saved. Damaged ring content never makes the generation unusable
    (that would lose its latched trips over a log of edges): the edges are dropped, logged,
    and the numbers go on from what can still be read, so they do not go back."""
    ring = EventRing()
    try:
        if not isinstance(events, Mapping):
            raise TypeError("not a table")
        ring.restore(events)
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        seqs = []
        if isinstance(events, Mapping):
            for key in ("reserved", "seq"):
                with contextlib.suppress(KeyError, ValueError, TypeError, OverflowError):
                    seqs.append(int(events[key]))
        ring.restore({"seq": max(seqs, default=0), "edges": []})
        log.warning("retained state: the alarm event ring is damaged (%s: %s); its edges are "
                    "dropped, sequence numbers go on after %d", type(exc).__name__, exc,
                    ring.seq)
    return ring


def _finite(x: Any, what: str) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{what}: {x!r} is not a finite number")
    return v


def build_plan(rt: Runtime, body: Mapping[str, Any], alarm_block: str) -> RestorePlan:
    """Everything a body would restore, converted and checked; touches nothing."""
    plan = RestorePlan()
    image = rt.image
    pts = body.get("points") or {}
    if not isinstance(pts, Mapping):
        raise TypeError("points is not a table")
    names, values = list(pts.get("names") or []), list(pts.get("values") or [])
    stamps = list(pts.get("t_utc") or [])
    if not len(names) == len(values) == len(stamps):
        raise ValueError(f"points: {len(names)} names, {len(values)} values, {len(stamps)} "
                         f"stamps")
    for name, v, tu in zip(names, values, stamps, strict=True):
        i = image.index.get(str(name))
        if i is None or v is None or not image.specs[i].retained:
            continue
        spec = image.specs[i]
        plan.points.append((spec.name, _finite(v, spec.name), _finite(tu, spec.name + " t_utc"),
                            spec.command))
    plan.restored_points = len(plan.points)
    by_name = {b.name: b for b in rt.blocks}
    blocks = body.get("blocks") or {}
    if not isinstance(blocks, Mapping):
        raise TypeError("blocks is not a table")
    for name, entry in blocks.items():
        if not isinstance(entry, Mapping):
            raise TypeError(f"blocks.{name} is not a table")
        b = by_name.get(name)
        if b is None or entry.get("type") != b.type_name:
            log.warning("retained state for block %s (%s) not restored: no such block of "
                        "that type in the site now", name, entry.get("type"))
            continue
        state = entry.get("state") or {}
        if not isinstance(state, Mapping):
            raise TypeError(f"blocks.{name}.state is not a table")
        plan.blocks.append((b, state))
    known = set(by_name) | {alarm_block}
    for n, a in enumerate(body.get("alarms") or []):
        if not isinstance(a, Mapping):
            raise TypeError(f"alarms[{n}] is not a table")
        if a.get("block") not in known:
            continue
        values_ = a.get("values") or {}
        if not isinstance(values_, Mapping):
            raise TypeError(f"alarms[{n}].values is not a table")
        cond = AlarmCondition(str(a["key"]), Severity[str(a["severity"]).upper()],
                              str(a["code"]), str(a["message"]), str(a.get("device", "")),
                              dict(values_), bool(a.get("latch")))
        plan.alarms.append(AlarmState(str(a["id"]), str(a["block"]), cond,
                                      _finite(a["raised_utc"], f"alarms[{n}].raised_utc"),
                                      bool(a.get("active", True)), bool(a.get("acked", False))))
    events = body.get("events")
    if events:  # a body from before the ring has none: numbers start at 1
        plan.events = ring_of(events)
    counters = body.get("counters") or {}
    if not isinstance(counters, Mapping):
        raise TypeError("counters is not a table")
    plan.starts = int(counters.get("starts", 0))
    plan.cycles_total = int(counters.get("cycles_total", 0))
    plan.saved_utc = _finite(body.get("saved_utc", 0.0), "saved_utc")
    return plan
