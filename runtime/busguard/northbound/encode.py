"""One scan becomes one immutable register image.

The scan thread only captures a :class:`Frame` (references to the scan's frozen snapshot plus
small copies: outputs, alarm summary); the encoding to registers happens off the scan thread,
at most once per scan and only when a client reads. Each Modbus request is answered from one
``bytes`` image, so a read never mixes two scans.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field

from busguard.alarms import EventRecord
from busguard.image import Snapshot
from busguard.northbound import mapdef as md
from busguard.northbound.events import AlarmRow, Areas, pack_trip

_REC = struct.Struct(">" + md.POINT.format)  # one point record: value, quality, age
_CMD = struct.Struct(">" + md.COMMAND.format)  # one command record: value, u32
_COUNTER = struct.Struct(">" + md.COUNTER.format)  # a counter record: uint32, quality, age
_U64 = struct.Struct(">Q")  # a meter's exact energy counter
_ALARM = struct.Struct(">" + md.ALARM.format)  # one alarm record: bits, count
_H = struct.Struct(">H")  # the device header words the hot loop packs
_DEV_STATUS = md.DEVICE_HEADER.byte("status")
_DEV_ALARMS = md.DEVICE_HEADER.byte("alarms")
_DEV_FLAGS = md.DEVICE_HEADER.byte("flags")
_FLAG_SHUNT_TRIP = md.flag_mask(md.DEVICE_FLAGS, "shunt_trip")
_FLAG_LATCHED = md.flag_mask(md.DEVICE_FLAGS, "trip_latched")
_FLAG_RESTORED = md.flag_mask(md.DEVICE_FLAGS, "restored")
_FLAG_FAULTED = md.flag_mask(md.ALARM_BITS, "faulted")
_FLOAT32_MAX = 3.4028234663852886e38
STEP_POINTS = 128  # point records per step of Encoder.encode_steps


@dataclass(frozen=True)
class AlarmInfo:
    block: str
    device: str
    severity: int
    active: bool
    acked: bool


@dataclass(frozen=True)
class Frame:
    """What one scan leaves for the northbound view (captured on the scan thread)."""

    cycle: int
    t_utc: float
    snapshot: Snapshot
    outputs: Mapping[str, float]
    alarms: tuple[AlarmInfo, ...]
    faulted: frozenset[str]
    latched: frozenset[str]
    overruns: int
    state: str
    started_utc: float
    last_good_utc: float
    retained_status: str = "disabled"
    starts: int = 0
    #: breaker -> (trip cause code, trip UTC time) as the protecting blocks declare them
    trips: Mapping[str, tuple[str, float | None]] = field(default_factory=dict)
    #: the alarm table's rows, most urgent first (at most md.ALARM_TABLE_CAPACITY)
    alarm_rows: tuple[AlarmRow, ...] = ()
    #: the event ring: (newest sequence number, edges oldest first)
    events: tuple[int, tuple[EventRecord, ...]] = (0, ())


_BIT_ACTIVE = md.flag_mask(md.ALARM_BITS, "active")
_BIT_LATCHED = md.flag_mask(md.ALARM_BITS, "latched")
_BIT_UNACKED = md.flag_mask(md.ALARM_BITS, "unacked")
# Severity 0 (info) .. 4 (critical) -> its bit
_SEVERITY_BITS = tuple(md.flag_mask(md.ALARM_BITS, n)
                       for n in ("info", "warning", "minor", "major", "critical"))


def alarm_bits(alarms: tuple[AlarmInfo, ...]) -> int:
    bits = 0
    for a in alarms:
        bits |= _BIT_ACTIVE if a.active else _BIT_LATCHED
        bits |= _SEVERITY_BITS[max(0, min(4, a.severity))]
        if not a.acked:
            bits |= _BIT_UNACKED
    return bits


def clamp_f32(v: float) -> float:
    """A double as float32 can hold it (overflow to +-inf, not an exception)."""
    if v != v or -_FLOAT32_MAX <= v <= _FLOAT32_MAX:
        return v
    return math.copysign(math.inf, v)


def clamp_u32(v: float) -> int:
    """A double as uint32 can hold it (NaN and negatives 0, saturating at 2**32 - 1)."""
    if v != v or v <= 0:
        return 0
    return int(min(v, 0xFFFFFFFF))


def slot_of(d: md.DeviceBlock) -> int:
    """The device's stable slot within its kind (map.lock): what the alarm table and the
    event ring name a device by."""
    return d.slot


def clamp_u64(v: float) -> int:
    """A counter as uint64: NaN (never read) all ones, "not available"; negatives 0."""
    if v != v:
        return md.NOT_AVAILABLE_U64
    if v <= 0:
        return 0
    return int(min(v, md.NOT_AVAILABLE_U64 - 1))


def mark_vacant(tpl: bytearray, regmap: md.RegisterMap) -> None:
    """Every vacant slot of the fixed layout, as a DCIM must read it: a device block with
    slot 65535 and status 4, point and output records NaN / quality 4 (vacant) / age max,
    command records NaN / 0xFFFFFFFF, alarm records count 65535 (present records overwrite
    these)."""
    for kind in md.MAPPED_KINDS:
        base, cap, stride = md.LAYOUT[kind]
        dev = md.DEVICE_HEADER
        for i in range(cap):
            a = 2 * (base + i * stride)
            dev.pack_into(tpl, a, {"slot": md.VACANT, "status": md.QUALITY_VACANT})
            for j in range(len(md.STANDARD[kind])):
                _REC.pack_into(tpl, a + 2 * (md.DEVICE_HEADER_WORDS + j * md.POINT_WORDS),
                               math.nan, md.QUALITY_VACANT, md.AGE_MAX_MS)
    for area in ("output", "extra"):
        base, cap, stride = md.LAYOUT[area]
        for i in range(cap):
            _REC.pack_into(tpl, 2 * (base + i * stride), math.nan, md.QUALITY_VACANT,
                           md.AGE_MAX_MS)
    base, cap, stride = md.LAYOUT["command"]
    for i in range(cap):
        _CMD.pack_into(tpl, 2 * (base + i * stride), math.nan, 0xFFFFFFFF)
    base, cap, stride = md.LAYOUT["alarm"]
    for i in range(cap):
        _ALARM.pack_into(tpl, 2 * (base + i * stride), 0, 0xFFFF)
    # present records until the first scan: not connected / not yet computed, not vacant
    for d in regmap.devices:
        md.DEVICE_HEADER.pack_into(tpl, 2 * d.address, {"status": 3})
    for r in regmap.outputs:
        _REC.pack_into(tpl, 2 * r.address, math.nan, 1, 0)
    for r in regmap.extras:
        _REC.pack_into(tpl, 2 * r.address, math.nan, 3, md.AGE_MAX_MS)
    for c in regmap.commands:
        _CMD.pack_into(tpl, 2 * c.address, math.nan, 0)
    for _b, a in regmap.alarm_blocks:
        _ALARM.pack_into(tpl, 2 * a, 0, 0)


class Encoder:
    """Encodes frames for one :class:`RegisterMap` over one image layout."""

    def __init__(self, regmap: md.RegisterMap, index: Mapping[str, int], period_ms: float,
                 config_hash: str) -> None:
        self.map = regmap
        self.index = dict(index)
        tpl = bytearray(2 * regmap.size)
        md.HEADER.pack_into(tpl, 0, {"magic": md.MAGIC, "map_version": md.MAP_VERSION,
                                     "fingerprint": regmap.fingerprint,
                                     "scan_period_ms": min(0xFFFF, round(period_ms))})
        mark_vacant(tpl, regmap)
        with contextlib.suppress(ValueError):
            md.HEADER.pack_into(tpl, 0, {"config_hash": bytes.fromhex(config_hash[:16])})
        for i, area in enumerate(md.AREAS):
            md.DIRECTORY_ENTRY.pack_into(
                tpl, 2 * (md.DIRECTORY_OFFSET + md.DIRECTORY_ENTRY.words * i),
                {"base": regmap.bases.get(area, 0), "count": regmap.counts.get(area, 0),
                 "stride": regmap.strides.get(area, 0)})
        for label, addr in regmap.names:
            raw = label.encode("ascii", "replace")[: 2 * md.NAME_WORDS]
            tpl[2 * addr: 2 * addr + len(raw)] = raw
        self.devices = []
        self.exact: list[list[tuple[int, int]]] = []  # per device: meter energy counters
        # Every declared point record of every device, in map order, as image indices, and
        # per device the runs of consecutive records packed by one precompiled Struct each:
        # encoding is then a few list passes over all points plus one pack per run, not a
        # function call and a pack per point (docs/benchmarks.md, "Figures behind the code").
        self.point_idx: list[int] = []
        # per device: the runs (byte offset, from, to, Struct) with from/to in point_idx
        self.dev_runs: list[list[tuple[int, int, int, struct.Struct]]] = []
        self.dev_spans: list[tuple[int, int]] = []  # per device: [from, to) in point_idx
        for d in regmap.devices:
            slots = [(2 * r.address, self.index[r.name]) for r in d.points if r is not None]
            first = len(self.point_idx)
            runs: list[tuple[int, int, int, struct.Struct]] = []
            run_start: int | None = None
            for r in [*d.points, None]:  # the None closes the last run
                if r is not None:
                    if run_start is None:
                        run_start, run_off = len(self.point_idx), 2 * r.address
                    self.point_idx.append(self.index[r.name])
                elif run_start is not None:
                    k = len(self.point_idx) - run_start
                    runs.append((run_off, run_start, len(self.point_idx),
                                 struct.Struct(">" + md.POINT.format * k)))
                    run_start = None
            self.dev_runs.append(runs)
            self.dev_spans.append((first, len(self.point_idx)))
            reset = regmap.reset_command(d.name)
            md.DEVICE_HEADER.pack_into(tpl, 2 * d.address, {
                "slot": d.slot, "points": len(slots),
                **({"reset_command": reset.address} if reset is not None else {})})
            for j, r in enumerate(d.points):  # undeclared: NaN, not connected, age max
                if r is None:
                    a = 2 * (d.address + md.DEVICE_HEADER_WORDS + j * md.POINT_WORDS)
                    _REC.pack_into(tpl, a, math.nan, 3, md.AGE_MAX_MS)
            self.devices.append((d, slots, regmap.trip_outputs(d.name)))
            # a meter's exact energy counters: (byte offset, image index) of those declared
            exact: list[tuple[int, int]] = []
            if d.kind == "meter":
                for f in md.METER_COUNTERS.fields:
                    at = 2 * (d.address + md.METER_COUNTERS_OFFSET) + f.byte
                    rec = d.points[md.METER_QUANTITIES.index(f.name)]
                    if rec is not None:
                        exact.append((at, self.index[rec.name]))
                    _U64.pack_into(tpl, at, md.NOT_AVAILABLE_U64)
            self.exact.append(exact)
        # the devices in groups of about STEP_POINTS records: one step of encode_steps each
        self.steps: list[tuple[int, int]] = []  # [from, to) in self.devices
        start, points = 0, 0
        for k, (a, b) in enumerate(self.dev_spans):
            points += b - a
            if points >= STEP_POINTS:
                self.steps.append((start, k + 1))
                start, points = k + 1, 0
        if start < len(self.dev_spans):
            self.steps.append((start, len(self.dev_spans)))
        self.extras = [(2 * r.address, self.index[r.name]) for r in regmap.extras
                       if r.name not in md.COUNTER_POINTS]
        self.counters = [(2 * r.address, self.index[r.name]) for r in regmap.extras
                         if r.name in md.COUNTER_POINTS]
        self.areas = Areas(regmap, slot_of)
        self.commands = [(2 * c.address, self.index[c.name]) for c in regmap.commands]
        self.outputs = [(2 * r.address, r.name, regmap.output_owner[r.name])
                        for r in regmap.outputs]
        self.alarm_blocks = [(2 * a, b) for b, a in regmap.alarm_blocks]
        self.template = bytes(tpl)
        self.p99_index = self.index.get("scan.lateness_p99_ms")

    def encode(self, frame: Frame | None) -> bytes:
        """The register image of one frame (the template alone before the first)."""
        steps = self.encode_steps(frame)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def encode_steps(self, frame: Frame | None) -> Generator[None, None, bytes]:
        """:meth:`encode` in steps of about ``STEP_POINTS`` point records: a generator that
        yields between steps and returns the image. The I/O process's server runs it on its
        own event loop, one step per turn, so a new frame never holds a DCIM request for a
        whole encoding and no other thread takes the GIL from the
        server to encode."""
        if frame is None:
            return self.template
        buf = bytearray(self.template)
        snap = frame.snapshot
        vals, qual, tmono, tutc, now = snap.values, snap.quality, snap.t_mono, snap.t_utc, \
            snap.now
        t_utc = frame.t_utc
        ninf = -math.inf
        rec = _REC.pack_into
        max_age = md.AGE_MAX_MS
        restored_total = 0

        def put(off: int, i: int) -> tuple[int, bool]:
            v = vals[i]
            q = qual[i]
            t = tmono[i]
            restored = False
            if t == ninf:
                age = (t_utc - tutc[i]) * 1000.0 if tutc[i] > 0 else max_age
                restored = v == v
            else:
                age = (now - t) * 1000.0
            age = max_age if not age < max_age - 0.5 else (int(age + 0.5) if age > 0 else 0)
            rec(buf, off, clamp_f32(v), q, age)
            return q, restored

        by_device: dict[str, list[AlarmInfo]] = {}
        by_block: dict[str, list[AlarmInfo]] = {}
        unacked = 0
        highest = 0
        for a in frame.alarms:
            by_device.setdefault(a.device, []).append(a)
            by_block.setdefault(a.block, []).append(a)
            unacked += not a.acked
            highest = max(highest, a.severity + 1)
        fmax = _FLOAT32_MAX
        inf, copysign = math.inf, math.copysign
        for d0, d1 in self.steps:
            lo, hi = self.dev_spans[d0][0], self.dev_spans[d1 - 1][1]
            idx = self.point_idx[lo:hi]
            pv = [vals[i] for i in idx]
            pq = [qual[i] for i in idx]
            pt = [tmono[i] for i in idx]
            ages = [(now - t) * 1000.0 if t != ninf else
                    ((t_utc - tutc[i]) * 1000.0 if tutc[i] > 0 else max_age)
                    for t, i in zip(pt, idx, strict=True)]
            ages = [max_age if not a < max_age - 0.5 else (int(a + 0.5) if a > 0 else 0)
                    for a in ages]
            restored_pts = [t == ninf and v == v for t, v in zip(pt, pv, strict=True)]
            flat = [x for r in zip([v if v != v or -fmax <= v <= fmax else copysign(inf, v)
                                    for v in pv], pq, ages, strict=True) for x in r]
            for k in range(d0, d1):
                for off, a, b, st in self.dev_runs[k]:
                    st.pack_into(buf, off, *flat[3 * (a - lo):3 * (b - lo)])
                d, slots, trips = self.devices[k]
                a, b = self.dev_spans[k]
                worst = max(pq[a - lo:b - lo], default=0)
                restored_here = sum(restored_pts[a - lo:b - lo])
                restored_total += restored_here
                flags = 0
                for out in trips:  # the outputs the blocks declared for this breaker
                    if frame.outputs.get(out, 0.0) >= 0.5:
                        flags |= _FLAG_SHUNT_TRIP
                if d.name in frame.latched:
                    flags |= _FLAG_LATCHED
                if restored_here:
                    flags |= _FLAG_RESTORED
                base = 2 * d.address
                _H.pack_into(buf, base + _DEV_STATUS, worst if slots else 3)
                _H.pack_into(buf, base + _DEV_ALARMS,
                             alarm_bits(tuple(by_device.get(d.name, ()))))
                _H.pack_into(buf, base + _DEV_FLAGS, flags)
                if d.kind == "breaker":
                    pack_trip(buf, base, *frame.trips.get(d.name, ("", None)))
                for at, i in self.exact[k]:
                    _U64.pack_into(buf, at, clamp_u64(vals[i]))
            yield
        for off, i in self.extras:
            _q, restored = put(off, i)
            restored_total += restored
        for off, i in self.counters:
            q, restored = put(off, i)  # quality and age as any point; the value a uint32
            _COUNTER.pack_into(buf, off, clamp_u32(vals[i]), q, _H.unpack_from(buf, off + 6)[0])
            restored_total += restored
        for off, i in self.commands:
            v = vals[i]
            _CMD.pack_into(buf, off, clamp_f32(v), clamp_u32(v))
        for off, name, owner in self.outputs:
            v = frame.outputs.get(name, math.nan)
            q = 2 if owner in frame.faulted else (0 if frame.cycle > 0 else 1)
            rec(buf, off, clamp_f32(v), q, 0)
        for off, block in self.alarm_blocks:
            mine = tuple(by_block.get(block, ()))
            bits = alarm_bits(mine) | (_FLAG_FAULTED if block in frame.faulted else 0)
            _ALARM.pack_into(buf, off, bits, min(len(mine), 0xFFFF))
        self.areas.pack(buf, frame.alarm_rows, len(frame.alarms), frame.events)
        p99 = vals[self.p99_index] if self.p99_index is not None else math.nan
        md.HEADER.pack_into(buf, 0, {
            "runtime_state": md.RUNTIME_STATES.get(frame.state, 0),
            "data_origin": md.ORIGIN_RESTORED if restored_total else md.ORIGIN_LIVE,
            "retained_status": md.RETAINED_STATUS.get(frame.retained_status, 4),
            "points_restored": min(restored_total, 0xFFFF),
            "cycle_count": frame.cycle & 0xFFFFFFFF,
            "overruns": frame.overruns & 0xFFFFFFFF,
            "scan_lateness_p99_ms": clamp_f32(p99),
            "uptime_s": clamp_u32(t_utc - frame.started_utc),
            "last_good_scan_utc": clamp_u32(frame.last_good_utc),
            "active_alarms": min(len(frame.alarms), 0xFFFF),
            "unacked_alarms": min(unacked, 0xFFFF),
            "highest_severity": highest,
            "faulted_blocks": len(frame.faulted),
            "starts": min(frame.starts, 0xFFFF),
            "image_utc": clamp_u32(t_utc),
            "alarm_summary": alarm_bits(frame.alarms) | (_FLAG_FAULTED if frame.faulted
                                                         else 0)})
        return bytes(buf)
