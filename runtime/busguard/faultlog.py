"""The fault log: one greppable line per alarm raise, alarm clear and block/driver fault.

Path: ``[paths] fault_log`` of site.toml (packaged: /var/log/power/distribution_fault.log).
A line is::

    2026-01-01T00:00:05.100Z critical raised code=0xCF device=bb1 alarm=st:trip \
        msg="breaker-trip: cb1 shunt trip latched: Thermal-Critical (0xCF) ..." \
        values="{\"cause\":\"thermal-critical\",...}"

UTC ISO time, the severity word (``critical`` for trips and thermal critical, so
``grep -i critical`` isolates them), raised/cleared/fault, the stable code, the device, the
alarm id, the message and the values as compact JSON. After the time and the two words, the
line is logfmt: every ``key=value`` pair is a bare word or a double-quoted string with JSON
escapes, so logfmt parsers (Loki's ``| logfmt``, Vector's ``parse_logfmt``) read every field,
and ``values`` is a JSON document inside a quoted string (a bare ``values={...}`` with its
own quotes and spaces split into garbage fields). :func:`parse_line` reads a line back.
Never one line per scan: the alarm table makes edges, and this observer writes one line per
edge.

Rotation-safe: the file is opened in append mode (O_APPEND), so logrotate's ``copytruncate``
(what the package installs) works: the next line lands at the new end, no hole. After a rename
rotation, :func:`reopen` (or :meth:`FaultLog.reopen`) closes and reopens the path; a SIGHUP
reload of ``busguard run`` builds a new runtime, whose startup opens the path afresh anyway.
Call ``reopen`` from a normal thread, not from inside a signal handler (it takes a queue lock).
Lines are written by a background thread: the scan only queues a string.

:class:`FaultLogObserver` is a built-in observer: the "core" plugin (:mod:`busguard.builtin`)
registers it through ``registry.add_observer``, exactly as a third party would, and each runtime
gets its own instance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from busguard import hookimpl

if TYPE_CHECKING:
    from busguard.alarms import AlarmEdge
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.faultlog")

# Stable codes of the seed and what an operator greps for; blocks use these codes.
SEED_CODES = {
    "0x02": "Modbus exception 0x02, 0x80 (Illegal Data Address): the register does not exist "
            "in the meter firmware; check the vendor register map / meter profile",
    "errno 110": "Connection Timeout (Errno 110): packet-loss or a downstream network failure; "
                 "Modbus TCP: check the RJ45 jack on the PIU and the edge switch; RS-485: the "
                 "line's wiring, termination, baud rate, parity and unit id",
    "0xCF": "Thermal-Critical (0xCF): busbar temperature at or above 90 C; emergency state",
    "BG-TRIP-*": "breaker-trip causes (overcurrent, ground fault, LED trip, input loss)",
}


def iso(t: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z."""
    if not math.isfinite(t):
        t = 0.0
    whole = math.floor(t)
    ms = min(999, round((t - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def _field(value: str) -> str:
    """A logfmt value: bare when it is a plain word (printable ASCII without space, quote,
    ``=`` or backslash), else a quoted string with JSON escapes (what logfmt parsers undo)."""
    return value if _BARE.fullmatch(value) else json.dumps(value)


_BARE = re.compile(r'[!#-<>-\[\]-~]+')  # printable ASCII except space, '"', '=' and '\\'
_PAIR = re.compile(r' ([^ ="\\]+)=("(?:[^"\\]|\\.)*"|[^ ="\\]*)(?= |$)')
_HEAD = re.compile(r"(\S+) (\S+) (\S+)")


def _line(t_utc: float, severity: str, event: str, code: str, device: str, alarm: str,
          msg: str, values: Any, fmt: str) -> str:
    """One entry as the greppable text line, or (``fmt = "json"``) as one JSON object with
    the same fields, for log shippers that parse JSON (Loki, Vector, jq)."""
    if fmt == "json":
        return json.dumps({"time": iso(t_utc), "severity": severity, "event": event,
                           "code": code, "device": device, "alarm": alarm, "msg": msg,
                           "values": values}, separators=(",", ":"), default=str)
    vals = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return (f"{iso(t_utc)} {severity} {event} code={_field(code)} device={_field(device)} "
            f"alarm={_field(alarm)} msg={json.dumps(msg)} values={json.dumps(vals)}")


def parse_line(line: str) -> dict[str, Any] | None:
    """A text line back as the JSON format's object (``time``, ``severity``, ``event``,
    ``code``, ``device``, ``alarm``, ``msg``, ``values`` decoded); None when the line is not
    a fault-log line (a line of an older busguard with a bare ``values={...}`` included:
    its values come back as they were). A line of the ``json`` format reads as its object."""
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) and {"code", "msg"} <= obj.keys() else None
    head = _HEAD.match(line)
    if head is None:
        return None
    out: dict[str, Any] = dict(zip(("time", "severity", "event"), head.groups(), strict=True))
    pos = head.end()
    while pos < len(line):
        if line.startswith(" values={", pos):  # a line from before the values were quoted
            try:
                out["values"] = json.loads(line[pos + 8:])
            except ValueError:
                return None
            break
        m = _PAIR.match(line, pos)
        if m is None:
            return None
        key, raw = m.groups()
        try:
            out[key] = json.loads(raw) if raw.startswith('"') else raw
        except ValueError:
            return None
        pos = m.end()
    if isinstance(out.get("values"), str):
        try:
            out["values"] = json.loads(out["values"])
        except ValueError:
            return None
    return out if {"code", "msg"} <= out.keys() else None


def format_edge(edge: AlarmEdge, fmt: str = "text") -> str:
    """The one line for an alarm raise or clear."""
    a = edge.alarm
    c = a.condition
    # a clear quotes the condition that ended, marked as over: read alone, the bare raise
    # text ("input lost: ...") would say the opposite of what happened
    msg = c.message if edge.kind == "raised" else f"over: {c.message}"
    return _line(edge.t_utc, c.severity.word, edge.kind, c.code, c.device or a.block, a.id,
                 msg, dict(c.values), fmt)


def format_fault(t_utc: float, source: str, error: BaseException, details: dict[str, Any],
                 fmt: str = "text") -> str:
    """The one line for a block or driver fault (``busguard_fault``)."""
    return _line(t_utc, "major", "fault", "BG-FAULT", source, f"{source}:fault",
                 f"{type(error).__name__}: {error}", details, fmt)


def format_command(t_utc: float, point: str, value: float, client: str,
                   fmt: str = "text") -> str:
    """The one line for an accepted command write (``busguard_command_written``): the audit
    trail of acknowledgements and trip resets, with who wrote it and from where."""
    device = point.rsplit(".", 1)[0] if "." in point else point
    return _line(t_utc, "info", "command", "BG-CMD", device, point,
                 f"{point} = {value:g} written by {client}",
                 {"client": client, "point": point, "value": value}, fmt)


class FaultLog:
    """An append-only, rotation-safe line log with a background writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = 0
        self.errors = 0
        self._fh: IO[str] | None = None
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- API used by the hooks and the service ---------------------------------------------
    def write(self, line: str) -> None:
        """Queue one line (returns at once; the writer thread does the I/O)."""
        if self._closed:
            return
        self._ensure_thread()
        self._q.put(("line", line))

    def reopen(self) -> None:
        """Close and reopen the path (after logrotate renamed it; call on SIGHUP)."""
        if self._closed:
            return
        self._ensure_thread()
        self._q.put(("reopen", None))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued line is on disk (tests, shutdown). True if it was."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._q.put(("flush", done))
        return done.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._q.put(("close", None))
            self._thread.join(timeout=5)

    # -- the writer thread -------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name="busguard-faultlog", daemon=True)
                t.start()
                self._thread = t

    def _open(self) -> IO[str] | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # append mode: O_APPEND keeps lines at the end after a copytruncate
            return open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error("fault log %s cannot be opened: %s (lines dropped: %d)", self.path,
                          exc.strerror, self.errors)
            return None

    def _run(self) -> None:
        while True:
            kind, arg = self._q.get()
            if kind == "line":
                if self._fh is None:
                    self._fh = self._open()
                if self._fh is not None:
                    try:
                        self._fh.write(arg + "\n")
                        self._fh.flush()
                        self.lines += 1
                    except OSError as exc:
                        self.errors += 1
                        log.error("fault log %s write failed: %s", self.path, exc)
                        self._drop_fh()
            elif kind == "reopen":
                self._drop_fh()
                self._fh = self._open()
            elif kind == "flush":
                if self._fh is not None:
                    with contextlib.suppress(OSError):
                        os.fsync(self._fh.fileno())
                arg.set()
            elif kind == "close":
                self._drop_fh()
                return

    def _drop_fh(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


OBSERVER_NAME = "busguard-faultlog"


class FaultLogObserver:
    """The fault log of one runtime: an observer object the "core" plugin registers per
    runtime (``registry.add_observer``), holding its :class:`FaultLog`."""

    io_process: ClassVar[bool] = True  # also in the I/O process: the command audit lines

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.log = FaultLog(runtime.site.fault_log)
        self.fmt = runtime.site.fault_log_format

    @hookimpl
    def busguard_startup(self, runtime: Runtime) -> None:
        self.log.reopen()  # open now, so a permission problem shows at start, not at an alarm

    @hookimpl
    def busguard_alarm_raised(self, runtime: Runtime, edge: AlarmEdge) -> None:
        self.log.write(format_edge(edge, self.fmt))

    @hookimpl
    def busguard_alarm_cleared(self, runtime: Runtime, edge: AlarmEdge) -> None:
        self.log.write(format_edge(edge, self.fmt))

    @hookimpl
    def busguard_fault(self, runtime: Runtime, source: str, error: BaseException,
                       details: dict[str, Any]) -> None:
        self.log.write(format_fault(runtime.clock.wall(), source, error, details, self.fmt))

    @hookimpl
    def busguard_command_written(self, runtime: Runtime, point: str, value: float,
                                 client: str, t_utc: float) -> None:
        self.log.write(format_command(t_utc, point, value, client, self.fmt))

    @hookimpl
    def busguard_shutdown(self, runtime: Runtime) -> None:
        self.log.flush()
        self.log.close()


def get_fault_log(runtime: Runtime) -> FaultLog:
    """The runtime's fault log (its observer's; a :class:`LookupError` when the observer is
    not registered, e.g. blocked through ``[plugins] disabled``)."""
    obs = runtime.pm.get_plugin(OBSERVER_NAME)
    if not isinstance(obs, FaultLogObserver):
        raise LookupError(f"runtime of {runtime.site.file} has no fault log observer")
    return obs.log


def reopen(runtime: Runtime) -> None:
    """Reopen the runtime's fault log: what the service does on SIGHUP after logrotate."""
    obs = runtime.pm.get_plugin(OBSERVER_NAME)
    if isinstance(obs, FaultLogObserver):
        obs.log.reopen()
