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
import operator
import struct
from collections.abc import Sequence
from typing import Any

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


# -- block decoding -------------------------------------------------------------------------
# A poll decodes every point of a read block; going through decode() per point costs a
# registers -> bytes join, a format lookup and an unpack each. A BlockDecoder does the same
# work once per block: the registers are packed to their wire bytes with one precompiled
# struct.Struct, and one more precompiled Struct unpacks every point of the block at once.

def _point_layout(dtype: str, word_order: str) -> tuple[str, list[int] | None]:
    """(struct byte order, byte permutation or None) that reads a ``dtype`` point from its
    wire bytes as :func:`decode_raw` does: ABCD is big-endian, DCBA little-endian (every
    byte reversed, for 16-bit values too); BADC/CDAB need their bytes reordered (except
    16-bit values: BADC is then little-endian, CDAB big-endian)."""
    n = REGISTER_COUNT[dtype]
    if word_order == "ABCD" or (word_order == "CDAB" and n == 1):
        return ">", None
    if word_order == "DCBA" or (word_order == "BADC" and n == 1):
        return "<", None
    if word_order == "BADC":  # bytes swapped inside each word, words in order
        return ">", [b for w in range(n) for b in (2 * w + 1, 2 * w)]
    if word_order == "CDAB":  # words reversed, bytes in order
        return ">", [b for w in reversed(range(n)) for b in (2 * w, 2 * w + 1)]
    raise ValueError(f"unknown word order {word_order!r}")


class BlockDecoder:
    """Raw (unscaled) numbers of several points read in one block of ``count`` registers.

    ``points`` are ``(offset, dtype, word_order)``, the offset in registers from the start of
    the block. ``decode(regs)`` returns one raw number per point, in the order given, equal to
    ``decode_raw(regs[offset:offset + n], dtype, word_order)`` for each.
    """

    __slots__ = ("_getter", "_pack", "_unpack", "count")

    def __init__(self, count: int, points: Sequence[tuple[int, str, str]]) -> None:
        self.count = count
        self._pack = struct.Struct(f">{count}H").pack
        layouts = [(off, dtype, *_point_layout(dtype, order)) for off, dtype, order in points]
        for off, dtype, _e, _p in layouts:
            if off < 0 or off + REGISTER_COUNT[dtype] > count:
                raise ValueError(f"point at offset {off} ({dtype}) outside a block of "
                                 f"{count} registers")
        ends = [2 * off for off, *_ in layouts[1:]]
        starts_ok = all(2 * (off + REGISTER_COUNT[dt]) <= nxt
                        for (off, dt, *_), nxt in zip(layouts, ends, strict=False))
        orders = {e for _o, _d, e, _p in layouts}
        self._getter: Any = None
        if layouts and starts_ok and len(orders) == 1 and all(p is None for *_, p in layouts):
            # every point in place, one byte order: one format with pad bytes for the gaps
            fmt, pos = orders.pop(), 0
            for off, dtype, _e, _p in layouts:
                fmt += "x" * (2 * off - pos) + _FMT[dtype][1]
                pos = 2 * (off + REGISTER_COUNT[dtype])
            self._unpack = struct.Struct(fmt).unpack_from
            return
        # anything else (mixed orders, swapped words, overlapping points): gather each point's
        # bytes big-endian first into a new string, then one big-endian format
        perm: list[int] = []
        fmt = ">"
        for off, dtype, e, p in layouts:
            size = 2 * REGISTER_COUNT[dtype]
            local = p if p is not None else (list(range(size)) if e == ">" else
                                             list(reversed(range(size))))
            perm += [2 * off + b for b in local]
            fmt += _FMT[dtype][1]
        self._getter = operator.itemgetter(*perm) if perm else None
        self._unpack = struct.Struct(fmt).unpack_from

    def decode(self, regs: Sequence[int]) -> tuple[Any, ...]:
        """One raw number per point; ``regs`` are the block's registers off the wire."""
        if len(regs) != self.count:
            raise ValueError(f"expected {self.count} registers, got {len(regs)}")
        try:
            raw = self._pack(*regs)
        except struct.error:  # out of range: take the low 16 bits, as registers_to_bytes does
            raw = self._pack(*(int(r) & 0xFFFF for r in regs))
        getter = self._getter
        if getter is not None:
            raw = bytes(getter(raw))
        return self._unpack(raw)


# -- four-quadrant power factor -------------------------------------------------------------
# Schneider's "4Q FP PF" float registers (PM5000 series, iEM3000...) fold the quadrant into the
# value so one float says both PF and lead/lag (PM5300/PM5500 user manuals, "Power factor
# register format"):
#
#   quadrant 1 (P >= 0, Q >= 0, lagging): register 0..+1,  PF = register
#   quadrant 2 (P <  0, Q >= 0, leading): register -2..-1, PF = -2 - register
#   quadrant 3 (P <  0, Q <  0, lagging): register -1..0,  PF = register
#   quadrant 4 (P >= 0, Q <  0, leading): register +1..+2, PF = 2 - register
#
# The PF decoded here follows IEC 61557-12 (its sign is the sign of the active power), so a
# leading 0.95 while importing reads register 1.05 and decodes to +0.95 with quadrant 4.
PF_4Q_MAX = 2.0


def decode_pf_4q(register: float) -> tuple[float, int]:
    """(signed IEC PF, quadrant 1..4) from a 4Q FP PF register value; NaN and values outside
    -2..+2 give (NaN, 0): the register does not hold a power factor."""
    r = float(register)
    if not (-PF_4Q_MAX <= r <= PF_4Q_MAX):  # also NaN
        return math.nan, 0
    if r > 1.0:
        return PF_4Q_MAX - r, 4
    if r < -1.0:
        return -PF_4Q_MAX - r, 2
    if r < 0.0:
        return r, 3
    return r, 1


def encode_pf_4q(pf: float, quadrant: int = 0) -> float:
    """The 4Q FP PF register value of a signed IEC ``pf`` in ``quadrant`` (0: lagging, i.e.
    quadrant 1 when ``pf`` >= 0 and 3 when it is negative). The inverse of
    :func:`decode_pf_4q` for |pf| <= 1."""
    if not quadrant:
        quadrant = 1 if pf >= 0 else 3
    mag = min(1.0, abs(float(pf)))
    return {1: mag, 2: -PF_4Q_MAX + mag, 3: -mag, 4: PF_4Q_MAX - mag}[quadrant]


def quadrant_of(p: float, q: float) -> int:
    """The IEC quadrant (1..4) of active power ``p`` and reactive power ``q`` (load
    convention: import positive, inductive Q positive); 0 when either is NaN."""
    if math.isnan(p) or math.isnan(q):
        return 0
    if p >= 0:
        return 1 if q >= 0 else 4
    return 2 if q >= 0 else 3
