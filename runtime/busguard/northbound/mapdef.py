"""The DCIM's Modbus register map, defined once, here; docs and tools are generated from it.

Map version 2: every area starts at a fixed address (:data:`LAYOUT`), sized for the largest
site the map holds, and every record keeps its index within its area for good (its *slot*,
:mod:`busguard.northbound.slots`, recorded in ``{state_dir}/map.lock``): adding, removing or
reordering devices, blocks or points never moves another point's address. The header carries
a fingerprint (CRC32 of the address table) beside the map version.

Registers are 16-bit holding registers (function 3), also readable as input registers
(function 4), addressed 0-based as in the Modbus PDU (mbpoll: ``-0``, or add 1). 32-bit values
are big-endian with the high word first ("ABCD"; mbpoll: ``-B``).

Areas, each at its fixed base (:data:`LAYOUT`):

- header (64 words at 0): map version, fingerprint, runtime state, RESTORED/LIVE flag, cycle
  count...; words 32..61 are a directory of the other areas (base, count, stride);
- one block per meter, probe and breaker slot at a fixed stride per kind: an 8-word device
  header (slot, status, alarm bits, flags) then one 4-word point record per standard quantity;
  a vacant slot reads slot 65535 and NaN points of quality 3;
- outputs (4-word records), alarm words per logic block (2 words), the command area (4-word
  records, the only writable registers), extra points (4-word records: system points and
  quantities outside the standard lists), two areas reserved for the alarm table and the
  event ring, and a name table (16 words per present record, ASCII, in area and slot order).

A point record is: float32 value (2 words, NaN when never read), quality code (0 good,
1 stale, 2 bad, 3 not connected) and age in ms at the scan that built the image (saturates at
65535).

Each device is also served at its own Modbus unit id with its block from address 0
(:data:`UNIT_RANGES`); unit ids 1, 0 and 255 serve this whole-site map.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from busguard.northbound import slots as sl
from busguard.northbound.fields import FieldDef, Record

if TYPE_CHECKING:
    from busguard.block import Block, BreakerView

MAP_VERSION = 2
MAGIC = 0x4247  # "BG"
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

# The fixed layout of map v2: area -> (base, capacity in records, words per record). Bases
# are constants, never computed from a site's counts, so no point moves when the site grows.
# Sized for the largest site one map holds: 128 meters (a 256-word block each: 8 + 4 x 50
# words used, room for 12 more quantities), 256 probes, 256 breakers, 512 block outputs,
# 256 blocks (alarm records), 512 command points, 512 extra points and 846 names.
# The alarm table and the event ring (issue 15): fixed-size areas, a head then records.
AREA_HEAD_WORDS = 8  # alarm_table and event_ring start with this head; records follow
ALARM_TABLE_CAPACITY = 64  # the most urgent alarms listed
ALARM_ROW_WORDS = 24
EVENT_CAPACITY = 64  # alarm edges kept
EVENT_WORDS = 15  # 8 + 64 x 15 words fit the 1000 words the layout keeps for the ring
LAYOUT: dict[str, tuple[int, int, int]] = {
    "meter": (1000, 128, STRIDE["meter"]),  # 1000..33767
    "probe": (34000, 256, STRIDE["probe"]),  # 34000..38095
    "breaker": (38100, 256, STRIDE["breaker"]),  # 38100..42195
    "output": (42200, 512, 4),  # 42200..44247
    "alarm": (44300, 256, 2),  # 44300..44811
    "command": (44900, 512, 4),  # 44900..46947
    "extra": (47000, 512, 4),  # 47000..49047
    # issue 15's events part: the alarm table (most urgent 64 alarms) and the ring of the
    # last 64 alarm edges, each an AREA_HEAD_WORDS head then capacity x stride words
    "alarm_table": (49100, ALARM_TABLE_CAPACITY, ALARM_ROW_WORDS),  # + 8-word head: ..50643
    "event_ring": (51000, EVENT_CAPACITY, EVENT_WORDS),  # + 8-word head: 51000..51967
    "name": (52000, (0x10000 - 52000) // 16, 16),  # 52000..65535: names of present records
}
CAPACITY = {a: cap for a, (_b, cap, _s) in LAYOUT.items()}
# Unit ids: 1 (and 0, 255: what clients send when the unit id "is not used") serve the whole
# site map. Each device is also served at its own unit id, its block from address 0: an
# explicit `unit_id` in site.toml, else kind's first unit id + slot while the slot is below
# the range's size (devices past it have a unit-id view only with an explicit unit_id).
SITE_UNITS = (1, 0, 255)
UNIT_RANGES = {"meter": (2, 128), "breaker": (130, 62), "probe": (192, 62)}
DEVICE_UNITS = (2, 254)  # explicit unit ids: this range
VACANT = 0xFFFF  # device header word 0 of a vacant slot

RUNTIME_STATES = {"built": 0, "running": 1, "stopping": 2, "stopped": 3}
ORIGIN_LIVE, ORIGIN_RESTORED = 0, 1
RETAINED_STATUS = {"loaded": 0, "none": 1, "corrupt": 2, "disabled": 3, "error": 4}
QUALITY_WORDS = {0: "good", 1: "stale", 2: "bad", 3: "not-connected", 4: "vacant"}
QUALITY_VACANT = 4  # a record of a vacant slot of the fixed layout (no point there)

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
    F(1, "uint16", "map_version", f"layout version of this map ({MAP_VERSION}); the "
      "fingerprint (words 30-31) says whether the layout is the one a DCIM was set up for"),
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
    F(30, "uint32", "fingerprint", "layout fingerprint: CRC32 of this map's address table "
      "(every point's address, size, type and name); it changes when any point is added, "
      "removed or moved"),
))
# one entry per area of AREAS, from header word DIRECTORY_OFFSET
DIRECTORY_ENTRY = Record("directory", (
    F(0, "uint16", "base", "first register of the {area} area"),
    F(1, "uint16", "count", "records in the {area} area"),
    F(2, "uint16", "stride", "words per {area} record"),
))
# the first DEVICE_HEADER_WORDS words of every device block (words 6..7 reserved)
DEVICE_HEADER = Record("device header", (
    F(0, "uint16", "slot", "{kind} slot {ordinal}: the device's stable index in the {kind} "
      "area (map.lock); 65535 in a vacant slot"),
    F(1, "uint16", "status", "worst quality of the device's points (0 good .. 3 not "
      "connected)"),
    F(2, "bits16", "alarms", "alarm bitfield of the alarms naming this device"),
    F(3, "bits16", "flags", "device flags (see Device flags)"),
    F(4, "uint16", "points", "points the device declares in this block"),
    F(5, "uint16", "reset_command", "address of the {reset} command record ({address})"),
))
QUALITY_DOC = "0 good, 1 stale, 2 bad, 3 not connected"


def _quality_age(quality_doc: str = QUALITY_DOC) -> tuple[FieldDef, FieldDef]:
    """The two words after a value (words 2 and 3 of a point or counter record): its quality
    code and its age at the image's scan."""
    return (FieldDef(2, "uint16", "quality", quality_doc),
            FieldDef(3, "uint16", "age_ms", "age at the image's scan, saturates at 65535",
                     "ms"))


# a point record (devices' standard quantities, outputs, extra points): "value" is the point
POINT = Record("point", (F(0, "float32", "value", "{note}"),
                         *_quality_age(f"{QUALITY_DOC}, 4 vacant slot")))
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
    *_quality_age()))
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
      "stays until acknowledged once gone), 3 cleared-unacked (gone, waits for "
      "cmd.ack_alarms or cmd.ack_code)"),
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
AREAS = tuple(LAYOUT)  # directory order: address order
# alarm_table and event_ring: fixed size, a head then capacity x stride words (not slots)
FIXED_AREAS = ("alarm_table", "event_ring")
assert DIRECTORY_OFFSET + DIRECTORY_ENTRY.words * len(AREAS) <= HEADER_WORDS
assert all(LAYOUT[a][0] + LAYOUT[a][1] * LAYOUT[a][2]
           + (AREA_HEAD_WORDS if a in FIXED_AREAS else 0) <= LAYOUT[b][0]
           for a, b in itertools.pairwise(AREAS))
assert LAYOUT["alarm_table"][1:] == (ALARM_TABLE_CAPACITY, ALARM_ROW_WORDS)
assert LAYOUT["event_ring"][1:] == (EVENT_CAPACITY, EVENT_WORDS)


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
    slot: int  # stable index in the kind's area (map.lock): address = base + slot x stride
    address: int
    points: tuple[PointRecord | None, ...]  # per STANDARD[kind] slot; None if not declared
    unit_id: int | None = None  # the unit id serving this block from address 0, if any

    @property
    def ordinal(self) -> int:  # map v1's name of the device header's word 0
        return self.slot


@dataclass(frozen=True)
class CommandRecord:
    name: str
    address: int
    minval: float
    maxval: float
    doc: str = ""


@dataclass(frozen=True)
class MapInputs:
    """What fixes the slots besides the site's names: the lock's tables, explicit ``slot``
    and ``unit_id`` per device. Picklable: the I/O process builds the same map from it."""

    lock: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    slots: Mapping[str, int] = field(default_factory=dict)  # device name -> explicit slot
    unit_ids: Mapping[str, int] = field(default_factory=dict)  # device name -> unit id
    # what the blocks declare about breakers (for the I/O process, which builds no blocks)
    breakers: tuple[BreakerView, ...] = ()


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
    assignment: sl.Assignment | None = None
    units: dict[int, DeviceBlock] = field(default_factory=dict)  # device unit id -> block
    fingerprint: int = 0
    _commands_at: dict[int, CommandRecord] = field(default_factory=dict, repr=False)

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, points: Sequence[PointSpecLike], devices: Iterable[tuple[str, str]],
              block_outputs: Sequence[tuple[str, Sequence[str]]],
              breakers: Iterable[BreakerView] = (), inputs: MapInputs | None = None
              ) -> RegisterMap:
        """Lay out the map.

        :param points: the image's point specs, in image order (name, unit, doc, command,
            minval, maxval attributes).
        :param devices: (kind, name) of every device, in site order.
        :param block_outputs: (block name, its output names), in scan order.
        :param breakers: what the blocks declare the map shows about breakers
            (:meth:`busguard.block.Block.map_breakers`): trip output, reset command.
        :param inputs: the lock and the explicit slots and unit ids (none: slots in site
            order, as a site without a lock gets them).
        """
        m = cls()
        inputs = inputs or MapInputs()
        for view in (*breakers, *inputs.breakers):
            m.breakers.setdefault(view.breaker, []).append(view)
        by_name = {p.name: p for p in points}
        devices = [(k, n) for k, n in devices if k in STANDARD]
        placed = {f"{n}.{q}" for k, n in devices for q in STANDARD[k]
                  if f"{n}.{q}" in by_name and not by_name[f"{n}.{q}"].command}
        wanted = sl.Wanted()
        for kind, name in devices:
            wanted.add(kind, name, inputs.slots.get(name))
        for block, outs in block_outputs:
            wanted.add("alarm", block)
            for out in outs:
                wanted.add("output", out)
                m.output_owner[out] = block
        for p in points:
            if p.command:
                wanted.add("command", p.name)
            elif p.name not in placed and getattr(p, "mapped", True):
                wanted.add("extra", p.name)
        a = m.assignment = sl.assign(wanted, inputs.lock, CAPACITY)
        for area in AREAS:
            base, cap, stride = LAYOUT[area]
            m.bases[area], m.strides[area] = base, stride
            used = a.slots.get(area, {}).values()
            m.counts[area] = cap if area in FIXED_AREAS else max(used, default=-1) + 1
        for kind in MAPPED_KINDS:
            base, stride = m.bases[kind], m.strides[kind]
            for name, slot in sorted(a.slots[kind].items(), key=lambda kv: kv[1]):
                addr = base + slot * stride
                recs: list[PointRecord | None] = []
                for j, q in enumerate(STANDARD[kind]):
                    spec = by_name.get(f"{name}.{q}")
                    recs.append(None if spec is None or spec.command else PointRecord(
                        spec.name, addr + DEVICE_HEADER_WORDS + j * POINT_WORDS, spec.unit,
                        spec.doc))
                m.devices.append(DeviceBlock(kind, name, slot, addr, tuple(recs)))
        m._assign_units(inputs.unit_ids)

        def at(area: str, name: str) -> int:
            return m.bases[area] + a.of(area, name) * m.strides[area]

        m.outputs = sorted((PointRecord(o, at("output", o)) for o in a.slots["output"]),
                           key=lambda r: r.address)
        m.alarm_blocks = sorted(((b, at("alarm", b)) for b in a.slots["alarm"]),
                                key=lambda x: x[1])
        m.commands = sorted((CommandRecord(n, at("command", n), by_name[n].minval,
                                           by_name[n].maxval, by_name[n].doc)
                             for n in a.slots["command"]), key=lambda c: c.address)
        m._commands_at = {c.address: c for c in m.commands}
        m.extras = sorted((PointRecord(n, at("extra", n), by_name[n].unit, by_name[n].doc)
                           for n in a.slots["extra"]), key=lambda r: r.address)
        labels = ([d.name for d in m.devices] + [o.name for o in m.outputs]
                  + [b for b, _ in m.alarm_blocks] + [c.name for c in m.commands]
                  + [e.name for e in m.extras])
        base = m.bases["name"]
        if len(labels) > CAPACITY["name"]:
            raise sl.MapLockError(f"the register map's name table holds {CAPACITY['name']} "
                                  f"names; this site needs {len(labels)} (too many devices, "
                                  f"blocks or points for one map)")
        m.names = [(label, base + i * NAME_WORDS) for i, label in enumerate(labels)]
        m.counts["name"] = len(m.names)
        m.size = base + len(m.names) * NAME_WORDS
        m.fingerprint = zlib.crc32("\n".join(m.address_table()).encode("utf-8"))
        return m

    def address_table(self) -> list[str]:
        """One line per record: map version, area, address, name (and a breaker's reset
        command word): what the fingerprint hashes. Every register of :meth:`fields`
        follows from these (the record layouts are fixed per map version), so the CRC
        changes exactly when a point is added, removed or moved; computed without building
        the documentation rows (start-up time)."""
        out = [f"busguard map v{MAP_VERSION}"]
        for d in self.devices:
            reset = self.reset_command(d.name)
            out.append(f"{d.kind} {d.address} {d.name}" + (f" reset {reset.address}"
                                                            if reset else ""))
            out += [f"point {r.address} {r.name}" for r in d.points if r is not None]
        out += [f"output {r.address} {r.name}" for r in self.outputs]
        out += [f"alarm {a} {b}" for b, a in self.alarm_blocks]
        out += [f"command {c.address} {c.name}" for c in self.commands]
        out += [f"extra {r.address} {r.name}" for r in self.extras]
        return out

    def _assign_units(self, explicit: Mapping[str, int]) -> None:
        """Each device's unit id: explicit, else its kind's range + slot (if free)."""
        taken = {u for n, u in explicit.items() if any(d.name == n for d in self.devices)}
        out: list[DeviceBlock] = []
        for d in self.devices:
            unit = explicit.get(d.name)
            if unit is None:
                first, size = UNIT_RANGES[d.kind]
                unit = first + d.slot if d.slot < size and first + d.slot not in taken \
                    else None
            out.append(DeviceBlock(d.kind, d.name, d.slot, d.address, d.points, unit))
        self.devices = out
        self.units = {d.unit_id: d for d in out if d.unit_id is not None}

    def device_view(self, unit: int) -> tuple[int, int] | None:
        """(first register, registers) of the block unit id ``unit`` serves; None when no
        device has it (the whole map for :data:`SITE_UNITS`: the caller's case)."""
        d = self.units.get(unit)
        return None if d is None else (d.address, self.strides[d.kind])

    # -- lookups ---------------------------------------------------------------------------
    def command_at(self, address: int) -> tuple[CommandRecord, int] | None:
        """The command record holding ``address`` and the word offset inside it."""
        base = self.bases["command"]
        if address < base:
            return None
        off = (address - base) % COMMAND_WORDS
        rec = self._commands_at.get(address - off)
        return None if rec is None else (rec, off)

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
                                             f"{d.name}.{q}", unit_of(q), d.kind,
                                             QUANTITY_NOTES.get(q, "")))
            if d.kind == "breaker":
                out += [_field(f, d.address + BREAKER_TRIP_OFFSET, f"{d.name}.{f.name}", "R",
                               d.kind) for f in BREAKER_TRIP.fields]
            if d.kind == "meter":  # the exact counters of the energy points it declares
                declared = {q for q, r in zip(STANDARD["meter"], d.points, strict=True) if r}
                out += [_field(f, d.address + METER_COUNTERS_OFFSET, f"{d.name}.{f.name}:u64",
                               "R", d.kind) for f in METER_COUNTERS.fields
                        if f.name in declared]
        for r in self.outputs:
            out.extend(_point_fields(r.address, r.name, "", "output", f"output of block "
                                     f"{self.output_owner[r.name]}; quality 0 computed, "
                                     f"1 not yet computed, 2 forced to fail-safe"))
        for block, a in self.alarm_blocks:
            out += [_field(f, a, f"{block}.{f.name}", "R", "alarm") for f in ALARM.fields]
        for c in self.commands:
            rng = f"[{_num(c.minval)}, {_num(c.maxval)}]"
            out += [_field(f, c.address, c.name + ("" if f.name == "value" else f":{f.name}"),
                           "RW", "command", doc=c.doc or "command", range=rng)
                    for f in COMMAND.fields]
        for r in self.extras:  # names and units only: the doc text of a point is its owner's
            out.extend(_point_fields(r.address, r.name, r.unit, "extra",
                                     rec=COUNTER if r.name in COUNTER_POINTS else POINT))
        for label, a in self.names:
            out.append(Field(a, NAME_WORDS, "ascii", f"name:{label}", f"name of the record "
                             f"({NAME_WORDS * 2} ASCII chars, NUL padded)", "", "R", "name"))
        for area, head, rec in (("alarm_table", ALARM_TABLE_HEAD, "alarm row"),
                                ("event_ring", EVENT_RING_HEAD, "event")):
            base, count, stride = LAYOUT[area]
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


def _point_fields(a: int, name: str, unit: str, area: str, note: str = "",
                  rec: Record = POINT) -> list[Field]:
    """The rows of one point record (or counter record): the value's unit in the unit
    column, what it means in the description (its own unit column: age_ms in ms, quality
    none)."""
    out = []
    for f in rec.fields:
        row = _field(f, a, name if f.name == "value" else f"{name}:{f.name}", "R", area,
                     note=note or "value")
        out.append(Field(row.address, row.words, row.type, row.name, row.description,
                         unit if f.name == "value" else row.unit, row.access, row.area))
    return out


def unit_of(q: str) -> str:
    for suffix, unit in (("_v", "V"), ("_a", "A"), ("_kw", "kW"), ("_kva", "kVA"),
                         ("_kvar", "kvar"), ("_hz", "Hz"), ("_pct", "%"), ("_kwh", "kWh"),
                         ("_wh", "Wh"), ("_varh", "varh"), ("_c", "degC"), ("_ma", "mA"),
                         ("_ms", "ms")):
        if q.endswith(suffix):
            return unit
    return ""


def _num(x: float) -> str:
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else str(x)


def from_runtime_parts(specs: Sequence[object], devices: Iterable[tuple[str, str]],
                       blocks: Iterable[Block], inputs: MapInputs | None = None
                       ) -> RegisterMap:
    """Build from a runtime's image specs, site devices and blocks (``name``, ``outputs()``,
    ``map_breakers()``)."""
    blocks = list(blocks)
    outs = [(b.name, tuple(b.outputs())) for b in blocks]
    views = [v for b in blocks for v in b.map_breakers()]
    return RegisterMap.build(specs, devices, outs, views, inputs)  # type: ignore[arg-type]


def inputs_for_site(site: Any, use_lock: bool = True,
                    breakers: Iterable[BreakerView] = ()) -> MapInputs:
    """The lock (``{state_dir}/map.lock``; none when ``use_lock`` is false or there is no
    file) and the explicit ``slot`` / ``unit_id`` of a site's devices (``breakers``: what
    the blocks declare, for a map built where the blocks are not)."""
    lock = sl.read_lock(sl.lock_path(site.state_dir)) if use_lock else {}
    slots = {d.name: d.slot for d in site.devices if getattr(d, "slot", None) is not None}
    units = {d.name: d.unit_id for d in site.devices
             if getattr(d, "unit_id", None) is not None}
    return MapInputs(lock, slots, units, tuple(breakers))


def for_runtime(rt: Any, use_lock: bool = True) -> RegisterMap:
    """The map of a built :class:`busguard.runtime.Runtime`, with its site's map.lock."""
    devices = [(d.kind, d.name) for d in rt.site.devices]
    return from_runtime_parts(rt.image.specs, devices, rt.blocks,
                              inputs_for_site(rt.site, use_lock))


def commit_lock(m: RegisterMap, site: Any) -> bool:
    """Record the map's slots in ``{state_dir}/map.lock`` when they changed (a missing lock
    is created); True when it was written."""
    a = m.assignment
    if a is None or not a.changed:
        return False
    sl.write_lock(sl.lock_path(site.state_dir), a.lock)
    return True


def mapping_summary(m: RegisterMap) -> Mapping[str, tuple[int, int, int]]:
    return {a: (m.bases.get(a, 0), m.counts.get(a, 0), m.strides.get(a, 0)) for a in AREAS}
