"""(8) The I/O process's link against a shared-memory image: what moving the values costs,
per scan cycle, at 256 meters (the decision in docs/architecture.md, "The I/O process").

A bounded micro-benchmark in this one process (no load, no runtime): both designs move the
same traffic, the one ``[scan] io = "process"`` has at 256 meters of 29 points polled every
100 ms (26 polls a 10 ms cycle, 7,424 points) with a DCIM reading (a frame every 5 cycles,
``refresh_ms`` 50):

- ``messages`` (today): each poll is one ``W`` message (:class:`busguard.ioproc.link.
  LinkImageWriter`) on a real ``SOCK_SEQPACKET`` pair; the scan side drains them into its
  :class:`~busguard.image.ProcessImage` and takes the snapshot; a frame is pickled and sent,
  and the I/O side receives and unpickles it.
- ``shared memory``: one fixed layout in a ``multiprocessing.shared_memory`` block (values,
  quality, both stamps, min and max, a sequence word per meter): each poll writes its points
  there between two sequence increments (a seqlock); the scan side copies the arrays out,
  checks the sequence words and resets the min/max window; a frame is the same arrays copied
  into a second block plus the small parts pickled, which the I/O side copies out.

Per design: microseconds of the scan process per cycle (what the scan thread pays) and of the
I/O process per cycle. Python cannot order memory between processes (no barriers: a seqlock
in pure Python is not correct on ARM's weak ordering), so the shared-memory side here is a
lower bound of what a correct one would cost.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

from busguard.clock import MonotonicClock
from busguard.image import PointSpec, ProcessImage, Quality
from busguard.ioproc import link
from busguard.ioproc.frames import frame_from_bytes, frame_to_bytes
from busguard.northbound.encode import Frame
from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row, pct

KEYS = (("8-link", "I/O process link: messages against a shared-memory image, 256 meters"),)
NEEDS = ()
METERS, POINTS, POLLS_PER_CYCLE, FRAME_EVERY = 256, 29, 26, 5


def _frame(snap: Any) -> Frame:
    return Frame(1, time.time(), snap, {}, (), frozenset(), frozenset(), 0, "running", 0.0, 0.0)


def _timed(fn: Callable[[], object], cycles: int) -> list[float]:
    out = []
    for _ in range(cycles):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


class _Messages:
    def __init__(self, specs: list[PointSpec]) -> None:
        clock = MonotonicClock()
        self.image = ProcessImage(specs, clock)
        self.scan_sock, self.io_sock = link.socket_pair()
        self.writer = link.LinkImageWriter(specs, self.image.index, self.io_sock, clock)
        self.batches = [[(specs[m * POINTS + j].name, 230.0 + j, Quality.GOOD)
                         for j in range(POINTS)] for m in range(METERS)]
        self.k = 0
        self.specs = tuple(specs)

    def io_cycle(self) -> None:
        for _ in range(POLLS_PER_CYCLE):
            self.writer.write_many(self.batches[self.k % METERS])
            self.k += 1

    def scan_cycle(self, frame: bool) -> None:
        link.drain(self.scan_sock, self.image)
        snap = self.image.snapshot()
        if frame:
            link.send(self.scan_sock, link.FRAME, frame_to_bytes(_frame(snap)))

    def io_frame(self) -> None:
        msg = self.io_sock.recv(link.MAX_MESSAGE)
        frame_from_bytes(msg[1:], self.specs, self.image.index)

    def close(self) -> None:
        self.scan_sock.close()
        self.io_sock.close()


def _copy(view: memoryview, code: str) -> array:
    out = array(code)
    out.frombytes(view if view.format == "B" else view.cast("B"))  # one memcpy
    return out


class _Shared:
    """The arrays of one layout in shared memory, a seqlock word per meter. The scan side
    ages its copy with the same code as today's (a :class:`ProcessImage` over the copies)."""

    def __init__(self, specs: list[PointSpec]) -> None:
        n = self.n = len(specs)
        self.image = ProcessImage(specs, MonotonicClock())
        self.blk = shared_memory.SharedMemory(create=True, size=8 * 5 * n + n + 8 * METERS)
        buf = self.blk.buf
        d = 8 * n
        self.values, self.t_mono, self.t_utc = (buf[0:d].cast("d"), buf[d:2 * d].cast("d"),
                                                buf[2 * d:3 * d].cast("d"))
        self.vmin, self.vmax = buf[3 * d:4 * d].cast("d"), buf[4 * d:5 * d].cast("d")
        self.quality = buf[5 * d:5 * d + n]
        self.seq = buf[5 * d + n:5 * d + n + 8 * METERS].cast("Q")
        self.frame = shared_memory.SharedMemory(create=True, size=8 * 3 * n + n + 4096)
        self.nan_row = array("d", [math.nan]) * n
        self.k = 0

    def io_cycle(self) -> None:
        values, qual, tm, tw = self.values, self.quality, self.t_mono, self.t_utc
        vmin, vmax, seq = self.vmin, self.vmax, self.seq
        now, wall = time.monotonic(), time.time()
        for _ in range(POLLS_PER_CYCLE):
            m = self.k % METERS
            self.k += 1
            seq[m] += 1
            base = m * POINTS
            for j in range(POINTS):
                i = base + j
                v = 230.0 + j
                values[i] = v
                qual[i] = 0
                tm[i] = now
                tw[i] = wall
                if not (vmin[i] <= v):
                    vmin[i] = v
                if not (vmax[i] >= v):
                    vmax[i] = v
            seq[m] += 1

    def scan_cycle(self, frame: bool) -> None:
        before = bytes(self.seq)
        img = self.image
        img.values, img.quality = _copy(self.values, "d"), _copy(self.quality, "B")
        img.t_mono, img.t_utc = _copy(self.t_mono, "d"), _copy(self.t_utc, "d")
        img.vmin, img.vmax = _copy(self.vmin, "d"), _copy(self.vmax, "d")
        after = bytes(self.seq)
        torn = before != after or any(s & 1 for s in _copy(self.seq, "Q"))
        self.vmin[:] = self.nan_row  # a new min/max window (racing the writers: see above)
        self.vmax[:] = self.nan_row
        if torn:
            img.values = _copy(self.values, "d")  # a real reader re-reads the torn devices
        snap = img.snapshot()  # ages the copies as today
        if frame:
            fb = self.frame.buf
            d = 8 * self.n
            fb[0:d] = snap.values.tobytes()
            fb[d:d + self.n] = snap.quality.tobytes()
            fb[d + self.n:2 * d + self.n] = snap.t_mono.tobytes()
            fb[2 * d + self.n:3 * d + self.n] = snap.t_utc.tobytes()

    def io_frame(self) -> None:
        fb = self.frame.buf
        d = 8 * self.n
        _copy(fb[0:d], "d")
        _copy(fb[d:d + self.n], "B")
        _copy(fb[d + self.n:2 * d + self.n], "d")
        _copy(fb[2 * d + self.n:3 * d + self.n], "d")

    def close(self) -> None:
        for name in ("values", "t_mono", "t_utc", "vmin", "vmax", "quality", "seq"):
            getattr(self, name).release()
        for blk in (self.blk, self.frame):
            blk.close()
            blk.unlink()


def measure(cycles: int) -> dict[str, dict[str, float]]:
    specs = [PointSpec(f"pqm-{m:03d}.p{j}", source="bench", max_age_s=0.3)
             for m in range(METERS) for j in range(POINTS)]
    out: dict[str, dict[str, float]] = {}
    for name, impl in (("messages", _Messages(specs)), ("shared memory", _Shared(specs))):
        try:
            io_t, scan_t, frame_t = [], [], []
            for c in range(cycles):
                io_t += _timed(impl.io_cycle, 1)
                with_frame = c % FRAME_EVERY == 0
                t = time.perf_counter()
                impl.scan_cycle(with_frame)
                scan_t.append((time.perf_counter() - t) * 1e6)
                if with_frame:
                    frame_t += _timed(impl.io_frame, 1)
            out[name] = {"scan_p50_us": pct(scan_t, 50), "scan_p99_us": pct(scan_t, 99),
                         "io_p50_us": pct(io_t, 50) + pct(frame_t, 50) / FRAME_EVERY,
                         "cycles": cycles}
        finally:
            impl.close()
    return out


def run(b: Bench) -> list[Measurement]:
    cycles = 50 if b.smoke else b.count(2000, 500)
    got = measure(cycles)
    msg, shm = got["messages"], got["shared memory"]
    rows = [
        Row("scan process per cycle, p50", msg["scan_p50_us"], "us", shm["scan_p50_us"],
            "shared memory", status=INFO, note="drain + snapshot (+ a frame every 5 cycles)"),
        Row("scan process per cycle, p99", msg["scan_p99_us"], "us", shm["scan_p99_us"],
            "shared memory", status=INFO),
        Row("I/O process per cycle, p50", msg["io_p50_us"], "us", shm["io_p50_us"],
            "shared memory", status=INFO, note=f"{POLLS_PER_CYCLE} polls of {POINTS} points "
            f"written, a fifth of a frame read"),
    ]
    return [Measurement(KEYS[0][0], KEYS[0][1], rows, details={"figures": got,
                                                               "cycles": cycles})]
