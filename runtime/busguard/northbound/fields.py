"""Field tables: a fixed record of the register map described once, as data.

A :class:`FieldDef` names one field of a record (its word offset, its big-endian ``struct``
format, its documented type, unit and meaning); a :class:`Record` is a table of them. The
encoder packs with the fields' structs, the reader unpacks with the same ones and the register
map documentation lists them, so an offset or a type is never written twice (mapdef.py holds the
tables: header, device header, point record, command record, alarm record, directory entry).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# documented type -> struct format (big-endian words, high word first: "ABCD")
FORMATS = {"uint16": "H", "bits16": "H", "uint32": "I", "float32": "f", "bytes8": "8s",
           "ascii24": "24s", "ascii8": "8s", "uint64": "Q"}


@dataclass(frozen=True)
class FieldDef:
    """One field of a record: ``offset`` in words from the record's start.

    ``description`` may hold ``{placeholders}`` a record's documentation fills in (the
    device's kind, a command's valid range...).
    """

    offset: int
    type: str  # uint16, bits16 (a bitfield), uint32, float32, bytes8
    name: str
    description: str
    unit: str = ""
    struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct", struct.Struct(">" + FORMATS[self.type]))

    @property
    def words(self) -> int:
        return self.struct.size // 2

    @property
    def byte(self) -> int:
        """Offset in bytes from the record's start."""
        return 2 * self.offset


class Record:
    """A fixed record layout: its fields by name, packing and unpacking by the same table."""

    def __init__(self, name: str, fields: Sequence[FieldDef]) -> None:
        self.name = name
        self.fields = tuple(fields)
        self.by_name: Mapping[str, FieldDef] = {f.name: f for f in self.fields}
        self.words = max((f.offset + f.words for f in self.fields), default=0)
        # fields back to back from word 0 (a point record): one Struct packs a run of them
        fmt, at, packed = "", 0, True
        for f in self.fields:
            packed = packed and f.offset == at
            fmt += f.struct.format[1:]
            at = f.offset + f.words
        self.format = fmt if packed else ""  # e.g. "fHH"; "" when the record has gaps

    def __getitem__(self, name: str) -> FieldDef:
        return self.by_name[name]

    def byte(self, name: str) -> int:
        return self.by_name[name].byte

    def pack_into(self, buf: bytearray, base_byte: int, values: Mapping[str, Any]) -> None:
        """Pack ``values`` (field name -> value) into ``buf`` at the record's byte offset."""
        by_name = self.by_name
        for name, value in values.items():
            f = by_name[name]
            f.struct.pack_into(buf, base_byte + f.byte, value)

    def unpack(self, words: Sequence[int]) -> dict[str, Any]:
        """Field name -> value from the record's registers (as read: 16-bit words)."""
        raw = struct.pack(f">{len(words)}H", *words)
        return {f.name: f.struct.unpack_from(raw, f.byte)[0] for f in self.fields
                if f.byte + f.struct.size <= len(raw)}
