"""An asyncio protocol base that receives into one buffer per connection.

Why: a plain ``asyncio.Protocol`` on a socket transport gets each segment from
``sock.recv(256 KiB)`` (``_SelectorSocketTransport.max_size`` in Python 3.10-3.11). An
allocation that size is above glibc's default mmap threshold, so until glibc raises that
threshold (it does after freeing a large mapped chunk, which a receive shrunk by ``realloc``
never is) every receive is an mmap, page faults and a munmap (a TLB flush across all the
process's threads), however few bytes came: about 20 us of CPU per receive, against 5 us for
``recv_into`` an existing buffer (measured on the bench machine; docs/benchmarks.md, step 10).
A Modbus/TCP frame is at most 260 bytes, so in that state the cost was most of the I/O
process's time under DCIM load (61 % of it in the kernel, led by memory management) and
halved its requests per second. Receiving into a kept buffer makes the cost the same in every
allocator state.

A :class:`asyncio.BufferedProtocol` hands the transport a buffer to receive into instead
(``get_buffer``/``buffer_updated``, a documented asyncio interface that TLS transports honour
too). This class keeps one buffer per connection and passes each receive on to the
subclass's ``data_received`` as ``bytes``, so a protocol written for ``asyncio.Protocol`` keeps
its code. What does not fit the buffer waits in the socket for the next receive.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

RECV_BYTES = 16384  # 63 Modbus/TCP frames of the largest size: a burst of pipelined requests


class ReceiveIntoBuffer(asyncio.BufferedProtocol):
    """Mixin (put it after a ``Protocol`` base): receive into a per-connection buffer and call
    ``self.data_received(bytes)`` with what came."""

    recv_bytes: ClassVar[int] = RECV_BYTES
    _recv_view: memoryview | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._recv_view
        if view is None:
            view = self._recv_view = memoryview(bytearray(self.recv_bytes))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._recv_view
        assert view is not None
        self.data_received(bytes(view[:nbytes]))

    def data_received(self, data: bytes) -> None:  # pragma: no cover - the subclass's
        raise NotImplementedError
