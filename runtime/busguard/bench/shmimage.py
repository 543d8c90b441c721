"""Prototype for the design experiment "the scan in its own process": the process image's
flat arrays mirrored into ``multiprocessing.shared_memory`` with a sequence lock.

The I/O process (drivers, northbound) exports: after every ``write_many``/``set_quality``/
``restore`` of its :class:`busguard.image.ProcessImage`, the value, quality and timestamp
arrays are copied into the shared block between two increments of a sequence counter. The
scan process imports: before each cycle it copies the block into its own image (same site, so
the same layout), retrying while a write is in progress (odd counter) or happened meanwhile.
Neither side waits on the other, and they share no interpreter lock. Not used by the runtime
itself (yet): see docs/benchmarks.md for what it gave.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

from busguard.image import ProcessImage

ARRAYS = (("values", 8), ("t_mono", 8), ("t_utc", 8), ("quality", 1))  # name, bytes each


def _layout(n: int) -> tuple[dict[str, tuple[int, int]], int]:
    off = 8  # the sequence counter
    out = {}
    for name, size in ARRAYS:
        out[name] = (off, n * size)
        off += (n * size + 7) // 8 * 8
    return out, off


class _Views:
    """Byte views of the shared block: the counter and one region per array."""

    def __init__(self, shm: shared_memory.SharedMemory, n: int) -> None:
        self.shm = shm
        layout, _ = _layout(n)
        self.seq = shm.buf[0:8].cast("Q")
        self.regions = {name: shm.buf[off:off + size] for name, (off, size) in layout.items()}

    def release(self) -> None:
        self.seq.release()
        for v in self.regions.values():
            v.release()


def export(image: ProcessImage, name: str) -> Callable[[], None]:
    """Mirror ``image`` into a new shared block ``name``; returns a function that frees it."""
    n = len(image)
    _, size = _layout(n)
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    views = _Views(shm, n)

    def publish() -> None:  # called with the image lock held
        views.seq[0] += 1
        for arr, region in views.regions.items():
            region[:] = memoryview(getattr(image, arr)).cast("B")
        views.seq[0] += 1

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            res = method(*args, **kwargs)
            with image._lock:
                publish()
            return res
        return wrapped

    for meth in ("write_many", "set_quality", "restore"):
        setattr(image, meth, wrap(getattr(image, meth)))
    with image._lock:
        publish()

    def close() -> None:
        views.release()
        shm.close()
        shm.unlink()

    return close


def importer(image: ProcessImage, name: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """(copy_in, close): ``copy_in()`` loads the shared block into ``image``; returns retries."""
    shm = shared_memory.SharedMemory(name=name)
    views = _Views(shm, len(image))
    seq = views.seq

    def copy_in() -> int:
        retries = 0
        while True:
            s1 = seq[0]
            if s1 & 1:
                retries += 1
                time.sleep(0)
                continue
            with image._lock:
                for arr, region in views.regions.items():
                    memoryview(getattr(image, arr)).cast("B")[:] = region
                if seq[0] == s1:
                    return retries
            retries += 1

    def close() -> None:
        views.release()
        shm.close()

    return copy_in, close
