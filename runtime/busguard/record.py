"""Record the input snapshots a live run scanned, and replay them through the same blocks.

A recording is JSON Lines: a header (format, site file and hash, period, the point names in
image order), then one line per scan with the snapshot arrays and the outputs the live run
produced. Replay rebuilds the blocks from the site, feeds them the recorded snapshots with the
recorded times, and compares outputs: equal traces are the proof that the logic is a pure
function of its inputs. Writing happens on a background thread so the scan never waits on disk.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from busguard.errors import RecordingError
from busguard.image import PointSpec, Snapshot

FORMAT = "busguard-recording/1"


def _f(x: float) -> float | str | None:
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _unf(x: Any) -> float:
    if x is None:
        return math.nan
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    return float(x)


def encode_cycle(cycle: int, snap: Snapshot, t_utc: float, outputs: dict[str, float]) -> str:
    return json.dumps({
        "cycle": cycle, "now": snap.now, "t_utc": t_utc,
        "v": [_f(x) for x in snap.values], "q": list(snap.quality),
        "tm": [_f(x) for x in snap.t_mono], "tu": list(snap.t_utc),
        "lo": [_f(x) for x in snap.vmin], "hi": [_f(x) for x in snap.vmax],
        "out": outputs,
    }, separators=(",", ":"))


class Recorder:
    """Writes cycles to a file from a background thread (bounded queue, drops counted)."""

    def __init__(self, path: str | Path, header: dict[str, Any], maxsize: int = 10000) -> None:
        self.path = Path(path)
        self._fh: IO[str] = self.path.open("w", encoding="utf-8")
        self._fh.write(json.dumps({"format": FORMAT, **header}) + "\n")
        self._q: queue.Queue[str | None] = queue.Queue(maxsize)
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain, name="busguard-recorder",
                                        daemon=True)
        self._thread.start()

    def add(self, cycle: int, snap: Snapshot, t_utc: float, outputs: dict[str, float]) -> None:
        try:
            self._q.put_nowait(encode_cycle(cycle, snap, t_utc, dict(outputs)))
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        while True:
            line = self._q.get()
            if line is None:
                break
            self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
        self._fh.close()


@dataclass
class RecordedCycle:
    cycle: int
    t_utc: float
    snapshot: Snapshot
    outputs: dict[str, float]


def read_recording(path: str | Path) -> tuple[dict[str, Any], Iterator[RecordedCycle]]:
    """The header and an iterator over the recorded cycles."""
    p = Path(path)
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read recording: {exc.strerror}") from exc
    first = fh.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError as exc:
        fh.close()
        raise RecordingError(f"{p}: line 1: not a busguard recording header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fh.close()
        raise RecordingError(f"{p}: line 1: format is not {FORMAT!r}")
    specs = tuple(PointSpec(n, source=s)
                  for n, s in zip(header["points"], header["sources"], strict=True))
    index = {s.name: i for i, s in enumerate(specs)}

    def cycles() -> Iterator[RecordedCycle]:
        with fh:
            for lineno, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    snap = Snapshot(specs, index, float(rec["now"]),
                                    array("d", map(_unf, rec["v"])), array("B", rec["q"]),
                                    array("d", map(_unf, rec["tm"])), array("d", rec["tu"]),
                                    array("d", map(_unf, rec["lo"])),
                                    array("d", map(_unf, rec["hi"])))
                    if len(snap.values) != len(specs):
                        raise ValueError(f"{len(snap.values)} values for {len(specs)} points")
                except (ValueError, KeyError, TypeError) as exc:
                    # a run killed mid-write leaves a torn last line: stop there, say so
                    raise RecordingError(f"{p}: line {lineno}: not a valid cycle ({exc})") from exc
                yield RecordedCycle(int(rec["cycle"]), float(rec["t_utc"]), snap,
                                    {k: float(v) for k, v in rec["out"].items()})

    return header, cycles()
