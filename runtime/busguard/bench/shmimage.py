"""Prototype for the design experiment "the scan in its own process": the process image's
flat arrays mirrored into ``multiprocessing.shared_memory``, double-buffered.

The I/O process (drivers, northbound) exports: after every ``write_many``/``set_quality``/
``restore`` of its :class:`busguard.image.ProcessImage`, the value, quality and timestamp
arrays are copied into the slot that is *not* current, between two increments of that slot's
sequence counter, and then that slot becomes current. The scan process imports: before each
cycle it copies the current slot into its own image (same site, so the same layout) and
checks the slot's counter did not move meanwhile. A writer preempted half-way through a copy
(the I/O process runs at normal priority on a busy machine) never stalls the reader: the
current slot is always complete. Neither side waits on the other, and they share no
interpreter lock. Not used by the runtime itself (yet): see docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

from busguard.image import ProcessImage

ARRAYS = (("values", 8), ("t_mono", 8), ("t_utc", 8), ("quality", 1))  # name, bytes each
HEADER = 24  # current slot, then one sequence counter per slot (uint64 each)


def _slot_layout(n: int) -> tuple[dict[str, tuple[int, int]], int]:
    off, out = 0, {}
    for name, size in ARRAYS:
        out[name] = (off, n * size)
        off += (n * size + 7) // 8 * 8
    return out, off


class _Views:
    """Views of the shared block: the header words and each slot's array regions."""

    def __init__(self, shm: shared_memory.SharedMemory, n: int) -> None:
        self.head = shm.buf[0:HEADER].cast("Q")
        layout, size = _slot_layout(n)
        self.slots = [{name: shm.buf[HEADER + k * size + off:HEADER + k * size + off + ln]
                       for name, (off, ln) in layout.items()} for k in (0, 1)]

    def release(self) -> None:
        self.head.release()
        for slot in self.slots:
            for v in slot.values():
                v.release()


def size_of(n: int) -> int:
    return HEADER + 2 * _slot_layout(n)[1]


def export(image: ProcessImage, name: str) -> Callable[[], None]:
    """Mirror ``image`` into a new shared block ``name``; returns a function that frees it."""
    shm = shared_memory.SharedMemory(name=name, create=True, size=size_of(len(image)))
    views = _Views(shm, len(image))
    head = views.head

    def publish() -> None:  # called with the image lock held
        k = 1 - head[0]
        head[1 + k] += 1  # odd: slot k is being written
        for arr, region in views.slots[k].items():
            region[:] = memoryview(getattr(image, arr)).cast("B")
        head[1 + k] += 1
        head[0] = k

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
        publish()  # both slots hold a complete image

    def close() -> None:
        views.release()
        shm.close()
        shm.unlink()

    return close


def importer(image: ProcessImage, name: str, max_tries: int = 8
             ) -> tuple[Callable[[], int], Callable[[], None]]:
    """(copy_in, close): ``copy_in()`` loads the current slot into ``image`` and returns the
    retries it needed (a retry only when the writer lapped the reader)."""
    shm = shared_memory.SharedMemory(name=name)
    views = _Views(shm, len(image))
    head = views.head
    dst = {arr: memoryview(getattr(image, arr)).cast("B") for arr, _ in ARRAYS}

    def copy_in() -> int:
        for tries in range(max_tries):
            k = head[0]
            s1 = head[1 + k]
            if s1 & 1:
                continue
            with image._lock:
                for arr, region in views.slots[k].items():
                    dst[arr][:] = region
            if head[1 + k] == s1:
                return tries
        return max_tries  # the last copy may mix two writes; the timestamps still tell

    def close() -> None:
        for v in dst.values():
            v.release()
        views.release()
        shm.close()

    return copy_in, close
