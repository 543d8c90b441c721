"""The DCIM's Modbus register map, defined once, here; docs and tools are generated from it.

The layout rules are code (versioned by :data:`MAP_VERSION`); the concrete addresses follow
from a site's declared points and block outputs, so a new meter, probe, breaker, block output
or command point appears in the map without touching this module.

Registers are 16-bit holding registers (function 3), also readable as input registers
(function 4), addressed 0-based as in the Modbus PDU (mbpoll: ``-0``, or add 1). 32-bit values
are big-endian with the high word first ("ABCD"; mbpoll: ``-B``).

Areas, in address order, each starting on a multiple of :data:`AREA_ALIGN`:

- header (64 words at 0): map version, runtime state, RESTORED/LIVE flag, cycle count...;
  words 32..55 are a directory of the other areas (base, count, stride);
- one block per meter, probe and breaker at a fixed stride per kind: an 8-word device header
  (status, alarm bits, flags) then one 4-word point record per standard quantity;
- outputs (4-word records), alarm words per logic block (2 words), the command area (4-word
  records, the only writable registers), extra points (4-word records: system points and
  quantities outside the standard lists) and a name table (16 words per record, ASCII).

A point record is: float32 value (2 words, NaN when never read), quality code (0 good,
1 stale, 2 bad, 3 not connected) and age in ms at the scan that built the image (saturates at
65535).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from busguard.northbound.fields import FieldDef, Record

if TYPE_CHECKING:
    from busguard.block import Block, BreakerView

MAP_VERSION = 1
MAGIC = 0x4247  # "BG"
AREA_ALIGN = 1000
HEADER_WORDS = 64
DEVICE_HEADER_WORDS = 8
POINT_WORDS = 4
ALARM_WORDS = 2
COMMAND_WORDS = 4
NAME_WORDS = 16
AGE_MAX_MS = 0xFFFF
MAX_READ = 125

METER_QUANTITIES = (
    "voltage_l1_n_v", "voltage_l2_n_v", "voltage_l3_n_v", "voltage_l1_l2_v", "voltage_l2_l3_v",
    "voltage_l3_l1_v", "current_l1_a", "current_l2_a", "current_l3_a", "current_n_a",
    "power_kw", "apparent_power_kva", "power_factor", "frequency_hz", "thd_v_l1_pct",
    "thd_v_l2_pct", "thd_v_l3_pct", "thd_i_l1_pct", "thd_i_l2_pct", "thd_i_l3_pct",
    "energy_kwh", "temp_c", "residual_current_ma",
    "comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms", "comm_loss_pct", "comm_error_pct",
    "comm_poll_ms",
    # issue 15 (appended so the words above keep their offsets inside a meter block):
    "power_l1_kw", "power_l2_kw", "power_l3_kw", "reactive_power_l1_kvar",
    "reactive_power_l2_kvar", "reactive_power_l3_kvar", "reactive_power_kvar",
    "apparent_power_l1_kva", "apparent_power_l2_kva", "apparent_power_l3_kva",
    "power_factor_l1", "power_factor_l2", "power_factor_l3", "power_factor_quadrant",
    "energy_import_wh", "energy_export_wh", "energy_import_varh", "energy_export_varh",
    "demand_kw", "demand_peak_kw", "neutral_measured",
)
# Meter quantities busguard computes itself (the meter driver), never read from a meter:
# demand from power_kw, neutral_measured from the profile's declaration.
METER_DERIVED = ("demand_kw", "demand_peak_kw", "neutral_measured")
# Meter quantities that are link health, not measurements (the driver's comm_* points).
METER_COMM = tuple(q for q in METER_QUANTITIES if q.startswith("comm_"))
# What a meter (or the simulator's model of one) measures: the rest of the list.
METER_MEASURED = tuple(q for q in METER_QUANTITIES
                       if q not in METER_DERIVED and q not in METER_COMM)
_IEC_P = "IEC sign: + import (delivered to the load), - export"
_IEC_Q = ("IEC 62053-23 sign: + in quadrants 1 and 2, - in 3 and 4 (importing: + inductive, "
          "lagging; - capacitive, leading)")
_IEC_PF = ("IEC sign = sign of the active power (- while exporting); lead/lag: the sign of the "
           "reactive power, or power_factor_quadrant")
_FLOAT32_COUNTER = ("; a float32 record here (exact to 2^24 = 16.7 M); the exact count is "
                    "the uint64 of the meter block's energy counters (words 208..223)")
# What a quantity means where its name alone does not say it (docs/meters.md has the rest).
QUANTITY_NOTES: dict[str, str] = {
    "power_kw": "total active power; " + _IEC_P,
    "apparent_power_kva": "total apparent power (arithmetic sum of the phases), >= 0",
    "power_factor": "total power factor; " + _IEC_PF + " (profile notes: docs/meters.md)",
    "current_n_a": "neutral current; measured or computed: see neutral_measured",
    "energy_kwh": "active energy imported, float32 kWh (kept for v1 readers)",
    **{f"power_l{n}_kw": f"active power L{n}; " + _IEC_P for n in (1, 2, 3)},
    **{f"reactive_power_l{n}_kvar": f"reactive power L{n}; " + _IEC_Q for n in (1, 2, 3)},
    "reactive_power_kvar": "total reactive power; " + _IEC_Q,
    **{f"apparent_power_l{n}_kva": f"apparent power L{n}, >= 0" for n in (1, 2, 3)},
    **{f"power_factor_l{n}": f"power factor L{n}; " + _IEC_PF for n in (1, 2, 3)},
    "power_factor_quadrant": "IEC 62053-23 quadrant of the total: 1 import lagging, 2 export "
                             "leading, 3 export lagging, 4 import leading; 0 unknown",
    "energy_import_wh": "active energy imported (delivered to the load), counter" +
                        _FLOAT32_COUNTER,
    "energy_export_wh": "active energy exported (received from the load), counter" +
                        _FLOAT32_COUNTER,
    "energy_import_varh": "reactive energy imported (quadrants 1+2), counter" +
                          _FLOAT32_COUNTER,
    "energy_export_varh": "reactive energy exported (quadrants 3+4), counter" +
                          _FLOAT32_COUNTER,
    "demand_kw": "computed by busguard, not read from the meter: mean of power_kw over the "
                 "last 15 minutes (sliding window)",
    "demand_peak_kw": "computed by busguard: highest demand_kw since busguard started (a "
                      "restart resets it)",
    "neutral_measured": "1: current_n_a is measured (4th CT); 0: the meter computes it as the "
                        "vector sum of the phase currents (from the profile)",
}
STANDARD: dict[str, tuple[str, ...]] = {
    "meter": METER_QUANTITIES,
    "probe": ("temp_c",),
    "breaker": ("led",),
}
STRIDE = {"meter": 256, "probe": 16, "breaker": 16}  # meter: 8 + 4 x 50 words used
MAPPED_KINDS = tuple(STANDARD)  # the device kinds with a block in the map (outputs: none)

RUNTIME_STATES = {"built": 0, "running": 1, "stopping": 2, "stopped": 3}
ORIGIN_LIVE, ORIGIN_RESTORED = 0, 1
RETAINED_STATUS = {"loaded": 0, "none": 1, "corrupt": 2, "disabled": 3, "error": 4}
QUALITY_WORDS = {0: "good", 1: "stale", 2: "bad", 3: "not-connected"}

# alarm bitfield (DEVICE_HEADER "alarms", ALARM "alarms", HEADER "alarm_summary")
ALARM_BITS = (
    (0, "active", "an alarm condition holds now"),
    (1, "info", "an info alarm is active or latched"),
    (2, "warning", "a warning alarm is active or latched"),
    (3, "minor", "a minor alarm is active or latched"),
    (4, "major", "a major alarm is active or latched"),
    (5, "critical", "a critical alarm is active or latched"),
    (6, "latched", "a latched alarm waits for acknowledgement (its condition is gone)"),
    (7, "unacked", "an alarm is not acknowledged yet"),
    (8, "faulted", "a block faulted (outputs forced to fail-safe)"),
)
# device flags (DEVICE_HEADER "flags")
DEVICE_FLAGS = (
    (0, "shunt_trip", "breakers: the shunt-trip output is commanding a trip"),
    (1, "trip_latched", "breakers: the trip is latched until reset ({breaker}.cmd_reset)"),
    (2, "restored", "some values come from retained state (not read since restart)"),
)


@dataclass(frozen=True)
class Field:
    """One documented register or register group."""

    address: int
    words: int
    type: str  # uint16, uint32, float32, ascii, bits16
    name: str
    description: str
    unit: str = ""
    access: str = "R"
    area: str = "header"

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "words": self.words, "type": self.type,
                "name": self.name, "description": self.description, "unit": self.unit,
                "access": self.access, "area": self.area}


F = FieldDef
# The map's fixed records, each described once: the encoder packs, the reader unpacks and the
# documentation lists these tables (offsets in words from the record's start).
HEADER = Record("header", (
    F(0, "uint16", "magic", "0x4247 ('BG'): this is a busguard map"),
    F(1, "uint16", "map_version", f"layout version of this map ({MAP_VERSION})"),
    F(2, "uint16", "runtime_state", "0 built/starting, 1 running, 2 stopping, 3 stopped"),
    F(3, "uint16", "data_origin", "0 LIVE: every value was read since start; 1 RESTORED: "
      "some values still come from retained state (served stale)"),
    F(4, "uint16", "retained_status", "0 loaded, 1 no state file (cold start), 2 corrupt "
      "file set aside, 3 retained state disabled, 4 last save failed"),
    F(5, "uint16", "points_restored", "points still showing retained (not re-read) values"),
    F(6, "uint32", "cycle_count", "scan cycles since start"),
    F(8, "uint32", "overruns", "scan periods missed since start"),
    F(10, "float32", "scan_lateness_p99_ms", "99th percentile scan start lateness", "ms"),
    F(12, "uint32", "uptime_s", "seconds since the runtime started", "s"),
    F(14, "uint32", "last_good_scan_utc", "UTC time (epoch s) of the last scan with no "
      "faulted block", "s"),
    F(16, "uint16", "active_alarms", "alarms in the table (active or latched)"),
    F(17, "uint16", "unacked_alarms", "alarms not acknowledged"),
    F(18, "uint16", "highest_severity", "0 none, 1 info, 2 warning, 3 minor, 4 major, "
      "5 critical"),
    F(19, "uint16", "faulted_blocks", "blocks faulted (outputs forced to fail-safe)"),
    F(20, "uint16", "scan_period_ms", "configured scan period", "ms"),
    F(21, "uint16", "starts", "runtime starts recorded in the retained state"),
    F(22, "bytes8", "config_hash", "first 8 bytes of the SHA-256 of site.toml"),
    F(26, "uint32", "image_utc", "UTC time (epoch s) of the scan that built this image", "s"),
    F(28, "bits16", "alarm_summary", "alarm bitfield over all alarms (see Alarm bits)"),
))
# one entry per area of AREAS, from header word DIRECTORY_OFFSET
DIRECTORY_ENTRY = Record("directory", (
    F(0, "uint16", "base", "first register of the {area} area"),
    F(1, "uint16", "count", "records in the {area} area"),
    F(2, "uint16", "stride", "words per {area} record"),
))
# the first DEVICE_HEADER_WORDS words of every device block (words 6..7 reserved)
DEVICE_HEADER = Record("device header", (
    F(0, "uint16", "ordinal", "{kind} number {ordinal} (0-based); name in the name table"),
    F(1, "uint16", "status", "worst quality of the device's points (0 good .. 3 not "
      "connected)"),
    F(2, "bits16", "alarms", "alarm bitfield of the alarms naming this device"),
    F(3, "bits16", "flags", "device flags (see Device flags)"),
    F(4, "uint16", "points", "points the device declares in this block"),
    F(5, "uint16", "reset_command", "address of the {reset} command record ({address})"),
))
# a point record (devices' standard quantities, outputs, extra points): "value" is the point
POINT = Record("point", (
    F(0, "float32", "value", "{note}"),
    F(2, "uint16", "quality", "0 good, 1 stale, 2 bad, 3 not connected"),
    F(3, "uint16", "age_ms", "age at the image's scan, saturates at 65535", "ms"),
))
# a command record: the same value twice; FC6 writes the u32's low word alone
COMMAND = Record("command", (
    F(0, "float32", "value", "{doc}; valid {range}"),
    F(2, "uint32", "u32", "the same value as an unsigned integer (FC6 may write the low word "
      "alone); valid {range}"),
))
COMMAND_LOW_WORD = COMMAND["u32"].offset + 1  # the one word function 6 may write
ALARM = Record("alarm", (
    F(0, "bits16", "alarms", "alarm bitfield of the block's alarms"),
    F(1, "uint16", "alarm_count", "alarms of the block in the table"),
))
# Counters: a uint32 in the value's two words instead of a float32 (a float32 is exact only
# to 2^24: scan.cycles at 10 ms for 46.6 h). Quality and age as in a point record.
COUNTER = Record("counter", (
    F(0, "uint32", "value", "{note}; a uint32 counter (exact to 4294967295, then saturates)"),
    F(2, "uint16", "quality", "0 good, 1 stale, 2 bad, 3 not connected"),
    F(3, "uint16", "age_ms", "age at the image's scan, saturates at 65535", "ms"),
))
COUNTER_POINTS = frozenset({"scan.cycles", "scan.overruns"})
# A meter's energy counters exact, after its point records (words 208..223 of its block):
# uint64 Wh / varh (4 words each, high word first), beside the float32 records of the same
# quantities (their quality and age apply). A float32 Wh count steps by 2 Wh past 16.7 MWh.
ENERGY_COUNTERS = ("energy_import_wh", "energy_export_wh", "energy_import_varh",
                   "energy_export_varh")
NOT_AVAILABLE_U64 = 0xFFFFFFFFFFFFFFFF
_ENERGY_WORDS = ("active energy imported", "active energy exported",
                 "reactive energy imported (quadrants 1+2)",
                 "reactive energy exported (quadrants 3+4)")
METER_COUNTERS = Record("meter counters", tuple(
    F(4 * i, "uint64", q, f"{what}, exact counter; all ones ({NOT_AVAILABLE_U64:#x}) while "
      f"never read (quality and age: the float32 record of {q})",
      "Wh" if q.endswith("_wh") else "varh")
    for i, (q, what) in enumerate(zip(ENERGY_COUNTERS, _ENERGY_WORDS, strict=True))))
METER_COUNTERS_OFFSET = DEVICE_HEADER_WORDS + POINT_WORDS * len(METER_QUANTITIES)
# A breaker's trip, after its standard point records (words 12..15 of its block): why and
# when it tripped, from the block that protects it (busguard.block.BreakerStatus).
BREAKER_TRIP = Record("breaker trip", (
    F(0, "uint16", "trip_cause", "code number of the latched or commanded trip (0xCF "
      "Thermal-Critical, BG-TRIP-* see the cause table), 0 none"),
    F(1, "uint16", "trip_utc_ms", "milliseconds part of trip_utc", "ms"),
    F(2, "uint32", "trip_utc", "UTC time (epoch s) of the trip, 0 none (retained with the "
      "latch across restarts)", "s"),
))
BREAKER_TRIP_OFFSET = DEVICE_HEADER_WORDS + POINT_WORDS * len(STANDARD["breaker"])
# The alarm table (issue 15): the alarms of the table, most urgent first (severity, then
# unacknowledged, then condition present, then oldest), at most ALARM_TABLE_CAPACITY.
ALARM_TABLE_CAPACITY = 64
AREA_HEAD_WORDS = 8  # alarm_table and event_ring start with this head; records follow
SEVERITY_WORDS = ("none", "info", "warning", "minor", "major", "critical")  # 0 .. 5
ALARM_STATES = ("empty", "active", "latched", "cleared-unacked")  # 0 .. 3
DEVICE_KINDS = ("", *MAPPED_KINDS)  # 0 not a device, 1 meter, 2 probe, 3 breaker
NO_SLOT = 0xFFFF
ALARM_TABLE_HEAD = Record("alarm table head", (
    F(0, "uint16", "listed", "alarm records filled (the first `listed` records)"),
    F(1, "uint16", "total", "alarms in the table (more than `capacity`: the least urgent are "
      "not listed)"),
    F(2, "uint16", "capacity", f"records in the area ({ALARM_TABLE_CAPACITY})"),
))
ALARM_ROW = Record("alarm row", (
    F(0, "uint16", "code_num", "alarm code number (see the code table), 0xFFFF other"),
    F(1, "uint16", "severity", "0 empty record, 1 info, 2 warning, 3 minor, 4 major, "
      "5 critical"),
    F(2, "uint16", "state", "0 empty, 1 active (the condition holds), 2 latched (holds, and "
      "stays until acknowledged once gone), 3 cleared-unacked (gone, waits for cmd.ack_alarms)"),
    F(3, "uint16", "acked", "1 acknowledged, 0 not"),
    F(4, "uint16", "device_kind", "kind of the device the alarm names: 0 none (a block or "
      "the runtime), 1 meter, 2 probe, 3 breaker"),
    F(5, "uint16", "slot", "the device's slot within its kind (its record number in the "
      "kind's area), 65535 none"),
    F(6, "uint32", "raised_utc", "UTC time (epoch s) the alarm was raised", "s"),
    F(8, "uint16", "raised_ms", "milliseconds part of raised_utc", "ms"),
    F(9, "uint16", "name_index", "record of the device (or else the block) in the name "
      "table, 65535 none"),
    F(10, "ascii24", "code", "the code as text (as the fault log prints it), NUL padded"),
))
ALARM_ROW_WORDS = 24
EVENT_CAPACITY = 64
EVENT_RING_HEAD = Record("event ring head", (
    F(0, "uint32", "seq", "sequence number of the newest edge (0: none yet); +1 per edge, "
      "uint32, never goes back (across restarts too)"),
    F(2, "uint16", "count", "edges held: the records of seq - count + 1 .. seq"),
    F(3, "uint16", "capacity", f"records in the ring ({EVENT_CAPACITY})"),
))
EVENT = Record("event", (
    F(0, "uint32", "seq", "sequence number of this edge (record (seq - 1) mod "
      f"{EVENT_CAPACITY}), 0 empty"),
    F(2, "uint16", "kind", "0 empty, 1 raised, 2 cleared"),
    F(3, "uint16", "code_num", "alarm code number (see the code table), 0xFFFF other"),
    F(4, "uint16", "severity", "1 info, 2 warning, 3 minor, 4 major, 5 critical"),
    F(5, "uint16", "device_kind", "0 none, 1 meter, 2 probe, 3 breaker"),
    F(6, "uint16", "slot", "the device's slot within its kind, 65535 none"),
    F(7, "uint16", "name_index", "record of the device (or block) in the name table, "
      "65535 none"),
    F(8, "uint32", "t_utc", "UTC time (epoch s) of the edge", "s"),
    F(10, "uint16", "t_ms", "milliseconds part of t_utc", "ms"),
    F(11, "ascii8", "code", "the code as text, its first 8 characters, NUL padded (code_num "
      "names it exactly unless it is 0xFFFF; the alarm table has 24 characters)"),
))
EVENT_WORDS = 15  # 8 + 64 x 15 words fit the 1000 words map v2 keeps for the ring
EVENT_KINDS = ("empty", "raised", "cleared")
del F
assert all(DEVICE_HEADER_WORDS + POINT_WORDS * len(q) <= STRIDE[k] for k, q in STANDARD.items())
assert BREAKER_TRIP_OFFSET + BREAKER_TRIP.words <= STRIDE["breaker"]
assert METER_COUNTERS_OFFSET + METER_COUNTERS.words <= STRIDE["meter"]
assert ALARM_ROW.words <= ALARM_ROW_WORDS and EVENT.words <= EVENT_WORDS
assert COUNTER.words == POINT_WORDS
assert POINT.words == POINT_WORDS and COMMAND.words == COMMAND_WORDS
assert ALARM.words == ALARM_WORDS and DEVICE_HEADER.words <= DEVICE_HEADER_WORDS


def flag_mask(table: Sequence[tuple[int, str, str]], name: str) -> int:
    """The bit of ``name`` in a bit table (ALARM_BITS, DEVICE_FLAGS)."""
    return next(1 << bit for bit, n, _d in table if n == name)


DIRECTORY_OFFSET = 32
AREAS = ("meter", "probe", "breaker", "output", "alarm", "command", "extra", "name",
         "alarm_table", "event_ring")
# alarm_table and event_ring: fixed size (a head, then capacity x stride words)
FIXED_AREAS = {"alarm_table": (ALARM_TABLE_CAPACITY, ALARM_ROW_WORDS),
               "event_ring": (EVENT_CAPACITY, EVENT_WORDS)}
assert DIRECTORY_OFFSET + DIRECTORY_ENTRY.words * len(AREAS) <= HEADER_WORDS


@dataclass(frozen=True)
class PointRecord:
    name: str  # image point name
    address: int
    unit: str = ""
    doc: str = ""


@dataclass(frozen=True)
class DeviceBlock:
    kind: str
    name: str
    ordinal: int
    address: int
    points: tuple[PointRecord | None, ...]  # per STANDARD[kind] slot; None if not declared


@dataclass(frozen=True)
class CommandRecord:
    name: str
    address: int
    minval: float
    maxval: float
    doc: str = ""


@dataclass
class RegisterMap:
    """The concrete map of one site: every area's base and every record's address."""

    devices: list[DeviceBlock] = field(default_factory=list)
    outputs: list[PointRecord] = field(default_factory=list)
    output_owner: dict[str, str] = field(default_factory=dict)
    alarm_blocks: list[tuple[str, int]] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    extras: list[PointRecord] = field(default_factory=list)
    names: list[tuple[str, int]] = field(default_factory=list)
    bases: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    strides: dict[str, int] = field(default_factory=dict)
    size: int = HEADER_WORDS
    breakers: dict[str, list[BreakerView]] = field(default_factory=dict)

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, points: Sequence[PointSpecLike], devices: Iterable[tuple[str, str]],
              block_outputs: Sequence[tuple[str, Sequence[str]]],
              breakers: Iterable[BreakerView] = ()) -> RegisterMap:
        """Lay out the map.

        :param points: the image's point specs, in image order (name, unit, doc, command,
            minval, maxval attributes).
        :param devices: (kind, name) of every device, in site order.
        :param block_outputs: (block name, its output names), in scan order.
        :param breakers: what the blocks declare the map shows about breakers
            (:meth:`busguard.block.Block.map_breakers`): trip output, reset command.
        """
        m = cls()
        for view in breakers:
            m.breakers.setdefault(view.breaker, []).append(view)
        by_name = {p.name: p for p in points}
        placed: set[str] = set()
        addr = _align(HEADER_WORDS)
        for kind in MAPPED_KINDS:
            names = [n for k, n in devices if k == kind]
            m.bases[kind], m.counts[kind], m.strides[kind] = addr, len(names), STRIDE[kind]
            for i, dev in enumerate(names):
                base = addr + i * STRIDE[kind]
                recs: list[PointRecord | None] = []
                for j, q in enumerate(STANDARD[kind]):
                    pname = f"{dev}.{q}"
                    spec = by_name.get(pname)
                    if spec is None or spec.command:
                        recs.append(None)
                        continue
                    placed.add(pname)
                    recs.append(PointRecord(pname, base + DEVICE_HEADER_WORDS + j * POINT_WORDS,
                                            spec.unit, spec.doc))
                m.devices.append(DeviceBlock(kind, dev, i, base, tuple(recs)))
            addr = _align(addr + len(names) * STRIDE[kind])
        m.bases["output"], m.strides["output"] = addr, POINT_WORDS
        for block, outs in block_outputs:
            for out in outs:
                m.outputs.append(PointRecord(out, addr + len(m.outputs) * POINT_WORDS))
                m.output_owner[out] = block
        m.counts["output"] = len(m.outputs)
        addr = _align(addr + len(m.outputs) * POINT_WORDS)
        m.bases["alarm"], m.strides["alarm"] = addr, ALARM_WORDS
        for i, (block, _outs) in enumerate(block_outputs):
            m.alarm_blocks.append((block, addr + i * ALARM_WORDS))
        m.counts["alarm"] = len(m.alarm_blocks)
        addr = _align(addr + len(m.alarm_blocks) * ALARM_WORDS)
        m.bases["command"], m.strides["command"] = addr, COMMAND_WORDS
        for p in points:
            if p.command:
                m.commands.append(CommandRecord(p.name, addr + len(m.commands) * COMMAND_WORDS,
                                                p.minval, p.maxval, p.doc))
                placed.add(p.name)
        m.counts["command"] = len(m.commands)
        addr = _align(addr + len(m.commands) * COMMAND_WORDS)
        m.bases["extra"], m.strides["extra"] = addr, POINT_WORDS
        for p in points:
            if p.name not in placed:
                m.extras.append(PointRecord(p.name, addr + len(m.extras) * POINT_WORDS,
                                            p.unit, p.doc))
        m.counts["extra"] = len(m.extras)
        addr = _align(addr + len(m.extras) * POINT_WORDS)
        m.bases["name"], m.strides["name"] = addr, NAME_WORDS
        labels = ([d.name for d in m.devices] + [o.name for o in m.outputs]
                  + [b for b, _ in m.alarm_blocks] + [c.name for c in m.commands]
                  + [e.name for e in m.extras])
        m.names = [(label, addr + i * NAME_WORDS) for i, label in enumerate(labels)]
        m.counts["name"] = len(m.names)
        addr = _align(addr + len(m.names) * NAME_WORDS)
        for area, (count, stride) in FIXED_AREAS.items():
            m.bases[area], m.counts[area], m.strides[area] = addr, count, stride
            addr = _align(addr + AREA_HEAD_WORDS + count * stride)
        m.size = m.bases["event_ring"] + AREA_HEAD_WORDS + EVENT_CAPACITY * EVENT_WORDS
        if m.size > 0x10000:
            raise ValueError(f"the register map needs {m.size} registers; Modbus addresses "
                             f"end at 65535 (too many devices or points for one map)")
        return m

    # -- lookups ---------------------------------------------------------------------------
    def command_at(self, address: int) -> tuple[CommandRecord, int] | None:
        """The command record holding ``address`` and the word offset inside it."""
        base = self.bases["command"]
        i, off = divmod(address - base, COMMAND_WORDS)
        if address < base or i >= len(self.commands):
            return None
        return self.commands[i], off

    def reset_command(self, device: str) -> CommandRecord | None:
        """The command record that resets a breaker's latched trip, as a block declared it."""
        names = {v.reset_command for v in self.breakers.get(device, ()) if v.reset_command}
        for c in self.commands:
            if c.name in names:
                return c
        return None

    def trip_outputs(self, device: str) -> tuple[str, ...]:
        """The outputs that command a trip of breaker ``device`` (blocks' declarations)."""
        return tuple(v.trip_output for v in self.breakers.get(device, ()))

    def record_of(self, point: str) -> PointRecord | None:
        for d in self.devices:
            for r in d.points:
                if r is not None and r.name == point:
                    return r
        for r in (*self.outputs, *self.extras):
            if r.name == point:
                return r
        return None

    # -- documentation ---------------------------------------------------------------------
    def fields(self) -> list[Field]:
        """Every register group, in address order, for docs and `busguard map`."""
        out = [_field(f, 0) for f in HEADER.fields]
        for i, area in enumerate(AREAS):
            base = DIRECTORY_OFFSET + DIRECTORY_ENTRY.words * i
            out += [_field(f, base, f"dir.{area}.{f.name}", area=area)
                    for f in DIRECTORY_ENTRY.fields]
        for d in self.devices:
            reset = self.reset_command(d.name)
            for f in DEVICE_HEADER.fields:
                if f.name == "reset_command" and reset is None:
                    continue
                out.append(_field(f, d.address, f"{d.name}.{f.name}", "R", d.kind,
                                  kind=d.kind, ordinal=d.ordinal,
                                  reset=reset.name if reset else "", address=reset.address
                                  if reset else 0))
            for j, q in enumerate(STANDARD[d.kind]):
                if d.points[j] is not None:  # undeclared slots read NaN, quality 3
                    out.extend(_point_fields(d.address + DEVICE_HEADER_WORDS + j * POINT_WORDS,
                                             f"{d.name}.{q}", unit_of(q), d.kind))
            if d.kind == "breaker":
                out += [_field(f, d.address + BREAKER_TRIP_OFFSET, f"{d.name}.{f.name}", "R",
                               d.kind) for f in BREAKER_TRIP.fields]
            if d.kind == "meter":  # the exact counters of the energy points it declares
                declared = {q for q, r in zip(STANDARD["meter"], d.points, strict=True) if r}
                out += [_field(f, d.address + METER_COUNTERS_OFFSET, f"{d.name}.{f.name}:u64",
                               "R", d.kind) for f in METER_COUNTERS.fields
                        if f.name in declared]
        for r in self.outputs:
            out.extend(_point_fields(r.address, r.name, f"output of block "
                                     f"{self.output_owner[r.name]}; quality 0 computed, "
                                     f"1 not yet computed, 2 forced to fail-safe", "output"))
        for block, a in self.alarm_blocks:
            out += [_field(f, a, f"{block}.{f.name}", "R", "alarm") for f in ALARM.fields]
        for c in self.commands:
            rng = f"[{_num(c.minval)}, {_num(c.maxval)}]"
            out += [_field(f, c.address, c.name + ("" if f.name == "value" else f":{f.name}"),
                           "RW", "command", doc=c.doc or "command", range=rng)
                    for f in COMMAND.fields]
        for r in self.extras:  # names and units only: the doc text of a point is its owner's
            out.extend(_point_fields(r.address, r.name, r.unit, "extra",
                                     COUNTER if r.name in COUNTER_POINTS else POINT))
        for label, a in self.names:
            out.append(Field(a, NAME_WORDS, "ascii", f"name:{label}", f"name of the record "
                             f"({NAME_WORDS * 2} ASCII chars, NUL padded)", "", "R", "name"))
        for area, head, rec in (("alarm_table", ALARM_TABLE_HEAD, "alarm row"),
                                ("event_ring", EVENT_RING_HEAD, "event")):
            base = self.bases[area]
            count, stride = FIXED_AREAS[area]
            out += [_field(f, base, f"{area}.{f.name}", "R", area) for f in head.fields]
            out += [Field(base + AREA_HEAD_WORDS + i * stride, stride, "record",
                          f"{area}[{i}]", f"{rec} record {i} (layout: see the {rec} record)",
                          "", "R", area) for i in range(count)]
        return out


def _field(f: FieldDef, base: int, name: str = "", access: str = "R", where: str = "header",
           **fill: object) -> Field:
    """The documentation row of field ``f`` of the record at ``base`` in area ``where``."""
    return Field(base + f.offset, f.words, f.type, name or f.name,
                 f.description.format(**fill) if fill else f.description, f.unit, access, where)


class PointSpecLike:  # typing helper: the attributes RegisterMap.build reads
    name: str
    unit: str
    doc: str
    command: bool
    minval: float
    maxval: float


def _point_fields(a: int, name: str, note: str, area: str, rec: Record = POINT
                  ) -> list[Field]:
    return [_field(f, a, name if f.name == "value" else f"{name}:{f.name}", "R", area,
                   note=note) for f in rec.fields]


def unit_of(q: str) -> str:
    for suffix, unit in (("_v", "V"), ("_a", "A"), ("_kw", "kW"), ("_kva", "kVA"),
                         ("_kvar", "kvar"), ("_hz", "Hz"), ("_pct", "%"), ("_kwh", "kWh"),
                         ("_wh", "Wh"), ("_varh", "varh"), ("_c", "degC"), ("_ma", "mA"),
                         ("_ms", "ms")):
        if q.endswith(suffix):
            return unit
    return ""


def _align(addr: int) -> int:
    return -(-addr // AREA_ALIGN) * AREA_ALIGN


def _num(x: float) -> str:
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else str(x)


def from_runtime_parts(specs: Sequence[object], devices: Iterable[tuple[str, str]],
                       blocks: Iterable[Block]) -> RegisterMap:
    """Build from a runtime's image specs, site devices and blocks (``name``, ``outputs()``,
    ``map_breakers()``)."""
    blocks = list(blocks)
    outs = [(b.name, tuple(b.outputs())) for b in blocks]
    views = [v for b in blocks for v in b.map_breakers()]
    return RegisterMap.build(specs, devices, outs, views)  # type: ignore[arg-type]


def for_runtime(rt: object) -> RegisterMap:
    """The map of a built :class:`busguard.runtime.Runtime`."""
    devices = [(d.kind, d.name) for d in rt.site.devices]  # type: ignore[attr-defined]
    return from_runtime_parts(rt.image.specs, devices, rt.blocks)  # type: ignore[attr-defined]


def mapping_summary(m: RegisterMap) -> Mapping[str, tuple[int, int, int]]:
    return {a: (m.bases.get(a, 0), m.counts.get(a, 0), m.strides.get(a, 0)) for a in AREAS}
