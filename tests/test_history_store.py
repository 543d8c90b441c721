"""The on-box history store: its ring files, their crash safety, and the [history] publisher
recording a running runtime's map snapshot (read back through ``open_reader``)."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest

from busguard.errors import ConfigError
from busguard.history import Sample, open_reader, ring
from busguard.history.recorder import Recorder

T0 = 1_800_000_000 - 1200  # a whole minute, a whole 10-minute batch
PTS = ["m.a", "m.b"]


def recorder(d: Path, now: float, points=PTS, **kw) -> Recorder:
    args = {"seconds_dir": None, "retention_days": 1.0, "batch_min": 10, "seconds_keep_s": 3600}
    args.update(kw)
    return Recorder(d, points, now=now, **args)


def feed(r: Recorder, t0: int, t1: int) -> None:
    for t in range(t0, t1):
        r.record(t, [float(t % 60), math.nan], [0 if t % 60 else 1, 3])


def test_seconds_and_minutes_read_back_with_min_avg_max_and_worst_quality(tmp_path):
    r = recorder(tmp_path, T0)
    feed(r, T0, T0 + 1500)
    r.close()
    rd = open_reader(tmp_path)
    assert rd.points() == PTS
    mins = rd.query("m.a", T0, T0 + 1499, "1min")
    assert len(mins) == 25
    assert mins[0] == Sample(float(T0), 0.0, 29.5, 59.0, 1)  # second 0 of each minute: stale
    assert [s.t_utc for s in mins] == [float(T0 + 60 * i) for i in range(25)]
    secs = rd.query("m.a", T0 + 1400, T0 + 1499)  # auto: a span under an hour -> 1 s
    assert len(secs) == 100 and secs[0] == Sample(float(T0 + 1400), 20.0, 20.0, 20.0, 0)
    b = rd.query("m.b", T0, T0 + 119, "1min")
    assert len(b) == 2 and all(math.isnan(s.avg) and s.quality == 3 for s in b)


def test_auto_picks_minutes_beyond_an_hour_and_bad_requests_say_why(tmp_path):
    r = recorder(tmp_path, T0)
    feed(r, T0, T0 + 1200)
    r.close()
    rd = open_reader(tmp_path)
    assert all(s.t_utc % 60 == 0 for s in rd.query("m.a", T0 - 3 * 3600, T0 + 1199))
    with pytest.raises(LookupError, match=r"no history for point 'm\.zz'"):
        rd.query("m.zz", T0, T0 + 10)
    with pytest.raises(ValueError, match="expected one of auto, 1s, 1min"):
        rd.query("m.a", T0, T0 + 10, "5s")


def test_noisy_rows_read_back_to_float32_precision(tmp_path):
    import random

    rnd = random.Random(7)
    vals = {t: rnd.uniform(-1e6, 1e6) for t in range(T0, T0 + 600)}
    r = recorder(tmp_path, T0)
    for t in range(T0, T0 + 600):
        r.record(t, [vals[t], math.nan], [0, 3])
    r.close()
    (tmp_path / "history" / "seconds.ring").unlink()  # only the flushed batch is left
    mins = open_reader(tmp_path).query("m.a", T0, T0 + 599, "1min")
    assert len(mins) == 10
    for s in mins:
        xs = [vals[t] for t in range(int(s.t_utc), int(s.t_utc) + 60)]
        assert s.min == pytest.approx(min(xs), rel=1e-6)
        assert s.max == pytest.approx(max(xs), rel=1e-6)
        assert s.avg == pytest.approx(sum(xs) / 60, rel=1e-5)


def test_no_store_is_a_clear_error(tmp_path):
    with pytest.raises(ring.HistoryFileError, match=r"no history in .*is \[history\]"):
        open_reader(tmp_path)


def test_a_torn_batch_loses_that_batch_only_and_the_file_still_opens(tmp_path):
    r = recorder(tmp_path, T0, seconds_dir=tmp_path / "ram")
    feed(r, T0, T0 + 1800)
    r.close()
    (tmp_path / "ram" / "seconds.ring").unlink()  # a reboot: RAM gone, no rebuilding
    path = tmp_path / "history" / "minutes.ring"
    geo = ring.read_geometry(os.open(path, os.O_RDONLY), path)
    base = geo.slot_offset(((T0 // 60 + 10) // 10) % geo.slots)  # the second batch
    with open(path, "r+b") as f:  # torn in the middle of m.a's row
        f.seek(base + ring.MIN_SLOT_HEAD)
        _crc, at, length = ring.ROW_ENTRY.unpack(f.read(ring.ROW_ENTRY.size))
        f.seek(base + at + (length & ~ring.DEFLATED) // 2)
        f.write(b"\xa5" * 4)
    rd = open_reader(tmp_path)
    got = {int(s.t_utc - T0) // 600 for s in rd.query("m.a", T0, T0 + 1799, "1min")}
    assert got == {0, 2}
    assert len(rd.query("m.b", T0, T0 + 1799, "1min")) == 30  # m.b's row was not torn


def test_a_killed_run_loses_nothing_while_the_seconds_ring_survives(tmp_path):
    ram = tmp_path / "ram"
    r = recorder(tmp_path, T0, seconds_dir=ram)
    feed(r, T0, T0 + 1230)  # two whole batches would be flushed; the third is in RAM
    r.seconds.close()  # kill -9: no close(), no flush of the batch in progress
    r2 = recorder(tmp_path, T0 + 1290, seconds_dir=ram)  # restarted a minute later
    assert r2.recovered == 0  # the killed batch is still the current one: kept in memory
    feed(r2, T0 + 1290, T0 + 1800)  # ...and flushed with it
    r2.close()
    (ram / "seconds.ring").unlink()
    mins = open_reader(tmp_path).query("m.a", T0, T0 + 1799, "1min")
    assert [int(s.t_utc - T0) // 60 for s in mins] == list(range(30))
    assert mins[20].max == 29.0  # minute 20: its 30 s before the kill, rebuilt from RAM


def test_a_run_killed_in_an_earlier_batch_gets_it_rebuilt_at_start(tmp_path):
    ram = tmp_path / "ram"
    r = recorder(tmp_path, T0, seconds_dir=ram)
    feed(r, T0, T0 + 1230)
    r.seconds.close()  # killed in the third batch (minutes 20-29)
    r2 = recorder(tmp_path, T0 + 1900, seconds_dir=ram)  # back in the fourth batch
    assert r2.recovered == 1
    r2.seconds.close()
    (ram / "seconds.ring").unlink()
    mins = open_reader(tmp_path).query("m.a", T0, T0 + 1799, "1min")
    assert [int(s.t_utc - T0) // 60 for s in mins] == list(range(21))


def test_a_changed_point_list_starts_a_new_file_and_keeps_the_old(tmp_path):
    r = recorder(tmp_path, T0)
    feed(r, T0, T0 + 700)
    r.close()
    r2 = recorder(tmp_path, T0 + 800, points=["m.a", "m.c"])
    assert any("new file" in n for n in r2.notes)
    r2.close()
    assert (tmp_path / "history" / "minutes.ring.prev").exists()
    assert open_reader(tmp_path).points() == ["m.a", "m.c"]


def test_garbage_in_place_of_the_file_is_replaced_not_a_crash(tmp_path):
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "minutes.ring").write_bytes(b"not a ring" * 10)
    r = recorder(tmp_path, T0)
    assert any("not a busguard history file" in n for n in r.notes)
    feed(r, T0, T0 + 61)
    r.close()
    assert len(open_reader(tmp_path).query("m.a", T0, T0 + 60, "1min")) == 2


# -- the [history] publisher on a running runtime --------------------------------------------
SITE = """
[site]
name = "histtest"
[paths]
state_dir = "{state}"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "power_kw"]
[[probe]]
name = "p1"
driver = "memory"
points = ["temp_c"]
[modbus_server]
port = 0
[history]
seconds_dir = "{ram}"
{extra}
"""


def site(tmp_path: Path, extra: str = "") -> str:
    return SITE.format(state=tmp_path / "state", ram=tmp_path / "ram", extra=extra)


def test_the_publisher_records_the_map_snapshot_every_second(make_runtime, tmp_path,
                                                             run_scans):
    rt = make_runtime(site(tmp_path), start=True)
    rt.image.write("m1.power_kw", 88.5)
    rt.image.write("p1.temp_c", 41.25)
    run_scans(rt, 3)
    state = tmp_path / "state"
    got: list[Sample] = []
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and len(got) < 2:
        time.sleep(0.2)
        try:
            got = open_reader(state).query("m1.power_kw", time.time() - 60)
        except ring.HistoryFileError:
            continue
    assert len(got) >= 2, "no 1 s samples within 15 s"
    assert got[-1].avg == 88.5 and got[-1].quality == 0
    rd = open_reader(state)
    assert "p1.temp_c" in rd.points() and "m1.current_l1_a" in rd.points()
    assert rd.query("p1.temp_c", time.time() - 60)[-1].avg == 41.25
    assert rd.query("m1.current_l1_a", time.time() - 60)[-1].quality == 3  # never written
    assert (state / "history" / "seconds.path").read_text().strip() == \
        str((tmp_path / "ram" / "seconds.ring").resolve())


@pytest.mark.parametrize(("extra", "message"), [
    ("batch_minutes = 30\nseconds_keep_s = 600", "history.batch_minutes: 30 minutes is longer"),
    ("retention_days = 0.1", "history.retention_days"),
    ("batch_minutes = 0", "history.batch_minutes"),
])
def test_bad_history_tables_name_the_key_and_what_is_valid(make_runtime, tmp_path, extra,
                                                          message):
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        make_runtime(site(tmp_path, extra))
    assert ".toml" in str(exc.value)


def test_history_without_a_modbus_server_says_what_to_add(make_runtime, tmp_path):
    with pytest.raises(ConfigError, match=r"needs a \[modbus_server\] table"):
        make_runtime(site(tmp_path).replace("[modbus_server]\nport = 0\n", ""))
