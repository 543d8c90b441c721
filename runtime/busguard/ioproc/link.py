"""The link between the scan process and its I/O process: one ``AF_UNIX``/``SOCK_SEQPACKET``
socket pair (message boundaries kept, ordering and memory visibility the kernel's business, no
shared-memory barriers to get right on ARM). What crosses it, and in which form, is the
contract in :mod:`busguard.ioproc`; this module is the wire: the message kinds, non-blocking
sends, the image writer the I/O process's drivers are given (:class:`LinkImageWriter`) and the
scan process's :func:`drain` that applies its messages before a snapshot.

Neither side ever blocks on the other: sends are non-blocking and a full socket buffer drops
the message and counts it (dropped inputs just age to stale, as with a quiet meter).
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from busguard.clock import Clock
from busguard.image import PointSpec, PointWriter, ProcessImage, Quality

# I/O process -> scan process
WRITE, QUALITY, DEMAND, STATS, READY = b"W", b"Q", b"D", b"S", b"R"
# scan process -> I/O process
LAYOUT, FRAME = b"L", b"F"
_WHEAD = struct.Struct("<cdd")  # kind, t_mono, t_utc
_WITEM = struct.Struct("<IdB")  # point index, value, quality
_QHEAD = struct.Struct("<cdB")  # kind, t_mono, quality
_QITEM = struct.Struct("<I")
BUFFER_BYTES = 4 << 20
MAX_MESSAGE = 1 << 20  # a register image of 500k registers; maps are far smaller


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(scan side, I/O side), both non-inheritable; large buffers so bursts never block."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    return a, b


def send(sock: socket.socket, kind: bytes, body: bytes = b"") -> bool:
    """Send one message without waiting; False when the peer's buffer is full or gone."""
    try:
        sock.send(kind + body, socket.MSG_DONTWAIT)
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


def send_obj(sock: socket.socket, kind: bytes, obj: Any) -> bool:
    return send(sock, kind, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class LinkImageWriter(PointWriter):
    """The image the I/O process's drivers write to: an :class:`~busguard.image.ImageWriter`
    (the writer half of :class:`~busguard.image.ProcessImage`, same names, same arguments),
    each call one message to the scan process. Drivers cannot tell the difference; they never
    read the image."""

    def __init__(self, specs: Sequence[PointSpec], index: dict[str, int], sock: socket.socket,
                 clock: Clock) -> None:
        self.specs = tuple(specs)
        self.index = index
        self._sock = sock
        self._clock = clock
        self.sent = 0
        self.dropped = 0

    def _send(self, body: bytes) -> None:
        if send(self._sock, b"", body):
            self.sent += 1
        else:
            self.dropped += 1

    def write_many(self, items: Iterable[tuple[str, float, Quality]],
                   t_mono: float | None = None, t_utc: float | None = None) -> None:
        tm, tw = self.stamps(t_mono, t_utc)
        idx = self.index
        pack = _WITEM.pack
        body = b"".join(pack(idx[name], float(value), int(q)) for name, value, q in items)
        if body:
            self._send(_WHEAD.pack(WRITE, tm, tw) + body)

    def set_quality(self, names: Iterable[str], quality: Quality,
                    t_mono: float | None = None) -> None:
        tm = self._clock.monotonic() if t_mono is None else t_mono
        idx = self.index
        body = b"".join(_QITEM.pack(idx[n]) for n in names)
        if body:
            self._send(_QHEAD.pack(QUALITY, tm, int(quality)) + body)


class Drained:
    """What one :func:`drain` found besides image writes."""

    __slots__ = ("bad", "demand", "objects")

    def __init__(self) -> None:
        self.bad = 0
        self.demand = False
        self.objects: list[tuple[bytes, Any]] = []


def drain(sock: socket.socket, image: ProcessImage, limit: int = 10_000) -> Drained:
    """Apply every waiting message to ``image`` (the scan process, before its snapshot).

    Bounded by ``limit`` messages so a flood can never hold the scan; the rest waits for the
    next cycle. Writes are applied by point index (:meth:`ProcessImage.write_indexed`); a
    message that does not fit the layout is dropped and counted, never raised into the scan.
    """
    out = Drained()
    n = len(image.specs)
    witem, qitem = _WITEM.iter_unpack, _QITEM.iter_unpack
    whead, qhead = _WHEAD.size, _QHEAD.size
    for _ in range(limit):
        try:
            msg = sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        if not msg:
            break  # the peer closed: the supervisor sees the process end
        kind = msg[:1]
        try:
            if kind == WRITE:
                _k, tm, tw = _WHEAD.unpack_from(msg)
                items = list(witem(memoryview(msg)[whead:]))
                if items and max(items)[0] >= n:
                    raise IndexError("point index outside the layout")
                image.write_indexed(items, tm, tw)
            elif kind == QUALITY:
                _k, tm, q = _QHEAD.unpack_from(msg)
                idx = [i for (i,) in qitem(memoryview(msg)[qhead:])]
                if idx and max(idx) >= n:
                    raise IndexError("point index outside the layout")
                image.set_quality_indexed(idx, q, tm)
            elif kind == DEMAND:
                out.demand = True
            elif kind in (STATS, READY):
                out.objects.append((kind, pickle.loads(msg[1:])))
        except Exception:  # a bad message is dropped, never fatal
            out.bad += 1
    return out
