"""The edge node's Sparkplug B state: births, report by exception, payload encoding.

Pure bookkeeping over snapshots (no sockets): :class:`EdgeNode` keeps the last value each
host was told per metric and says which metrics changed past their deadband since; the
publisher (:mod:`.publisher`) numbers and sends what it returns, or queues it while offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from busguard.northbound import mapdef as md
from busguard.sparkplug import metrics as mx
from busguard.sparkplug.sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"


def topic(group: str, kind: str, node: str, device: str = "") -> str:
    return f"{NAMESPACE}/{group}/{kind}/{node}" + (f"/{device}" if device else "")


def set_value(m: Any, dt: int, value: Any) -> None:
    """Fill a Metric's (or PropertyValue's) value field for datatype ``dt``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        m.is_null = True
    elif dt == mx.FLOAT:
        m.float_value = float(value)
    elif dt == mx.DOUBLE:
        m.double_value = float(value)
    elif dt in (mx.UINT32, mx.INT32):
        m.int_value = int(value) & 0xFFFFFFFF
    elif dt in (mx.UINT64, mx.INT64):
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif dt == mx.BOOLEAN:
        m.boolean_value = bool(value)
    else:
        m.string_value = str(value)


def stamp(now_ms: int, age_ms: int) -> int:
    """A value's acquisition time: the image's time less the point's age (a point never read
    has the age ceiling: then the image's time)."""
    return now_ms if age_ms >= md.AGE_MAX_MS else max(0, now_ms - int(age_ms))


def add_metric(payload: Payload, v: mx.Value, now_ms: int, birth: bool,
               with_quality: bool, historical: bool = False) -> None:
    m = payload.metrics.add()
    if birth:
        m.name = v.name
        m.datatype = v.datatype
    m.alias = v.alias
    m.timestamp = stamp(now_ms, v.age_ms)
    if historical:
        m.is_historical = True
    set_value(m, v.datatype, v.value)
    if with_quality:
        props = m.properties
        props.keys.extend(["Quality", "quality"])
        q = props.values.add(type=mx.INT32)
        q.int_value = mx.OPC_QUALITY.get(v.quality, 0)
        props.values.add(type=mx.STRING, string_value=v.quality)


@dataclass
class Change:
    """One metric to send: its new value, and whether its quality changed (the quality
    properties then go along; a DATA metric without them keeps its last quality)."""

    value: mx.Value
    quality_changed: bool


@dataclass
class Delta:
    """What changed since the last call: per device (``""``: the node), and devices that
    appeared (need a DBIRTH) or went away (need a DDEATH)."""

    changes: dict[str, list[Change]] = field(default_factory=dict)
    born: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(c) for c in self.changes.values())


class EdgeNode:
    """Report-by-exception over successive snapshots for one edge node."""

    def __init__(self, group: str, node: str, deadband: float = 0.0,
                 deadbands: Mapping[str, float] | None = None) -> None:
        self.group = group
        self.node = node
        self.deadband = deadband
        self.deadbands = dict(deadbands or {})
        self.last: dict[str, dict[str, mx.Value]] = {}  # device ("" node) -> name -> sent

    def band(self, device: str, name: str) -> float:
        return self.deadbands.get(f"{device}.{name}" if device else name,
                                  self.deadbands.get(name, self.deadband))

    def current(self, snap: Mapping[str, Any],
                extra: Mapping[str, tuple[int, Any]]) -> dict[str, list[mx.Value]]:
        now = {"": mx.node_values(snap, extra)}
        for name, vals in mx.devices(snap):
            now[name] = vals
        return now

    def baseline(self, current: Mapping[str, list[mx.Value]]) -> None:
        self.last = {dev: {v.name: v for v in vals} for dev, vals in current.items()}

    def changed(self, device: str, old: mx.Value | None, new: mx.Value) -> bool:
        if old is None or old.quality != new.quality or old.datatype != new.datatype:
            return True
        a, b = old.value, new.value
        if new.datatype in mx.NUMERIC and a is not None and b is not None:
            if math.isnan(a) or math.isnan(b):
                return math.isnan(a) != math.isnan(b)
            band = self.band(device, new.name)
            return abs(b - a) > band if band > 0 else a != b
        return a != b

    def delta(self, current: Mapping[str, list[mx.Value]]) -> Delta:
        """The metrics that changed past their deadband since the last delta or baseline;
        the sent values become the new reference (a slow drift under the deadband is still
        reported once it adds up past it)."""
        out = Delta()
        for dev, vals in current.items():
            seen = self.last.get(dev)
            if seen is None:
                if dev:
                    out.born.append(dev)
                self.last[dev] = {v.name: v for v in vals}
                continue
            ch = []
            for v in vals:
                old = seen.get(v.name)
                if self.changed(dev, old, v):
                    ch.append(Change(v, old is None or old.quality != v.quality))
                    seen[v.name] = v
            if ch:
                out.changes[dev] = ch
        for dev in list(self.last):
            if dev and dev not in current:
                out.gone.append(dev)
                del self.last[dev]
        return out

    # -- payloads ---------------------------------------------------------------------------
    def nbirth(self, node_vals: list[mx.Value], bdseq: int, now_ms: int) -> Payload:
        p = Payload(timestamp=now_ms)
        for v in (mx.Value(mx.BDSEQ, mx.alias_of("", 0, mx.BDSEQ), mx.INT64, bdseq),
                  mx.Value(mx.REBIRTH, mx.alias_of("", 0, mx.REBIRTH), mx.BOOLEAN, False),
                  *node_vals):
            add_metric(p, v, now_ms, birth=True, with_quality=True)
        return p

    def dbirth(self, vals: list[mx.Value], now_ms: int) -> Payload:
        p = Payload(timestamp=now_ms)
        for v in vals:
            add_metric(p, v, now_ms, birth=True, with_quality=True)
        return p

    @staticmethod
    def data(changes: list[Change], now_ms: int, historical: bool = False) -> Payload:
        p = Payload(timestamp=now_ms)
        for c in changes:
            add_metric(p, c.value, now_ms, birth=False,
                       with_quality=c.quality_changed or c.value.quality != "good",
                       historical=historical)
        return p

    @staticmethod
    def ndeath(bdseq: int, now_ms: int | None = None) -> Payload:
        p = Payload()
        if now_ms is not None:
            p.timestamp = now_ms
        m = p.metrics.add(name=mx.BDSEQ, datatype=mx.INT64)
        m.long_value = bdseq
        return p


def rebirth_requested(payload: bytes) -> bool:
    """An NCMD asks for a rebirth: a ``Node Control/Rebirth`` metric (by name or alias) that
    is true. Anything else (or garbage) is not a rebirth request."""
    try:
        p = Payload.FromString(payload)
    except Exception:
        return False
    alias = mx.alias_of("", 0, mx.REBIRTH)
    return any((m.name == mx.REBIRTH or (not m.name and m.alias == alias))
               and m.WhichOneof("value") == "boolean_value" and m.boolean_value
               for m in p.metrics)
