"""A helper thread of the scan process (the retained-state writer) follows the scan thread's
scheduling: SCHED_FIFO at the lowest priority while the scan is real-time, SCHED_OTHER when
it is not (busguard.service.follow_scan_priority). Real threads, real sched_* calls."""

from __future__ import annotations

import os
import threading

import pytest

from busguard.service import HELPER_PRIORITY, clear_realtime, follow_scan_priority

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux only")


def _in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as exc:  # reported to the test
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=10)
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_helper_follows_the_scan_threads_policy():
    ready, normal, go_normal, finish = (threading.Event() for _ in range(4))
    ids = {}

    def scan():
        ids["scan"] = threading.get_native_id()
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            ids["fifo"] = True
        except OSError:
            ids["fifo"] = False
        ready.set()
        go_normal.wait(10)
        clear_realtime()  # as busguard run does before it stops or reloads
        normal.set()
        finish.wait(10)

    def helper():
        follow_scan_priority(ids["scan"])
        return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

    t = threading.Thread(target=scan)
    t.start()
    try:
        assert ready.wait(10)
        if not ids["fifo"]:
            pytest.skip("SCHED_FIFO not permitted here (needs CAP_SYS_NICE or an RTPRIO limit)")
        assert _in_thread(helper) == (os.SCHED_FIFO, HELPER_PRIORITY)

        def helper_that_was_fifo():
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(HELPER_PRIORITY))
            return helper()

        go_normal.set()
        assert normal.wait(10)
        assert _in_thread(helper_that_was_fifo) == (os.SCHED_OTHER, 0)
    finally:
        go_normal.set()
        finish.set()
        t.join(timeout=10)


def test_a_helper_of_a_normal_priority_scan_stays_normal():
    me = threading.get_native_id()  # this thread: SCHED_OTHER

    def helper():
        follow_scan_priority(me)
        return os.sched_getscheduler(0)

    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert _in_thread(helper) == os.SCHED_OTHER
    assert _in_thread(lambda: (follow_scan_priority(None), os.sched_getscheduler(0))[1]) \
        == os.SCHED_OTHER
