"""Site files the bench writes for the runtime it measures (TOML text, validated by the runtime
like any site), and :func:`parts`: which parts of busguard this installation has, so a
measurement that needs a missing part is reported as skipped instead of run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.registry import TypeRegistry

METER_PROFILE = "generic-pqm"


def parts(registry: TypeRegistry) -> dict[str, bool]:
    """Which busguard parts the bench can use."""
    return {
        "modbus_tcp": "modbus_tcp" in registry.drivers["meter"],
        "w1": "w1" in registry.drivers["probe"],
        "modbus_server": "modbus_server" in registry.publishers,
        "shunt_trip": "shunt_trip" in registry.blocks,
        "threshold_alarm": "threshold_alarm" in registry.blocks,
    }


def _v(x: Any) -> str:
    if isinstance(x, dict):
        return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in x.items()) + " }"
    return json.dumps(x)  # TOML basic strings, numbers, booleans and arrays of them


def _table(header: str, opts: dict[str, Any]) -> str:
    return header + "\n" + "".join(f"{k} = {_v(v)}\n" for k, v in opts.items())


@dataclass
class SiteSpec:
    """A site as data: single tables, then [[meter]]/[[probe]]/[[output]]/[[block]] entries."""

    name: str = "bench"
    period_ms: float = 10.0
    stats_window: int = 6000
    io: str = "thread"  # [scan] io: "thread" or "process"
    spin_ms: float | None = None  # [scan] spin_ms (None: the runtime's default)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, kind: str, **opts: Any) -> None:
        self.entries.append((kind, opts))

    def toml(self) -> str:
        out = [_table("[site]", {"name": self.name}),
               _table("[scan]", {"period_ms": self.period_ms, "stats_window": self.stats_window,
                                   "io": self.io} | ({} if self.spin_ms is None
                                                     else {"spin_ms": self.spin_ms})),
               _table("[paths]", {"state_dir": "state", "fault_log": "state/fault.log"})]
        out += [_table(f"[{name}]", opts) for name, opts in self.tables.items()]
        out += [_table(f"[[{kind}]]", opts) for kind, opts in self.entries]
        return "\n".join(out)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.toml(), encoding="utf-8")
        return path


def add_tcp_meters(spec: SiteSpec, ports: Sequence[int], poll_ms: float,
                   **extra: Any) -> list[str]:
    names = []
    for i, port in enumerate(ports):
        name = f"pqm-{i:02d}"
        spec.add("meter", name=name, driver="modbus_tcp", poll_ms=poll_ms, host="127.0.0.1",
                 port=port, profile=METER_PROFILE, **extra)
        names.append(name)
    return names


def add_memory_meters(spec: SiteSpec, count: int, points: Sequence[str],
                      values: dict[str, float]) -> list[str]:
    names = []
    for i in range(count):
        name = f"pqm-{i:02d}"
        spec.add("meter", name=name, driver="memory", poll_ms=100.0, points=list(points),
                 initial={p: values[p] for p in points})
        names.append(name)
    return names


def add_w1_probes(spec: SiteSpec, base_dir: str, ids: Sequence[str], poll_ms: float) -> None:
    spec.tables["onewire"] = {"base_dir": base_dir}
    for i, sid in enumerate(ids):
        spec.add("probe", name=f"tap-{i:02d}", driver="w1", poll_ms=poll_ms, sensor_id=sid)


def add_limit_blocks(spec: SiteSpec, meters: Sequence[str], point: str, high: float,
                     output: str = "") -> None:
    """One threshold alarm per meter; the first drives ``output`` (one writer per output)."""
    for i, m in enumerate(meters):
        opts: dict[str, Any] = {"name": f"limit-{m}", "type": "threshold_alarm",
                                "point": f"{m}.{point}", "high": high, "hysteresis": 5.0,
                                "code": "BG-BENCH"}
        if output and i == 0:
            opts["output"] = output
        spec.add("block", **opts)
