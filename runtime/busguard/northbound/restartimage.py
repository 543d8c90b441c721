"""The restart image: the register image a restarted runtime serves first, saved with the
retained state so the next ``busguard run`` can serve it before it has built anything.

Why: a restart used to be silent for as long as the runtime took to load pymodbus and the
plugins, build the site and start the I/O process (0.5-0.8 s on a small machine), and a DCIM
polling every second saw a gap on every restart. The image in this file is exactly what the
restarted map would show before its first scan: every retained value with its last stamp,
marked stale and RESTORED, command values, the alarm table and event ring, latched trips and
their causes, outputs at their fail-safe values (not yet computed), header ``retained_status``
0 (loaded) and ``runtime_state`` 0 (built). :mod:`busguard.northbound.earlyserve` serves it.

It is written by the ``[modbus_server]`` publisher each time the retained state is saved
(:attr:`busguard.retained.RetainedState.on_saved`), beside the retained file in
``[paths] state_dir``, with the retained generation it shows. The early server serves it
only when that generation is still the newest valid one of the retained slots and the site
file (with its drop-ins) hashes as when it was written; anything else (no file, a damaged
one, another site, an older generation) means no early server and a start as before.

Format (``busguard-restart-image/1``): one JSON header line (format, config hash,
generation, what to listen on and whom to admit, the unit ids' views, the length and SHA-256
of the body) then the register image compressed with zlib, then zero padding to whole 4 KiB
blocks (it is overwritten in place: :func:`write`). This module imports only the standard
library at the top: the early server reads it before anything else is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from busguard.statefile import BLOCK, CorruptState, decode_header, slot_paths

if TYPE_CHECKING:
    from busguard.image import PointSpec, Snapshot
    from busguard.northbound.encode import Frame

FORMAT = "busguard-restart-image/1"
FILE_NAME = "restart-image.bin"
MAX_BYTES = 4 << 20  # a 1024-device map compresses to well under this


class BadImage(Exception):
    """The restart image cannot be used (damaged, another format, another site)."""


@dataclass(frozen=True)
class RestartImage:
    config_hash: str
    generation: int  # the retained generation this image shows
    retained: str  # the retained state file (its two slots: busguard.statefile)
    saved_utc: float
    image: bytes
    listen: tuple[tuple[str, int], ...] = ()  # plain Modbus/TCP endpoints (host, port)
    allow: tuple[str, ...] = ()  # CIDRs admitted (empty: loopback only)
    max_connections: int = 16
    site_units: tuple[int, ...] = (1, 0, 255)
    views: Mapping[int, tuple[int, int]] = field(default_factory=dict)  # unit: (base, words)

    def view(self, unit: int) -> tuple[int, int | None] | None:
        """As :meth:`busguard.northbound.units.UnitTable.view`."""
        if unit in self.site_units:
            return 0, None
        v = self.views.get(unit)
        return None if v is None else (v[0], v[1])


def path_in(state_dir: str | Path) -> Path:
    return Path(state_dir) / FILE_NAME


def encode(ri: RestartImage) -> bytes:
    body = zlib.compress(ri.image, 6)
    head = {"format": FORMAT, "config_hash": ri.config_hash, "generation": ri.generation,
            "retained": ri.retained, "saved_utc": ri.saved_utc,
            "listen": [list(x) for x in ri.listen], "allow": list(ri.allow),
            "max_connections": ri.max_connections, "site_units": list(ri.site_units),
            "views": {str(u): list(v) for u, v in ri.views.items()},
            "registers": len(ri.image) // 2, "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest()}
    return json.dumps(head, sort_keys=True).encode("ascii") + b"\n" + body


def decode(data: bytes) -> RestartImage:
    """The image in ``data``; :class:`BadImage` saying why when it cannot be trusted."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise BadImage("no header line (truncated?)")
    try:
        h = json.loads(head)
        if not isinstance(h, dict) or h.get("format") != FORMAT:
            raise BadImage(f"not a {FORMAT} file")
        length = int(h["length"])
        if len(body) < length or any(body[length:]):  # then only the zero padding
            raise BadImage("length mismatch (truncated or damaged)")
        body = body[:length]
        if hashlib.sha256(body).hexdigest() != h["sha256"]:
            raise BadImage("checksum mismatch (damaged)")
        image = zlib.decompress(body)
        if len(image) != 2 * int(h["registers"]):
            raise BadImage("image size does not match its header")
        return RestartImage(
            str(h["config_hash"]), int(h["generation"]), str(h["retained"]),
            float(h["saved_utc"]), image,
            tuple((str(host), int(port)) for host, port in h["listen"]),
            tuple(str(a) for a in h["allow"]), int(h["max_connections"]),
            tuple(int(u) for u in h["site_units"]),
            {int(u): (int(v[0]), int(v[1])) for u, v in h["views"].items()})
    except BadImage:
        raise
    except (ValueError, KeyError, TypeError, IndexError, zlib.error) as exc:
        raise BadImage(f"unreadable: {type(exc).__name__}: {exc}") from exc


def read(path: Path) -> RestartImage:
    """The image at ``path``; FileNotFoundError when there is none, BadImage when damaged."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise BadImage(f"larger than {MAX_BYTES} bytes")
    return decode(data)


def write(path: Path, ri: RestartImage) -> None:
    """Overwrite the image in place, zero-padded to whole 4 KiB blocks and never shorter
    than the file (so its size, its metadata, stays put), without ``fsync``: it is written
    with every retained save and lives on flash, where a temp file and a rename cost ~5x the
    bytes (docs/operations.md). Safe because a torn or stale image is never served: a torn
    one fails its checksum, a stale one (the kernel had not written it back before a power
    cut) shows an older retained generation than the newest valid slot."""
    data = encode(ri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        want = max(os.fstat(fd).st_size, -(-len(data) // BLOCK) * BLOCK)
        buf = data + bytes(want - len(data))
        done = 0
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], done)
    finally:
        os.close(fd)


def newest_generation(retained: str | Path) -> int | None:
    """The newest generation among the retained file's slots whose checksum holds (the one
    the runtime restores, unless its content cannot be applied), or None: no valid slot."""
    best = None
    for p in slot_paths(Path(retained)):
        try:
            h, _raw = decode_header(p.read_bytes())
        except (OSError, CorruptState):
            continue
        gen = h.get("generation", 0)
        if isinstance(gen, int) and (best is None or gen > best):
            best = gen
    return best


def restored_snapshot(specs: Sequence[PointSpec], index: Mapping[str, int],
                      snap: Snapshot) -> Snapshot:
    """``snap`` as a restart restores it (:meth:`busguard.retained.RetainedState.restore`):
    retained values with their UTC stamps, stale and never read since the start (the encoder
    serves them as RESTORED); command values as they are; everything else unread."""
    from array import array

    from busguard.image import Quality
    from busguard.image import Snapshot as Snap

    n = len(specs)
    nan = math.nan
    values = array("d", [nan]) * n
    quality = array("B", [Quality.NOT_CONNECTED]) * n
    t_mono = array("d", [-math.inf]) * n
    t_utc = array("d", [0.0]) * n
    for i, spec in enumerate(specs):
        v = snap.values[i]
        if spec.command:
            values[i] = v if math.isfinite(v) else 0.0
            quality[i] = Quality.GOOD
        elif spec.retained and math.isfinite(v):
            values[i] = v
            quality[i] = Quality.STALE
            t_utc[i] = snap.t_utc[i]
    return Snap(tuple(specs), index, snap.now, values, quality, t_mono, t_utc,
                array("d", [nan]) * n, array("d", [nan]) * n)


def restored_frame(last: Frame, snap: Snapshot, t_utc: float, failsafe: Mapping[str, float],
                   starts: int) -> Frame:
    """The frame a restart serves before its first scan, from the newest frame ``last`` and
    the saved snapshot ``snap`` (the retained generation's values)."""
    from busguard.northbound.encode import Frame as F

    return F(0, t_utc, restored_snapshot(snap.specs, snap.index, snap), dict(failsafe),
             last.alarms, frozenset(), last.latched, 0, "built", t_utc, 0.0, "loaded", starts,
             last.trips, last.alarm_rows, last.events)


def header_of(ri: RestartImage) -> dict[str, Any]:
    """What a log line says about an image."""
    return {"generation": ri.generation, "registers": len(ri.image) // 2,
            "listen": [f"{h}:{p}" for h, p in ri.listen]}
