"""What survives a reload: the state a new runtime takes over from the one it replaces.

By name, into the new runtime before it scans (:class:`CarryOver` runs last among the
``busguard_startup`` observers, after retained state is restored): the live input values with
their qualities and ages, the state of every block whose name and type are unchanged
(latched trips, via ``Block.state()``/``restore()``), their alarms (latched, unacknowledged
ones stay), the command counters and the cycle counters. From several runtimes in order when
the previous site is started again after a failed reload (:mod:`busguard.reload`).
"""

from __future__ import annotations

import logging

from busguard import hookimpl
from busguard.runtime import Runtime

log = logging.getLogger("busguard.reload")


def carry_over(old: Runtime, new: Runtime) -> dict[str, int]:
    """Copy what must survive a reload from ``old`` into ``new`` (not yet scanning)."""
    copied = {"points": 0, "blocks": 0, "alarms": 0}
    oi, ni = old.image, new.image
    with oi._lock, ni._lock:
        for name, j in ni.index.items():
            i = oi.index.get(name)
            if i is None or oi.t_mono[i] == float("-inf"):
                continue
            ni.values[j] = oi.values[i]
            ni.quality[j] = oi.quality[i]
            ni.t_mono[j] = oi.t_mono[i]
            ni.t_utc[j] = oi.t_utc[i]
            copied["points"] += 1
    old_blocks = {b.name: b for b in old.blocks}
    old_cfg = {b.name: b for b in old.site.blocks}
    for cfg, block in zip(new.site.blocks, new.blocks, strict=True):
        prev = old_blocks.get(block.name)
        if prev is None or type(prev) is not type(block):
            continue
        try:
            block.restore(prev.state())
        except Exception:
            log.exception("block %s: could not carry its state over the reload", block.name)
            continue
        copied["blocks"] += 1
        for out in block.outputs():
            if out in old.engine.outputs:
                new.engine.outputs[out] = old.engine.outputs[out]
        unchanged = old_cfg[block.name].params == cfg.params
        if unchanged and block.name in old.engine.faulted:
            new.engine.faulted[block.name] = old.engine.faulted[block.name]
    names = {b.name for b in new.blocks}
    for state in old.alarms.alarms.values():
        if state.block in names:
            new.alarms.adopt(state)
            copied["alarms"] += 1
    new.engine._last_cmd.update(old.engine._last_cmd)
    new.engine.cycle = old.engine.cycle
    new.stats.cycles = old.stats.cycles
    new.stats.overruns = old.stats.overruns
    new.restored = old.restored
    return copied


class CarryOver:
    """Observer plugin given to the new runtime: carries state over once it has started,
    from each of ``sources`` in order (a later one wins where both hold a name)."""

    def __init__(self, old: Runtime, *more: Runtime) -> None:
        self.old = old
        self.sources = (old, *more)
        self.copied: dict[str, int] = {}

    @hookimpl(trylast=True)
    def busguard_startup(self, runtime: Runtime) -> None:
        for src in self.sources:
            self.copied = carry_over(src, runtime)
        log.info("reload: carried over %(points)d point values, %(blocks)d block states, "
                 "%(alarms)d alarms", self.copied)
