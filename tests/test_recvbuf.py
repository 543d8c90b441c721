"""busguard.recvbuf: protocols that receive into one buffer per connection, over real TCP on
127.0.0.1 (the event loop's socket transport, as the northbound server and the Modbus TCP
driver use it)."""

from __future__ import annotations

import asyncio
import socket
import threading

from busguard.modbus.transport import MbapConnection
from busguard.northbound.server import GuardedHandler
from busguard.recvbuf import ReceiveIntoBuffer


class Collect(ReceiveIntoBuffer):
    recv_bytes = 1024  # small, so a burst takes several receives

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.buffers: set[int] = set()
        self.closed = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        view = super().get_buffer(sizehint)
        self.buffers.add(id(view.obj))
        return view

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes  # not a view of the buffer the next receive overwrites
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


def test_a_burst_larger_than_the_buffer_arrives_whole_and_in_order():
    payload = bytes(range(256)) * 400  # 100 KiB: about 100 receives of 1 KiB

    async def main() -> Collect:
        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(payload)

        threading.Thread(target=send, daemon=True).start()
        conn, _ = await loop.sock_accept(lsock)
        lsock.close()
        conn.setblocking(False)
        _tr, proto = await loop.connect_accepted_socket(Collect, conn)
        await asyncio.wait_for(proto.closed, 10)
        return proto

    proto = asyncio.run(main())
    assert b"".join(proto.chunks) == payload
    assert len(proto.chunks) >= len(payload) // Collect.recv_bytes
    assert max(len(c) for c in proto.chunks) <= Collect.recv_bytes
    assert len(proto.buffers) == 1  # one buffer for the connection, reused


def test_the_event_loop_takes_busguards_protocols_as_buffered():
    """asyncio chooses receive-into for a BufferedProtocol; a plain Protocol would get
    ``recv(256 KiB)`` per segment again."""
    for cls in (GuardedHandler, MbapConnection):
        assert issubclass(cls, asyncio.BufferedProtocol), cls
