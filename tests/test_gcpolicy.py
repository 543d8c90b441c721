"""The collector policy: start-up objects frozen, and what a reload leaves behind collected."""

from __future__ import annotations

import gc
import weakref

from busguard import gcpolicy


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_settle_freezes_and_frees_the_cycles_an_earlier_settle_froze():
    try:
        old = Node()  # an old runtime's object graph, alive at the first settle
        ref = weakref.ref(old)
        gcpolicy.settle()
        assert gc.get_freeze_count() > 0
        del old  # the reload dropped it; frozen, so collections skip it
        gc.collect()
        assert ref() is not None
        gcpolicy.settle()  # after the reload: unfrozen, collected once
        assert ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the suite runs with the collector as usual
