"""Replaying a recording through freshly built blocks and comparing the outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from busguard.errors import RecordingError
from busguard.loader import load
from busguard.record import read_recording
from busguard.runtime import build_blocks
from busguard.scan import ScanEngine


@dataclass
class ReplayStep:
    cycle: int
    t_utc: float
    outputs: dict[str, float]
    recorded: dict[str, float]
    changed: dict[str, float]
    edges: list[str]

    @property
    def matches(self) -> bool:
        return self.outputs == self.recorded


@dataclass
class ReplayReport:
    cycles: int = 0
    mismatches: list[int] = field(default_factory=list)
    site_hash_matches: bool = True


def replay(recording: str | Path, site_path: str | Path | None = None,
           extra: Iterable[object] = ()) -> tuple[ReplayReport, Iterator[ReplayStep]]:
    """Re-run the site's blocks over a recording; yields one step per recorded cycle."""
    header, cycles = read_recording(recording)
    site_file = Path(site_path) if site_path else Path(header["site_file"])
    loaded = load(site_file, extra=extra)
    site, registry = loaded.site, loaded.registry
    blocks = build_blocks(site, registry)
    missing = sorted({n for b in blocks for n in b.inputs()} - set(header["points"]))
    if missing:
        raise RecordingError(f"{recording}: the site's blocks read points the recording does "
                             f"not hold: {', '.join(missing)}")
    engine = ScanEngine(blocks)
    report = ReplayReport(site_hash_matches=site.config_hash == header.get("config_hash"))

    def steps() -> Iterator[ReplayStep]:
        previous: dict[str, float] = {}
        for rc in cycles:
            res = engine.step(rc.snapshot, rc.t_utc)
            outputs = dict(res.outputs)
            changed = {k: v for k, v in outputs.items() if previous.get(k) != v}
            previous = outputs
            report.cycles += 1
            step = ReplayStep(rc.cycle, rc.t_utc, outputs, rc.outputs, changed,
                              [f"{e.kind} {e.alarm.id} {e.alarm.condition.code}"
                               for e in res.edges])
            if not step.matches:
                report.mismatches.append(rc.cycle)
            yield step

    return report, steps()
