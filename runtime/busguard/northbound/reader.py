"""Reading a running busguard through its register map, exactly as a DCIM does.

Used by `busguard status` and the tests: a pymodbus client reads the header, finds every area
through the header's directory, reads each device block in one request and decodes it with
the same definition the server encodes with. No site file is needed: names come from the
map's name table.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from busguard.errors import BusguardError
from busguard.northbound import events as ev
from busguard.northbound import mapdef as md

ReadFn = Callable[[int, int], list[int]]
STATES = {v: k for k, v in md.RUNTIME_STATES.items()}
RETAINED = {v: k for k, v in md.RETAINED_STATUS.items()}
SEVERITIES = ("none", "info", "warning", "minor", "major", "critical")


def bits(value: int, table: Sequence[tuple[int, str, str]]) -> list[str]:
    return [name for bit, name, _d in table if value & (1 << bit)]


def read_chunked(read: ReadFn, address: int, count: int) -> list[int]:
    out: list[int] = []
    while count > 0:
        n = min(count, md.MAX_READ)
        out += read(address, n)
        address += n
        count -= n
    return out


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def point(words: Sequence[int]) -> dict[str, Any]:
    rec = md.POINT.unpack(words)
    return {"value": _num(rec["value"]), "quality": md.QUALITY_WORDS.get(rec["quality"], "?"),
            "age_ms": rec["age_ms"]}


def counter(words: Sequence[int]) -> dict[str, Any]:
    """A counter record (uint32 value, quality, age): the value as an int."""
    rec = md.COUNTER.unpack(words)
    return {"value": rec["value"], "quality": md.QUALITY_WORDS.get(rec["quality"], "?"),
            "age_ms": rec["age_ms"]}


# header field -> how `busguard status` shows it (the others: as read)
_SHOW: dict[str, Callable[[Any], Any]] = {
    "runtime_state": lambda v: STATES.get(v, str(v)),
    "data_origin": lambda v: "RESTORED" if v == md.ORIGIN_RESTORED else "LIVE",
    "retained_status": lambda v: RETAINED.get(v, str(v)),
    "scan_lateness_p99_ms": _num,
    "highest_severity": lambda v: SEVERITIES[v] if v < len(SEVERITIES) else str(v),
    "config_hash": lambda v: v.hex(),
    "alarm_summary": lambda v: bits(v, md.ALARM_BITS),
}


def read_header(read: ReadFn) -> dict[str, Any]:
    h = read(0, md.HEADER_WORDS)
    head = md.HEADER.unpack(h)
    if head["magic"] != md.MAGIC:
        raise BusguardError(f"register 0 holds {head['magic']:#06x}, not the busguard map "
                            f"magic {md.MAGIC:#06x}: not a busguard map")
    directory = {}
    entry = md.DIRECTORY_ENTRY
    for i, area in enumerate(md.AREAS):
        o = md.DIRECTORY_OFFSET + entry.words * i
        directory[area] = entry.unpack(h[o:o + entry.words])
    out = {f.name: _SHOW.get(f.name, _same)(head[f.name]) for f in md.HEADER.fields
           if f.name != "magic"}
    out["directory"] = directory
    return out


def _vacant_point(rec: dict[str, Any]) -> bool:
    """A record of a vacant slot (quality 4)."""
    return rec["quality"] == md.QUALITY_WORDS[md.QUALITY_VACANT]


def _same(v: Any) -> Any:
    return v


def read_all(read: ReadFn) -> dict[str, Any]:
    """Everything the map holds, decoded."""
    head = read_header(read)
    d = head["directory"]
    nd = d["name"]
    raw_names = read_chunked(read, nd["base"], nd["count"] * nd["stride"])
    names = []
    for i in range(nd["count"]):
        ws = raw_names[i * nd["stride"]:(i + 1) * nd["stride"]]
        names.append(b"".join(struct.pack(">H", w) for w in ws).rstrip(b"\0").decode(
            "ascii", "replace"))
    k = 0
    devices = []
    for kind in md.MAPPED_KINDS:
        a = d[kind]
        used = md.DEVICE_HEADER_WORDS + md.POINT_WORDS * len(md.STANDARD[kind])
        if kind == "breaker":  # the trip cause and time follow the standard points
            used = md.BREAKER_TRIP_OFFSET + md.BREAKER_TRIP.words
        elif kind == "meter":  # the exact energy counters follow them
            used = md.METER_COUNTERS_OFFSET + md.METER_COUNTERS.words
        ordinal = 0
        for i in range(a["count"]):
            ws = read_chunked(read, a["base"] + i * a["stride"], used)  # > 125 words
            dh = md.DEVICE_HEADER.unpack(ws[:md.DEVICE_HEADER_WORDS])
            if dh["slot"] == md.VACANT:
                continue
            pts = {}
            for j, q in enumerate(md.STANDARD[kind]):
                o = md.DEVICE_HEADER_WORDS + j * md.POINT_WORDS
                rec = point(ws[o:o + md.POINT_WORDS])
                if not (rec["value"] is None and rec["quality"] == "not-connected"
                        and rec["age_ms"] == md.AGE_MAX_MS):
                    pts[q] = rec
            dev = {"kind": kind, "name": names[k], "ordinal": ordinal, "slot": dh["slot"],
                   "reset_command": dh["reset_command"] or None,
                   "status": md.QUALITY_WORDS.get(dh["status"], "?"),
                   "alarms": bits(dh["alarms"], md.ALARM_BITS),
                   "flags": bits(dh["flags"], md.DEVICE_FLAGS), "points": pts}
            if kind == "breaker":
                dev.update(ev.decode_trip(ws))
            elif kind == "meter":
                dev["counters"] = ev.decode_counters(ws, pts)
            devices.append(dev)
            ordinal += 1
            k += 1

    def records(area: str) -> list[list[int]]:
        a = d[area]
        ws = read_chunked(read, a["base"], a["count"] * a["stride"])
        return [ws[i * a["stride"]:(i + 1) * a["stride"]] for i in range(a["count"])]

    outputs = {}
    for ws in records("output"):
        rec = point(ws)
        if not _vacant_point(rec):
            outputs[names[k]] = rec
            k += 1
    alarms = {}
    for ws in records("alarm"):
        arec = md.ALARM.unpack(ws)
        if arec["alarm_count"] != md.VACANT:
            alarms[names[k]] = {"bits": bits(arec["alarms"], md.ALARM_BITS),
                                "count": arec["alarm_count"]}
            k += 1
    commands = {}
    for ws in records("command"):
        crec = md.COMMAND.unpack(ws)
        if not (math.isnan(crec["value"]) and crec["u32"] == 0xFFFFFFFF):
            commands[names[k]] = {"value": _num(crec["value"]), "u32": crec["u32"]}
            k += 1
    extras = {}
    for ws in records("extra"):
        rec = point(ws)
        if not _vacant_point(rec):
            extras[names[k]] = counter(ws) if names[k] in md.COUNTER_POINTS else rec
            k += 1
    slots = {(dv["kind"], int(dv["slot"])): dv["name"] for dv in devices}

    def area(name: str) -> list[int]:
        a = d.get(name)
        if not a or not a["base"]:  # a map without this area (an older busguard)
            return []
        return read_chunked(read, a["base"], md.AREA_HEAD_WORDS + a["count"] * a["stride"])

    table, ring = area("alarm_table"), area("event_ring")
    return {"header": head, "devices": devices, "outputs": outputs, "alarms": alarms,
            "commands": commands, "extras": extras,
            "alarm_table": ev.decode_alarm_table(table, names, slots) if table else [],
            "events": ev.decode_events(ring, names, slots) if ring else
            {"seq": 0, "capacity": md.EVENT_CAPACITY, "edges": []}}
