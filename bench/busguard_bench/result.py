"""What a measurement produces: rows of figures, each beside its baseline and its floor.

A row's status is ``PASS`` or ``MISS`` when it has a floor, ``INFO`` when it is context only,
and ``SKIP`` when the part it needs is missing (the row then has no number: a skipped figure is
never estimated). The table and the JSON are two views of the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, MISS, INFO, SKIP, ERROR = "PASS", "MISS", "INFO", "SKIP", "ERROR"


def pct(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the same rule as busguard.stats); NaN for no samples."""
    if not samples:
        return math.nan
    s = sorted(samples)
    rank = max(1, math.ceil(p / 100.0 * len(s)))
    return s[rank - 1]


def map_read_figures(maps: Sequence[float], requests: Sequence[float], seen: Sequence[float],
                     wall_s: float, blocks: int) -> dict[str, Any]:
    """What both bench clients report of a run of map reads (samples in seconds, figures in
    ms): map reads and their latency, each request's latency to its reply's kernel receive
    stamp (``request_*``) and to the client reading it (``seen_request_*``)."""
    return {"reads": len(maps), "wall_s": wall_s,
            "reads_per_s": len(maps) / wall_s if wall_s > 0 else 0.0,
            "requests_per_map": blocks, "requests": len(requests),
            "p50_ms": pct(maps, 50) * 1e3, "p99_ms": pct(maps, 99) * 1e3,
            "max_ms": max(maps) * 1e3 if maps else math.nan,
            **{f"{name}_{label}_ms": pct(samples, p) * 1e3
               for name, samples in (("request", requests), ("seen_request", seen))
               for label, p in (("p50", 50), ("p99", 99), ("p999", 99.9))}}


@dataclass
class Row:
    """One figure: the busguard value, the baseline measured in the same run, the floor."""

    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    floor: str = ""
    status: str = INFO
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("value", "baseline"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclass
class Measurement:
    """The outcome of one measurement module."""

    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    skipped: str = ""  # why it did not run (a part is missing), else ""
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return ERROR
        if self.skipped:
            return SKIP
        if any(r.status == MISS for r in self.rows):
            return MISS
        if any(r.status == SKIP for r in self.rows):
            return SKIP
        return PASS

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": self.status,
                "skipped": self.skipped, "error": self.error, "seconds": round(self.seconds, 2),
                "rows": [r.as_dict() for r in self.rows], "details": self.details}


def below(value: float | None, limit: float) -> str:
    """PASS when ``value < limit``."""
    if value is None or math.isnan(value):
        return MISS
    return PASS if value < limit else MISS


def at_most(value: float | None, limit: float) -> str:
    if value is None or math.isnan(value):
        return MISS
    return PASS if value <= limit else MISS


def ratio_at_least(value: float | None, baseline: float | None, ratio: float) -> str:
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline):
        return MISS
    return PASS if value >= ratio * baseline else MISS


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int) or (abs(x) >= 100 and float(x).is_integer()):
        s = f"{int(x):,}"
    elif abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.3f}"
    return f"{s} {unit}".rstrip()


def table(measurements: Sequence[Measurement]) -> str:
    """The human table: one line per figure, grouped by measurement."""
    head = ("measurement", "figure", "busguard", "baseline", "floor", "result")
    lines: list[tuple[str, ...]] = []
    notes: list[str] = []
    for m in measurements:
        label = f"{m.key}"
        if m.skipped or m.error:
            lines.append((label, m.title, "-", "-", "-", m.status))
            notes.append(f"{m.key}: {m.status.lower()}: {m.skipped or m.error}")
            continue
        mach = m.details.get("machine")
        if mach:
            steal = mach.get("steal_pct")
            refs = mach.get("cpu_ref_ms") or []
            notes.append(f"{m.key}: machine CPU busy {mach['busy_pct']:.0f}% of all cores "
                         f"during the measurement (bench processes included), load average "
                         f"{mach['load_avg'][0]:.2f}"
                         + (f", hypervisor steal {steal:.1f}%" if steal is not None else "")
                         + (f", reference loop {refs[0]:.0f}/{refs[1]:.0f} ms before/after"
                            if len(refs) == 2 and all(r == r for r in refs) else ""))
        for i, r in enumerate(m.rows):
            base = fmt(r.baseline, r.unit)
            if r.baseline_label and r.baseline is not None:
                base += f" ({r.baseline_label})"
            lines.append((label if i == 0 else "", r.metric, fmt(r.value, r.unit), base,
                          r.floor or "-", r.status))
            if r.note:
                notes.append(f"{m.key}: {r.metric}: {r.note}")
    widths = [max(len(head[c]), *(len(x[c]) for x in lines)) if lines else len(head[c])
              for c in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(x, widths, strict=False)).rstrip() for x in lines]
    if notes:
        out.append("")
        out += [f"note: {n}" for n in notes]
    return "\n".join(out)
