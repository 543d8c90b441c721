"""What the scan process sends the I/O process: the layout once, then frames.

:class:`Layout` lets the I/O process index points exactly as the scan process does and build
the register map without building blocks. A frame (:func:`frame_to_bytes`) is one scan's
:class:`~busguard.northbound.encode.Frame`: the snapshot's arrays as raw bytes plus the small
parts, so the scan process only copies and the I/O process does the encoding to registers
(the dearer part, docs/benchmarks.md). The I/O process keeps the newest one in its
:class:`busguard.ioproc.process.FrameInbox`.
"""

from __future__ import annotations

import math
import pickle
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from busguard.alarms import EventRecord
from busguard.image import PointSpec, Snapshot
from busguard.northbound.encode import AlarmInfo, Frame
from busguard.northbound.events import AlarmRow
from busguard.northbound.mapdef import MapInputs, inputs_for_site

if TYPE_CHECKING:
    from busguard.runtime import Runtime


@dataclass(frozen=True)
class Layout:
    """The scan process's point layout and what the register map is built from."""

    config_hash: str
    specs: tuple[PointSpec, ...]
    devices: tuple[tuple[str, str], ...]  # (kind, name) in site order
    block_outputs: tuple[tuple[str, tuple[str, ...]], ...]  # (block, its outputs)
    # the register map's lock and explicit slots / unit ids (map v2: the I/O process lays
    # the map out exactly as the scan process does); None without a [modbus_server]
    map_inputs: MapInputs | None = None
    index: Mapping[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {s.name: i for i, s in enumerate(self.specs)})

    def __reduce__(self) -> tuple[object, ...]:  # the index is derived, not sent
        return (Layout, (self.config_hash, self.specs, self.devices, self.block_outputs,
                         self.map_inputs))

    @classmethod
    def of(cls, rt: Runtime) -> Layout:
        return cls(rt.site.config_hash, tuple(rt.image.specs),
                   tuple((d.kind, d.name) for d in rt.site.devices),
                   tuple((b.name, tuple(b.outputs())) for b in rt.blocks),
                   inputs_for_site(rt.site, breakers=[v for b in rt.blocks
                                                      for v in b.map_breakers()])
                   if "modbus_server" in rt.site.publishers else None)

    def to_bytes(self) -> bytes:
        """Pickled and compressed: 256 meters are 7,400 point specs, 650 kB pickled (more
        than a default ``wmem_max`` lets one message be), 50 kB compressed; once per start."""
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), 6)

    @staticmethod
    def from_bytes(data: bytes) -> Layout:
        got = pickle.loads(zlib.decompress(data))
        if not isinstance(got, Layout):
            raise ValueError(f"not a layout: {type(got).__name__}")
        return got


def _blob(obj: object, key: str, cache: dict[str, Any] | None) -> bytes:
    """``obj`` pickled, reused while the frames bring the same object (the alarm rows and
    the event ring change only on alarm edges; pickling 64 edges costs ~90 us a frame)."""
    hit = cache.get(key) if cache is not None else None
    if hit is None or hit[0] is not obj:
        hit = (obj, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        if cache is not None:
            cache[key] = hit
    return hit[1]


def _unblob(data: bytes, key: str, cache: dict[str, Any] | None) -> Any:
    """The object of a blob, reused while the same bytes come again."""
    hit = cache.get(key) if cache is not None else None
    if hit is None or hit[0] != data:
        hit = (data, pickle.loads(data))
        if cache is not None:
            cache[key] = hit
    return hit[1]


def frame_to_bytes(frame: Frame, cache: dict[str, Any] | None = None) -> bytes:
    """The wire form of a frame (message ``F``); ``cache``: a dict the sender keeps."""
    snap = frame.snapshot
    return pickle.dumps((
        frame.cycle, frame.t_utc, snap.now, snap.values.tobytes(), snap.quality.tobytes(),
        snap.t_mono.tobytes(), snap.t_utc.tobytes(), dict(frame.outputs),
        [(a.block, a.device, a.severity, a.active, a.acked) for a in frame.alarms],
        sorted(frame.faulted), sorted(frame.latched), frame.overruns, frame.state,
        frame.started_utc, frame.last_good_utc, frame.retained_status, frame.starts,
        dict(frame.trips), _blob(frame.alarm_rows, "rows", cache),
        _blob(frame.events, "events", cache)),
        protocol=pickle.HIGHEST_PROTOCOL)


def frame_from_bytes(data: bytes, specs: tuple[PointSpec, ...], index: Mapping[str, int],
                     cache: dict[str, Any] | None = None) -> Frame:
    """The frame :func:`frame_to_bytes` made, over the same point layout; ``cache``: a dict
    the receiver keeps."""
    (cycle, t_utc, now, values, quality, t_mono, t_utcs, outputs, alarms, faulted, latched,
     overruns, state, started_utc, last_good_utc, retained_status, starts, trips, rows_blob,
     events_blob) = pickle.loads(data)
    rows = _unblob(rows_blob, "rows", cache)
    seq, edges = _unblob(events_blob, "events", cache)
    arrays = [array("d"), array("B"), array("d"), array("d")]
    for arr, raw in zip(arrays, (values, quality, t_mono, t_utcs), strict=True):
        arr.frombytes(raw)
    if len(arrays[0]) != len(specs):
        raise ValueError(f"frame of {len(arrays[0])} points for a layout of {len(specs)}")
    nan_row = array("d", [math.nan]) * len(specs)  # min/max windows: not in the map
    snap = Snapshot(specs, index, now, arrays[0], arrays[1], arrays[2], arrays[3], nan_row,
                    nan_row)
    return Frame(cycle, t_utc, snap, outputs, tuple(AlarmInfo(*a) for a in alarms),
                 frozenset(faulted), frozenset(latched), overruns, state, started_utc,
                 last_good_utc, retained_status, starts, trips,
                 tuple(r for r in rows if isinstance(r, AlarmRow)),
                 (int(seq), tuple(e for e in edges if isinstance(e, EventRecord))))
