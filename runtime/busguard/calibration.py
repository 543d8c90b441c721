"""Per-point meter calibration: the ``{state_dir}/calibration.toml`` file and its arithmetic,
for the meter drivers (live, reloaded when the file changes) and ``busguard recalibrate``.

A meter point's engineering value is ``raw * ct_ratio * gain + offset``, where ``raw`` is the
decoded register times the profile's scale and ``ct_ratio`` applies only to points the profile
marks ``ct`` (currents, powers, energies). Sources, later wins per point and per key: the
meter's ``ct_ratio`` option, its ``calibration = { point = { gain, offset, ct_ratio } }`` table
in site.toml, then the calibration file ``busguard recalibrate`` writes. The drivers re-read
the file when its modification time changes (checked at most once a second), so a
recalibration takes effect without a restart; a file that does not parse is logged and the
previous calibration stays in force. The file is never edited by hand in
normal operation, and never written into site.toml, so a config change cannot undo a
calibration and a calibration never rewrites the site engineer's file::

    # written by busguard recalibrate; one table per meter, one inline table per point
    [meter."pqm-a1"]
    current_l1_a = { gain = 1.002, offset = 0.0, updated_utc = "2026-11-25T10:45:00Z" }

Writes are atomic (:mod:`busguard.atomicfile`) and the previous file is kept as
``calibration.toml.<UTC stamp>.bak``.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from busguard.atomicfile import atomic_write, backup
from busguard.errors import ConfigError, ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

log = logging.getLogger("busguard.calibration")

CAL_FILE = "calibration.toml"
NUMBER_KEYS = ("gain", "offset", "ct_ratio")
KEYS = (*NUMBER_KEYS, "updated_utc")


@dataclass(frozen=True)
class Calibration:
    """How one point's raw reading becomes engineering units."""

    gain: float = 1.0
    offset: float = 0.0
    ct_ratio: float = 1.0
    updated_utc: str = ""

    def apply(self, raw: float, ct: bool = True) -> float:
        return raw * (self.ct_ratio if ct else 1.0) * self.gain + self.offset

    def merged(self, entry: Mapping[str, Any]) -> Calibration:
        """This calibration with the keys ``entry`` (site.toml's or the file's) sets replacing
        ours; a value that is not a finite number is left out (validation reports it)."""
        vals: dict[str, Any] = {k: float(entry[k]) for k in NUMBER_KEYS
                                if k in entry and _finite(entry[k])}
        if isinstance(entry.get("updated_utc"), str):
            vals["updated_utc"] = entry["updated_utc"]
        return replace(self, **vals)


def effective(base: Calibration, *entries: Mapping[str, Any] | None) -> Calibration:
    """``base`` with each entry merged in turn (later wins): site.toml's, then the file's."""
    cal = base
    for entry in entries:
        if isinstance(entry, Mapping):
            cal = cal.merged(entry)
    return cal


def meter_calibration(points: Iterable[str], meter_ct: float, site_cal: Mapping[str, Any],
                      file_cal: Mapping[str, Any]) -> dict[str, Calibration]:
    """The calibration of each point of a meter: its CT ratio, then site.toml, then the file."""
    base = Calibration(ct_ratio=meter_ct)
    return {name: effective(base, site_cal.get(name), file_cal.get(name)) for name in points}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_entry(entry: Mapping[str, Any], keys: tuple[str, ...] = KEYS
                ) -> list[tuple[str, str]]:
    """Problems (key, message) of one point's entry, in site.toml or the file."""
    out = []
    for k, v in entry.items():
        if k not in keys:
            out.append((k, f"unknown key {k!r}; valid: {', '.join(keys)}"))
        elif k in NUMBER_KEYS:
            if not _finite(v):
                out.append((k, f"got {v!r}; expected a finite number"))
            elif k != "offset" and v <= 0:
                out.append((k, f"got {v!r}; expected a number > 0"))
        elif not isinstance(v, str):
            out.append((k, f"got {v!r}; expected a string"))
    return out


def check_entries(entries: Mapping[str, Any], names: set[str]) -> list[tuple[str, str]]:
    """Problems (key, message) in a meter's ``calibration`` table of site.toml."""
    out = []
    for point, spec in entries.items():
        if point not in names:
            out.append((point, f"no point {point!r} in the meter's profile; known: "
                        f"{', '.join(sorted(names))}"))
        elif not isinstance(spec, Mapping):
            out.append((point, "expected a table like { gain = 1.0, offset = 0.0 }"))
        else:
            out += [(f"{point}.{k}", msg) for k, msg in check_entry(spec)]
    return out


CalibrationTable = dict[str, dict[str, dict[str, Any]]]  # meter -> point -> entry


def calibration_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / CAL_FILE


def load_calibration(path: str | Path) -> CalibrationTable:
    """Read and validate a calibration file; a missing file is an empty table.

    Raises :class:`ConfigError` (file: key: message) for a file that is not valid.
    """
    file = str(path)
    data = _read(path)
    problems: list[ConfigProblem] = []
    table: CalibrationTable = {}
    for key in data:
        if key != "meter":
            problems.append(ConfigProblem(file, key, "unknown table; the file holds [meter.NAME] "
                                                     "tables only"))
    meters = data.get("meter", {})
    if not isinstance(meters, dict):
        meters = {}
        problems.append(ConfigProblem(file, "meter", "expected tables [meter.NAME]"))
    for meter, points in meters.items():
        if not isinstance(points, dict):
            problems.append(ConfigProblem(file, f"meter.{meter}", "expected a table of points"))
            continue
        for point, entry in points.items():
            where = f"meter.{meter}.{point}"
            if not isinstance(entry, dict):
                problems.append(ConfigProblem(file, where, "expected an inline table "
                                                           "{ gain = ..., offset = ... }"))
                continue
            problems += [ConfigProblem(file, f"{where}.{k}", msg)
                         for k, msg in check_entry(entry)]
            table.setdefault(meter, {})[point] = dict(entry)
    if problems:
        raise ConfigError(problems)
    return table


def _read(path: str | Path) -> dict[str, Any]:
    """The file's TOML (empty when there is no file); a :class:`ConfigError` otherwise."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {exc}")]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(syntax)", f"not valid TOML: {exc}")]) from exc


class CalibrationFile:
    """The calibration file as the meter drivers see it: shared by all meters of a runtime,
    re-read when it changes; a file that cannot be read keeps the previous calibration."""

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
            try:
                data = _read(self.path) if mtime is not None else {}
            except ConfigError as exc:
                log.warning("calibration file %s not read (%s); previous calibration kept",
                            self.path, exc)
                return self.version
            if mtime is not None:
                log.info("calibration file %s loaded", self.path)
            meters = data.get("meter", {})
            self._data = meters if isinstance(meters, dict) else {}
            self.version += 1
            return self.version

    def for_meter(self, name: str) -> Mapping[str, Any]:
        with self._lock:
            entry = self._data.get(name, {})
            return entry if isinstance(entry, dict) else {}


def dumps(table: CalibrationTable) -> str:
    """The calibration file's text (a small TOML writer: tables of inline tables)."""
    lines = ["# busguard calibration file, written by `busguard recalibrate`.",
             "# Per meter point: engineering value = raw * ct_ratio * gain + offset;",
             "# keys here win over the meter's options in site.toml.", ""]
    for meter in sorted(table):
        lines.append(f"[meter.{_quoted(meter)}]")
        for point in sorted(table[meter]):
            parts = [f"{k} = {_value(v)}" for k, v in table[meter][point].items()]
            lines.append(f"{_key(point)} = {{ {', '.join(parts)} }}")
        lines.append("")
    return "\n".join(lines)


def _key(name: str) -> str:
    bare = name and all(c.isalnum() or c in "-_" for c in name) and name.isascii()
    return name if bare else _quoted(name)


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"calibration values must be finite, got {v!r}")
        return repr(v)
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def update_calibration(path: str | Path, meter: str, point: str, entry: Mapping[str, Any],
                       t: float | None = None) -> Path | None:
    """Set ``meter.point`` in the calibration file, keeping a backup of the previous file.

    Returns the backup's path (None when there was no file before).
    """
    table = load_calibration(path)
    table.setdefault(meter, {})[point] = dict(entry)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    saved = backup(path, t)
    atomic_write(path, dumps(table).encode("utf-8"))
    return saved

