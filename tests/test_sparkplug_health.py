"""The [sparkplug] edge node's problems as alarms, the PLC way: the publisher writes its
health into the input image (sparkplug.* points, from its thread or the I/O process) and the
sparkplug_health block raises BG-SPB-REFUSED, BG-SPB-OFFLINE and BG-SPB-QUEUE-FULL from them.
Against a real Mosquitto broker: a wrong password, a small queue with the broker down, the
broker back (alarms clear, the queue drains in order), and the same through the I/O process."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import pytest

from busguard.errors import ConfigError
from busguard.image import Quality
from busguard.sparkplug import health
from busguard.testing import io_process, running
from test_sparkplug_helpers import SITE, Broker, Host, names, value


def site(tmp_path, port: int, extra: str = "", blocks: str = "") -> str:
    return SITE.format(state=tmp_path / "state", port=port, extra=extra) + blocks


def codes(rt) -> dict[str, object]:
    return {a.condition.code: a for a in rt.alarms.active()}


def write_health(rt, **vals: float) -> None:
    base = dict.fromkeys(health.POINTS, 0.0) | {"connected": 1.0, "queue_max": 100.0}
    base.update(vals)
    rt.image.write_many([(health.PREFIX + k, v, Quality.GOOD) for k, v in base.items()])


# -- fast: the block over the points, no broker ---------------------------------------------
def test_every_sparkplug_table_brings_its_health_block_and_points(make_runtime, tmp_path):
    rt = make_runtime(site(tmp_path, 1))
    (blk,) = [b for b in rt.blocks if b.type_name == "sparkplug_health"]
    assert blk.name == "sparkplug"
    assert set(health.names()) <= set(rt.image.index)
    # a declared block replaces it (its options apply); one without [sparkplug] is an error
    rt2 = make_runtime(site(tmp_path, 1, blocks='[[block]]\nname = "spbh"\ntype = '
                            '"sparkplug_health"\noffline_delay_s = 2.5\n'))
    assert [b.name for b in rt2.blocks if b.type_name == "sparkplug_health"] == ["spbh"]
    plain = SITE.split("[sparkplug]")[0].format(state=tmp_path / "s2")
    with pytest.raises(ConfigError, match=re.escape("needs a [sparkplug] table")):
        make_runtime(plain + '[[block]]\nname = "spbh"\ntype = "sparkplug_health"\n')


def test_the_block_raises_and_clears_from_the_points(make_runtime, tmp_path, run_scans,
                                                     fake_clock):
    rt = make_runtime(site(tmp_path, 1))
    write_health(rt)
    run_scans(rt, 2)
    assert not codes(rt)
    write_health(rt, connected=0.0, refused=1.0, refused_code=135.0, offline_s=3.0,
                 queue_held=4.0)
    run_scans(rt, 1)
    a = codes(rt)["BG-SPB-REFUSED"]
    assert "not authorized" in a.condition.message and "127.0.0.1:1" in a.condition.message
    assert a.condition.values["queue_held"] == 4 and "BG-SPB-OFFLINE" not in codes(rt)
    write_health(rt, connected=0.0, offline_s=12.0, queue_held=5.0, queue_max=5.0,
                 queue_dropped=3.0, queue_full=1.0)
    run_scans(rt, 1)
    got = codes(rt)
    assert set(got) == {"BG-SPB-OFFLINE", "BG-SPB-QUEUE-FULL"}
    full = got["BG-SPB-QUEUE-FULL"].condition
    assert "5 change(s) held (limit 5), 3 change(s) dropped" in full.message
    assert full.values["queue_dropped"] == 3
    write_health(rt)
    run_scans(rt, 1)
    assert not codes(rt)
    # the publisher stops writing: its points age to stale, BG-INPUT names them, and the
    # alarms hold the last good state meanwhile
    write_health(rt, queue_full=1.0, queue_held=5.0, queue_max=5.0)
    run_scans(rt, 1)
    fake_clock.advance(health.MAX_AGE_S + 1.0)
    run_scans(rt, 1)
    fake_clock.advance(40.0)
    run_scans(rt, 1)
    fake_clock.advance(3.0)
    run_scans(rt, 1)
    got = codes(rt)
    assert "BG-SPB-QUEUE-FULL" in got and "BG-INPUT" in got
    assert "sparkplug.queue_held" in got["BG-INPUT"].condition.message


# -- against Mosquitto ----------------------------------------------------------------------
def scan_until(rt, run_scans, what, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        run_scans(rt, 1)
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, [(a.condition.code, a.condition.message)
                                             for a in rt.alarms.active()]
        time.sleep(0.02)


@pytest.mark.integration
def test_a_wrong_password_raises_the_refused_alarm(make_runtime, tmp_path, run_scans, caplog):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd (Debian package mosquitto) is not installed")
    users = tmp_path / "users"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(users), "ctl", "right"], check=True,
                   capture_output=True, timeout=30)
    b = Broker(tmp_path, f"allow_anonymous false\npassword_file {users}\n")
    b.start()
    try:
        pw = tmp_path / "mqtt.passwd"
        pw.write_text("wrong\n")
        pw.chmod(0o600)
        rt = make_runtime(site(tmp_path, b.port, f'username = "ctl"\npassword_file = "{pw}"'),
                          start=True)
        a = scan_until(rt, run_scans, lambda: codes(rt).get("BG-SPB-REFUSED"))
        assert a.condition.severity.name == "MAJOR"
        assert re.search(r"not authori[sz]ed|bad user name", a.condition.message)
        assert f"127.0.0.1:{b.port}" in a.condition.message
        assert any("refused the connection" in r.getMessage() and r.levelname == "ERROR"
                   for r in caplog.records)  # and the log line says it too
    finally:
        b.stop()


@pytest.mark.integration
def test_a_full_queue_alarms_with_counts_and_the_broker_back_clears_and_drains_in_order(
        make_runtime, tmp_path, run_scans, caplog):
    b = Broker(tmp_path)  # not started: the node starts offline
    blocks = '[[block]]\nname = "spbh"\ntype = "sparkplug_health"\noffline_delay_s = 0.3\n'
    rt = make_runtime(site(tmp_path, b.port, "queue_max_changes = 20", blocks), start=True)
    pub = next(p for p in rt.publishers if p.section == "sparkplug")
    scan_until(rt, run_scans, lambda: pub.node.last)  # the reference image
    off = scan_until(rt, run_scans, lambda: codes(rt).get("BG-SPB-OFFLINE"))
    assert f"127.0.0.1:{b.port}" in off.condition.message
    for i in range(30):
        kw = 60.0 + i
        rt.image.write("m1.power_kw", kw)
        scan_until(rt, run_scans, lambda kw=kw: pub.node.last["m1"]["power_kw"].value == kw)
    full = scan_until(rt, run_scans, lambda: codes(rt).get("BG-SPB-QUEUE-FULL"))
    # the scans' own changes (scan counters, alarm counts) queue too: the numbers are the
    # publisher's, whatever they are, and at least the 10 power changes beyond the bound
    held, dropped = full.condition.values["queue_held"], full.condition.values["queue_dropped"]
    assert held == 20 and dropped >= 10
    assert f"{held} change(s) held (limit 20), {dropped} change(s) dropped" in \
        full.condition.message
    assert any("queue full" in r.getMessage() for r in caplog.records)
    b.start()
    h = Host(b.port).connect()
    try:
        scan_until(rt, run_scans, lambda: not {"BG-SPB-OFFLINE", "BG-SPB-QUEUE-FULL"}
                   & set(codes(rt)), timeout=30)
        assert pub.store.held == 0
        def historical():
            return [m for m in h.all() if m.payload is not None and m.kind in ("DDATA",
                    "NDATA") and m.payload.metrics[0].is_historical]

        h.wait(lambda: sum(len(m.payload.metrics) for m in historical()) >= held)
        hist = historical()
        assert sum(len(m.payload.metrics) for m in hist) == held  # all it held, sent
        power = [value(x) for m in hist if m.device == "m1" for x in m.payload.metrics]
        assert power and power == sorted(power) and set(power) <= {60.0 + i for i in range(30)}
        stamps = [m.payload.timestamp for m in hist]  # when each image's changes were queued
        assert stamps == sorted(stamps)  # in the order they happened
        seqs = [m.payload.seq for m in h.all() if m.payload is not None]
        assert seqs == [(seqs[0] + i) % 256 for i in range(len(seqs))]
        assert value(names(h.all("NBIRTH")[0])["Sparkplug/queue_dropped"]) >= dropped
    finally:
        h.close()
        b.stop()


@pytest.mark.integration
def test_through_the_io_process_the_offline_alarm_reaches_the_scan_and_clears(tmp_path):

    b = Broker(tmp_path)  # down at first
    blocks = '[[block]]\nname = "spbh"\ntype = "sparkplug_health"\noffline_delay_s = 0.5\n'
    text = io_process(site(tmp_path, b.port, "", blocks))
    path = tmp_path / "site.toml"
    path.write_text(text)
    try:
        with running(path) as rt:
            off = Host.wait_for(lambda: codes(rt).get("BG-SPB-OFFLINE"), timeout=60)
            assert f"127.0.0.1:{b.port}" in off.condition.message
            assert not [th for th in threading.enumerate() if th.name == "busguard-sparkplug"]
            b.start()
            Host.wait_for(lambda: "BG-SPB-OFFLINE" not in codes(rt), timeout=30)
            i = rt.image.index["sparkplug.connected"]
            assert rt.image.snapshot().values[i] == 1.0
    finally:
        b.stop()
