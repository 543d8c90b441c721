"""Alarm edges to the journal, with syslog priorities, beside the fault log.

`journalctl -p crit -u busguard` should show a latched trip, and the seed tells operators to
search the system log for "breaker-trip". busguard logs to stderr; under systemd (which sets
``JOURNAL_STREAM`` for a service whose stderr goes to the journal) each line is prefixed with
its priority in sd-daemon's ``<N>`` form (sd-daemon(3)), which journald strips and keeps as the
entry's PRIORITY. :class:`JournalObserver` logs one line per alarm edge at the priority its
severity maps to: critical -> crit (2), major -> err (3), minor -> warning (4), warning ->
notice (5), info -> info (6); a clear is logged at notice (a clear of a critical alarm at
notice too: the emergency is over, the record stays in the fault log). Trip messages carry
"breaker-trip" from their block.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from busguard import hookimpl

if TYPE_CHECKING:
    from busguard.alarms import AlarmEdge
    from busguard.runtime import Runtime

OBSERVER_NAME = "busguard-journal"
log = logging.getLogger("busguard.alarms")

CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = 2, 3, 4, 5, 6, 7
PRIORITY_OF_SEVERITY = {"critical": CRIT, "major": ERR, "minor": WARNING, "warning": NOTICE,
                        "info": INFO}
PRIORITY_OF_LEVEL = ((logging.CRITICAL, CRIT), (logging.ERROR, ERR),
                     (logging.WARNING, WARNING), (logging.INFO, INFO))
# a logging level for each priority, so the edges also filter sensibly without a journal
LEVEL_OF_PRIORITY = {CRIT: logging.CRITICAL, ERR: logging.ERROR, WARNING: logging.WARNING,
                     NOTICE: logging.INFO, INFO: logging.INFO}


def priority_of(record: logging.LogRecord) -> int:
    """The record's syslog priority: its own ``syslog_priority`` or its level's."""
    given = getattr(record, "syslog_priority", None)
    if isinstance(given, int):
        return given
    for level, prio in PRIORITY_OF_LEVEL:
        if record.levelno >= level:
            return prio
    return DEBUG


class JournalFormatter(logging.Formatter):
    """``<N>`` + the line: journald's stream protocol for a line's priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{priority_of(record)}>{super().format(record)}"


def under_journal() -> bool:
    """True when stderr is the journal stream systemd gave this service (``JOURNAL_STREAM``
    names its device and inode: systemd.exec(5))."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def edge_line(edge: AlarmEdge) -> tuple[int, str]:
    """(priority, text) of an alarm edge for the journal."""
    c = edge.alarm.condition
    sev = c.severity.word
    prio = PRIORITY_OF_SEVERITY.get(sev, INFO) if edge.kind == "raised" else NOTICE
    return prio, (f"{sev} {edge.kind} code={c.code} device={c.device or edge.alarm.block}: "
                  f"{c.message}")


class JournalObserver:
    """One journal line per alarm edge (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _log(self, edge: AlarmEdge) -> None:
        prio, text = edge_line(edge)
        log.log(LEVEL_OF_PRIORITY[prio], "%s", text, extra={"syslog_priority": prio})

    @hookimpl
    def busguard_alarm_raised(self, runtime: Runtime, edge: AlarmEdge) -> None:
        self._log(edge)

    @hookimpl
    def busguard_alarm_cleared(self, runtime: Runtime, edge: AlarmEdge) -> None:
        self._log(edge)
