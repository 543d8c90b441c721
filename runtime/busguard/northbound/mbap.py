"""Modbus/TCP framing the northbound servers share without pymodbus: the MBAP header, the
12-byte read request, the read answer as a slice of one register image, the exception frame.

Why a module of its own (and no pymodbus): both the real server's fast path
(:class:`busguard.northbound.server.GuardedHandler`) and the early server that answers from
the retained image while the runtime starts (:mod:`busguard.northbound.earlyserve`) answer
reads the same way, and the early server must not load pymodbus (its import is most of a
start's cost). So the byte layouts and the read rules live here once.
"""

from __future__ import annotations

import struct

MBAP = struct.Struct(">HHH")  # transaction id, protocol id, length
MAX_MBAP_LENGTH = 254  # MBAP length field: unit id + a PDU of at most 253 bytes
# A read request: MBAP (transaction id, protocol id 0, length 6, unit id) + function 3/4,
# start address, count: 12 bytes, parsed in one unpack.
READ_REQ = struct.Struct(">HHHBBHH")
READ_HEAD = struct.Struct(">HHHBBB")  # tid, protocol 0, length, unit, fc, byte count
EXC_REPLY = struct.Struct(">HHHBBB")  # tid, protocol 0, length 3, unit, fc | 0x80, code
MAX_READ_COUNT = 125  # registers per read request (Modbus application protocol 6.3)

# exception codes (Modbus application protocol 7)
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 0x01, 0x02, 0x03
DEVICE_FAILURE, DEVICE_BUSY = 0x04, 0x06
GATEWAY_NO_RESPONSE = 0x0B  # target device failed to respond: a unit id nobody has

#: (first register, registers or None for the whole image), or None: no such unit id
View = tuple[int, "int | None"] | None


def exception_frame(tid: int, unit: int, fc: int, code: int) -> bytes:
    """The 9-byte exception answer to function ``fc``."""
    return EXC_REPLY.pack(tid, 0, 3, unit, (fc & 0x7F) | 0x80, code)


def read_answer(img: bytes, view: View, tid: int, unit: int, fc: int, addr: int,
                count: int) -> tuple[bytes, bool]:
    """(answer frame, is an exception) to a read of ``count`` registers at ``addr`` of the
    unit's ``view`` of ``img``: a slice of one image (one scan), or 0x03 for a count outside
    1..125, 0x02 past the end of the view, 0x0B for a unit id nobody has (``view`` None)."""
    if view is None:
        return exception_frame(tid, unit, fc, GATEWAY_NO_RESPONSE), True
    if not 1 <= count <= MAX_READ_COUNT:
        return exception_frame(tid, unit, fc, ILLEGAL_VALUE), True
    base, words = view
    lo = 2 * (base + addr)
    hi = lo + 2 * count
    if hi > len(img) or (words is not None and addr + count > words):
        return exception_frame(tid, unit, fc, ILLEGAL_ADDRESS), True
    return READ_HEAD.pack(tid, 0, 3 + 2 * count, unit, fc, 2 * count) + img[lo:hi], False
