"""The garbage collector's policy in busguard's long-running processes: start-up objects are
frozen out of its reach.

Why: a full (generation 2) collection walks every object the collector tracks, and after
start-up a runtime holds a great many (the site, the registry, pymodbus, the register map).
Measured in the I/O process under the northbound bench's load (``gc.callbacks``): one full
collection took 20 ms, a 20 ms stall for every DCIM request in flight; in the scan process
the same would be two missed cycles. ``gc.freeze()`` moves everything alive after start-up
to a permanent generation that collections skip (the same collection then took 0.3 ms).
Frozen objects still die by reference count; only cyclic garbage among them would stay, so
:func:`settle` unfreezes first: what a reload left behind is collected once, then.
"""

from __future__ import annotations

import gc
import time


def settle() -> float:
    """Collect once, then freeze what is left (call after start-up and after each reload,
    when no scan is running); returns the milliseconds it took."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return (time.perf_counter() - t0) * 1e3
