"""Stable slots: every record of the register map keeps its index for good (``map.lock``).

A DCIM keeps a fixed register table. So a device's address must not follow its position in
site.toml: each meter, probe and breaker has a *slot* (its index inside its kind's area,
address = area base + slot x stride), and each output, block alarm record, command and extra
point an index inside its area. A slot comes from site.toml (``slot = N``) or is assigned
once, to the lowest index nobody holds, and recorded in ``{state_dir}/map.lock``; from then
on it never changes when other devices are added, removed or reordered.

Removed records stay in the lock (retired): re-adding a device gives it its old slot, and a
retired slot is handed to a newcomer only when its area has no never-used index left. Only an
explicit ``slot = N`` that takes an index the lock gives another record can move a point: the
map diff (:func:`diff`) shows it, and ``busguard check`` / ``busguard apply`` refuse it unless
``--accept-map-change``.

The assignment is a pure function of the site and the lock, and assigning again from its own
result changes nothing (the scan process and the I/O process compute the same one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.atomicfile import atomic_write
from busguard.errors import BusguardError

log = logging.getLogger("busguard.northbound")

LOCK_NAME = "map.lock"
LOCK_FORMAT = 1
# the areas whose records the lock indexes: device kinds (slots), then the list areas
DEVICE_AREAS = ("meter", "probe", "breaker")
LIST_AREAS = ("output", "alarm", "command", "extra")
LOCKED_AREAS = DEVICE_AREAS + LIST_AREAS


class MapLockError(BusguardError):
    """map.lock cannot be read as a lock, or the site does not fit the map's capacity."""


@dataclass(frozen=True)
class Assignment:
    """Name -> index per area (the map's layout), and what the lock holds beside it."""

    slots: Mapping[str, Mapping[str, int]]
    lock: Mapping[str, Mapping[str, int]]  # the lock as it must be written (current + retired)
    moved: tuple[tuple[str, str, int, int], ...] = ()  # (area, name, old, new)
    added: tuple[tuple[str, str, int], ...] = ()  # (area, name, index): not in the lock
    retired: tuple[tuple[str, str, int], ...] = ()  # in the lock, not in the site
    reused: tuple[tuple[str, str, str, int], ...] = ()  # (area, new name, retired name, index)
    changed: bool = False  # the lock file must be (re)written

    def of(self, area: str, name: str) -> int:
        return self.slots[area][name]


@dataclass
class Wanted:
    """What a site asks for, per area: names in site order and the explicit slots."""

    names: dict[str, list[str]] = field(default_factory=dict)
    explicit: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, area: str, name: str, slot: int | None = None) -> None:
        self.names.setdefault(area, []).append(name)
        if slot is not None:
            self.explicit.setdefault(area, {})[name] = slot


def lock_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / LOCK_NAME


def read_lock(path: str | Path) -> dict[str, dict[str, int]]:
    """The lock's name -> index tables; empty when there is no file. A file that is not a
    lock is a :class:`MapLockError` naming it (never silently re-assigned: that would move
    every point a DCIM reads)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no state folder: no lock either
        return {}
    except OSError as exc:
        raise MapLockError(f"{path}: cannot read the map lock: {exc.strerror}") from exc
    fix = ("; fix it, or move it aside to assign every slot again from site order (that "
           "can move points a DCIM reads: compare with `busguard map --diff OLD.json`)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MapLockError(f"{path}: corrupt map lock (not JSON: {exc})" + fix) from None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT or \
            not isinstance(data.get("slots"), dict):
        raise MapLockError(f"{path}: corrupt map lock (expected {{\"format\": {LOCK_FORMAT}, "
                           f"\"slots\": {{...}}}})" + fix)
    out: dict[str, dict[str, int]] = {}
    for area, table in data["slots"].items():
        if area not in LOCKED_AREAS or not isinstance(table, dict):
            raise MapLockError(f"{path}: corrupt map lock (area {area!r}; valid: "
                               f"{', '.join(LOCKED_AREAS)})" + fix)
        seen: dict[int, str] = {}
        for name, idx in table.items():
            if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
                raise MapLockError(f"{path}: corrupt map lock ({area} {name!r}: {idx!r} is "
                                   f"not a slot number)" + fix)
            if idx in seen:
                raise MapLockError(f"{path}: corrupt map lock ({area} slot {idx} held by "
                                   f"both {seen[idx]!r} and {name!r})" + fix)
            seen[idx] = name
        out[area] = dict(table)
    return out


def write_lock(path: str | Path, lock: Mapping[str, Mapping[str, int]]) -> None:
    """Write the lock atomically (busguard.atomicfile), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": LOCK_FORMAT, "note": "busguard register map slots: which index each "
            "device and record holds for good (docs/northbound.md, 'Stable slots'); "
            "records no longer in the site stay here (retired)",
            "slots": {a: dict(sorted(lock[a].items(), key=lambda kv: kv[1]))
                      for a in LOCKED_AREAS if lock.get(a)}}
    atomic_write(path, (json.dumps(body, indent=1) + "\n").encode("utf-8"))


def assign(wanted: Wanted, lock: Mapping[str, Mapping[str, int]],
           capacity: Mapping[str, int]) -> Assignment:
    """Each wanted name's index per area: explicit, else the lock's, else the lowest index
    nobody holds (a retired one only when no never-used index is left)."""
    slots: dict[str, dict[str, int]] = {}
    new_lock: dict[str, dict[str, int]] = {}
    moved, added, retired, reused = [], [], [], []
    for area in LOCKED_AREAS:
        names = wanted.names.get(area, [])
        explicit = wanted.explicit.get(area, {})
        old = dict(lock.get(area, {}))
        cap = capacity[area]
        got: dict[str, int] = dict(explicit)
        taken = set(explicit.values())
        pending = []
        for n in names:
            if n in got:
                continue
            if n in old and old[n] not in taken and old[n] < cap:
                got[n] = old[n]
                taken.add(old[n])
            else:
                pending.append(n)
        held = {i for n, i in old.items() if n not in got}  # retired (or displaced) holders
        free = (i for i in range(cap) if i not in taken and i not in held)
        for n in pending:
            i = next(free, None)
            if i is None:  # every index used once: the lowest retired one
                spare = sorted(i for n2, i in old.items() if i not in taken and n2 not in got)
                if not spare:
                    raise MapLockError(f"the register map holds at most {cap} {area} "
                                       f"record(s): {len(names)} wanted")
                i = spare[0]
                reused.append((area, n, next(n2 for n2, j in old.items() if j == i), i))
            got[n] = i
            taken.add(i)
        for n, i in got.items():
            if n in old and old[n] != i:
                moved.append((area, n, old[n], i))
            elif n not in old:
                added.append((area, n, i))
        keep = {n: i for n, i in old.items() if n not in got and i not in taken}
        retired += [(area, n, i) for n, i in keep.items()]
        slots[area] = {n: got[n] for n in names}
        new_lock[area] = {**keep, **got}
    changed = any(new_lock.get(a, {}) != dict(lock.get(a, {})) for a in LOCKED_AREAS)
    return Assignment(slots, new_lock, tuple(moved), tuple(added), tuple(retired),
                      tuple(reused), changed)


def describe(a: Assignment, addresses: Mapping[str, tuple[int, int]] | None = None
             ) -> list[str]:
    """One line per change against the lock (``addresses``: area -> (base, stride))."""

    def at(area: str, i: int) -> str:
        if addresses is None or area not in addresses:
            return f"index {i}"
        base, stride = addresses[area]
        return f"slot {i} (address {base + i * stride})"

    lines = [f"MOVED {area} {name}: {at(area, old)} -> {at(area, new)}"
             for area, name, old, new in a.moved]
    lines += [f"added {area} {name}: {at(area, i)}" for area, name, i in a.added
              if not any(r[1] == name and r[0] == area for r in a.reused)]
    lines += [f"added {area} {name}: {at(area, i)}, reusing the address of retired "
              f"{old}" for area, name, old, i in a.reused]
    if a.retired:
        names = ", ".join(f"{area} {name}" for area, name, _i in a.retired[:10])
        more = f" and {len(a.retired) - 10} more" if len(a.retired) > 10 else ""
        lines.append(f"{len(a.retired)} record(s) in map.lock but not in the site keep their "
                     f"slots (retired): {names}{more}")
    return lines


def summary_json(a: Assignment) -> dict[str, Any]:
    return {"moved": [{"area": ar, "name": n, "from": o, "to": t} for ar, n, o, t in a.moved],
            "added": [{"area": ar, "name": n, "slot": i} for ar, n, i in a.added],
            "retired": [{"area": ar, "name": n, "slot": i} for ar, n, i in a.retired]}


def diff_fields(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
                ) -> dict[str, list[str]]:
    """Point-level diff of two ``busguard map --format json`` field lists (the name table
    left out: its entries follow the records and are found through the directory)."""
    def table(fields: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int, str]]:
        return {str(f["name"]): (int(f["address"]), int(f["words"]), str(f["type"]))
                for f in fields if f.get("area") != "name"}

    a, b = table(old), table(new)
    moved = [f"MOVED {n}: {a[n][0]} -> {b[n][0]}" + (
        f" ({a[n][2]} -> {b[n][2]})" if a[n][1:] != b[n][1:] else "")
        for n in sorted(a.keys() & b.keys(), key=lambda n: a[n][0]) if a[n] != b[n]]
    added = [f"added {n} at {b[n][0]}" for n in sorted(b.keys() - a.keys(),
                                                      key=lambda n: b[n][0])]
    removed = [f"removed {n} (was at {a[n][0]})" for n in sorted(a.keys() - b.keys(),
                                                               key=lambda n: a[n][0])]
    return {"moved": moved, "added": added, "removed": removed}
