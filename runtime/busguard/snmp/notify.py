"""SNMPv3 notifications: a trap or inform per alarm edge and per trip, and a cold start.

The source is the register map's event ring (issue 15): every alarm raise and clear gets a
sequence number there, so the notifier only needs the ring head's ``seq`` (one uint32 read
from the raw image, every ``poll_s`` on the agent's loop) to know something happened, and
decodes the snapshot only then. Edges are sent in sequence order; an edge the ring dropped
before we saw it (more than 64 between two polls) is counted as missed, never invented.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from typing import Any

from busguard.northbound import mapdef as md

log = logging.getLogger("busguard.snmp")

RING_SEQ_BYTE = 2 * md.LAYOUT["event_ring"][0] + md.EVENT_RING_HEAD.byte("seq")
# notification numbers under busguardMIB.0 (BUSGUARD-MIB)
RAISED, CLEARED, TRIP, COLD_START = 1, 2, 3, 4
EVENTS = 6  # bgObjects.6: the notification-only objects
SNMP_TRAP_OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)


def ring_seq(image: bytes) -> int:
    if len(image) < RING_SEQ_BYTE + 4:
        return 0
    return int(struct.unpack_from(">I", image, RING_SEQ_BYTE)[0])


class Notifier:
    """Turns new event-ring edges and trips into notifications (``send(kind, varbinds)``)."""

    def __init__(self, prefix: tuple[int, ...], raw: Callable[[], bytes],
                 latest: Callable[[], Mapping[str, Any]],
                 send: Callable[[int, list[tuple[tuple[int, ...], tuple[str, Any]]]], None]
                 ) -> None:
        self.prefix = prefix
        self.raw, self.latest, self.send = raw, latest, send
        self.seq: int | None = None
        self.trips: dict[str, int] = {}
        self.cold_sent = False
        self.counts = {"notifications": 0, "edges_missed": 0}

    def _obj(self, sub: int) -> tuple[int, ...]:
        return (*self.prefix, 1, EVENTS, sub, 0)

    def _emit(self, kind: int, vbs: list[tuple[tuple[int, ...], tuple[str, Any]]]) -> None:
        self.counts["notifications"] += 1
        self.send(kind, vbs)

    def poll(self) -> None:
        image = self.raw()
        if not image:
            return
        if not self.cold_sent:
            data = self.latest()
            head = data.get("header", {})
            self.seq = int(data.get("events", {}).get("seq", 0))
            self.trips = {d["name"]: int(d.get("trip_cause") or 0)
                          for d in data.get("devices", ()) if d["kind"] == "breaker"}
            self.cold_sent = True
            self._emit(COLD_START, [
                ((*self.prefix, 1, 1, 4, 0), ("i", 1 if head.get("data_origin") == "RESTORED"
                                               else 0)),
                ((*self.prefix, 1, 1, 1, 0), ("u", int(head.get("fingerprint") or 0)))])
            return
        seq = ring_seq(image)
        if seq == self.seq:
            return
        data = self.latest()
        ring = data.get("events", {})
        last = self.seq or 0
        edges = [e for e in ring.get("edges", ()) if e["seq"] > last]
        if edges and edges[0]["seq"] > last + 1:
            self.counts["edges_missed"] += edges[0]["seq"] - last - 1
        for e in edges:
            self._emit(RAISED if e["kind"] == "raised" else CLEARED, [
                (self._obj(1), ("u", int(e["seq"]))),
                (self._obj(2), ("s", str(e["code"]).encode())),
                (self._obj(3), ("u", int(e["code_num"]))),
                (self._obj(4), ("i", md.SEVERITY_WORDS.index(e["severity"])
                                if e["severity"] in md.SEVERITY_WORDS else 0)),
                (self._obj(5), ("s", str(e["device"]).encode())),
                (self._obj(6), ("u", int(e["t_utc"] or 0)))])
        self.seq = int(ring.get("seq", seq))
        for d in data.get("devices", ()):
            if d["kind"] != "breaker":
                continue
            cause = int(d.get("trip_cause") or 0)
            if cause and self.trips.get(d["name"]) != cause:
                self._emit(TRIP, [
                    (self._obj(2), ("s", str(d.get("trip_cause_name") or cause).encode())),
                    (self._obj(3), ("u", cause)),
                    (self._obj(5), ("s", d["name"].encode())),
                    (self._obj(6), ("u", int(d.get("trip_utc") or 0)))])
            self.trips[d["name"]] = cause
