"""The state a runtime carries, as one plain document: one export, one import.

Why one: a restart (the retained file, :mod:`busguard.retained`) and a reload (SIGHUP,
:mod:`busguard.reload`) both hand a runtime's state to a new runtime: block states with their
latched trips and causes, the alarm table with its acknowledgements, the alarm event ring,
the command counters, the last values with their quality and stamps. They were two paths (a
body written for the file, a copy taken from the running runtime) that disagreed in places.
Now both export with :func:`export_state` (or :func:`capture` in the scan thread, then
:func:`document` in the retained writer's thread) and import with :func:`import_state`, with
the same checks and the same partial-restore rules.

The document (``version`` 1; the retained file's body, which had no version, is the same
layout) is JSON-able: dicts with string keys, lists, str, int, bool, None, finite floats
(a non-finite float is written as None)::

    version, saved_utc, site, config_hash, cycle (the exporting runtime's scan cycle)
    points:   names, values, quality, t_utc (and age_s, live)
    blocks:   name -> {type, state, latched (breakers it held tripped, when any)}
              (and params, faulted, live)
    alarms:   the alarm table, AlarmState.as_dict() (and hold_until_utc while held)
    events:   the event ring, EventRing.state()
    counters: starts (runtime starts so far), cycles_total (scan cycles of every run so far)
    live:     mono, outputs, last_cmd, stats_cycles, overruns, restored (live only)

Partial restore, the same rules for both uses: a block's state goes to the block of the same
name and type (a block removed, renamed or of another type now starts without it: logged); a
block whose params changed still gets its state (its latched trip stays latched: a latch is
released only by an authorised reset, never by an edit of site.toml); a latched trip that
cannot follow its breaker (the block is gone, or no longer protects that breaker) is logged
as an error naming the breaker, never dropped silently; alarms go with their
block (or the retained state's own alarm source); points go by name (a removed device's
points are dropped); a document newer than this code reads is refused whole.

What differs is one parameter, ``live``, on purpose:

- ``live=False``, a restart from the retained file (another process, maybe hours later):
  only retained points, restored as STALE (command points GOOD: the baseline, so an old
  command is not replayed) until drivers read them again; restored alarms are held until
  their block's inputs have been read again (:func:`hold_s`); block states are restored all
  or none (a block that refuses its state makes the whole document unusable, and the retained
  state falls back to the previous generation); the scan counters, outputs and faulted blocks
  start afresh (a new process); ``Runtime.restored`` is set.
- ``live=True``, a reload (in memory, same process and clock, no file, no scan in between):
  every point the old image held, with its quality and monotonic stamp (LIVE: a good value
  stays good until its own max age); alarms as they were (a hold still running goes on);
  a block that refuses its state starts without it and the others keep theirs (there is no
  older copy to fall back to: refusing the whole document would drop every latched trip);
  the outputs of the blocks restored (no trip through fail-safe), blocks faulted with
  unchanged params stay faulted, the scan and command counters continue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from busguard.alarms import AlarmCondition, AlarmState, EventRing, Severity
from busguard.block import Block
from busguard.image import Quality, Snapshot

if TYPE_CHECKING:
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.retained")

VERSION = 1  # of the document; a body without "version" (files before it) is version 1
RETAINED_ALARM_SOURCE = "retained-state"  # BG-RETAINED-CORRUPT's source: not a block
HOLD_MARGIN_S = 1.0  # restored alarms are held this long past their inputs' max age
HOLD_MAX_S = 120.0


# -- export ------------------------------------------------------------------------------------

def stateful(block: Block) -> bool:
    """True when the block keeps state (overrides ``Block.state``)."""
    return type(block).state is not Block.state


def block_states(blocks: list[Block], failed: set[str], every: bool = False
                 ) -> dict[str, Any]:
    """``state()`` of every block that has one (``every``: of every block); a block whose
    state() raises is left out (logged once per name in ``failed``), never the whole export."""
    out = {}
    for b in blocks:
        if not (every or stateful(b)):
            continue
        try:
            out[b.name] = b.state()
        except Exception:
            if b.name not in failed:
                failed.add(b.name)
                log.exception("block %s: state() failed; its state is not retained", b.name)
    return out


@dataclass
class Capture:
    """What the scan thread hands over for an export: references and small copies, cheap
    enough for the scan; :func:`document` turns it into the document in any thread."""

    snapshot: Snapshot | None  # the scan's (restart); None: live, read from the image
    t_utc: float
    cycle: int
    states: dict[str, Any]
    alarms: list[dict[str, Any]]
    events: dict[str, Any]
    starts: int
    cycles_total: int
    live: dict[str, Any] | None = None  # live-only parts (points with their ages, engine)
    latched: dict[str, list[str]] = field(default_factory=dict)  # block -> breakers latched


def alarm_entry(a: AlarmState) -> dict[str, Any]:
    d = a.as_dict()
    if math.isfinite(a.hold_until_utc):  # a restored alarm still held (live: it goes on)
        d["hold_until_utc"] = a.hold_until_utc
    return d


def capture(rt: Runtime, snap: Snapshot | None, t_utc: float, cycle: int,
            states: dict[str, Any] | None = None, clean: bool = False,
            live: bool = False, failed: set[str] | None = None) -> Capture:
    """The runtime's state now (scan thread, or a runtime that no longer scans).
    ``clean``: no edge can follow (a stop): the event ring records its exact number.
    ``live``: for a reload (see the module docstring): every block, every point held."""
    if states is None:
        states = block_states(rt.blocks, failed if failed is not None else set(), every=live)
    extra = None
    if live:
        eng = rt.engine
        extra = {"mono": rt.clock.monotonic(), "image": rt.image.held(),
                 "specs": rt.image.specs,
                 "outputs": dict(eng.outputs), "last_cmd": dict(eng._last_cmd),
                 "faulted": dict(eng.faulted), "stats_cycles": rt.stats.cycles,
                 "overruns": rt.stats.overruns, "restored": rt.restored,
                 "params": {b.name: params_digest(b) for b in rt.blocks}}
    return Capture(snap, t_utc, cycle, states, [alarm_entry(a) for a in rt.alarms.active()],
                   rt.alarms.events.state(clean=clean), rt.starts,
                   rt.cycles_before + cycle, extra, latched_breakers(rt.blocks, states))


def latched_breakers(blocks: list[Block], states: Mapping[str, Any]) -> dict[str, list[str]]:
    """Block -> the breakers it holds tripped (``Block.breakers``, the declared view), for
    the blocks whose state is exported: what an import must not lose without saying so."""
    out = {}
    for b in blocks:
        if b.name not in states:
            continue
        try:
            held = [name for name, st in b.breakers().items() if st.latched]
        except Exception:  # the block's view is its business; its state still goes
            continue
        if held:
            out[b.name] = held
    return out


def document(rt: Runtime, cap: Capture) -> dict[str, Any]:
    """The plain, versioned document of a capture (any thread: reads only the capture, the
    runtime's site and its blocks' names and types)."""
    types = {b.name: b.type_name for b in rt.blocks}
    live = cap.live
    blocks: dict[str, Any] = {n: {"type": types.get(n, ""), "state": jsonable(s)}
                              for n, s in cap.states.items()}
    for name, held in cap.latched.items():
        blocks[name]["latched"] = list(held)
    doc: dict[str, Any] = {
        "version": VERSION, "saved_utc": cap.t_utc, "site": rt.site.name,
        "config_hash": rt.site.config_hash, "cycle": cap.cycle,
        "points": _points(cap) if live is None else _live_points(cap, live),
        "blocks": blocks,
        "alarms": [jsonable(a) for a in cap.alarms],
        "events": jsonable(cap.events),
        "counters": {"starts": cap.starts, "cycles_total": cap.cycles_total},
    }
    if live is not None:
        for name, entry in blocks.items():
            entry["params"] = live["params"].get(name, "")
            if name in live["faulted"]:
                entry["faulted"] = live["faulted"][name]
        doc["live"] = jsonable({k: live[k] for k in ("mono", "outputs", "last_cmd",
                                                     "stats_cycles", "overruns", "restored")})
    return doc


def _points(cap: Capture) -> dict[str, list[Any]]:
    """The retained points with a finite value (a restart restores these)."""
    snap = cap.snapshot
    assert snap is not None
    names, values, quality, stamps = [], [], [], []
    for i, spec in enumerate(snap.specs):
        v = snap.values[i]
        if not spec.retained or math.isnan(v) or math.isinf(v):
            continue
        names.append(spec.name)
        values.append(v)
        quality.append(int(snap.quality[i]))
        stamps.append(snap.t_utc[i])
    return {"names": names, "values": values, "quality": quality, "t_utc": stamps}


def _live_points(cap: Capture, live: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every point the image holds (written, or restored), each with its age at ``mono``."""
    specs = live["specs"]
    values, quality, t_mono, t_utc = live["image"]
    mono = live["mono"]
    names, vals, quals, stamps, ages = [], [], [], [], []
    for i, spec in enumerate(specs):
        tm = t_mono[i]
        if tm == -math.inf and t_utc[i] == 0.0:
            continue  # never written
        names.append(spec.name)
        v = values[i]
        vals.append(v if math.isfinite(v) else None)
        quals.append(int(quality[i]))
        stamps.append(t_utc[i])
        ages.append(mono - tm if math.isfinite(tm) else None)
    return {"names": names, "values": vals, "quality": quals, "t_utc": stamps, "age_s": ages}


def export_state(rt: Runtime, live: bool = True) -> dict[str, Any]:
    """The document of a runtime that is not scanning now (a reload exports the old runtime
    after its last scan), taken as at a clean stop (the event ring's exact number). Not
    live: the retained points of the last scan's snapshot, as a stop saves them."""
    snap = None
    if not live:
        last = rt.last_result
        snap = last.snapshot if last is not None else rt.image.snapshot()
    return document(rt, capture(rt, snap, rt.clock.wall(), rt.engine.cycle, clean=True,
                                live=live))


def params_digest(block: Block) -> str:
    """A short digest of a block's validated params: "were they changed?" across a reload."""
    text = json.dumps(jsonable(dict(block.p)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: non-finite floats become None, other objects str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


# -- import ------------------------------------------------------------------------------------

@dataclass
class StatePlan:
    """Everything a document would restore, converted and checked; built by
    :func:`build_plan`, which touches nothing, so a bad document is refused whole."""

    live: bool = False
    # restart: (name, value, t_utc, command); live: (name, value, quality, t_utc, t_mono)
    points: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[tuple[Block, Mapping[str, Any]]] = field(default_factory=list)
    alarms: list[AlarmState] = field(default_factory=list)
    starts: int = 0
    cycles_total: int = 0
    cycle: int = 0
    saved_utc: float = 0.0
    restored_points: int = 0
    events: EventRing | None = None  # the alarm event ring, checked (numbers go on from it)
    # live only
    outputs: dict[str, float] = field(default_factory=dict)
    faulted: dict[str, str] = field(default_factory=dict)  # blocks with unchanged params
    last_cmd: dict[str, float] = field(default_factory=dict)
    stats_cycles: int = 0
    overruns: int = 0
    restored: bool = False
    refused: list[str] = field(default_factory=list)  # blocks that refused (live)
    lost_latches: list[str] = field(default_factory=list)  # breakers no block holds now

    def apply_blocks(self, rt: Runtime) -> None:
        """Restart: every block state or none: a block that raises puts back the states of
        the blocks restored before it, and its own, and the error propagates.
        Live: a block that raises gets its own state back and starts without the carried
        one; the others keep theirs."""
        done: list[tuple[Block, Any]] = []
        for block, state in self.blocks:
            before = block.state()
            try:
                block.restore(state)
            except Exception as exc:
                undo = [(block, before)] if self.live else [*done, (block, before)]
                for b, old in undo:
                    try:
                        b.restore(old)
                    except Exception:  # its own state must restore; log, never mask exc
                        log.exception("block %s: could not roll back its state", b.name)
                if self.live:
                    log.exception("block %s: could not carry its state over the reload",
                                  block.name)
                    self.refused.append(block.name)
                    continue
                raise ValueError(f"block {block.name} ({block.type_name}) refused its "
                                 f"state: {type(exc).__name__}: {exc}") from exc
            done.append((block, before))

    def apply_rest(self, rt: Runtime, hold_until: Mapping[str, float]) -> None:
        """The image, the alarm table, the ring and the counters (cannot fail on a checked
        plan). ``hold_until``: block -> UTC time its restored alarms are held to (restart)."""
        image = rt.image
        if self.live:
            image.adopt(self.points)
        else:
            for name, value, t_utc, command in self.points:
                if command:
                    image.write(name, value, Quality.GOOD, t_utc=t_utc)
                else:
                    image.restore(name, value, t_utc)
        for st in self.alarms:
            rt.alarms.adopt(st, hold_until_utc=None if self.live else hold_until.get(st.block))
        if self.events is not None:
            rt.alarms.events = self.events
        rt.starts = self.starts + 1  # this runtime is one more start
        if self.live:
            restored = {b.name for b, _ in self.blocks} - set(self.refused)
            eng = rt.engine
            for block in rt.blocks:
                if block.name in restored:
                    for out in block.outputs():
                        if out in self.outputs:
                            eng.outputs[out] = self.outputs[out]
            eng.faulted.update({n: why for n, why in self.faulted.items() if n in restored})
            eng._last_cmd.update(self.last_cmd)
            eng.cycle = self.cycle
            rt.stats.cycles = self.stats_cycles
            rt.stats.overruns = self.overruns
            rt.cycles_before = self.cycles_total - self.cycle  # the cycle count goes on
            rt.restored = self.restored
        else:
            rt.cycles_before = self.cycles_total
            rt.restored = True


def ring_of(events: Any) -> EventRing:
    """The event ring a document holds. Damaged ring content never makes the document
    unusable (that would lose its latched trips over a log of edges): the edges are dropped,
    logged, and the numbers go on from what can still be read, so they do not go back."""
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


def _table(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{key} is not a table")
    return value


def build_plan(rt: Runtime, doc: Mapping[str, Any], live: bool = False) -> StatePlan:
    """Everything ``doc`` would restore into ``rt``, converted and checked; touches nothing.
    Raises ValueError, TypeError or KeyError for a document this runtime cannot take."""
    version = doc.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(f"state document version {version!r}: this busguard reads "
                         f"versions 1 to {VERSION}")
    plan = StatePlan(live=live)
    _plan_points(plan, rt, _table(doc, "points"), doc.get("live"))
    plan.restored_points = len(plan.points)
    by_name = {b.name: b for b in rt.blocks}
    for name, entry in _table(doc, "blocks").items():
        if not isinstance(entry, Mapping):
            raise TypeError(f"blocks.{name} is not a table")
        b = by_name.get(name)
        held = [str(x) for x in entry.get("latched") or ()]
        if b is None or entry.get("type") != b.type_name:
            log.warning("retained state for block %s (%s) not restored: no such block of "
                        "that type in the site now", name, entry.get("type"))
            _lost(plan, name, held, "is not in the site now")
            continue
        try:
            now_protects = {v.breaker for v in b.map_breakers()}
        except Exception:
            now_protects = set(held)
        _lost(plan, name, [x for x in held if x not in now_protects],
              "no longer protects it (its options changed); the block's latch is restored "
              "for the breakers it protects now")
        state = entry.get("state") or {}
        if not isinstance(state, Mapping):
            if live:  # as a block that refuses its state: it starts without it
                log.error("block %s: its state is not a table; it starts without it", name)
                plan.refused.append(name)
                continue
            raise TypeError(f"blocks.{name}.state is not a table")
        plan.blocks.append((b, state))
        if live and "faulted" in entry and entry.get("params") == params_digest(b):
            plan.faulted[name] = str(entry["faulted"])
    plan.alarms = _plan_alarms(doc.get("alarms") or [], set(by_name) | {RETAINED_ALARM_SOURCE},
                               live)
    events = doc.get("events")
    if events:  # a document from before the ring has none: numbers start at 1
        plan.events = ring_of(events)
    counters = _table(doc, "counters")
    plan.starts = int(counters.get("starts", 0))
    plan.cycles_total = int(counters.get("cycles_total", 0))
    plan.cycle = int(doc.get("cycle", 0))
    plan.saved_utc = _finite(doc.get("saved_utc", 0.0), "saved_utc")
    if live:
        extra = _table(doc, "live")
        # an output that was not a finite number starts at its fail-safe value
        plan.outputs = {str(k): float(v) for k, v in _table(extra, "outputs").items()
                        if isinstance(v, (int, float)) and math.isfinite(v)}
        plan.last_cmd = {str(k): float(v) for k, v in _table(extra, "last_cmd").items()
                         if v is not None}
        plan.stats_cycles = int(extra.get("stats_cycles", 0))
        plan.overruns = int(extra.get("overruns", 0))
        plan.restored = bool(extra.get("restored", False))
        plan.cycles_total = max(plan.cycles_total, plan.cycle)
    return plan


def _lost(plan: StatePlan, block: str, breakers: list[str], why: str) -> None:
    """A latched trip that cannot follow its breaker: said loudly (journal and log), once."""
    for br in breakers:
        log.error("BG-TRIP latched trip of breaker %s (block %s) is not carried over: the "
                  "block %s; busguard no longer holds %s tripped: check it before closing it",
                  br, block, why, br)
        plan.lost_latches.append(br)


def _plan_points(plan: StatePlan, rt: Runtime, pts: Mapping[str, Any], extra: Any) -> None:
    image = rt.image
    names, values = list(pts.get("names") or []), list(pts.get("values") or [])
    stamps = list(pts.get("t_utc") or [])
    if not len(names) == len(values) == len(stamps):
        raise ValueError(f"points: {len(names)} names, {len(values)} values, {len(stamps)} "
                         f"stamps")
    if not plan.live:
        for name, v, tu in zip(names, values, stamps, strict=True):
            i = image.index.get(str(name))
            if i is None or v is None or not image.specs[i].retained:
                continue
            spec = image.specs[i]
            plan.points.append((spec.name, _finite(v, spec.name),
                                _finite(tu, spec.name + " t_utc"), spec.command))
        return
    quality, ages = list(pts.get("quality") or []), list(pts.get("age_s") or [])
    if not len(quality) == len(ages) == len(names):
        raise ValueError(f"points: {len(names)} names, {len(quality)} qualities, "
                         f"{len(ages)} ages")
    mono = _finite(extra.get("mono") if isinstance(extra, Mapping) else None, "live.mono")
    for name, v, q, tu, age in zip(names, values, quality, stamps, ages, strict=True):
        i = image.index.get(str(name))
        if i is None:
            continue
        code = int(q)
        if not 0 <= code <= 255:
            raise ValueError(f"{name}: quality {q!r}")
        plan.points.append((i, math.nan if v is None else float(v), code,
                            _finite(tu, f"{name} t_utc"),
                            -math.inf if age is None else mono - _finite(age, f"{name} age")))


def _plan_alarms(alarms: Any, known: set[str], live: bool) -> list[AlarmState]:
    out = []
    for n, a in enumerate(alarms):
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
        st = AlarmState(str(a["id"]), str(a["block"]), cond,
                        _finite(a["raised_utc"], f"alarms[{n}].raised_utc"),
                        bool(a.get("active", True)), bool(a.get("acked", False)))
        hold = a.get("hold_until_utc")
        if live and hold is not None:
            st.hold_until_utc = _finite(hold, f"alarms[{n}].hold_until_utc")
        out.append(st)
    return out


def hold_s(rt: Runtime, block: Block) -> float:
    """How long a restored alarm of ``block`` is kept without its block reporting it (a
    restart): until every input of the block has been read again or has gone stale."""
    image = rt.image
    try:
        names = tuple(block.inputs())
    except Exception:  # a block's inputs() is its business: fall back to the default
        names = ()
    ages = [image.specs[image.index[n]].max_age_s for n in names if n in image.index]
    finite = [a for a in ages if math.isfinite(a)]
    return min(HOLD_MAX_S, (max(finite) if finite else 10.0) + HOLD_MARGIN_S)


def import_state(rt: Runtime, doc: Mapping[str, Any], live: bool = False) -> StatePlan:
    """Restore ``doc`` into ``rt`` (built, not scanning yet) and return what was restored.
    Checked whole first; raises (touching nothing, block states rolled back) when ``doc``
    cannot be taken. With ``live`` only a document no export writes raises (a wrong
    version, lists of unequal length): what one block or output cannot take is left out,
    logged, because a reload has no older copy to fall back to."""
    plan = build_plan(rt, doc, live)
    plan.apply_blocks(rt)
    now = rt.clock.wall()
    hold = {} if live else {b.name: now + hold_s(rt, b) for b in rt.blocks}
    plan.apply_rest(rt, hold)
    return plan
