"""Register <-> value conversion: int16/uint16/int32/uint32/float32 (and int64/uint64, e.g.
energy counters) in any word order.

A 32-bit value has the big-endian bytes ``A B C D`` (A most significant). The word order names
the order those bytes travel in on the wire, two per register:

- ``ABCD``: high word first, each word big-endian (the Modbus standard; Schneider, Janitza)
- ``CDAB``: low word first ("word swap"; many meters, and what mbpoll assumes without -B)
- ``BADC``: high word first, bytes swapped inside each word
- ``DCBA``: fully little-endian

Orders that swap bytes inside a word (BADC, DCBA) swap them for 16-bit values too, since a
device that does so does it for every register. 64-bit values follow the same rule over four
registers (CDAB/DCBA: least significant word first). Pure functions, no pymodbus.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

TYPES = ("int16", "uint16", "int32", "uint32", "float32", "int64", "uint64")
WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
REGISTER_COUNT = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4,
                  "uint64": 4}
_FMT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
        "int64": ">q", "uint64": ">Q"}
_LIMITS = {"int16": (-0x8000, 0x7FFF), "uint16": (0, 0xFFFF), "int32": (-0x80000000, 0x7FFFFFFF),
           "uint32": (0, 0xFFFFFFFF), "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}


def _swap16(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def registers_to_bytes(regs: Sequence[int], word_order: str) -> bytes:
    """Big-endian ``AB`` / ``ABCD`` bytes from the registers as they came off the wire."""
    if word_order in ("BADC", "DCBA"):
        regs = [_swap16(r) for r in regs]
    if len(regs) > 1 and word_order in ("CDAB", "DCBA"):
        regs = list(reversed(regs))
    return b"".join(int(r & 0xFFFF).to_bytes(2, "big") for r in regs)


def bytes_to_registers(raw: bytes, word_order: str) -> list[int]:
    """The inverse of :func:`registers_to_bytes`."""
    regs = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    if len(regs) > 1 and word_order in ("CDAB", "DCBA"):
        regs = list(reversed(regs))
    if word_order in ("BADC", "DCBA"):
        regs = [_swap16(r) for r in regs]
    return regs


def decode_raw(regs: Sequence[int], dtype: str, word_order: str = "ABCD") -> float:
    """The raw (unscaled) number held by ``regs`` (1 or 2 registers)."""
    return struct.unpack(_FMT[dtype], registers_to_bytes(regs, word_order))[0]


def encode_raw(raw: float, dtype: str, word_order: str = "ABCD") -> list[int]:
    """Registers holding the raw number ``raw``; integers are rounded and clamped to the type."""
    if dtype == "float32":
        data = struct.pack(">f", float(raw))
    else:
        lo, hi = _LIMITS[dtype]
        if math.isnan(raw):
            raw = 0
        data = struct.pack(_FMT[dtype], int(min(max(round(raw), lo), hi)))
    return bytes_to_registers(data, word_order)


def decode(regs: Sequence[int], dtype: str, word_order: str = "ABCD",
           scale: float = 1.0) -> float:
    """The engineering value: raw number times ``scale``."""
    return decode_raw(regs, dtype, word_order) * scale


def encode(value: float, dtype: str, word_order: str = "ABCD", scale: float = 1.0) -> list[int]:
    """Registers that :func:`decode` turns back into ``value`` (within the type's precision)."""
    return encode_raw(value / scale, dtype, word_order)
