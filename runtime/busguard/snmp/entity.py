"""ENTITY-MIB (RFC 4133) and ENTITY-SENSOR-MIB (RFC 3433) rows from the same snapshot as
BUSGUARD-MIB, for the NMSes that discover devices and sensor values through the standard MIBs
rather than an enterprise one.

The containment tree: index 1 is the unit (class chassis); every meter, probe and breaker is
an entry contained in it; every point of a meter is a sensor entry contained in its meter; a
probe *is* a sensor (its temperature); a breaker has one sensor, ``tripped`` (truthvalue).
Indexes derive from the device's stable slot, as the Modbus address and the BUSGUARD-MIB
index do, so an edit of site.toml never re-points an NMS::

    device  = KIND_BASE[kind] + 100 * slot        (meter 10,000,000, probe 20,000,000,
                                                   breaker 30,000,000; slot < 65536)
    sensor  = device + 1 + j                       (j: the point's place in the kind's list)

Values are fixed point like BUSGUARD-MIB: entPhySensorPrecision 3 (x 1000), 0 for the
Wh/varh counters, with the scale in entPhySensorScale (units, or kilo for kW/kWh, milli for
mA); ENTITY-SENSOR-MIB limits a value to +-10^9, so a larger one is clamped there and its
operStatus says unavailable. Quality maps to entPhySensorOperStatus: good -> ok, stale and
not connected -> unavailable, bad -> nonoperational; what ENTITY-SENSOR-MIB cannot say (the
age, stale versus never read) stays in BUSGUARD-MIB's quality and age columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from busguard.northbound import mapdef as md
from busguard.snmp import tree

OID = tuple[int, ...]
ENT_PHYSICAL = (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1)  # entPhysicalEntry
ENT_SENSOR = (1, 3, 6, 1, 2, 1, 99, 1, 1, 1)  # entPhySensorEntry
SUBTREES = (ENT_PHYSICAL[:8], ENT_SENSOR[:8])  # entityMIB, entitySensorMIB
CHASSIS = 1
KIND_BASE = {"meter": 10_000_000, "probe": 20_000_000, "breaker": 30_000_000}
# entPhysicalClass
CLASS = {"chassis": 3, "meter": 9, "probe": 8, "breaker": 1, "sensor": 8}  # module, sensor, other
# EntitySensorDataType / Scale / Status
OTHER, VOLTS_AC, AMPERES, WATTS, HERTZ, CELSIUS, TRUTHVALUE = 1, 3, 5, 6, 7, 8, 12
MILLI, UNITS, KILO = 8, 9, 10
OK, UNAVAILABLE, NONOPERATIONAL = 1, 2, 3
STATUS = {"good": OK, "stale": UNAVAILABLE, "not-connected": UNAVAILABLE, "bad": NONOPERATIONAL}
LIMIT = 1_000_000_000  # EntitySensorValue range
MFG_DATE_UNKNOWN = bytes(8)  # entPhysicalMfgDate '0000000000000000'H: unknown


def sensor_kind(q: str) -> tuple[int, int, str]:
    """(EntitySensorDataType, EntitySensorDataScale, unitsDisplay) of point ``q``; what
    ENTITY-SENSOR-MIB has no type for (VA, var, %, energy, ms) is other(1) with its unit in
    entPhySensorUnitsDisplay."""
    unit = md.unit_of(q)
    return {"V": (VOLTS_AC, UNITS, "V"), "A": (AMPERES, UNITS, "A"),
            "mA": (AMPERES, MILLI, "mA"), "kW": (WATTS, KILO, "kW"),
            "Hz": (HERTZ, UNITS, "Hz"), "degC": (CELSIUS, UNITS, "C")}.get(
                unit, (OTHER, UNITS, unit))


def precision(q: str) -> int:
    return 0 if tree.scale_of(q) == 1 else 3


def device_index(kind: str, slot: int) -> int:
    return KIND_BASE[kind] + 100 * slot


def _physical(out: dict[OID, tree.Value], index: int, descr: str, contained: int,
              cls: int, pos: int, name: str, fru: bool) -> None:
    e = ENT_PHYSICAL
    out[(*e, 2, index)] = ("s", descr.encode())
    out[(*e, 3, index)] = ("o", (0, 0))  # entPhysicalVendorType: zeroDotZero (unknown)
    out[(*e, 4, index)] = ("i", contained)
    out[(*e, 5, index)] = ("i", cls)
    out[(*e, 6, index)] = ("i", pos)
    out[(*e, 7, index)] = ("s", name.encode())
    for col in range(8, 16):  # revisions, serial, manufacturer, model, alias, asset id
        out[(*e, col, index)] = ("s", b"")
    out[(*e, 16, index)] = ("i", 1 if fru else 2)
    out[(*e, 17, index)] = ("s", MFG_DATE_UNKNOWN)
    out[(*e, 18, index)] = ("s", b"")


def _sensor(out: dict[OID, tree.Value], index: int, q: str, rec: Mapping[str, Any],
            uptime_cs: int, rate_ms: int) -> None:
    typ, scale, units = sensor_kind(q)
    prec = precision(q)
    v = rec.get("value")
    status = STATUS.get(rec.get("quality", "bad"), NONOPERATIONAL)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        value, status = 0, (UNAVAILABLE if status == OK else status)
    else:
        value = round(v * 10 ** prec)
        if abs(value) > LIMIT:
            value = max(-LIMIT, min(LIMIT, value))
            status = UNAVAILABLE if status == OK else status
    s = ENT_SENSOR
    out[(*s, 1, index)] = ("i", typ)
    out[(*s, 2, index)] = ("i", scale)
    out[(*s, 3, index)] = ("i", prec)
    out[(*s, 4, index)] = ("i", value)
    out[(*s, 5, index)] = ("i", status)
    out[(*s, 6, index)] = ("s", units.encode())
    out[(*s, 7, index)] = ("t", max(0, uptime_cs - int(rec.get("age_ms") or 0) // 10))
    out[(*s, 8, index)] = ("u", rate_ms)


def rows(data: Mapping[str, Any], site: str = "busguard") -> dict[OID, tree.Value]:
    """Absolute OID -> value of entPhysicalTable and entPhySensorTable for one snapshot
    (``site``: the chassis entry's entPhysicalName)."""
    out: dict[OID, tree.Value] = {}
    head = data.get("header", {})
    uptime_cs = int(head.get("uptime_s") or 0) * 100
    _physical(out, CHASSIS, "busguard busway supervisory unit", 0, CLASS["chassis"], -1,
              site, False)
    for dev in data.get("devices", ()):
        kind = dev["kind"]
        if kind not in KIND_BASE:
            continue
        slot = int(dev["slot"])
        idx = device_index(kind, slot)
        points = dev.get("points", {})
        _physical(out, idx, f"busguard {kind} {dev['name']}", CHASSIS, CLASS[kind], slot,
                  dev["name"], True)
        if kind == "probe":  # the probe is its sensor
            rec = points.get("temp_c")
            if rec is not None:
                _sensor(out, idx, "temp_c", rec, uptime_cs, 0)
            continue
        if kind == "breaker":
            cause = int(dev.get("trip_cause") or 0)
            _physical(out, idx + 1, f"trip state of breaker {dev['name']}", idx,
                      CLASS["sensor"], 1, f"{dev['name']}.tripped", False)
            _truth(out, idx + 1, cause != 0, dev["status"], uptime_cs)
            continue
        rate = points.get("comm_poll_ms", {}).get("value")
        rate_ms = int(rate) if isinstance(rate, (int, float)) and rate == rate and rate > 0 else 0
        for j, q in enumerate(md.STANDARD[kind]):
            rec = points.get(q)
            if rec is None:
                continue
            unit = md.unit_of(q)
            _physical(out, idx + 1 + j, f"{q} of {kind} {dev['name']}"
                      + (f" ({unit})" if unit else ""), idx, CLASS["sensor"], j + 1,
                      f"{dev['name']}.{q}", False)
            _sensor(out, idx + 1 + j, q, rec, uptime_cs, rate_ms)
    return out


def _truth(out: dict[OID, tree.Value], index: int, value: bool, quality: str,
           uptime_cs: int) -> None:
    s = ENT_SENSOR
    out[(*s, 1, index)] = ("i", TRUTHVALUE)
    out[(*s, 2, index)] = ("i", UNITS)
    out[(*s, 3, index)] = ("i", 0)
    out[(*s, 4, index)] = ("i", 1 if value else 2)  # TruthValue: true(1), false(2)
    out[(*s, 5, index)] = ("i", STATUS.get(quality, NONOPERATIONAL))
    out[(*s, 6, index)] = ("s", b"")
    out[(*s, 7, index)] = ("t", uptime_cs)
    out[(*s, 8, index)] = ("u", 0)
