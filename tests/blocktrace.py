"""Table-driven block tests over synthetic input traces.

A trace is a list of rows, one row per scan. Each row sets input values (kept, and written
again every scan, until changed), ``QUIET`` (the point stops being written and goes stale by
age), ``(value, Quality.BAD)`` (the driver reports a bad reading), and ``dt`` (seconds to
advance the fake clock before the scan, default one period), or a list of values (written in
turn between two scans: a spike the scan only sees through the image's min/max). The trace
runs live through a real :class:`busguard.runtime.Runtime` (memory driver, fake clock,
``--record``), then the recording is replayed through :func:`busguard.replay.replay`;
:func:`run_trace` checks the replay gives exactly the live outputs and alarm edges, and returns
what each scan showed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.image import Quality
from busguard.replay import replay
from busguard.runtime import Runtime
from busguard.testing import run_scans

QUIET = object()


@dataclass
class View:
    """What one scan produced: outputs, and the alarms in the table after it."""

    cycle: int
    outputs: dict[str, float]
    alarms: dict[str, dict[str, Any]]
    edges: list[str] = field(default_factory=list)

    def codes(self) -> set[str]:
        return {a["code"] for a in self.alarms.values()}

    def keys(self) -> set[str]:
        return set(self.alarms)


def run_trace(make_runtime: Callable[..., Runtime], tmp_path: Path, site: str,
              rows: Sequence[Mapping[str, Any]], restore: Mapping[str, Any] | None = None,
              check_replay: bool = True) -> tuple[Runtime, list[View]]:
    rt = make_runtime(site)
    recording = tmp_path / f"trace-{id(rt)}.jsonl"
    rt.start(record=recording)
    for block in rt.blocks:  # after start: as the retained-state observer would
        if restore and block.name in restore:
            block.restore(restore[block.name])
    current: dict[str, Any] = {}
    views: list[View] = []
    clock = rt.clock
    for row in rows:
        row = dict(row)
        dt = row.pop("dt", None)
        current.update(row)
        if dt:
            clock.advance(dt)  # type: ignore[attr-defined]
        items = []
        for name, value in list(current.items()):
            if value is QUIET:
                continue
            if isinstance(value, list):  # several writes between two scans (a spike)
                for v in value[:-1]:
                    rt.image.write(name, float(v))
                value = current[name] = value[-1]
            if isinstance(value, tuple):
                items.append((name, float(value[0]), value[1]))
            else:
                items.append((name, float(value), Quality.GOOD))
        if items:
            rt.image.write_many(items)
        (res,) = run_scans(rt, 1)
        views.append(View(res.cycle, dict(res.outputs),
                          {a.id: a.as_dict() for a in rt.alarms.active()},
                          [f"{e.kind} {e.alarm.id} {e.alarm.condition.code}" for e in res.edges]))
    rt.stop()
    if check_replay:
        report, steps = replay(recording, rt.site.file)
        replayed = list(steps)
        assert len(replayed) == len(views)
        for view, step in zip(views, replayed, strict=True):
            assert step.outputs == view.outputs, f"cycle {view.cycle}: replay differs"
            assert step.edges == view.edges, f"cycle {view.cycle}: replay edges differ: " \
                f"{step.edges} != {view.edges}"
        assert report.mismatches == []
    return rt, views


_SITES = itertools.count()


def site(blocks: str, devices: str, period_ms: float = 100.0,
         nominals: str = "nominal_voltage_ll_v = 480.0\nnominal_hz = 60.0\n") -> str:
    """A test site: ``devices`` and ``blocks`` are TOML fragments; ``nominals`` the [site]
    electrical nominals (a 480 V, 60 Hz busway by default). Each site gets its own
    state_dir, so no trace restores what another one retained."""
    return (f'[site]\nname = "trace"\n{nominals}[scan]\nperiod_ms = {period_ms}\n'
            f'[paths]\nfault_log = "fault.log"\nstate_dir = "state-{next(_SITES)}"\n'
            f'{devices}\n{blocks}\n')
