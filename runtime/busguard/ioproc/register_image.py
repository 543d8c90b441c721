"""The DCIM's register image in the I/O process: the newest frame the scan process sent,
encoded on the Modbus server's own loop in steps, and command writes validated by the
``[modbus_server]`` publisher (they then go to the scan process like any image write).

A read is answered from the last image fully encoded (the map's template until the first):
it never waits for an encoding, and the encoding never runs on another thread of this
process. Both were the tail of the DCIM's request latency: a request that came while a frame
was being encoded waited for the whole encoding under a lock, and a receiving thread encoding
it took the GIL from the server thread for up to a switch interval at a time
(docs/benchmarks.md has the figures). A newer frame that comes during an encoding waits for
it; one that comes after replaces it; the image served is at most one encoding behind the
newest frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from busguard.ioproc.frames import Layout, frame_from_bytes
from busguard.northbound.encode import Encoder, Frame

if TYPE_CHECKING:
    from busguard.ioproc.process import FrameInbox
    from busguard.northbound.publisher import ModbusServerPublisher
    from busguard.northbound.server import NorthboundServer

log = logging.getLogger("busguard.northbound")


class RemoteRegisterImage:
    """The image source a :class:`~busguard.northbound.server.NorthboundServer` serves from
    in the I/O process (``image()`` and ``write()``, as the publisher has beside the scan)."""

    def __init__(self, pub: ModbusServerPublisher, encoder: Encoder, frames: FrameInbox,
                 layout: Layout) -> None:
        self.pub = pub
        self.encoder = encoder
        self.frames = frames
        self.layout = layout
        self.server: NorthboundServer | None = None  # set once it runs: encodings go there
        self._image = encoder.template
        self._wire: dict[str, Any] = {}  # frames.frame_from_bytes' cache (alarm rows, ring)
        self._done: bytes | None = None  # the frame message that _image shows
        self._encoding = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one
        first = frames.latest()
        if first is not None:  # the restart's first frame: no client yet, encode it now
            self._encode_all(first)
        frames.on_frame.append(self._arrived)  # receiving thread

    def _decode(self, got: bytes) -> Frame | None:
        try:
            return frame_from_bytes(got, self.layout.specs, self.layout.index, self._wire)
        except Exception:  # a damaged message: keep serving the last good image
            log.exception("modbus_server: undecodable frame from the scan process")
            return None

    def _encode_all(self, got: bytes) -> None:
        frame = self._decode(got)
        if frame is not None:
            self._image, self._done = self.encoder.encode(frame), got

    def _arrived(self) -> None:
        server = self.server
        if server is None or not server.call_soon(self._kick):
            got = self.frames.latest()  # no loop yet (start-up): encode here
            if got is not None:
                self._encode_all(got)

    def _kick(self) -> None:  # server loop
        if not self._encoding:
            self._encoding = True
            self._task = asyncio.get_running_loop().create_task(self._encode_newest())

    async def _encode_newest(self) -> None:  # server loop
        try:
            while (got := self.frames.newest) is not None and got is not self._done:
                frame = self._decode(got)
                if frame is None:
                    self._done = got
                    continue
                steps = self.encoder.encode_steps(frame)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        self._image, self._done = done.value, got
                        break
                    await asyncio.sleep(0)  # let the requests that came in meanwhile be served
        except Exception:  # never the server's end: keep serving the last good image
            log.exception("modbus_server: encoding a frame failed")
        finally:
            self._encoding = False

    def image(self) -> bytes:
        self.frames.latest()  # asks the scan process for the next frame when due
        return self._image

    def write(self, func_code: int, address: int, values: Sequence[int],
              client: str) -> int | None:
        return self.pub.write(func_code, address, values, client)
