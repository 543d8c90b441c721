"""The register map's snapshot as Sparkplug metrics: names, aliases, datatypes, quality.

One identity per point (docs/architecture.md, "The integration surface"): a device's metric
alias derives from its kind, its stable slot and the point's name, a node metric's from its
name, so an edit to site.toml never re-points a host's tag to another point. Values are what
the DCIM reads from the same image (float32 points, uint64 energy counters), never computed
again here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from busguard.northbound import mapdef as md

# Sparkplug B datatype codes (specification 3.0, "Data Types")
INT64, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, STRING = 4, 7, 8, 9, 10, 11, 12
INT32 = 3
# OPC-style quality codes in the "Quality" property (what Ignition and most hosts show)
OPC_QUALITY = {"good": 192, "stale": 64, "bad": 0, "not-connected": 0}
NUMERIC = (FLOAT, DOUBLE)

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
# header fields published as node metrics: the ones that change on events, not every scan
HEADER_METRICS: tuple[tuple[str, int], ...] = (
    ("runtime_state", STRING), ("data_origin", STRING), ("retained_status", STRING),
    ("points_restored", UINT32), ("active_alarms", UINT32), ("unacked_alarms", UINT32),
    ("highest_severity", STRING), ("faulted_blocks", UINT32), ("fingerprint", UINT32),
    ("config_hash", STRING), ("scan_period_ms", UINT32), ("starts", UINT32),
)


@dataclass(frozen=True)
class Value:
    """One metric's current reading: what report-by-exception compares."""

    name: str
    alias: int
    datatype: int
    value: Any  # float, int, str, bool or None (is_null)
    quality: str = "good"
    age_ms: int = 0


def alias_of(kind: str, slot: int, name: str) -> int:
    """A metric's alias: device kind (meter 1, probe 2, breaker 3; 0 the node), slot, and
    the CRC32 of the name, so it stays the same across restarts and site edits."""
    code = md.DEVICE_KINDS.index(kind) if kind else 0
    return (code << 48) | ((slot & 0xFFFF) << 32) | zlib.crc32(name.encode())


def _flag_text(words: list[str]) -> str:
    return ",".join(words)


def node_values(snap: Mapping[str, Any], extra: Mapping[str, tuple[int, Any]]) -> list[Value]:
    """The edge node's own metrics: map header, outputs, extras, alarms, and ``extra`` (the
    publisher's status points, name -> (datatype, value))."""
    head = snap.get("header", {})
    out: list[Value] = []

    def add(name: str, dt: int, value: Any, quality: str = "good", age: int = 0) -> None:
        out.append(Value(name, alias_of("", 0, name), dt, value, quality, age))

    for field, dt in HEADER_METRICS:
        if field in head:
            v = head[field]
            add(f"Map/{field}", dt, v if dt != STRING else str(v))
    add("Map/alarm_summary", STRING, _flag_text(head.get("alarm_summary", [])))
    for name, rec in snap.get("outputs", {}).items():
        add(f"Outputs/{name}", FLOAT, rec["value"], rec["quality"], rec["age_ms"])
    for name, rec in snap.get("extras", {}).items():
        dt = UINT64 if name in md.COUNTER_POINTS else DOUBLE
        add(f"Extras/{name}", dt, rec["value"], rec["quality"], rec["age_ms"])
    for name, rec in snap.get("alarms", {}).items():
        add(f"Alarms/{name}", STRING, _flag_text(rec["bits"]))
    for name, (dt, value) in extra.items():
        add(name, dt, value)
    return out


# a point the map has a record for but that was never read: null, OPC quality bad
NEVER_READ = "not-connected"


def device_values(dev: Mapping[str, Any]) -> list[Value]:
    """One device's metrics: every point of its kind's record in the map layout (in layout
    order; a point never read, or not measured by this device, is null with quality
    ``not-connected`` until it is), then its status, alarms and flags (and a breaker's trip
    cause, a meter's exact energy counters). Every metric a later DDATA can carry is so
    declared in the DBIRTH, whatever had been read when the device was born."""
    kind, slot = dev["kind"], int(dev["slot"])
    out: list[Value] = []

    def add(name: str, dt: int, value: Any, quality: str = "good", age: int = 0) -> None:
        out.append(Value(name, alias_of(kind, slot, name), dt, value, quality, age))

    points = dev["points"]
    standard = md.STANDARD.get(kind, ())
    names = [*standard, *(n for n in points if n not in standard)]
    for name in names:
        rec = points.get(name)
        if rec is None:
            add(name, FLOAT, None, NEVER_READ, md.AGE_MAX_MS)
        else:
            add(name, FLOAT, rec["value"], rec["quality"], rec["age_ms"])
    add("status", STRING, dev["status"])
    add("alarms", STRING, _flag_text(dev["alarms"]))
    add("flags", STRING, _flag_text(dev["flags"]))
    if kind == "breaker":
        add("trip_cause", UINT32, dev.get("trip_cause", 0))
        add("trip_cause_name", STRING, dev.get("trip_cause_name") or "")
        add("trip_utc", STRING, dev.get("trip_utc") or "")
    counters = dev.get("counters") or {}
    if kind == "meter":
        for name in md.ENERGY_COUNTERS:
            v = counters.get(name)
            add(f"counter/{name}", UINT64, v, "good" if v is not None else NEVER_READ)
    else:
        for name, v in counters.items():
            add(f"counter/{name}", UINT64, v)
    return out


def devices(snap: Mapping[str, Any]) -> Iterator[tuple[str, list[Value]]]:
    for dev in snap.get("devices", ()):
        yield dev["name"], device_values(dev)
