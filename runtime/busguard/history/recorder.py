"""Recording the history: one sample of every point per second, minute aggregates in batches.

The recorder keeps the current minute's min/sum/max/count and the current batch of minutes in
memory; every second goes to the seconds ring (RAM), and only a completed batch goes to the
minutes ring (flash), in one write. At start it finishes what a previous run left: batches of
the last hour that never reached flash (a kill -9, a power cut with /run intact after a
restart) are rebuilt from the seconds ring, and the current batch's earlier minutes too.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from busguard.atomicfile import atomic_write
from busguard.history import ring
from busguard.history.reader import NO_DATA, history_dir, slots

NAN = float("nan")


class Recorder:
    """Writes the two rings of ``state_dir``'s history for ``points``."""

    def __init__(self, state_dir: Path, points: Sequence[str], *, seconds_dir: Path | None,
                 retention_days: float, batch_min: int, seconds_keep_s: int,
                 now: float) -> None:
        self.points = tuple(points)
        self.batch = int(batch_min)
        hdir = history_dir(state_dir)
        hdir.mkdir(parents=True, exist_ok=True)
        self.minutes_path = hdir / "minutes.ring"
        sdir = seconds_dir if seconds_dir is not None else hdir
        sdir.mkdir(parents=True, exist_ok=True)
        self.seconds_path = sdir / "seconds.ring"
        self.notes: list[str] = []
        nslots = math.ceil(retention_days * 1440.0 / self.batch) + 1
        fd, geo, why = ring.open_matching(self.minutes_path, ring.MIN_MAGIC, self.points,
                                          nslots, self.batch)
        if why and why != "new":
            self.notes.append(f"{self.minutes_path}: new file ({why}); the old one is "
                              f"{self.minutes_path.name}.prev")
        self.minutes = ring.MinutesWriter(fd, geo)
        fd, sgeo, why = ring.open_matching(self.seconds_path, ring.SEC_MAGIC, self.points,
                                           int(seconds_keep_s), 0)
        self.seconds = ring.SecondsWriter(fd, sgeo)
        self._point_to_seconds(hdir, sdir)
        n = len(self.points)
        self._vals = struct.Struct(f"<{n}f")
        self.minute = -1
        self._reset_minute()
        self.batch_no = -1
        self._new_batch(int(now // 60) // self.batch)
        self.recovered = self._recover(int(now))

    def _point_to_seconds(self, hdir: Path, sdir: Path) -> None:
        link = hdir / "seconds.path"
        want = "" if sdir.resolve() == hdir.resolve() else str(self.seconds_path.resolve())
        have = link.read_text().strip() if link.exists() else ""
        if want == have:
            return
        if not want:
            link.unlink()
            return
        atomic_write(link, (want + "\n").encode())

    # -- the minute and the batch in progress ---------------------------------------------
    def _reset_minute(self) -> None:
        n = len(self.points)
        self.m_min = [math.inf] * n
        self.m_max = [-math.inf] * n
        self.m_sum = [0.0] * n
        self.m_cnt = [0] * n
        self.m_q = [-1] * n

    def _new_batch(self, b: int) -> None:
        n, k = len(self.points), self.batch
        self.batch_no = b
        self.b_min = [[NAN] * k for _ in range(n)]
        self.b_avg = [[NAN] * k for _ in range(n)]
        self.b_max = [[NAN] * k for _ in range(n)]
        self.b_q = [[NO_DATA] * k for _ in range(n)]
        self.b_dirty = False

    def _close_minute(self) -> None:
        if self.minute < 0:
            return
        i = self.minute - self.batch_no * self.batch
        if not 0 <= i < self.batch:
            return
        for p in range(len(self.points)):
            if self.m_q[p] < 0:
                continue
            if self.m_cnt[p]:
                self.b_min[p][i] = self.m_min[p]
                self.b_max[p][i] = self.m_max[p]
                self.b_avg[p][i] = self.m_sum[p] / self.m_cnt[p]
            else:
                self.b_min[p][i] = self.b_avg[p][i] = self.b_max[p][i] = NAN
            self.b_q[p][i] = self.m_q[p]
            self.b_dirty = True

    def flush(self) -> None:
        """Write the batch in progress (also when only partly filled: at stop)."""
        self._close_minute()
        if not self.b_dirty:
            return
        k = self.batch
        rows = [ring.pack_row(k, self.b_min[p], self.b_avg[p], self.b_max[p], self.b_q[p])
                for p in range(len(self.points))]
        self.minutes.write(self.batch_no * k, rows)
        self.b_dirty = False

    def record(self, t: int, values: Sequence[float], qualities: Sequence[int]) -> None:
        """One sample of every point at UTC second ``t`` (NaN: no value)."""
        self.seconds.write(t, values, qualities)
        self._add(t, values, qualities)

    def _add(self, t: int, values: Sequence[float], qualities: Sequence[int]) -> None:
        m = t // 60
        if m != self.minute:
            self._close_minute()
            b = m // self.batch
            if b != self.batch_no:
                if self.b_dirty:
                    self.flush()
                self._new_batch(b)
            self.minute = m
            self._reset_minute()
        mn, mx, sm, cn, mq = self.m_min, self.m_max, self.m_sum, self.m_cnt, self.m_q
        for p, v in enumerate(values):
            q = qualities[p]
            if q > mq[p]:
                mq[p] = q
            if v == v:  # not NaN
                if v < mn[p]:
                    mn[p] = v
                if v > mx[p]:
                    mx[p] = v
                sm[p] += v
                cn[p] += 1

    # -- start: finish what the last run left -----------------------------------------------
    def _recover(self, now: int) -> int:
        """Rebuild from the seconds ring: batches of its span missing on flash (written), and
        the current batch's minutes so far (kept in memory). Returns the batches written."""
        sgeo = self.seconds.geo
        fd = os.open(self.seconds_path, os.O_RDONLY)
        try:
            t0 = now - sgeo.slots + 1
            cur = self.batch_no
            written = 0
            first_b = (t0 // 60) // self.batch
            for b in range(first_b, cur + 1):
                if b < cur and self._on_flash(b):
                    continue
                lo, hi = max(t0, b * self.batch * 60), min(now - 1, (b + 1) * self.batch * 60 - 1)
                if hi < lo:
                    continue
                if b != self.batch_no:
                    self._new_batch(b)
                self.minute = -1
                self._replay(fd, sgeo, lo, hi)
                self._close_minute()
                if b < cur and self.b_dirty:
                    self.flush()
                    written += 1
            if self.batch_no != cur:
                self._new_batch(cur)
            if self._on_flash(cur):  # a partial batch a clean stop wrote: keep its minutes
                self._load(cur)
            # the current minute goes on accumulating: reopen it with what the ring holds
            self.minute = -1
            self._reset_minute()
            m_now = now // 60
            if m_now // self.batch == cur:
                self._replay(fd, sgeo, max(t0, m_now * 60), now - 1)
            return written
        finally:
            os.close(fd)

    def _replay(self, fd: int, sgeo: ring.Geometry, lo: int, hi: int) -> None:
        n = len(self.points)
        for t, data, off in slots(fd, sgeo, lo, hi):
            if ring.SEC_STAMP.unpack_from(data, off)[0] != t:
                continue
            vals = self._vals.unpack_from(data, off + 8)
            quals = data[off + 8 + 4 * n: off + 8 + 5 * n]
            self._add(t, vals, quals)

    def _load(self, b: int) -> None:
        geo, k = self.minutes.geo, self.batch
        for p in range(len(self.points)):
            row = ring.read_row(self.minutes.fd, geo, b * k, p)
            if row is None:
                continue
            vals = struct.unpack_from(f"<{3 * k}f", row)
            for i in range(k):
                q = row[12 * k + i]
                if q != NO_DATA and self.b_q[p][i] == NO_DATA:
                    self.b_min[p][i], self.b_avg[p][i], self.b_max[p][i] = vals[3 * i:3 * i + 3]
                    self.b_q[p][i] = q
                    self.b_dirty = True

    def _on_flash(self, b: int) -> bool:
        geo = self.minutes.geo
        head = os.pread(self.minutes.fd, ring.MIN_SLOT.size,
                        geo.header_len + (b % geo.slots) * geo.slot_len)
        if len(head) < ring.MIN_SLOT.size:
            return False
        magic, first, _k = ring.MIN_SLOT.unpack(head)
        return magic == ring.MIN_SLOT_MAGIC and first == b * self.batch

    def close(self) -> None:
        self.flush()
        self.minutes.close()
        self.seconds.close()
