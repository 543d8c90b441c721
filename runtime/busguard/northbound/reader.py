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
from busguard.northbound import mapdef as md

ReadFn = Callable[[int, int], list[int]]
STATES = {v: k for k, v in md.RUNTIME_STATES.items()}
RETAINED = {v: k for k, v in md.RETAINED_STATUS.items()}
SEVERITIES = ("none", "info", "warning", "minor", "major", "critical")


def f32(words: Sequence[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]


def u32(words: Sequence[int]) -> int:
    return (words[0] << 16) | words[1]


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
    return {"value": _num(f32(words[0:2])), "quality": md.QUALITY_WORDS.get(words[2], "?"),
            "age_ms": words[3]}


def read_header(read: ReadFn) -> dict[str, Any]:
    h = read(0, md.HEADER_WORDS)
    if h[0] != md.MAGIC:
        raise BusguardError(f"register 0 holds {h[0]:#06x}, not the busguard map magic "
                            f"{md.MAGIC:#06x}: not a busguard map")
    directory = {}
    for i, area in enumerate(md.AREAS):
        o = md.DIRECTORY_OFFSET + 3 * i
        directory[area] = {"base": h[o], "count": h[o + 1], "stride": h[o + 2]}
    return {
        "map_version": h[1], "runtime_state": STATES.get(h[2], str(h[2])),
        "data_origin": "RESTORED" if h[3] == md.ORIGIN_RESTORED else "LIVE",
        "retained_status": RETAINED.get(h[4], str(h[4])), "points_restored": h[5],
        "cycle_count": u32(h[6:8]), "overruns": u32(h[8:10]),
        "scan_lateness_p99_ms": _num(f32(h[10:12])), "uptime_s": u32(h[12:14]),
        "last_good_scan_utc": u32(h[14:16]), "active_alarms": h[16], "unacked_alarms": h[17],
        "highest_severity": SEVERITIES[h[18]] if h[18] < len(SEVERITIES) else str(h[18]),
        "faulted_blocks": h[19], "scan_period_ms": h[20], "starts": h[21],
        "config_hash": "".join(f"{w:04x}" for w in h[22:26]), "image_utc": u32(h[26:28]),
        "alarm_summary": bits(h[28], md.ALARM_BITS), "directory": directory,
    }


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
    for kind in md.DEVICE_KINDS:
        a = d[kind]
        used = md.DEVICE_HEADER_WORDS + md.POINT_WORDS * len(md.STANDARD[kind])
        for i in range(a["count"]):
            ws = read(a["base"] + i * a["stride"], used)
            pts = {}
            for j, q in enumerate(md.STANDARD[kind]):
                o = md.DEVICE_HEADER_WORDS + j * md.POINT_WORDS
                rec = point(ws[o:o + md.POINT_WORDS])
                if not (rec["value"] is None and rec["quality"] == "not-connected"
                        and ws[o + 3] == md.AGE_MAX_MS):
                    pts[q] = rec
            devices.append({"kind": kind, "name": names[k], "ordinal": ws[0],
                            "reset_command": ws[5] or None,
                            "status": md.QUALITY_WORDS.get(ws[1], "?"),
                            "alarms": bits(ws[2], md.ALARM_BITS),
                            "flags": bits(ws[3], md.DEVICE_FLAGS), "points": pts})
            k += 1

    def records(area: str) -> list[list[int]]:
        a = d[area]
        ws = read_chunked(read, a["base"], a["count"] * a["stride"])
        return [ws[i * a["stride"]:(i + 1) * a["stride"]] for i in range(a["count"])]

    outputs = {}
    for ws in records("output"):
        outputs[names[k]] = point(ws)
        k += 1
    alarms = {}
    for ws in records("alarm"):
        alarms[names[k]] = {"bits": bits(ws[0], md.ALARM_BITS), "count": ws[1]}
        k += 1
    commands = {}
    for ws in records("command"):
        commands[names[k]] = {"value": _num(f32(ws[0:2])), "u32": u32(ws[2:4])}
        k += 1
    extras = {}
    for ws in records("extra"):
        extras[names[k]] = point(ws)
        k += 1
    return {"header": head, "devices": devices, "outputs": outputs, "alarms": alarms,
            "commands": commands, "extras": extras}
