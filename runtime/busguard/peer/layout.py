"""Finding another busguard's records in its register map: the header directory, the device
slots and the name table, read once per fingerprint.

Pure decoding over a read function (``read(address, count) -> words``), so the peer driver
polls through the project's Modbus client and the tests feed it garbage without a socket.
The record layouts come from :mod:`busguard.northbound.mapdef` and the header from the same
decoder ``busguard status`` uses (:func:`busguard.northbound.reader.read_header`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from busguard.errors import BusguardError
from busguard.northbound import mapdef as md
from busguard.northbound import reader as rd

ReadFn = Callable[[int, int], list[int]]


class NotBusguard(BusguardError):
    """The peer answers but what it serves is not a busguard map v2 (wrong magic, version or
    a directory that does not fit the layout)."""


@dataclass(frozen=True)
class DeviceAt:
    kind: str
    name: str
    slot: int
    address: int
    words: int  # words of the block to read: device header, point records, trip/counters


@dataclass(frozen=True)
class PeerLayout:
    """Where the records a peer section asks for live in one peer's map."""

    fingerprint: int
    devices: dict[str, DeviceAt] = field(default_factory=dict)  # device name -> where
    records: dict[str, int] = field(default_factory=dict)  # output/extra name -> address
    counters: frozenset[str] = frozenset()  # records that are uint32 counters


def block_words(kind: str) -> int:
    """Words of a device block the peer reads: header, standard points, and the breaker's
    trip cause (meters: the point records; the exact uint64 counters are left out)."""
    if kind == "breaker":
        return md.BREAKER_TRIP_OFFSET + md.BREAKER_TRIP.words
    return md.DEVICE_HEADER_WORDS + md.POINT_WORDS * len(md.STANDARD[kind])


def header(read: ReadFn) -> dict:
    """The decoded header; :class:`NotBusguard` when it is not a map v2 header."""
    try:
        head = rd.read_header(read)
    except BusguardError as exc:
        raise NotBusguard(str(exc)) from exc
    if head["map_version"] != md.MAP_VERSION:
        raise NotBusguard(f"map version {head['map_version']}, this busguard reads version "
                          f"{md.MAP_VERSION}")
    for area, (base, cap, stride) in md.LAYOUT.items():
        d = head["directory"][area]
        if d["base"] != base or d["stride"] != stride or d["count"] > cap:
            raise NotBusguard(f"directory entry {area!r} (base {d['base']}, count "
                              f"{d['count']}, stride {d['stride']}) does not fit map v2's "
                              f"layout (base {base}, up to {cap} x {stride} words)")
    return head


def plan(spans: Iterable[tuple[int, int]], max_read: int = md.MAX_READ, max_gap: int = 8
         ) -> list[tuple[int, int]]:
    """Merge (address, words) spans into reads of at most ``max_read`` words: adjacent small
    blocks (breakers, probes) share a request; a block larger than one read (a meter's 208
    words) takes two. Gaps of up to ``max_gap`` unused words are read through."""
    out: list[tuple[int, int]] = []
    for addr, n in sorted(spans):
        end = addr + n
        while addr < end:
            if out:
                a0, n0 = out[-1]
                room = a0 + max_read - addr
                if addr >= a0 and room > 0 and addr - (a0 + n0) <= max_gap:
                    take = min(end - addr, room)
                    out[-1] = (a0, max(a0 + n0, addr + take) - a0)
                    addr += take
                    continue
            take = min(end - addr, max_read)
            out.append((addr, take))
            addr += take
    return out


def read_spans(read: ReadFn, reads: Sequence[tuple[int, int]]) -> dict[int, int]:
    """address -> word for every planned read."""
    words: dict[int, int] = {}
    for a, n in reads:
        regs = read(a, n)
        if len(regs) < n:
            raise NotBusguard(f"short answer: {len(regs)} of {n} registers at {a}")
        words.update(zip(range(a, a + n), regs, strict=False))
    return words


def _names(read: ReadFn, d: dict, count: int) -> list[str]:
    nd = d["name"]
    count = min(count, nd["count"])
    raw = rd.read_chunked(read, nd["base"], count * nd["stride"])
    out = []
    for i in range(count):
        ws = raw[i * nd["stride"]:(i + 1) * nd["stride"]]
        out.append(b"".join(struct.pack(">H", w & 0xFFFF) for w in ws).rstrip(b"\0")
                   .decode("ascii", "replace"))
    return out


def _present(area: str, ws: Sequence[int]) -> bool:
    if area in ("output", "extra"):
        return md.POINT.unpack(ws)["quality"] != md.QUALITY_VACANT
    if area == "alarm":
        return md.ALARM.unpack(ws)["alarm_count"] != md.VACANT
    rec = md.COMMAND.unpack(ws)  # command
    return not (math.isnan(rec["value"]) and rec["u32"] == 0xFFFFFFFF)


def discover(read: ReadFn, head: dict, want_records: bool) -> PeerLayout:
    """Every present device (kind, name, slot) and, when ``want_records``, every output and
    extra record's address, by name. Costs one read per meter slot, a few per other area
    and the name table: done when the peer is first seen and when its fingerprint changes."""
    d = head["directory"]
    found: list[tuple[str, int, int]] = []  # kind, slot, address
    for kind in md.MAPPED_KINDS:
        a = d[kind]
        if kind == "meter":
            spans = [(a["base"] + i * a["stride"], 1) for i in range(a["count"])]
            words = read_spans(read, spans)
        else:
            words = read_spans(read, plan([(a["base"], a["count"] * a["stride"])]))
        for i in range(a["count"]):
            addr = a["base"] + i * a["stride"]
            if words[addr] != md.VACANT:
                found.append((kind, i, addr))
    present: list[tuple[str, int]] = []  # list areas: (area, address) in name-table order
    if want_records:
        for area in ("output", "alarm", "command", "extra"):
            a = d[area]
            if not a["count"]:
                continue
            n = a["count"] * a["stride"]
            ws = rd.read_chunked(read, a["base"], n)
            for i in range(a["count"]):
                rec = ws[i * a["stride"]:(i + 1) * a["stride"]]
                if _present(area, rec):
                    present.append((area, a["base"] + i * a["stride"]))
    names = _names(read, d, len(found) + len(present))
    if len(names) < len(found) + len(present):
        raise NotBusguard(f"the name table holds {len(names)} names for "
                          f"{len(found) + len(present)} present records")
    devices = {names[k]: DeviceAt(kind, names[k], slot, addr, block_words(kind))
               for k, (kind, slot, addr) in enumerate(found)}
    records = {}
    for j, (area, addr) in enumerate(present):
        if area in ("output", "extra"):
            records[names[len(found) + j]] = addr
    return PeerLayout(head["fingerprint"], devices, records,
                      frozenset(n for n in records if n in md.COUNTER_POINTS))
