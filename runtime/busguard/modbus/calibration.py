"""Calibration of meter points: CT ratio, gain and offset.

``value = decoded * ct_ratio * gain + offset`` where ``decoded`` is raw * profile scale and
``ct_ratio`` applies only to points the profile marks ``ct`` (currents, powers, energies).

Sources, later wins per point and per key:
1. site.toml, on the meter: ``ct_ratio = 40.0`` (all ct points) and
   ``calibration = { current_l1_a = { gain = 1.002, offset = 0.0, ct_ratio = 40.0 } }``;
2. ``{state_dir}/calibration.toml`` written by ``busguard recalibrate``::

       [meter."pqm-a1"]
       current_l1_a = { gain = 1.002, offset = 0.0, updated_utc = "2026-01-01T00:00:00Z" }

The file is re-read when its modification time changes (checked at most once a second), so a
recalibration takes effect without a restart. A file that does not parse is logged once and
the previous calibration stays in force.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("busguard.modbus")

KEYS = ("gain", "offset", "ct_ratio")
FILE_NAME = "calibration.toml"


@dataclass(frozen=True)
class Cal:
    ct_ratio: float = 1.0
    gain: float = 1.0
    offset: float = 0.0

    def apply(self, value: float, ct: bool) -> float:
        return (value * (self.ct_ratio if ct else 1.0)) * self.gain + self.offset


IDENTITY = Cal()


def check_entries(entries: Mapping[str, Any], names: set[str]) -> list[tuple[str, str]]:
    """Problems (key, message) in a ``calibration`` table of site.toml."""
    out = []
    for point, spec in entries.items():
        if point not in names:
            out.append((point, f"no point {point!r} in the meter's profile; known: "
                        f"{', '.join(sorted(names))}"))
            continue
        if not isinstance(spec, dict):
            out.append((point, "expected a table like { gain = 1.0, offset = 0.0 }"))
            continue
        for k, v in spec.items():
            if k == "updated_utc":
                continue
            if k not in KEYS:
                out.append((f"{point}.{k}", f"unknown key {k!r}; valid: {', '.join(KEYS)}"))
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                out.append((f"{point}.{k}", f"got {v!r}; expected a finite number"))
            elif k != "offset" and v <= 0:
                out.append((f"{point}.{k}", f"got {v!r}; expected a number > 0"))
    return out


def _merge(base: Cal, spec: Mapping[str, Any]) -> Cal:
    vals = {"ct_ratio": base.ct_ratio, "gain": base.gain, "offset": base.offset}
    for k in KEYS:
        v = spec.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            vals[k] = float(v)
    return Cal(**vals)


class CalibrationFile:
    """``{state_dir}/calibration.toml``, shared by all meters, reloaded on mtime change."""

    CHECK_EVERY_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = 0
        self._data: dict[str, Any] = {}
        self._mtime: float | None = None
        self._checked = -math.inf
        self._lock = threading.Lock()
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> int:
        """Re-read the file if it changed; returns a version that changes with the content."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked < self.CHECK_EVERY_S:
                return self.version
            self._checked = now
            try:
                mtime: float | None = self.path.stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime == self._mtime:
                return self.version
            self._mtime = mtime
            if mtime is None:
                data: dict[str, Any] = {}
            else:
                try:
                    data = tomllib.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                    log.warning("calibration file %s not read (%s); previous calibration kept",
                                self.path, exc)
                    return self.version
                log.info("calibration file %s loaded", self.path)
            meters = data.get("meter", {})
            self._data = meters if isinstance(meters, dict) else {}
            self.version += 1
            return self.version

    def for_meter(self, name: str) -> Mapping[str, Any]:
        with self._lock:
            entry = self._data.get(name, {})
            return entry if isinstance(entry, dict) else {}


def effective(points: list[tuple[str, bool]], meter_ct: float,
              site_cal: Mapping[str, Any], file_cal: Mapping[str, Any]) -> dict[str, Cal]:
    """The calibration of each point: meter CT ratio, then site.toml, then the file."""
    base = Cal(ct_ratio=meter_ct)
    out: dict[str, Cal] = {}
    for name, _ct in points:
        cal = base
        if isinstance(site_cal.get(name), dict):
            cal = _merge(cal, site_cal[name])
        if isinstance(file_cal.get(name), dict):
            cal = _merge(cal, file_cal[name])
        out[name] = cal
    return out
