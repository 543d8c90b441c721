"""``[scan] io = "process"``: meters polled and the DCIM served by a second process.

Real processes, the simulator's Modbus TCP meter and real sockets on 127.0.0.1; the scan runs on the
real clock in a thread of the test. Waits are bounded polls of observable state, never sleeps
standing in for a result.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from busguard.image import Quality
from busguard.northbound import mapdef
from busguard.runtime import Runtime
from busguard.sim.testing import distinct_values
from busguard.testing import point, wait_until

GEN, VALUES = distinct_values()


def site_text(meter_port: int, state: str, io: str = "process", nb_port: int = 0) -> str:
    return (f'[site]\nname = "split"\n[scan]\nperiod_ms = 10\nio = "{io}"\n'
            f'[paths]\nstate_dir = "{state}"\nfault_log = "{state}/fault.log"\n'
            f'[modbus_server]\nport = {nb_port}\nmax_requests_per_s = 5000\n'
            f'write_allow = ["127.0.0.1/32"]\n'
            f'[[meter]]\nname = "m1"\nhost = "127.0.0.1"\nport = {meter_port}\npoll_ms = 50\n'
            f'timeout_ms = 200\nbackoff_ms = 50\nbackoff_max_ms = 200\n'
            f'[[block]]\nname = "m1-load"\ntype = "threshold_alarm"\n'
            f'point = "m1.current_l1_a"\nhigh = 500.0\nhysteresis = 5.0\ncode = "BG-T"\n')


class Running:
    """A runtime scanning on the real clock in a background thread."""

    def __init__(self, path: str) -> None:
        self.rt = Runtime.from_file(path)
        self.rt.start()
        self.thread = threading.Thread(target=self.rt.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.rt.request_stop()
        self.thread.join(timeout=10)
        self.rt.stop()


@pytest.fixture
def running(tmp_path):
    made: list[Running] = []

    def make(text: str) -> Running:
        path = tmp_path / "site.toml"
        path.write_text(text, encoding="utf-8")
        r = Running(str(path))
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def meter(modbus_meter):
    """A simulated meter serving the generic profile."""
    return modbus_meter(GEN, VALUES)


@pytest.fixture
def split_rt(meter, running, tmp_path):
    """A runtime with io = "process" on the simulated meter."""
    return running(site_text(meter.port, str(tmp_path / "state"))).rt


def good(rt, name):
    v, q = point(rt, name)
    return v if q == Quality.GOOD else None


def test_meter_values_reach_the_scan_and_the_alarm_from_the_io_process(meter, split_rt):
    rt = split_rt
    assert rt.io is not None and rt.io.alive() and rt.io.pid != os.getpid()
    assert rt.local_drivers() == []  # the meter is polled in the other process
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="first value")
    assert good(rt, "m1.current_l1_a") == pytest.approx(VALUES["current_l1_a"])
    assert good(rt, "m1.comm_ok") == 1.0
    # the driver's statistics come over from the I/O process
    wait_until(lambda: rt.status()["drivers"]["m1"].get("polls", 0) >= 2, what="stats")
    assert not rt.alarms.alarms
    meter.set(current_l1_a=612.0)
    wait_until(lambda: "m1-load:limit" in rt.alarms.alarms, what="the limit alarm")


def test_dcim_reads_the_map_from_the_io_process_and_writes_commands(split_rt):
    from pymodbus.client import ModbusTcpClient

    rt = split_rt
    pub = rt.publishers[0]
    assert pub.server is None  # no listener in the scan process
    wait_until(lambda: rt.io.ready.get("publishers"), what="the server's port")
    nb_port = pub.port()
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="first value")
    rec = pub.map.record_of("m1.current_l1_a")
    client = ModbusTcpClient("127.0.0.1", port=nb_port, timeout=3, retries=0)
    assert client.connect()
    try:
        def served_value():
            regs = client.read_holding_registers(rec.address, count=4, device_id=1).registers
            v = client.convert_from_registers(regs[:2], client.DATATYPE.FLOAT32)
            return v if regs[2] == int(Quality.GOOD) else None

        got = wait_until(served_value, what="the value served by the I/O process")
        assert got == pytest.approx(VALUES["current_l1_a"])
        head = client.read_holding_registers(0, count=32, device_id=1).registers
        assert head[0] == mapdef.MAGIC and head[2] == 1  # running
        # the I/O process laid the map out as the scan process did (map.lock, slots)
        assert head[30] << 16 | head[31] == pub.map.fingerprint
        # a write outside the command area is refused there, with the map's own rules
        refused = client.write_register(rec.address, 1, device_id=1)
        assert refused.isError()
        # an acknowledge written by the DCIM becomes an image write in the scan process
        ack = pub.map.command_at(pub.map.commands[0].address)[0]
        regs = client.convert_to_registers(7.0, client.DATATYPE.FLOAT32)
        assert not client.write_registers(ack.address, regs, device_id=1).isError()
        wait_until(lambda: good(rt, ack.name) == 7.0, what="the command in the scan image")
        # the audit line of the accepted write, from the side that served it
        fault_log = Path(rt.site.fault_log)
        wait_until(lambda: fault_log.exists() and "code=BG-CMD" in fault_log.read_text(),
                   what="the command's audit line in the fault log")
        line = next(ln for ln in fault_log.read_text().splitlines() if "code=BG-CMD" in ln)
        assert f"alarm={ack.name}" in line and "127.0.0.1" in line
    finally:
        client.close()


def test_a_killed_io_process_ages_its_inputs_and_is_restarted(meter, running, tmp_path,
                                                                monkeypatch):
    import busguard.ioproc.supervisor as sup

    monkeypatch.setattr(sup, "BACKOFF_S", (0.2, 1.0))
    r = running(site_text(meter.port, str(tmp_path / "state")))
    rt = r.rt
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="first value")
    first = rt.io.pid
    os.kill(first, signal.SIGKILL)
    # nothing writes the meter's points now: they go stale by age (3 polls of 50 ms)
    def scanned():
        return rt.last_result.snapshot["m1.current_l1_a"]

    wait_until(lambda: scanned().quality is Quality.STALE, what="stale in the scan")
    assert scanned().value == pytest.approx(VALUES["current_l1_a"])  # the last value kept
    wait_until(lambda: "io-process:down" in rt.alarms.alarms, what="the BG-IO-PROCESS alarm")
    assert rt.alarms.alarms["io-process:down"].condition.code == "BG-IO-PROCESS"
    wait_until(lambda: rt.io.pid != first and rt.io.alive(), what="a new io process")
    assert rt.io.exits == [-signal.SIGKILL]
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="fresh values again")
    wait_until(lambda: "io-process:down" not in rt.alarms.alarms, what="the alarm cleared")
    fault_log = tmp_path / "state" / "fault.log"

    def logged() -> bool:  # the fault log is written by its own thread, a moment later
        text = fault_log.read_text(encoding="utf-8")
        return "raised code=BG-IO-PROCESS" in text and "cleared code=BG-IO-PROCESS" in text

    wait_until(logged, what="both edges in the fault log")


def test_stop_ends_the_io_process(meter, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(site_text(meter.port, str(tmp_path / "state")), encoding="utf-8")
    r = Running(str(path))
    proc = r.rt.io._proc
    r.stop()
    assert proc.poll() is not None  # ended, not orphaned
    assert not r.rt.io.alive()


def test_thread_mode_and_the_fake_clock_keep_drivers_in_process(meter, make_runtime,
                                                                 tmp_path):
    port = meter.port
    rt = make_runtime(site_text(port, str(tmp_path / "state")), start=True)
    assert rt.io is None and rt.local_drivers() == rt.drivers  # FakeClock: one process
    rt2 = make_runtime(site_text(port, str(tmp_path / "s2"), io="thread"))
    assert rt2.site.scan.io == "thread"


def test_io_option_is_validated(site_file):
    from busguard.errors import ConfigError
    from busguard.runtime import check_site

    path = site_file('[site]\nname = "x"\n[scan]\nio = "fork"\n')
    with pytest.raises(ConfigError) as err:
        check_site(path)
    msg = str(err.value)
    assert "scan.io" in msg and "thread" in msg and "process" in msg


def scan_until(rt, pred, timeout: float = 8.0, what: str = "condition"):
    """Scan the runtime on the real clock until ``pred()`` holds (bounded)."""
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        rt.run(max_cycles=5)


def test_reload_hands_over_to_a_new_io_process_on_the_same_port(meter, tmp_path):
    from pymodbus.client import ModbusTcpClient

    from busguard.reload import Reloader

    port = meter.port
    import socket

    with socket.socket() as s:  # a free port, fixed across the reload
        s.bind(("127.0.0.1", 0))
        fixed = s.getsockname()[1]
    text = site_text(port, str(tmp_path / "state"), nb_port=fixed)
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    rt = Runtime.from_file(str(path))
    rt.start()
    new = rt
    try:
        scan_until(rt, lambda: rt.io.ready.get("publishers"), what="the first io process")
        nb_port = rt.publishers[0].port()
        scan_until(rt, lambda: good(rt, "m1.current_l1_a") is not None, what="first value")
        old_proc = rt.io._proc
        path.write_text(text.replace("high = 500.0", "high = 90.0"), encoding="utf-8")
        reloader = Reloader(path, rt)
        assert reloader.prepare() is True
        reloader._swap()
        new = reloader.current
        assert new is not rt and new.io is not None and new.io.pid != old_proc.pid
        wait_until(lambda: old_proc.poll() is not None, what="the old io process's exit")
        scan_until(new, lambda: new.io.ready.get("publishers"), what="the new io process")
        assert new.publishers[0].port() == nb_port == fixed  # the same port, bound again
        # the new I/O process polls the meter: its value arrives (ready means listening, not
        # that the first poll has landed: the carried-over value may have aged meanwhile)
        scan_until(new, lambda: good(new, "m1.current_l1_a") is not None,
                   what="a value polled by the new io process")
        assert good(new, "m1.current_l1_a") == pytest.approx(VALUES["current_l1_a"])
        scan_until(new, lambda: "m1-load:limit" in new.alarms.alarms, what="the new limit")
        client = ModbusTcpClient("127.0.0.1", port=nb_port, timeout=3, retries=0)
        assert client.connect()
        try:
            head = client.read_holding_registers(0, count=8, device_id=1).registers
            assert head[0] == mapdef.MAGIC
        finally:
            client.close()
    finally:
        new.stop()
        rt.stop()


def test_a_frame_sent_to_the_io_process_encodes_to_the_same_registers(make_runtime,
                                                                      run_scans, tmp_path):
    """The I/O process encodes what the scan process would have: same bytes, register for
    register, including NaN, huge values, qualities and alarm bits."""
    from busguard.ioproc.frames import frame_from_bytes, frame_to_bytes

    text = site_text(1, str(tmp_path / "state"), io="thread").replace(
        '[[meter]]\nname = "m1"\nhost = "127.0.0.1"\nport = 1\n',
        '[[meter]]\nname = "m1"\ndriver = "memory"\npoints = ["current_l1_a", "thd_v_l1_pct"]\n'
        'initial = { current_l1_a = 612.0, thd_v_l1_pct = 1e39 }\n'
    ).replace("timeout_ms = 200\nbackoff_ms = 50\nbackoff_max_ms = 200\n", "")
    rt = make_runtime(text, start=True)
    try:
        run_scans(rt, 3)
        pub = rt.publishers[0]
        frame = pub._frame
        assert frame.alarms  # the limit alarm is in the frame
        again = frame_from_bytes(frame_to_bytes(frame), rt.image.specs, rt.image.index)
        assert pub.encoder.encode(again) == pub.encoder.encode(frame)
        with pytest.raises(ValueError, match="layout"):
            frame_from_bytes(frame_to_bytes(frame), rt.image.specs[:-1], rt.image.index)
    finally:
        rt.stop()


def test_only_input_only_drivers_move_to_the_io_process():
    from busguard.driver import Driver

    class Reader(Driver):
        io_process_ok = True

    class ReaderThatAlsoDrives(Driver):
        io_process_ok = True

        def consumes(self):
            return ("relay.alarm",)

    class Plain(Driver):
        pass

    cfg = type("Cfg", (), {"name": "d"})()
    assert Reader(cfg, None).runs_in_io_process
    assert not ReaderThatAlsoDrives(cfg, None).runs_in_io_process  # outputs stay by the scan
    assert not Plain(cfg, None).runs_in_io_process


def test_an_undeliverable_frame_is_reported_once_not_per_scan(caplog):
    """A frame larger than the link can carry (a huge map on a unit without the packaged
    wmem_max) is never silently dropped: one error line per streak, naming the sizes."""
    import logging

    from busguard.ioproc import link
    from busguard.ioproc.supervisor import IoSupervisor

    class Big:
        def frame_payload(self) -> bytes:
            return b"x" * (8 << 20)  # over any send buffer

    ours, theirs = link.socket_pair()
    try:
        sup = IoSupervisor(None)  # type: ignore[arg-type]  # only the link is used here
        sup._sock, sup.frame_source = ours, Big()
        caplog.set_level(logging.ERROR, logger="busguard.io")
        for _ in range(3):
            sup._demand = True
            sup.after_scan()
        lines = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
        assert len(lines) == 1 and "wmem_max" in lines[0] and sup.frames_sent == 0
    finally:
        ours.close()
        theirs.close()


def test_an_alarm_edge_pushes_a_frame_without_waiting_for_a_demand(monkeypatch):
    """A scan with alarm edges sends its frame at once (the event ring reaches the map, SNMP
    traps and Sparkplug without waiting up to refresh_ms for the next demand); a scan
    without edges still waits for one, and pushes are rate-limited."""
    from busguard.ioproc import link, supervisor
    from busguard.ioproc.supervisor import IoSupervisor

    class Small:
        def frame_payload(self) -> bytes:
            return b"frame"

    ours, theirs = link.socket_pair()
    try:
        sup = IoSupervisor(None)  # type: ignore[arg-type]  # only the link is used here
        sup._sock, sup.frame_source = ours, Small()
        sup.after_scan()  # no demand, no edge: nothing
        assert sup.frames_sent == 0
        monkeypatch.setattr(supervisor, "EDGE_PUSH_MIN_S", 3600.0)
        sup.after_scan(edges=True)
        assert (sup.frames_sent, sup.frames_pushed) == (1, 1)
        sup.after_scan(edges=True)  # within EDGE_PUSH_MIN_S of the last push: not again
        assert sup.frames_sent == 1
        sup._demand = True  # a demand is always answered
        sup.after_scan()
        assert (sup.frames_sent, sup.frames_pushed) == (2, 1)
        theirs.settimeout(5.0)
        assert theirs.recv(65536)  # the frames did go over the link
    finally:
        ours.close()
        theirs.close()


def test_stepped_encodings_interleaved_give_whole_images(make_runtime, run_scans, tmp_path):
    """The I/O process encodes a frame a few devices at a time between requests; two frames
    encoded step by step, interleaved, must each give exactly their whole encoding (no state
    shared between two encodings), and a many-device map takes several steps."""
    from busguard.northbound import encode

    meters = "".join(f'[[meter]]\nname = "m{i}"\ndriver = "memory"\n'
                     f'points = ["current_l1_a", "voltage_l1_n_v", "power_kw"]\n'
                     f'initial = {{ current_l1_a = {100 + i}.5, voltage_l1_n_v = 230.0 }}\n'
                     for i in range(80))
    text = site_text(1, str(tmp_path / "state"), io="thread").replace(
        '[[meter]]\nname = "m1"\nhost = "127.0.0.1"\nport = 1\n', meters + '[[meter]]\n'
        'name = "m1x"\nhost = "127.0.0.1"\nport = 1\n')
    rt = make_runtime(text, start=True)
    try:
        run_scans(rt, 2)
        pub = rt.publishers[0]
        first = pub._frame
        rt.image.write("m3.current_l1_a", 999.0)
        run_scans(rt, 1)
        second = pub._frame
        enc = pub.encoder
        a, b = enc.encode_steps(first), enc.encode_steps(second)
        done: dict[str, bytes] = {}
        steps = 0
        while len(done) < 2:
            for name, gen in (("first", a), ("second", b)):
                if name in done:
                    continue
                try:
                    next(gen)
                    steps += 1
                except StopIteration as stop:
                    done[name] = stop.value
        assert len(enc.steps) >= 240 // encode.STEP_POINTS >= 1 and len(enc.steps) > 1
        assert steps == 2 * len(enc.steps)
        assert done["first"] == enc.encode(first)
        assert done["second"] == enc.encode(second)
        assert done["first"] != done["second"]
    finally:
        rt.stop()


def test_link_writes_reach_the_image_and_a_foreign_message_is_dropped(fake_clock):
    """Driver writes cross the link as indexed records and land in the scan's image (value,
    quality, stamps, the min/max window); a message that does not fit the layout (a point
    index beyond it, a truncated record) is dropped and counted, never raised into the scan."""
    from busguard.image import PointSpec, ProcessImage
    from busguard.ioproc import link

    specs = [PointSpec(f"m.p{i}", source="m") for i in range(4)]
    image = ProcessImage(specs, fake_clock)
    big = {f"m.p{i}": i for i in range(6)}  # another layout: two more points
    ours, theirs = link.socket_pair()
    try:
        writer = link.LinkImageWriter(specs, image.index, theirs, fake_clock)
        writer.write_many([("m.p1", 7.5, Quality.GOOD), ("m.p2", 1.0, Quality.GOOD)],
                          t_mono=5.0, t_utc=1e9)
        writer.write_many([("m.p1", 9.5, Quality.GOOD)], t_mono=6.0, t_utc=1e9 + 1)
        writer.set_quality(["m.p2"], Quality.NOT_CONNECTED, t_mono=6.5)
        foreign = link.LinkImageWriter([*specs, PointSpec("m.p4", "m"), PointSpec("m.p5", "m")],
                                       big, theirs, fake_clock)
        foreign.write_many([("m.p5", 3.0, Quality.GOOD)])
        link.send(theirs, link.WRITE, b"\x00\x01")  # truncated
        got = link.drain(ours, image)
        assert got.bad == 2 and writer.sent == 3
        snap = image.snapshot(7.0)
        assert snap["m.p1"].value == 9.5 and snap["m.p1"].t_mono == 6.0
        assert snap["m.p1"].vmin == 7.5 and snap["m.p1"].vmax == 9.5
        assert snap["m.p2"].quality == Quality.NOT_CONNECTED and snap["m.p2"].value == 1.0
        assert snap["m.p0"].quality == Quality.NOT_CONNECTED  # never written
    finally:
        ours.close()
        theirs.close()


def test_a_restarted_io_process_refuses_a_site_file_the_scan_does_not_run(meter, running,
                                                                           tmp_path,
                                                                           monkeypatch):
    """The I/O process indexes points by the scan process's layout: one restarted after the
    file was edited (no reload yet) must not serve another layout; it says why, the alarm
    carries it, and the scan process goes on with its inputs stale."""
    import busguard.ioproc.supervisor as sup

    monkeypatch.setattr(sup, "BACKOFF_S", (0.2, 1.0))
    r = running(site_text(meter.port, str(tmp_path / "state")))
    rt = r.rt
    wait_until(lambda: good(rt, "m1.current_l1_a") is not None, what="first value")
    path = tmp_path / "site.toml"
    path.write_text(path.read_text().replace("high = 500.0", "high = 90.0"), encoding="utf-8")
    first = rt.io.pid
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: "changed since" in rt.io.ready.get("error", ""), timeout=15.0,
               what="the restarted io process's refusal")
    assert "reload to apply it" in rt.io.ready["error"]
    wait_until(lambda: "io-process:down" in rt.alarms.alarms, what="the BG-IO-PROCESS alarm")
    assert "changed since" in rt.alarms.alarms["io-process:down"].condition.message
    assert rt.state == "running"


# -- [history] with io = "process" ------------------------------------------------------------
HIST_POINT = "m1.current_l1_a"


def test_history_records_with_the_io_process_and_busguard_history_reads_it(meter, running,
                                                                           tmp_path):
    """The recorder records what the DCIM reads every second while the I/O process polls
    the meter and serves the map, and `busguard history` (a subprocess, as an operator runs
    it) reads the 1 s samples back after the runtime stopped. (Minutes need a whole minute
    recorded: tests/test_history_cli.py reads them from the bundled demo.)"""
    import csv
    import io
    import json
    import subprocess
    import sys
    import time

    from busguard.history import open_reader
    from busguard.history.ring import HistoryFileError

    state, ram = tmp_path / "state", tmp_path / "ram"
    text = site_text(meter.port, str(state)) + f'[history]\nseconds_dir = "{ram}"\n'
    r = running(text)
    assert r.rt.site.scan.io == "process"
    assert r.rt.io is not None  # the I/O process polls the meter and serves the map
    want = VALUES[HIST_POINT.split(".", 1)[1]]
    got = []
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        try:
            got = [s for s in open_reader(state).query(HIST_POINT, time.time() - 120)
                   if s.quality == 0]
        except HistoryFileError:
            continue
        if len(got) >= 3:
            break
    assert len(got) >= 3, f"fewer than 3 good 1 s samples of {HIST_POINT} within 30 s: {got}"
    assert abs(got[-1].avg - want) <= abs(want) * 1e-6  # float32 in the ring
    r.stop()

    def history(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "busguard.cli", "history", HIST_POINT, *args,
                               "--site", str(tmp_path / "site.toml")], capture_output=True,
                              text=True, timeout=60)

    out = history("--since", "5m", "--csv")
    assert out.returncode == 0, out.stderr
    rows = [x for x in csv.DictReader(io.StringIO(out.stdout)) if x["quality"] == "good"]
    assert len(rows) >= 3 and abs(float(rows[-1]["avg"]) - want) <= abs(want) * 1e-6
    out = history("--since", "5m", "--json")
    assert out.returncode == 0, out.stderr
    samples = [x for x in json.loads(out.stdout) if x["quality"] == "good"]
    assert len(samples) == len(rows) and samples[-1]["avg"] == float(rows[-1]["avg"])


def test_the_io_process_helper_sets_the_option_in_either_form_of_site():
    """busguard.testing.io_process: the site's [scan] table gets the option, or a site
    without one gets the table (what the I/O-process tests of other interfaces use)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from busguard.testing import io_process

    without = '[site]\nname = "x"\n\n[[block]]\nname = "b"\ntype = "t"\n'
    doc = tomllib.loads(io_process(without))
    assert doc["scan"] == {"io": "process"} and doc["block"] == [{"name": "b", "type": "t"}]
    with_scan = '[site]\nname = "x"\n[scan]\nperiod_ms = 20\n[modbus_server]\nport = 0\n'
    doc = tomllib.loads(io_process(with_scan))
    assert doc["scan"] == {"io": "process", "period_ms": 20}
    assert doc["modbus_server"] == {"port": 0}
