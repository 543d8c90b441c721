"""Per-point meter calibration: the ``{state_dir}/calibration.toml`` file and its arithmetic.

A meter point's engineering value is ``raw * ct_ratio * gain + offset``, where ``raw`` is the
decoded register times the profile's scale. ``ct_ratio``, ``gain`` and ``offset`` may come from
site.toml (the meter driver's options) and from the calibration file that
``busguard recalibrate`` writes; for each key the file wins. The file is never edited by hand in
normal operation, and never written into site.toml, so a config change cannot undo a
calibration and a calibration never rewrites the site engineer's file::

    # written by busguard recalibrate; one table per meter, one inline table per point
    [meter."pqm-a1"]
    current_l1_a = { gain = 1.002, offset = 0.0, updated_utc = "2026-11-25T10:45:00Z" }

Writes are atomic (temp file in the same folder, fsync, rename, fsync of the folder) and the
previous file is kept as ``calibration.toml.<UTC stamp>.bak``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from busguard.errors import ConfigError, ConfigProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.10 CI leg
    import tomli as tomllib

CAL_FILE = "calibration.toml"
KEYS = ("gain", "offset", "ct_ratio", "updated_utc")


@dataclass(frozen=True)
class Calibration:
    """How one point's raw reading becomes engineering units."""

    gain: float = 1.0
    offset: float = 0.0
    ct_ratio: float = 1.0
    updated_utc: str = ""

    def apply(self, raw: float) -> float:
        return raw * self.ct_ratio * self.gain + self.offset

    def raw_of(self, value: float) -> float:
        """The raw reading that produced ``value`` under this calibration."""
        return (value - self.offset) / (self.ct_ratio * self.gain)

    def merged(self, entry: Mapping[str, Any]) -> Calibration:
        """This calibration with the keys ``entry`` (a file entry) sets replacing ours."""
        return replace(self, **{k: entry[k] for k in ("gain", "offset", "ct_ratio",
                                                       "updated_utc") if k in entry})


CalibrationTable = dict[str, dict[str, dict[str, Any]]]  # meter -> point -> entry


def calibration_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / CAL_FILE


def load_calibration(path: str | Path) -> CalibrationTable:
    """Read and validate a calibration file; a missing file is an empty table.

    Raises :class:`ConfigError` (file: key: message) for a file that is not valid.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "(syntax)", f"not valid TOML: {exc}")]) from exc
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
            problems.extend(_check_entry(file, where, entry))
            table.setdefault(meter, {})[point] = dict(entry)
    if problems:
        raise ConfigError(problems)
    return table


def _check_entry(file: str, where: str, entry: Mapping[str, Any]) -> list[ConfigProblem]:
    out = []
    for k, v in entry.items():
        if k not in KEYS:
            out.append(ConfigProblem(file, f"{where}.{k}", f"unknown key; valid: "
                                                           f"{', '.join(KEYS)}"))
        elif k in ("gain", "ct_ratio", "offset"):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if ok and k in ("gain", "ct_ratio") and v <= 0:
                ok = False
            if not ok:
                need = "a finite number" if k == "offset" else "a number greater than 0"
                out.append(ConfigProblem(file, f"{where}.{k}", f"got {v!r}; expected {need}"))
        elif not isinstance(v, str):
            out.append(ConfigProblem(file, f"{where}.{k}", f"got {v!r}; expected a string"))
    return out


def effective(site_cal: Calibration, table: CalibrationTable, meter: str,
              point: str) -> Calibration:
    """The calibration in force for ``meter.point``: site.toml's, with the file's keys winning."""
    entry = table.get(meter, {}).get(point)
    return site_cal.merged(entry) if entry else site_cal


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


def utc_stamp(t: float | None = None, compact: bool = False) -> str:
    dt = datetime.fromtimestamp(t if t is not None else datetime.now(timezone.utc).timestamp(),
                                tz=timezone.utc)
    return dt.strftime("%Y%m%dT%H%M%SZ" if compact else "%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def backup(path: str | Path, t: float | None = None) -> Path | None:
    """Copy ``path`` to ``path.<UTC stamp>.bak`` (atomically); None when there is no file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    stamp = utc_stamp(t, compact=True)
    dest = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    atomic_write(dest, data, mode=path.stat().st_mode & 0o777)
    return dest


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

