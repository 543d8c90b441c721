"""The BUSGUARD-MIB tree, described once: the agent's OID table and the MIB text both come
from here, and both from the register map's own field tables (mapdef.STANDARD, unit_of), so
a point added to the map appears in the walk and in the MIB without being written twice.

Layout under the module OID (``[snmp] enterprise_oid``, default enterprises.32473, a
placeholder: 32473 is the documentation PEN of RFC 5612 until a number is registered):

- ``.1.1.N.0``  header scalars (fingerprint, runtime state, RESTORED/LIVE, lateness...)
- ``.1.2`` / ``.1.3`` / ``.1.4``  meter / probe / breaker tables, indexed by the stable slot
  (the same slot the Modbus map uses); column 2 name, 3 status, (breaker: 4 trip cause,
  5 trip time), and per point ``10 + 3j`` value (fixed point), ``11 + 3j`` quality,
  ``12 + 3j`` age in ms, j = the point's position in the kind's standard list
- ``.1.5``  the alarm table, indexed by rank (1 = most urgent)

SNMP has no float: a value is an Integer32 of value x scale (1000 for everything but the
energy counters in Wh/varh, scale 1), rounded; a point with no value reads NO_VALUE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from busguard.northbound import mapdef as md

PLACEHOLDER_PEN = 32473  # RFC 5612's documentation PEN: replace once a PEN is registered
DEFAULT_OID = f"1.3.6.1.4.1.{PLACEHOLDER_PEN}"
NO_VALUE = -2147483648  # Integer32 minimum: the point has no value (NaN, not read)
INT32_MAX = 2147483647
KIND_TABLE = {"meter": 2, "probe": 3, "breaker": 4}
KIND_PREFIX = {"meter": "mtr", "probe": "prb", "breaker": "brk"}
ALARM_TABLE = 5
POINT_BASE = 10
QUALITY = {"good": 0, "stale": 1, "bad": 2, "not-connected": 3}
STATES = {name: i for name, i in md.RUNTIME_STATES.items()}
SEVERITY = {w: i for i, w in enumerate(md.SEVERITY_WORDS)}
ALARM_STATE = {w: i for i, w in enumerate(md.ALARM_STATES)}

# value kinds the agent turns into pyasn1 objects: i Integer32, u Unsigned32, g Gauge32,
# c Counter32, s OctetString
Value = tuple[str, Any]


def scale_of(q: str) -> int:
    """Fixed-point scale of point ``q`` (the MIB's DISPLAY-HINT says the same)."""
    return 1 if q.endswith(("_wh", "_varh")) else 1000


def fixed(v: float | None, scale: int) -> int:
    if v is None or math.isnan(v):
        return NO_VALUE
    return max(NO_VALUE + 1, min(INT32_MAX, round(v * scale)))


def camel(q: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in q.replace(".", "_").split("_") if p)


@dataclass(frozen=True)
class Header:
    sub: int
    name: str
    key: str
    syntax: str  # MIB syntax
    kind: str  # value kind (see Value)
    units: str
    doc: str


HEADER = (
    Header(1, "bgMapFingerprint", "fingerprint", "Unsigned32", "u", "",
           "Layout fingerprint of the register map (CRC32 of its address table): changes "
           "when any point is added, removed or moved."),
    Header(2, "bgConfigHash", "config_hash", "OCTET STRING (SIZE(8))", "s", "",
           "First 8 bytes of the SHA-256 of site.toml."),
    Header(3, "bgRuntimeState", "runtime_state",
           "INTEGER { built(0), running(1), stopping(2), stopped(3) }", "i", "",
           "State of the runtime."),
    Header(4, "bgDataOrigin", "data_origin", "INTEGER { live(0), restored(1) }", "i", "",
           "restored: some values still come from retained state after a restart."),
    Header(5, "bgScanLatenessP99", "scan_lateness_p99_ms", "Integer32", "i", "microseconds",
           "99th percentile of scan start lateness; -1 not yet known."),
    Header(6, "bgOverruns", "overruns", "Counter32", "c", "",
           "Scan periods missed since start."),
    Header(7, "bgCycleCount", "cycle_count", "Counter32", "c", "", "Scan cycles since start."),
    Header(8, "bgUptime", "uptime_s", "Unsigned32", "u", "seconds",
           "Seconds since the runtime started."),
    Header(9, "bgActiveAlarms", "active_alarms", "Gauge32", "g", "",
           "Alarms in the table (active or latched)."),
    Header(10, "bgHighestSeverity", "highest_severity",
           "BgSeverity", "i", "", "Highest severity among the alarms."),
    Header(11, "bgMapVersion", "map_version", "Unsigned32", "u", "",
           "Layout version of the register map."),
)


def header_value(h: Header, head: Mapping[str, Any]) -> Value:
    v = head.get(h.key)
    if h.key == "config_hash":
        return "s", bytes.fromhex(v or "")
    if h.key == "runtime_state":
        return "i", STATES.get(v, 0) if isinstance(v, str) else int(v)
    if h.key == "data_origin":
        return "i", 1 if v == "RESTORED" else 0
    if h.key == "highest_severity":
        return "i", SEVERITY.get(v, 0) if isinstance(v, str) else int(v)
    if h.key == "scan_lateness_p99_ms":
        return "i", -1 if v is None else max(-1, min(INT32_MAX, round(v * 1000)))
    return h.kind, int(v or 0) & 0xFFFFFFFF


def rows(data: Mapping[str, Any]) -> dict[tuple[int, ...], Value]:
    """Relative OID (under the module OID) -> value, for one decoded snapshot."""
    out: dict[tuple[int, ...], Value] = {}
    head = data.get("header", {})
    for h in HEADER:
        out[(1, 1, h.sub, 0)] = header_value(h, head)
    for dev in data.get("devices", ()):
        t = KIND_TABLE.get(dev["kind"])
        if t is None:
            continue
        slot = int(dev["slot"])
        base = (1, t, 1)
        out[(*base, 2, slot)] = ("s", dev["name"].encode())
        out[(*base, 3, slot)] = ("i", QUALITY.get(dev["status"], 2))
        if dev["kind"] == "breaker":
            out[(*base, 4, slot)] = ("u", int(dev.get("trip_cause") or 0))
            out[(*base, 5, slot)] = ("u", int(dev.get("trip_utc") or 0))
        for j, q in enumerate(md.STANDARD[dev["kind"]]):
            rec = dev["points"].get(q)
            if rec is None:
                continue
            col = POINT_BASE + 3 * j
            out[(*base, col, slot)] = ("i", fixed(rec["value"], scale_of(q)))
            out[(*base, col + 1, slot)] = ("i", QUALITY.get(rec["quality"], 2))
            out[(*base, col + 2, slot)] = ("u", int(rec["age_ms"]))
    for rank, a in enumerate(data.get("alarm_table", ()), 1):
        base = (1, ALARM_TABLE, 1)
        out[(*base, 2, rank)] = ("s", str(a["code"]).encode())
        out[(*base, 3, rank)] = ("u", int(a["code_num"]))
        out[(*base, 4, rank)] = ("i", SEVERITY.get(a["severity"], 0))
        out[(*base, 5, rank)] = ("s", str(a["device"]).encode())
        out[(*base, 6, rank)] = ("i", int(a["slot"]) if a["slot"] != md.NO_SLOT else -1)
        out[(*base, 7, rank)] = ("i", ALARM_STATE.get(a["state"], 0))
        out[(*base, 8, rank)] = ("i", 1 if a["acked"] else 2)
        out[(*base, 9, rank)] = ("u", int(a["raised_utc"] or 0))
    return out
