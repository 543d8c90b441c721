"""Retained state: what must survive a restart, saved atomically, restored before the first scan.

A built-in observer plugin. ``busguard_startup`` (before publishers and drivers start) loads
``{state_dir}/retained.json`` and restores:

- last known values with their UTC stamps, into the image as *stale* (``ProcessImage.restore``)
  so the DCIM sees them at once, marked as not current, until drivers read fresh ones;
- command points (counters and settings the DCIM wrote) as good values: the restored value is
  the baseline, so a restart never replays an old command and the DCIM's next change fires;
- each block's ``state()`` (latched trips) through ``Block.restore``, matched by name and type;
- the alarm table (active, latched-waiting-for-ack, acknowledged flags) and the counters.

It then saves on every alarm edge or block-state change (a latch set or reset; at once, or
within 100 ms when changes come in a burst) and at least every ``[retained] interval_s``,
always from a background thread (the scan only hands over references), and once more in
``busguard_shutdown``. A save is a temp file, fsync, rename and
directory fsync, so a crash (even kill -9 in the middle) leaves the old file or the new one.

The file carries a SHA-256 of its body: a corrupt or truncated file is reported (log line
``BG-RETAINED-CORRUPT`` and a latched warning alarm), renamed ``.corrupt-<utc>`` and the
runtime starts cold; it never crashes the service.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from busguard import hookimpl
from busguard.alarms import AlarmCondition, AlarmState, Severity
from busguard.block import Block
from busguard.config.params import Param
from busguard.image import Quality, Snapshot
from busguard.service import follow_scan_priority

if TYPE_CHECKING:
    from busguard.runtime import Runtime
    from busguard.scan import CycleResult

log = logging.getLogger("busguard.retained")

PLUGIN_NAME = "busguard-retained"
FORMAT = "busguard-retained/1"
SECTION = "retained"
PARAMS: Mapping[str, Param] = {
    "enabled": Param(bool, default=True, doc="save and restore retained state"),
    "file": Param(str, default="retained.json", doc="file name, relative to [paths] state_dir"),
    "interval_s": Param(float, default=5.0, minval=0.05, maxval=3600.0, unit="s",
                        doc="longest time between two saves while running"),
}
ALARM_BLOCK = "retained-state"
MIN_GAP_S = 0.1  # shortest time between two saves caused by changes
CHUNK_ITEMS = 128  # list items per json.dumps call in json_pieces (~0.2 ms of locked work)


class CorruptState(Exception):
    """The state file exists but cannot be trusted (checksum, truncation, format)."""


# -- the file -----------------------------------------------------------------------------------
def json_pieces(obj: Any) -> Iterator[str]:
    """The text ``json.dumps(obj, separators=(",", ":"), sort_keys=True)`` writes, in pieces.

    Why: the state is written beside the scan, and one ``json.dumps`` call holds the
    interpreter lock from start to end (3-9 ms for the 64-meter bench site), which the scan
    thread then waits for. Here objects with string keys are walked and lists longer than
    ``CHUNK_ITEMS`` are encoded a slice per call, so the lock changes hands between pieces."""
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        yield "{"
        for n, key in enumerate(sorted(obj)):
            yield ("," if n else "") + json.dumps(key) + ":"
            yield from json_pieces(obj[key])
        yield "}"
    elif isinstance(obj, (list, tuple)) and len(obj) > CHUNK_ITEMS:
        yield "["
        for i in range(0, len(obj), CHUNK_ITEMS):
            part = json.dumps(obj[i:i + CHUNK_ITEMS], separators=(",", ":"), sort_keys=True)
            yield ("," if i else "") + part[1:-1]
        yield "]"
    else:
        yield json.dumps(obj, separators=(",", ":"), sort_keys=True)


def encode_state(body: Mapping[str, Any]) -> bytes:
    """Header line (format, length, sha256 of the body) then the JSON body."""
    raw = "".join(json_pieces(body)).encode("utf-8")
    head = json.dumps({"format": FORMAT, "length": len(raw),
                       "sha256": hashlib.sha256(raw).hexdigest()}, sort_keys=True)
    return head.encode("ascii") + b"\n" + raw


def decode_state(data: bytes) -> dict[str, Any]:
    head, sep, raw = data.partition(b"\n")
    if not sep:
        raise CorruptState("no header line (truncated?)")
    try:
        h = json.loads(head)
    except ValueError as exc:
        raise CorruptState(f"unreadable header: {exc}") from exc
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise CorruptState(f"not a {FORMAT} file")
    if h.get("length") != len(raw):
        raise CorruptState(f"body is {len(raw)} bytes, header says {h.get('length')} "
                           f"(truncated?)")
    if hashlib.sha256(raw).hexdigest() != h.get("sha256"):
        raise CorruptState("checksum mismatch")
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise CorruptState("body is not an object")
    return body


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_state(path: Path) -> dict[str, Any] | None:
    """The body, or None when there is no file. Raises CorruptState."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_state(data)


def set_aside(path: Path, now_utc: float) -> Path:
    stamp = datetime.fromtimestamp(now_utc, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, dest)
    return dest


# -- the observer -------------------------------------------------------------------------------
@dataclass
class _Job:
    snapshot: Snapshot
    t_utc: float
    cycle: int
    states: dict[str, Any]
    alarms: list[dict[str, Any]]


def _stateful(block: Block) -> bool:
    return type(block).state is not Block.state


def block_states(blocks: list[Block], failed: set[str]) -> dict[str, Any]:
    """``state()`` of every block that has one; a block whose state() raises is left out
    (logged once), never the whole save."""
    out = {}
    for b in blocks:
        if not _stateful(b):
            continue
        try:
            out[b.name] = b.state()
        except Exception:
            if b.name not in failed:
                failed.add(b.name)
                log.exception("block %s: state() failed; its state is not retained", b.name)
    return out


class RetainedState:
    """Per-runtime observer (registered into that runtime's plugin manager at startup)."""

    def __init__(self, runtime: Runtime) -> None:
        cfg = runtime.site.sections.get(SECTION) or {}
        self.runtime = runtime
        self.enabled = bool(cfg.get("enabled", True))
        self.interval_s = float(cfg.get("interval_s", 5.0))
        self.path = runtime.site.state_dir / str(cfg.get("file", "retained.json"))
        self.status = "disabled" if not self.enabled else "none"
        self.starts = 1
        self.saves = 0
        self.queued = 0
        self.save_errors = 0
        self.set_aside_as: Path | None = None
        self._cycles_before = 0
        self._last_states: dict[str, Any] = {}
        self._dirty = False
        self._state_failed: set[str] = set()
        self._last_save = -math.inf
        self._pending: _Job | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- startup ---------------------------------------------------------------------------
    def restore(self) -> None:
        rt = self.runtime
        if self.enabled:
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                with contextlib.suppress(OSError):  # left by a crash in the middle of a save
                    stale.unlink()
            try:
                body = read_state(self.path)
            except (CorruptState, ValueError, OSError) as exc:
                self._corrupt(str(exc))
                body = None
            if body is not None:
                try:
                    self._apply(body)
                    self.status = "loaded"
                    rt.restored = True
                except Exception as exc:  # a well-formed file we cannot apply: set aside
                    log.exception("retained state %s could not be applied", self.path)
                    self._corrupt(f"could not be applied: {type(exc).__name__}: {exc}")
        self._last_states = block_states(rt.blocks, self._state_failed)

    def _corrupt(self, why: str) -> None:
        rt = self.runtime
        self.status = "corrupt"
        try:
            self.set_aside_as = set_aside(self.path, rt.clock.wall())
        except OSError as exc:
            log.error("BG-RETAINED-CORRUPT could not set %s aside: %s", self.path, exc)
        log.error("BG-RETAINED-CORRUPT retained state file %s is corrupt (%s); set aside as %s; "
                  "starting without retained state", self.path, why,
                  self.set_aside_as.name if self.set_aside_as else "(not moved)")
        cond = AlarmCondition("corrupt", Severity.WARNING, "BG-RETAINED-CORRUPT",
                              f"retained state file was corrupt ({why}); set aside as "
                              f"{self.set_aside_as.name if self.set_aside_as else '?'}; "
                              f"latched trips and last values were not restored",
                              device="", latch=True)
        t = rt.clock.wall()
        edges = rt.alarms.update(ALARM_BLOCK, [cond], t)
        rt.alarms.update(ALARM_BLOCK, [], t)  # latched: stays until acknowledged
        for edge in edges:
            with contextlib.suppress(Exception):
                rt.pm.hook.busguard_alarm_raised(runtime=rt, edge=edge)

    def _apply(self, body: Mapping[str, Any]) -> None:
        rt = self.runtime
        image = rt.image
        pts = body.get("points") or {}
        names, values = pts.get("names") or [], pts.get("values") or []
        stamps = pts.get("t_utc") or []
        restored = 0
        for name, v, tu in zip(names, values, stamps, strict=False):
            i = image.index.get(name)
            if i is None or v is None or not image.specs[i].retained:
                continue
            if image.specs[i].command:
                image.write(name, float(v), Quality.GOOD, t_utc=float(tu))
            else:
                image.restore(name, float(v), float(tu))
            restored += 1
        by_name = {b.name: b for b in rt.blocks}
        for name, entry in (body.get("blocks") or {}).items():
            b = by_name.get(name)
            if b is None or entry.get("type") != b.type_name:
                log.warning("retained state for block %s (%s) not restored: no such block of "
                            "that type in the site now", name, entry.get("type"))
                continue
            b.restore(entry.get("state") or {})
        known = set(by_name) | {ALARM_BLOCK}
        for a in body.get("alarms") or []:
            if a.get("block") not in known:
                continue
            cond = AlarmCondition(a["key"], Severity[str(a["severity"]).upper()], a["code"],
                                  a["message"], a.get("device", ""), dict(a.get("values") or {}),
                                  bool(a.get("latch")))
            st = AlarmState(a["id"], a["block"], cond, float(a["raised_utc"]),
                            bool(a.get("active", True)), bool(a.get("acked", False)))
            rt.alarms.adopt(st)
        counters = body.get("counters") or {}
        self.starts = int(counters.get("starts", 0)) + 1
        self._cycles_before = int(counters.get("cycles_total", 0))
        age = rt.clock.wall() - float(body.get("saved_utc", 0.0))
        log.info("retained state restored from %s (saved %.1f s ago): %d values (stale until "
                 "read), %d block states, %d alarms", self.path, age, restored,
                 len(body.get("blocks") or {}), len(body.get("alarms") or []))

    # -- saving ----------------------------------------------------------------------------
    def start_writer(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="busguard-retained",
                                            daemon=True)
            self._thread.start()

    def _job(self, snap: Snapshot, t_utc: float, cycle: int,
             states: dict[str, Any] | None = None) -> _Job:
        rt = self.runtime
        if states is None:
            states = block_states(rt.blocks, self._state_failed)
        return _Job(snap, t_utc, cycle, states, [a.as_dict() for a in rt.alarms.active()])

    def body(self, job: _Job) -> dict[str, Any]:
        rt = self.runtime
        snap = job.snapshot
        names, values, quality, stamps = [], [], [], []
        for i, spec in enumerate(snap.specs):
            v = snap.values[i]
            if not spec.retained or math.isnan(v) or math.isinf(v):
                continue
            names.append(spec.name)
            values.append(v)
            quality.append(int(snap.quality[i]))
            stamps.append(snap.t_utc[i])
        types = {b.name: b.type_name for b in rt.blocks}
        return {
            "saved_utc": job.t_utc, "site": rt.site.name, "config_hash": rt.site.config_hash,
            "cycle": job.cycle,
            "points": {"names": names, "values": values, "quality": quality, "t_utc": stamps},
            "blocks": {n: {"type": types.get(n, ""), "state": _jsonable(s)}
                       for n, s in job.states.items()},
            "alarms": [_jsonable(a) for a in job.alarms],
            "counters": {"starts": self.starts, "cycles_total": self._cycles_before + job.cycle},
        }

    def save(self, job: _Job) -> bool:
        try:
            write_atomic(self.path, encode_state(self.body(job)))
        except Exception as exc:
            self.save_errors += 1
            if self.status != "error":
                log.error("BG-RETAINED-SAVE could not save retained state to %s: %s",
                          self.path, exc)
            self.status = "error"
            return False
        if self.status in ("error", "none", "corrupt"):
            self.status = "loaded" if self.status == "error" else self.status
        self.saves += 1
        return True

    def _writer(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                job, self._pending = self._pending, None
            if job is not None:
                follow_scan_priority(self.runtime.loop.thread_id)  # busguard.service: why
                self.save(job)
            if self._stopping:
                return

    def _queue(self, job: _Job) -> None:
        self.queued += 1
        with self._lock:
            self._pending = job  # the newest wins: a slow disk never builds a backlog
        self._wake.set()

    # -- hooks -----------------------------------------------------------------------------
    @hookimpl
    def busguard_scan_complete(self, runtime: Runtime, result: CycleResult) -> None:
        if not self.enabled or runtime is not self.runtime:
            return
        states = block_states(runtime.blocks, self._state_failed)
        if result.edges or states != self._last_states:
            self._dirty = True
        self._last_states = states
        since = result.now - self._last_save
        # a change is saved at once, or, in a burst of changes (a block whose state moves
        # every scan), at most every MIN_GAP_S: bounded disk writes, never a missed change
        if (self._dirty and since >= MIN_GAP_S) or since >= self.interval_s:
            self._dirty = False
            self._last_save = result.now
            self._queue(self._job(result.snapshot, result.t_utc, result.cycle, states))

    @hookimpl
    def busguard_shutdown(self, runtime: Runtime) -> None:
        if runtime is not self.runtime:
            return
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if not self.enabled:
            return
        last = runtime.last_result
        snap = last.snapshot if last is not None else runtime.image.snapshot()
        cycle = last.cycle if last is not None else 0
        if self.save(self._job(snap, runtime.clock.wall(), cycle)):
            log.info("retained state saved to %s (%d saves this run)", self.path, self.saves)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


# -- the plugin hooks (registered by busguard.builtin) -----------------------------------------
@hookimpl(specname="busguard_startup")
def retained_startup(runtime: Runtime) -> None:
    """Restore retained state before publishers and drivers start."""
    if runtime.pm.is_blocked(PLUGIN_NAME) or runtime.pm.get_plugin(PLUGIN_NAME) is not None:
        return
    store = RetainedState(runtime)
    t0 = time.perf_counter()
    store.restore()
    log.debug("retained restore took %.1f ms", (time.perf_counter() - t0) * 1e3)
    runtime.pm.register(store, name=PLUGIN_NAME)
    store.start_writer()
