"""``[history]``: records every mapped point once a second from the register map's snapshot.

A thread of its own (``busguard-history``) wakes on each UTC second, takes the map snapshot
(:func:`busguard.northbound.snapshot.map_snapshot`: what the DCIM reads, decoded at most once
per image) and hands one row to the :class:`~busguard.history.recorder.Recorder`. The scan never
waits on it: the scan only publishes its image, as it does for the Modbus server. A full disk
or a failed write is logged once per streak and the recording goes on.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.config.params import Param
from busguard.northbound import mapdef as md
from busguard.publisher import Publisher

if TYPE_CHECKING:
    from busguard.config.site import PublisherConfig, SiteConfig
    from busguard.history.recorder import Recorder
    from busguard.northbound.snapshot import MapSnapshot
    from busguard.runtime import Runtime

log = logging.getLogger("busguard.history")
QUALITY_CODES = {w: c for c, w in md.QUALITY_WORDS.items()}
NOT_CONNECTED = QUALITY_CODES["not-connected"]


def site_points(site: SiteConfig) -> list[str]:
    """Every point the map serves for the site's devices, ``device.point``, in slot order."""
    out = []
    for kind in md.MAPPED_KINDS:
        for d in site.devices_of(kind):
            out += [f"{d.name}.{q}" for q in md.STANDARD[kind]]
    return out


def seconds_default(site: SiteConfig) -> Path | None:
    """Where the 1 s ring goes without ``seconds_dir``: ``[service] run_dir``/history (the
    packaged site: /run/busguard, RAM), else systemd's RuntimeDirectory; None elsewhere (a
    workstation: beside the minutes ring)."""
    from busguard.service import service_options

    opt = service_options(site)["run_dir"]
    if opt:
        return site.resolve(opt) / "history"
    rd = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(rd) / "history" if rd else None


class HistoryPublisher(Publisher):
    """Feeds the on-box history (docs/history.md)."""

    section = "history"
    doc = "on-box history: 1 s samples for the last hour, 1 min min/avg/max for 30 days"
    params: ClassVar[Mapping[str, Param]] = {
        "enable": Param(bool, default=True, doc="record the history"),
        "seconds_dir": Param(str, default="", doc="folder of the 1 s ring, in RAM (it is "
                             "written every second); empty: $RUNTIME_DIRECTORY/history under "
                             "systemd, else {state_dir}/history"),
        "seconds_keep_s": Param(int, default=3600, minval=60, maxval=86400, unit="s",
                                doc="how far back the 1 s samples go"),
        "retention_days": Param(float, default=30.0, minval=1.0, maxval=400.0, unit="days",
                                doc="how far back the 1 min min/avg/max go (sizes the file)"),
        "batch_minutes": Param(int, default=10, minval=1, maxval=60, unit="min",
                               doc="minutes kept in RAM and written to flash together; a "
                                   "power cut loses at most this much of the minutes ring"),
    }

    def __init__(self, config: PublisherConfig, site: SiteConfig) -> None:
        super().__init__(config, site)
        p = config.params
        sec = self.reader()
        if int(p["batch_minutes"]) * 60 > int(p["seconds_keep_s"]):
            sec.problem("batch_minutes",
                        f"{p['batch_minutes']} minutes is longer than seconds_keep_s = "
                        f"{p['seconds_keep_s']}: a batch must fit in the 1 s ring so that one "
                        f"lost before reaching flash can be rebuilt; expected <= "
                        f"{int(p['seconds_keep_s']) // 60}")
        if p["enable"]:
            self.needs_map(sec, "records")
        sec.raise_problems()
        self.enabled = bool(p["enable"])
        self.seconds_dir = site.resolve(p["seconds_dir"]) if p["seconds_dir"] else \
            seconds_default(site)
        self.points = site_points(site)
        self.index = {name: i for i, name in enumerate(self.points)}
        self.recorder: Recorder | None = None
        self.snap: MapSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.errors = 0
        self._failing = ""

    def start(self, runtime: Runtime) -> None:
        if not self.enabled:
            return
        from busguard.history.recorder import Recorder
        from busguard.northbound.snapshot import map_snapshot

        self.snap = map_snapshot(runtime.publishers)
        p = self.config.params
        self.recorder = Recorder(self.site.state_dir, self.points,
                                 seconds_dir=self.seconds_dir,
                                 retention_days=float(p["retention_days"]),
                                 batch_min=int(p["batch_minutes"]),
                                 seconds_keep_s=int(p["seconds_keep_s"]), now=time.time())
        for note in self.recorder.notes:
            log.warning("history: %s", note)
        log.info("history: %d points, 1 s ring %s, 1 min ring %s%s", len(self.points),
                 self.recorder.seconds_path, self.recorder.minutes_path,
                 f" ({self.recorder.recovered} batches rebuilt from the 1 s ring)"
                 if self.recorder.recovered else "")
        self._thread = threading.Thread(target=self._run, name="busguard-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = ""
        while not self._stop.is_set():
            now = time.time()
            if self._stop.wait(math.floor(now) + 1.0 - now):
                break
            try:
                self.sample(int(time.time()))
                failing = ""
            except Exception as exc:  # the recorder never dies of one bad second
                self.errors += 1
                if str(exc) != failing:
                    failing = str(exc)
                    log.error("history: sample failed (%s: %s); recording goes on",
                              type(exc).__name__, exc)

    def sample(self, t: int) -> None:
        """Record the newest snapshot as second ``t``."""
        rec, snap = self.recorder, self.snap
        if rec is None or snap is None:
            return
        data = snap.latest()
        n = len(self.points)
        values = [math.nan] * n
        quals = [NOT_CONNECTED] * n
        index = self.index
        for dev in data.get("devices", ()):
            name = dev.get("name", "")
            for q, r in dev.get("points", {}).items():
                i = index.get(f"{name}.{q}")
                if i is None:
                    continue
                v = r.get("value")
                values[i] = math.nan if v is None else float(v)
                quals[i] = QUALITY_CODES.get(r.get("quality"), NOT_CONNECTED)
        try:
            rec.record(t, values, quals)
            self.samples += 1
            if self._failing:
                log.warning("history: writing again after: %s", self._failing)
                self._failing = ""
        except OSError as exc:
            self.errors += 1
            msg = f"{exc.filename or rec.minutes_path}: {exc.strerror}"
            if msg != self._failing:
                log.error("history: cannot write (%s); recording goes on in RAM", msg)
                self._failing = msg

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        rec, self.recorder = self.recorder, None
        if rec is not None:
            try:
                rec.close()
            except OSError as exc:
                log.error("history: last batch not written: %s", exc)
            log.info("history: %d samples this run; %d batches, %d bytes written to %s",
                     self.samples, rec.minutes.batches, rec.minutes.bytes_written,
                     rec.minutes_path)

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "points": len(self.points), "samples": self.samples,
                "errors": self.errors, "batches": self.recorder.minutes.batches
                if self.recorder else 0,
                "minutes_bytes_written": self.recorder.minutes.bytes_written
                if self.recorder else 0}
