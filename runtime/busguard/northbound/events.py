"""The alarm table and the event ring in the register map: encoding, decoding, docs.

Why two areas: the alarm table says what holds *now* (what an operator must look at), the
event ring says what *happened* (every raise and clear, numbered), so a DCIM that polls every
10 s never misses an alarm that came and went between two polls, and can tell from the
sequence numbers when more edges came than the ring holds. Both carry alarm codes as numbers
(:mod:`busguard.alarmcodes`) and as text, and name the device by kind and slot (the identity
every interface uses) and by its record in the name table.

The scan thread captures :class:`AlarmRow` tuples and the ring's view into the frame; the
encoder (in whichever process serves the map) packs them with :class:`Areas`; the reader
decodes them with :func:`decode_alarm_table` and :func:`decode_events` into the keys of the
decoded snapshot (``alarm_table``, ``events``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from busguard.alarmcodes import OTHER, code_name, code_number, markdown_table
from busguard.alarms import AlarmState, EventRecord
from busguard.northbound import mapdef as md

_STATE_NUM = {name: i for i, name in enumerate(md.ALARM_STATES)}
_KIND_NUM = {name: i for i, name in enumerate(md.EVENT_KINDS)}
# one precompiled Struct per record (the fields of mapdef's tables, in order): packing field
# by field cost ~1.5 ms for a full table and ring
_ROW = struct.Struct(">" + md.ALARM_ROW.format)
_EVENT = struct.Struct(">" + md.EVENT.format)
assert _ROW.size == 2 * md.ALARM_ROW.words and _EVENT.size == 2 * md.EVENT.words
_CACHE_MAX = 4 * md.ALARM_TABLE_CAPACITY


@dataclass(frozen=True)
class AlarmRow:
    """One alarm of the table as the map lists it (captured on the scan thread)."""

    code: str
    severity: int  # Severity value, 0 info .. 4 critical
    state: str  # "active" | "latched" | "cleared-unacked"
    acked: bool
    raised_utc: float
    device: str
    block: str


def alarm_state(a: AlarmState) -> str:
    """active: the condition holds; latched: it holds and the alarm latches (stays until
    acknowledged once gone); cleared-unacked: gone, waiting for an acknowledgement."""
    if not a.active:
        return "cleared-unacked"
    return "latched" if a.condition.latch else "active"


def rows_of(alarms: Iterable[AlarmState], limit: int = md.ALARM_TABLE_CAPACITY
            ) -> tuple[AlarmRow, ...]:
    """The first ``limit`` alarms (pass them most urgent first) as rows."""
    out = []
    for a in alarms:
        if len(out) >= limit:
            break
        c = a.condition
        out.append(AlarmRow(c.code, int(c.severity), alarm_state(a), a.acked, a.raised_utc,
                            c.device or a.block, a.block))
    return tuple(out)


def _utc_parts(t: float) -> tuple[int, int]:
    """(whole seconds as uint32, milliseconds) of a UTC time; (0, 0) if not a time."""
    if not math.isfinite(t) or t <= 0:
        return 0, 0
    whole = math.floor(t)
    ms = min(999, round((t - whole) * 1000))
    return min(int(whole), 0xFFFFFFFF), ms


def _ascii(text: str, size: int = 24) -> bytes:
    return text.encode("ascii", "replace")[:size]


class Areas:
    """Packs the alarm table and the event ring of one map into register images.

    Device references (kind, slot, name-table record) are resolved once per map. The two
    areas change only on alarm edges, so their packed bytes are kept and reused while the
    frame brings the same rows and the same ring.
    """

    def __init__(self, regmap: md.RegisterMap, slot_of: Callable[[md.DeviceBlock], int]
                 ) -> None:
        name_idx = {label: i for i, (label, _a) in enumerate(regmap.names)}
        self.refs: dict[str, tuple[int, int, int]] = {}
        for d in regmap.devices:
            self.refs[d.name] = (md.DEVICE_KINDS.index(d.kind), slot_of(d),
                                 name_idx.get(d.name, md.NO_SLOT))
        self.name_idx = name_idx
        self.table_at = 2 * regmap.bases["alarm_table"]
        self.ring_at = 2 * regmap.bases["event_ring"]
        self._rows: tuple[tuple[AlarmRow, ...], int, bytes] | None = None
        self._ring: tuple[int, tuple[EventRecord, ...], bytes] | None = None
        # packed records, reused: a new edge changes one event record, not 64
        self._row_bytes: dict[AlarmRow, bytes] = {}
        self._edge_bytes: dict[int, tuple[EventRecord, bytes]] = {}

    def ref(self, device: str, block: str) -> tuple[int, int, int]:
        """(device kind number, slot, name-table record) of the device an alarm names."""
        hit = self.refs.get(device)
        if hit is not None:
            return hit
        return 0, md.NO_SLOT, self.name_idx.get(device, self.name_idx.get(block, md.NO_SLOT))

    def pack(self, buf: bytearray, rows: tuple[AlarmRow, ...], total: int,
             events: tuple[int, tuple[EventRecord, ...]]) -> None:
        """Write both areas of one frame into ``buf`` (the whole map image)."""
        cached = self._rows
        if cached is None or cached[1] != total or cached[0] != rows:
            cached = (rows, total, self._table_bytes(rows, total))
            self._rows = cached
        buf[self.table_at:self.table_at + len(cached[2])] = cached[2]
        seq, edges = events
        ring = self._ring
        if ring is None or ring[0] != seq or ring[1] != edges:
            ring = (seq, edges, self._ring_bytes(seq, edges))
            self._ring = ring
        buf[self.ring_at:self.ring_at + len(ring[2])] = ring[2]

    def _table_bytes(self, rows: tuple[AlarmRow, ...], total: int) -> bytes:
        out = bytearray(2 * (md.AREA_HEAD_WORDS + md.ALARM_TABLE_CAPACITY * md.ALARM_ROW_WORDS))
        rows = rows[:md.ALARM_TABLE_CAPACITY]
        md.ALARM_TABLE_HEAD.pack_into(out, 0, {"listed": len(rows), "total": min(total, 0xFFFF),
                                               "capacity": md.ALARM_TABLE_CAPACITY})
        cache = self._row_bytes
        if len(cache) > _CACHE_MAX:
            cache.clear()
        for i, r in enumerate(rows):
            packed = cache.get(r)
            if packed is None:
                kind, slot, name = self.ref(r.device, r.block)
                secs, ms = _utc_parts(r.raised_utc)
                packed = cache[r] = _ROW.pack(
                    code_number(r.code), max(0, min(4, r.severity)) + 1,
                    _STATE_NUM.get(r.state, 1), int(r.acked), kind, slot, secs, ms, name,
                    _ascii(r.code))
            at = 2 * (md.AREA_HEAD_WORDS + i * md.ALARM_ROW_WORDS)
            out[at:at + len(packed)] = packed
        return bytes(out)

    def _ring_bytes(self, seq: int, edges: tuple[EventRecord, ...]) -> bytes:
        cap = md.EVENT_CAPACITY
        out = bytearray(2 * (md.AREA_HEAD_WORDS + cap * md.EVENT_WORDS))
        # only the edges numbered within the last `cap` numbers: each has its own record,
        # (seq - 1) mod cap, so a record never moves once written (a gap after a crash
        # leaves the lost numbers' records empty or older: the poller sees the gap)
        shown = [e for e in edges if seq - cap < e.seq <= seq]
        md.EVENT_RING_HEAD.pack_into(out, 0, {"seq": seq, "count": len(shown),
                                              "capacity": cap})
        cache = self._edge_bytes
        fresh: dict[int, tuple[EventRecord, bytes]] = {}
        for e in shown:
            hit = cache.get(e.seq)
            if hit is None or (hit[0] is not e and hit[0] != e):
                kind, slot, name = self.ref(e.device, e.block)
                secs, ms = _utc_parts(e.t_utc)
                hit = (e, _EVENT.pack(e.seq, _KIND_NUM.get(e.kind, 0), code_number(e.code),
                                      max(0, min(4, e.severity)) + 1, kind, slot, name, secs,
                                      ms, _ascii(e.code, 8)))
            fresh[e.seq] = hit
            at = 2 * (md.AREA_HEAD_WORDS + ((e.seq - 1) % cap) * md.EVENT_WORDS)
            out[at:at + len(hit[1])] = hit[1]
        self._edge_bytes = fresh  # only what the ring holds now
        return bytes(out)


# -- decoding (busguard.northbound.reader) -----------------------------------------------------
def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


def _code(num: int, raw: bytes) -> str:
    """The code: from its number when the table knows it, else the record's text."""
    return _text(raw) if num == OTHER or not num else code_name(num)


def _device(kind: int, slot: int, name_index: int, names: Sequence[str],
            slots: Mapping[tuple[str, int], str]) -> tuple[str, int]:
    k = md.DEVICE_KINDS[kind] if kind < len(md.DEVICE_KINDS) else ""
    if k and (k, slot) in slots:
        return slots[(k, slot)], slot
    name = names[name_index] if name_index < len(names) else ""
    return name, slot if k else -1


def _utc(secs: int, ms: int) -> float:
    return secs + ms / 1000.0


def decode_alarm_table(words: Sequence[int], names: Sequence[str],
                       slots: Mapping[tuple[str, int], str]) -> list[dict[str, Any]]:
    """The ``alarm_table`` key of the decoded snapshot, most urgent first."""
    head = md.ALARM_TABLE_HEAD.unpack(words[:md.AREA_HEAD_WORDS])
    out = []
    for i in range(min(head["listed"], md.ALARM_TABLE_CAPACITY)):
        o = md.AREA_HEAD_WORDS + i * md.ALARM_ROW_WORDS
        r = md.ALARM_ROW.unpack(words[o:o + md.ALARM_ROW_WORDS])
        if not r["severity"]:
            continue
        device, slot = _device(r["device_kind"], r["slot"], r["name_index"], names, slots)
        state = r["state"]
        out.append({"code": _code(r["code_num"], r["code"]), "code_num": r["code_num"],
                    "severity": md.SEVERITY_WORDS[min(r["severity"], 5)], "device": device,
                    "slot": slot, "state": md.ALARM_STATES[state] if state < 4 else str(state),
                    "acked": bool(r["acked"]),
                    "raised_utc": _utc(r["raised_utc"], r["raised_ms"])})
    return out


def decode_events(words: Sequence[int], names: Sequence[str],
                  slots: Mapping[tuple[str, int], str]) -> dict[str, Any]:
    """The ``events`` key: the newest sequence number and the edges held, oldest first."""
    head = md.EVENT_RING_HEAD.unpack(words[:md.AREA_HEAD_WORDS])
    edges = []
    for i in range(md.EVENT_CAPACITY):
        o = md.AREA_HEAD_WORDS + i * md.EVENT_WORDS
        r = md.EVENT.unpack(words[o:o + md.EVENT_WORDS])
        if not r["seq"] or not r["kind"] or not head["seq"] - md.EVENT_CAPACITY < r["seq"] \
                <= head["seq"]:
            continue
        device, _slot = _device(r["device_kind"], r["slot"], r["name_index"], names, slots)
        edges.append({"seq": r["seq"], "kind": md.EVENT_KINDS[min(r["kind"], 2)],
                      "code": _code(r["code_num"], r["code"]), "code_num": r["code_num"],
                      "severity": md.SEVERITY_WORDS[min(r["severity"], 5)], "device": device,
                      "t_utc": _utc(r["t_utc"], r["t_ms"])})
    edges.sort(key=lambda e: e["seq"])
    return {"seq": head["seq"], "capacity": head["capacity"] or md.EVENT_CAPACITY,
            "edges": edges}


def decode_trip(words: Sequence[int]) -> dict[str, Any]:
    """A breaker's ``trip_cause``, ``trip_cause_name`` and ``trip_utc`` from its block."""
    o = md.BREAKER_TRIP_OFFSET
    t = md.BREAKER_TRIP.unpack(words[o:o + md.BREAKER_TRIP.words])
    return {"trip_cause": t["trip_cause"], "trip_cause_name": code_name(t["trip_cause"]),
            "trip_utc": _utc(t["trip_utc"], t["trip_utc_ms"]) if t["trip_utc"] else None}


def decode_counters(words: Sequence[int], points: Mapping[str, Any]
                    ) -> dict[str, int | None]:
    """A meter's exact energy counters (uint64; None while never read), for the energy
    points it declares (``points``: its decoded point records)."""
    o = md.METER_COUNTERS_OFFSET
    raw = md.METER_COUNTERS.unpack(words[o:o + md.METER_COUNTERS.words])
    return {q: (None if v == md.NOT_AVAILABLE_U64 else v) for q, v in raw.items()
            if q in points}


def pack_trip(buf: bytearray, device_byte: int, cause: str, t_utc: float | None) -> None:
    """Write a breaker's trip cause and time into its device block (at ``device_byte``)."""
    secs, ms = _utc_parts(t_utc if t_utc is not None else math.nan)
    _TRIP.pack_into(buf, device_byte + 2 * md.BREAKER_TRIP_OFFSET,
                    code_number(cause) if cause else 0, ms if cause else 0,
                    secs if cause else 0)


_TRIP = struct.Struct(">" + md.BREAKER_TRIP.format)


def markdown_section() -> str:
    """The register map's section on trip causes, the alarm table and the event ring."""
    def fields(rec: md.Record) -> list[str]:
        return [f"| {f.offset} | {f.words} | {f.type} | `{f.name}` | {f.unit} | "
                f"{f.description} |" for f in rec.fields]

    head = ["| word | words | type | name | unit | meaning |",
            "| ---: | ---: | --- | --- | --- | --- |"]
    lines = [
        "## Trip causes, counters, alarm table and event ring", "",
        f"Breaker blocks: words {md.BREAKER_TRIP_OFFSET}.."
        f"{md.BREAKER_TRIP_OFFSET + md.BREAKER_TRIP.words - 1} say why and when the breaker "
        "tripped:", "", *head, *fields(md.BREAKER_TRIP), "",
        f"Meter blocks: words {md.METER_COUNTERS_OFFSET}.."
        f"{md.METER_COUNTERS_OFFSET + md.METER_COUNTERS.words - 1} hold the energy counters "
        "exact, as uint64 (4 words, high word first), beside their float32 records:", "",
        *head, *fields(md.METER_COUNTERS), "",
        "Counters in the extra area (" + ", ".join(f"`{n}`" for n in sorted(md.COUNTER_POINTS))
        + ") hold a uint32 in the value's two words instead of a float32; quality and age as "
        "in a point record. Header counters (cycle_count, overruns, uptime_s) are uint32.", "",
        f"The `alarm_table` and `event_ring` areas start with a {md.AREA_HEAD_WORDS}-word head; "
        f"record i starts at base + {md.AREA_HEAD_WORDS} + i x stride.", "",
        f"Alarm table head, then {md.ALARM_TABLE_CAPACITY} records of "
        f"{md.ALARM_ROW_WORDS} words, most urgent first:", "", *head,
        *fields(md.ALARM_TABLE_HEAD), "", "Alarm record:", "", *head, *fields(md.ALARM_ROW),
        "", f"Event ring head, then {md.EVENT_CAPACITY} records of {md.EVENT_WORDS} words; "
        f"the edge numbered `seq` is in record (seq - 1) mod {md.EVENT_CAPACITY} "
        "(docs/northbound.md: how a DCIM polls it):", "", *head, *fields(md.EVENT_RING_HEAD),
        "", "Event record:", "", *head, *fields(md.EVENT), "",
        "Code numbers (`trip_cause`, `code_num`; busguard/alarmcodes.py):", "",
        markdown_table(), ""]
    return "\n".join(lines)
