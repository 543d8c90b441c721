"""Alarm codes as numbers, for the register map: one table, here.

The fault log and the alarm table name an alarm by its stable text code (the seed's ``0x02``,
``errno 110``, ``0xCF``; busguard's ``BG-...``). A DCIM reading Modbus wants a number, so each
code has one, fixed forever (a DCIM's alarm template keys on it):

- a seed hex code is its own value: ``0x02`` -> 2, ``0xCF`` -> 207 (0x0001..0x00FF);
- ``errno N`` is 0x0100 + N: ``errno 110`` -> 0x016E (366);
- busguard's own codes come from :data:`BG_CODES`: the breaker-trip causes (``BG-TRIP-*``)
  from 0x0200, the other codes from 0x0300. Numbers are appended, never reused or renumbered;
- any other code (a third-party plugin's, a ``threshold`` block's configured ``code``) is
  :data:`OTHER` (0xFFFF); the map's records carry the code text beside the number.

0 means "no code" (a breaker with no trip, an empty record). docs/northbound.md and
docs/register-map.md render :func:`table` (tests/test_event_ring.py keeps them in step).
"""

from __future__ import annotations

import re

NONE = 0
OTHER = 0xFFFF
ERRNO_BASE = 0x0100

# The breaker-trip causes (busguard_blocks.shunt_trip.CAUSES; 0xCF Thermal-Critical is a seed
# code and keeps its own number), then busguard's other alarm codes. Append only.
_TRIP_CAUSES: dict[str, tuple[int, str]] = {  # each described as "breaker-trip: ..."
    "BG-TRIP-OC": (0x0201, "overcurrent (above pickup longer than the delay or curve)"),
    "BG-TRIP-OC-LED": (0x0202, "overcurrent trip shown by the breaker LED (solid red)"),
    "BG-TRIP-GF": (0x0203, "ground fault (breaker LED 2-blink)"),
    "BG-TRIP-RCM": (0x0204, "ground fault (residual current above pickup)"),
    "BG-TRIP-THERMAL": (0x0205, "thermal overload (I^2t thermal replica at 100 %)"),
    "BG-TRIP-INPUT-LOSS": (0x0206, "protection inputs lost (trip_on_input_loss)"),
}
BG_CODES: dict[str, tuple[int, str]] = {
    "BG-TRIP": (0x0200, "breaker-trip restored from a state file that did not say the cause"),
    **{code: (num, f"breaker-trip: {what}") for code, (num, what) in _TRIP_CAUSES.items()},
    "BG-INPUT": (0x0300, "an input is stale, bad or not connected"),
    "BG-BLOCK-FAULT": (0x0301, "a block faulted; its outputs are forced to fail-safe"),
    "BG-RETAINED-CORRUPT": (0x0302, "the retained state file was damaged and set aside"),
    "BG-IO-PROCESS": (0x0303, "the I/O process is down or restarting"),
    "BG-LIMIT": (0x0304, "a threshold block's limit (default code)"),
    "BG-TRIP-INHIBITED": (0x0310, "a trip condition holds but inhibit/permissive blocks it"),
    "BG-RESET-REFUSED": (0x0311, "a trip reset was refused: a cause persists"),
    "BG-RECLOSE-TRIAL": (0x0312, "reset after a ground-fault trip, breaker on trial"),
    "BG-OC-PICKUP": (0x0313, "current above pickup, trip timing"),
    "BG-THERMAL-OL": (0x0314, "thermal replica above its alarm level"),
    "BG-LED-PATTERN": (0x0315, "the breaker LED shows an unexpected pattern"),
    "BG-TEMP-WARN": (0x0320, "hottest probe at or above warn_c"),
    "BG-TEMP-ALARM": (0x0321, "hottest probe at or above alarm_c"),
    "BG-TEMP-RATE": (0x0322, "temperature rising faster than the rate limit"),
    "BG-TEMP-TTT": (0x0323, "estimated time to the trip temperature below the limit"),
    "BG-PROBE-DISAGREE": (0x0324, "redundant probes disagree"),
    "BG-COOL-PRE": (0x0325, "cooling demand raised for a scheduled job"),
    "BG-COMM-LOSS": (0x0330, "packet loss above the limit"),
    "BG-COMM-LATENCY": (0x0331, "link latency above the limit"),
    "BG-RS485-ERRORS": (0x0332, "RS-485 CRC/framing error rate above the limit"),
    "BG-POLL-RATIO": (0x0333, "poll period under the ratio x the measured latency"),
    "BG-THD-V": (0x0340, "voltage THD above thd_v_limit_pct"),
    "BG-TDD": (0x0341, "current TDD above the IEEE 519-2014 limit"),
    "BG-HARMONIC": (0x0342, "an individual voltage harmonic above the limit"),
    "BG-IMBALANCE-V": (0x0343, "voltage imbalance above the limit"),
    "BG-IMBALANCE-I": (0x0344, "current imbalance above the limit"),
    "BG-FREQUENCY": (0x0345, "frequency outside its band"),
    "BG-VOLTAGE-LOW-WARN": (0x0346, "voltage below the warning band"),
    "BG-VOLTAGE-LOW": (0x0347, "voltage below the alarm band"),
    "BG-VOLTAGE-HIGH-WARN": (0x0348, "voltage above the warning band"),
    "BG-VOLTAGE-HIGH": (0x0349, "voltage above the alarm band"),
    "BG-LOAD-80": (0x034A, "continuous load above load_limit_pct of the rated ampacity"),
    "BG-TRANSIENT": (0x034B, "a dI/dt or peak transient event was captured"),
    "BG-SPB-REFUSED": (0x0350, "the MQTT broker refused the Sparkplug edge node (auth, "
                               "certificate)"),
    "BG-SPB-OFFLINE": (0x0351, "the Sparkplug edge node has no broker session; changes are "
                               "queued"),
    "BG-SPB-QUEUE-FULL": (0x0352, "the Sparkplug store-and-forward queue is full; changes are "
                                  "dropped"),
}
_BY_NUM = {num: code for code, (num, _doc) in BG_CODES.items()}
assert len(_BY_NUM) == len(BG_CODES), "two BG codes share a number"
_HEX = re.compile(r"0x([0-9A-Fa-f]{1,2})")
_ERRNO = re.compile(r"errno (\d{1,3})")
SEED_CODES = {"0x02": "Modbus exception 0x02 (Illegal Data Address)",
              "errno 110": "Connection Timeout (Errno 110)",
              "0xCF": "Thermal-Critical (0xCF): busbar at or above the trip temperature"}


def code_number(code: str) -> int:
    """The number of ``code`` in the register map (0 for "", :data:`OTHER` if unknown)."""
    if not code:
        return NONE
    hit = BG_CODES.get(code)
    if hit is not None:
        return hit[0]
    m = _HEX.fullmatch(code)
    if m:
        return int(m.group(1), 16) or OTHER
    m = _ERRNO.fullmatch(code)
    if m and int(m.group(1)) < 256:
        return ERRNO_BASE + int(m.group(1))
    return OTHER


def code_name(num: int) -> str:
    """The text code of number ``num`` ("" for 0; "other" for :data:`OTHER`)."""
    if num == NONE:
        return ""
    if num < ERRNO_BASE:
        return f"0x{num:02X}"
    if num < ERRNO_BASE + 256:
        return f"errno {num - ERRNO_BASE}"
    return _BY_NUM.get(num, "other" if num == OTHER else f"0x{num:04X}")


def table() -> list[tuple[int, str, str]]:
    """(number, code, meaning) of every numbered code, seed codes first, for the docs."""
    rows = [(code_number(c), c, doc) for c, doc in SEED_CODES.items()]
    rows += [(num, code, doc) for code, (num, doc) in BG_CODES.items()]
    rows.append((OTHER, "other", "a code outside this table (a plugin's or a threshold "
                                 "block's own); the record's code text names it"))
    return sorted(rows)


def markdown_table() -> str:
    """:func:`table` as a Markdown table (docs/northbound.md, docs/register-map.md)."""
    lines = ["| number | hex | code | meaning |", "|---:|---|---|---|"]
    lines += [f"| {n} | 0x{n:04X} | `{c}` | {d} |" for n, c, d in table()]
    lines.append(f"| {ERRNO_BASE}+N | 0x{ERRNO_BASE:04X}+N | `errno N` | any other errno "
                 f"N < 256 the drivers report |")
    lines.append("| 1..255 | 0x00NN | `0xNN` | any other seed hex code: its own value |")
    return "\n".join(lines)
