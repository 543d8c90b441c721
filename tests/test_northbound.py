"""The northbound Modbus server over real sockets on 127.0.0.x: map reads, writes, access."""

from __future__ import annotations

import math
import socket
import threading

import pytest

from busguard.errors import ConfigError
from busguard.image import Quality
from busguard.northbound import mapdef
from busguard.testing import run_scans
from test_northbound_helpers import (
    closed_by_server,
    connect,
    f32,
    f32_words,
    read,
    refused,
    request,
    site_text,
    try_connect,
    wait_for,
    write,
    write_single,
)


def loopback_alias_ok() -> bool:
    try:
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.close()
        return True
    except OSError:
        return False


needs_alias = pytest.mark.skipif(not loopback_alias_ok(),
                                 reason="cannot bind 127.0.0.2 (no 127/8 loopback here)")


@pytest.fixture
def served(make_runtime):
    def make(server: str | None = None):
        rt = make_runtime(site_text(server) if server else site_text(), start=True)
        pub = rt.publishers[0]
        return rt, pub, pub.server.port()

    return make


def feed(rt, k: float = 1.0) -> None:
    rt.image.write_many([
        ("pqm-a1.voltage_l1_n_v", 277.0 + k, Quality.GOOD),
        ("pqm-a1.current_l1_a", 400.0 + k, Quality.GOOD),
        ("pqm-a1.current_l2_a", 401.0 + k, Quality.GOOD),
        ("pqm-a1.current_l3_a", 402.0 + k, Quality.GOOD),
        ("pqm-a1.power_kw", 310.5, Quality.GOOD),
        ("pqm-a1.thd_v_l1_pct", 2.0, Quality.GOOD),
        ("pqm-a1.comm_ok", 1.0, Quality.GOOD),
        ("pqm-a2.current_l1_a", 12.25, Quality.BAD),
        ("pqm-a2.vendor_special_x", 7.0, Quality.GOOD),
        ("tap-a1.temp_c", 41.5, Quality.GOOD),
        ("tap-a2.temp_c", 42.5, Quality.GOOD),
        ("tap-a3.temp_c", 43.5, Quality.GOOD),
        ("cb-a1-01.led", 0.0, Quality.GOOD),
    ])


def test_map_reads_equal_the_image_through_pymodbus(served):
    from pymodbus.client import ModbusTcpClient

    rt, pub, port = served()
    feed(rt)
    rt.clock.advance(0.05)
    run_scans(rt, 3)
    m = pub.map
    snap = rt.last_result.snapshot
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert client.connect()
    try:
        head = client.read_holding_registers(0, count=64, device_id=1).registers
        assert head[0] == mapdef.MAGIC and head[1] == mapdef.MAP_VERSION
        assert head[2] == 1  # running
        assert (head[6] << 16 | head[7]) == rt.last_result.cycle == 3
        for d in m.devices:
            used = mapdef.DEVICE_HEADER_WORDS + mapdef.POINT_WORDS * len(d.points)
            regs = []
            for a in range(d.address, d.address + used, mapdef.MAX_READ):  # 2 requests
                n = min(mapdef.MAX_READ, d.address + used - a)
                regs += client.read_holding_registers(a, count=n, device_id=1).registers
            assert regs[0] == d.ordinal
            for j, rec in enumerate(d.points):
                o = mapdef.DEVICE_HEADER_WORDS + j * mapdef.POINT_WORDS
                if rec is None:
                    assert math.isnan(f32(regs[o:o + 2])) and regs[o + 2] == 3
                    continue
                pv = snap[rec.name]
                got = client.convert_from_registers(regs[o:o + 2],
                                                    client.DATATYPE.FLOAT32)
                assert got == pytest.approx(pv.value, rel=1e-6, nan_ok=True), rec.name
                assert regs[o + 2] == int(pv.quality), rec.name
                assert regs[o + 3] == round((snap.now - pv.t_mono) * 1000), rec.name
        # the same image answers input-register reads
        a1 = m.record_of("pqm-a1.current_l1_a").address
        ir = client.read_input_registers(a1, count=4, device_id=1).registers
        age = round((snap.now - snap["pqm-a1.current_l1_a"].t_mono) * 1000)
        assert f32(ir[:2]) == 401.0 and ir[2] == 0 and ir[3] == age
        bad = m.record_of("pqm-a2.current_l1_a").address
        hr = client.read_holding_registers(bad, count=4, device_id=1).registers
        assert hr[2] == int(Quality.BAD)
        extra = m.record_of("pqm-a2.vendor_special_x")
        assert extra in m.extras  # not a standard quantity: in the extra area
        xr = client.read_holding_registers(extra.address, count=2, device_id=1).registers
        assert f32(xr) == 7.0
        out = m.record_of("relay.alarm").address
        assert client.read_holding_registers(out, count=4, device_id=1).registers[:3] == \
            [*f32_words(0.0), 0]
    finally:
        client.close()


def test_alarm_bits_outputs_and_header_follow_the_scan(served):
    rt, pub, port = served()
    feed(rt)
    run_scans(rt, 1)
    rt.image.write("pqm-a1.thd_v_l1_pct", 7.5)
    run_scans(rt, 1)
    m = pub.map
    with connect(port) as s:
        head = read(s, 0, 64)
        assert head[16] == 1 and head[17] == 1  # one alarm, unacknowledged
        assert head[18] == 2  # highest severity: warning
        bits = head[28]
        assert bits & 1 and bits & (1 << 2) and bits & (1 << 7)
        dev = next(d for d in m.devices if d.name == "pqm-a1")
        dregs = read(s, dev.address, 8)
        assert dregs[2] & 1 and dregs[2] & (1 << 2)  # the alarm names this device
        _block, addr = m.alarm_blocks[0]
        assert read(s, addr, 2) == [bits, 1]
        out = m.record_of("relay.alarm").address
        assert f32(read(s, out, 2)) == 1.0


def test_writes_only_in_the_command_area_and_validated(served):
    rt, pub, port = served()
    run_scans(rt, 1)
    m = pub.map
    ack = next(c for c in m.commands if c.name == "cmd.ack_alarms")
    with connect(port, "127.0.0.2") as w:
        assert write(w, ack.address + 2, [0, 1]) is None  # uint32 pair
        assert rt.image.snapshot()["cmd.ack_alarms"].value == 1.0
        assert write(w, ack.address, f32_words(2.0)) is None  # float32 pair
        assert rt.image.snapshot()["cmd.ack_alarms"].value == 2.0
        assert write_single(w, ack.address + 3, 3) == [ack.address + 3, 3]  # FC6 echo
        assert rt.image.snapshot()["cmd.ack_alarms"].value == 3.0
        assert write(w, ack.address + 2, [1, 0]) == 0x03  # 65536 > maxval 65535
        assert write(w, ack.address, f32_words(math.nan)) == 0x03
        assert write(w, ack.address + 1, [0, 1]) == 0x02  # not on a pair boundary
        assert write(w, ack.address + 2, [0]) == 0x02  # half a pair
        assert write_single(w, ack.address, 1) == 0x02  # FC6 only on word 3
        assert write(w, 0, [1, 2]) == 0x02  # header
        assert write(w, m.devices[0].address + 8, [0, 0]) == 0x02  # a measurement
        assert write(w, m.bases["name"], [0, 0]) == 0x02
        # functions outside the map: coils, diagnostics
        rfc, data = request(w, 1, bytes.fromhex("00000008"))
        assert rfc == 0x81 and data[0] == 0x01
        rfc, data = request(w, 5, bytes.fromhex("0000ff00"))
        assert rfc == 0x85 and data[0] == 0x01
        assert read(w, m.size - 1, 2) == 0x02  # past the end
    assert rt.image.snapshot()["cmd.ack_alarms"].value == 3.0  # refused writes changed nothing
    run_scans(rt, 1)
    with connect(port) as r:
        assert read(r, ack.address, 4) == [*f32_words(3.0), 0, 3]


def test_command_write_acknowledges_alarms_through_the_scan(served):
    rt, pub, port = served()
    feed(rt)
    rt.image.write("pqm-a1.thd_v_l1_pct", 7.5)
    run_scans(rt, 1)
    ack = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    with connect(port, "127.0.0.2") as w:
        assert write(w, ack.address + 2, [0, 1]) is None  # commands start at 0: this acts
        run_scans(rt, 1)
        assert write(w, ack.address + 2, [0, 2]) is None  # and so does the next change
        run_scans(rt, 1)
    (alarm,) = rt.alarms.active()
    assert alarm.acked


@needs_alias
def test_write_allowlist_refuses_with_illegal_function(served):
    rt, pub, port = served()
    run_scans(rt, 1)
    ack = pub.map.commands[0]
    with connect(port, "127.0.0.1") as reader:  # allowed to read, not to write
        assert read(reader, 0, 2)[0] == mapdef.MAGIC
        assert write(reader, ack.address + 2, [0, 9]) == 0x01
        assert write_single(reader, ack.address + 3, 9) == 0x01
    assert pub.status()["write_refused"] == 2
    assert rt.image.snapshot()["cmd.ack_alarms"].value == 0.0  # still the cold-start baseline


@needs_alias
def test_allowlist_refuses_at_connect(served):
    _rt, pub, port = served('allow = ["127.0.0.2/32"]\n')
    assert refused(port, "127.0.0.5")
    wait_for(lambda: pub.status()["refused_allowlist"] == 1, what="refusal counted")
    with connect(port, "127.0.0.2") as ok:
        assert read(ok, 0, 1) == [mapdef.MAGIC]
    assert refused(port, "127.0.0.1")  # loopback is not implied once `allow` is set


@needs_alias
def test_connection_caps_total_and_per_client(served):
    _rt, pub, port = served('allow = ["127.0.0.0/8"]\nmax_connections = 3\n'
                           'max_connections_per_client = 2\n')
    a1, a2 = connect(port, "127.0.0.2"), connect(port, "127.0.0.2")
    for s in (a1, a2):
        assert read(s, 0, 1) == [mapdef.MAGIC]
    assert refused(port, "127.0.0.2")  # third from one client: over the per-client cap
    b1 = connect(port, "127.0.0.3")
    assert read(b1, 0, 1) == [mapdef.MAGIC]
    assert refused(port, "127.0.0.4")  # fourth in total: over the global cap
    a1.close()
    wait_for(lambda: pub.status()["connections"] == 2, what="slot released")
    with connect(port, "127.0.0.4") as c2:
        assert read(c2, 0, 1) == [mapdef.MAGIC]
    for s in (a2, b1):
        s.close()
    assert pub.status()["refused_cap"] == 2


def test_idle_connections_are_closed(served):
    _rt, pub, port = served('idle_timeout_s = 0.2\n')
    with connect(port) as busy:
        assert read(busy, 0, 1) == [mapdef.MAGIC]
        assert closed_by_server(busy, timeout=5)
    wait_for(lambda: pub.status()["closed_idle"] >= 1, what="idle close counted")


def test_noisy_poller_is_throttled_not_the_others(served):
    _rt, pub, port = served('max_requests_per_s = 100.0\n')
    from test_northbound_helpers import frame, response

    noisy = connect(port)  # 140 requests at once: a burst of 100, then 100 per second
    noisy.sendall(b"".join(frame(3, bytes.fromhex("00000001"), tid=i) for i in range(1, 141)))
    got = [response(noisy)[0] for _ in range(101)]
    assert got == list(range(1, 102))
    wait_for(lambda: pub.status()["throttled"] >= 1, what="throttling")
    if loopback_alias_ok():  # a different client address has its own bucket
        with connect(port, "127.0.0.2") as dcim:
            assert read(dcim, 0, 1) == [mapdef.MAGIC]  # answered while the noisy one waits
    rest = [response(noisy)[0] for _ in range(39)]
    assert rest == list(range(102, 141))  # every request answered, in order
    noisy.close()


@needs_alias
def test_200_idle_attackers_neither_stop_the_scan_nor_lock_out_the_dcim(served):
    rt, pub, port = served('allow = ["127.0.0.0/8"]\nmax_connections = 16\n'
                           'max_connections_per_client = 4\n')
    feed(rt)
    run_scans(rt, 1)
    outside = []
    attackers = []
    try:
        for _ in range(200):
            s = try_connect(port, "127.0.0.66")  # inside the allowlist
            if s is not None:
                attackers.append(s)
        wait_for(lambda: pub.status()["accepted"] + pub.status()["refused_cap"] >= 200,
                 what="200 attacker connections handled")
        assert pub.status()["connections"] == 4  # only its per-client share
        before = rt.last_result.cycle
        run_scans(rt, 5)  # the scan goes on
        with connect(port, "127.0.0.2") as dcim:
            head = read(dcim, 0, 8)
            assert (head[6] << 16 | head[7]) == before + 5
    finally:
        for s in attackers + outside:
            s.close()


@needs_alias
def test_attackers_outside_the_allowlist_are_all_refused(served):
    _rt, pub, port = served('allow = ["127.0.0.2/32"]\n')
    socks = [s for s in (try_connect(port, "127.0.0.66") for _ in range(200)) if s]
    try:
        wait_for(lambda: pub.status()["refused_allowlist"] == 200, what="200 refusals")
        assert pub.status()["connections"] == 0
        with connect(port, "127.0.0.2") as dcim:
            assert read(dcim, 0, 1) == [mapdef.MAGIC]
    finally:
        for s in socks:
            s.close()


def test_reads_never_mix_two_scans(served):
    """A writer changes every point of a meter and the probes together before each scan
    while a client reads whole blocks: every block read holds one scan's values."""
    rt, pub, port = served()
    m = pub.map
    meter = next(d for d in m.devices if d.name == "pqm-a1")
    names = [r.name for r in meter.points if r is not None]
    probes = [d for d in m.devices if d.kind == "probe"]
    stop = threading.Event()
    scans = [0]

    def between(rt_, i):
        k = float(scans[0] + i + 1)
        rt_.image.write_many([(n, k, Quality.GOOD) for n in names]
                             + [(f"{p.name}.temp_c", k, Quality.GOOD) for p in probes])

    def scanner():
        while not stop.is_set():
            run_scans(rt, 20, between)
            scans[0] += 20

    t = threading.Thread(target=scanner)
    t.start()
    seen = set()
    try:
        with connect(port) as s:
            for _ in range(300):
                regs = read(s, meter.address, 124)
                vals = {f32(regs[r.address - meter.address:r.address - meter.address + 2])
                        for r in meter.points if r is not None}
                cycle_probe = read(s, probes[0].address, 3 * 16)  # three blocks, one request
                pvals = {f32(cycle_probe[16 * i + 8:16 * i + 10]) for i in range(3)}
                assert len(vals) == 1, f"torn meter block: {sorted(vals)}"
                assert len(pvals) == 1, f"torn probe blocks: {sorted(pvals)}"
                seen |= vals
    finally:
        stop.set()
        t.join()
    assert len(seen) > 1  # the writer really ran during the reads


def test_command_writes_are_recorded_and_replayed_like_inputs(make_runtime, tmp_path):
    from busguard.record import read_recording
    from busguard.replay import replay

    rt = make_runtime(site_text('write_allow = ["127.0.0.1/32"]\n'))
    recording = tmp_path / "trace.jsonl"
    rt.start(record=recording)
    port = rt.publishers[0].server.port()
    ack = next(c for c in rt.publishers[0].map.commands if c.name == "cmd.ack_alarms")
    feed(rt)
    rt.image.write("pqm-a1.thd_v_l1_pct", 7.5)
    run_scans(rt, 1)
    with connect(port) as w:
        assert write(w, ack.address + 2, [0, 1]) is None
        run_scans(rt, 1)
        assert write(w, ack.address + 2, [0, 2]) is None
        run_scans(rt, 1)
    rt.stop()
    header, cycles = read_recording(recording)
    i = header["points"].index("cmd.ack_alarms")
    assert [c.snapshot.values[i] for c in cycles][-2:] == [1.0, 2.0]
    report, steps = replay(recording, rt.site.file)
    assert all(s.matches for s in steps)
    assert report.mismatches == [] and report.cycles == 3
    (alarm,) = rt.alarms.active()
    assert alarm.acked  # the DCIM's second write acknowledged it, in the live run


def test_busguard_status_reads_a_running_unit(served, capsys):
    from busguard.cli import main

    rt, _pub, port = served()
    feed(rt)
    run_scans(rt, 2)
    assert main(["status", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"map v{mapdef.MAP_VERSION}, running, LIVE" in out and "2 cycles" in out
    assert "pqm-a1" in out and "current_l1_a=401" in out and "tap-a3" in out
    assert "pqm-a2" in out and "(bad)" in out
    assert main(["status", "--port", str(port), "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["header"]["cycle_count"] == 2
    dev = {d["name"]: d for d in data["devices"]}
    assert dev["pqm-a1"]["points"]["power_kw"] == {"value": 310.5, "quality": "good",
                                                   "age_ms": 10}
    assert data["extras"]["pqm-a2.vendor_special_x"]["value"] == 7.0
    assert "cmd.ack_alarms" in data["commands"]


def test_busguard_status_exit_1_when_nothing_answers(capsys):
    import socket as _s

    from busguard.cli import main

    with _s.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert main(["status", "--port", str(port), "--timeout", "1"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def _ipv6_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_ok(), reason="no IPv6 loopback here")
def test_ipv6_listener_and_allowlist(served):
    _rt, _pub, port = served('host = "::1"\nallow = ["::1/128"]\n')
    with socket.create_connection(("::1", port), timeout=5) as s:
        assert read(s, 0, 1) == [mapdef.MAGIC]


def test_malformed_requests_get_exceptions_and_the_server_goes_on(served):
    _rt, _pub, port = served()
    with connect(port) as s:
        assert read(s, 0, 200) == 0x03  # over 125 registers: illegal data value
    with connect(port) as s:
        assert read(s, 0, 0) == 0x03
    with connect(port) as s:
        assert request(s, 0x63, b"\x00\x01") == (0xE3, b"\x01")  # unknown function
    with connect(port) as s:
        assert request(s, 8, b"\x00\x00\x12\x34") == (0x88, b"\x01")  # diagnostics refused
        assert request(s, 0x2B, bytes([0x0E, 1, 0]))[0] == 0x2B  # device identification
        assert request(s, 0x2B, bytes([0x0D, 1, 0])) == (0xAB, b"\x01")  # other MEI types
        assert read(s, 0, 2) == [mapdef.MAGIC, mapdef.MAP_VERSION]


def test_dcim_schedules_a_training_job_for_predictive_cooling(served):
    """The next job's start (epoch seconds, through the uint32 view) and expected load (float32)
    written over Modbus drive the predictive-cooling block: demand rises lead_s before."""
    try:
        rt, pub, port = served('write_allow = ["127.0.0.1/32"]\n[[block]]\nname = "pc"\n'
                               'type = "predictive_cooling"\nlead_s = 30.0\n'
                               'full_load_kw = 1000.0\n')
    except ConfigError as exc:  # the block's options are its owner's business
        pytest.skip(f"predictive_cooling not usable here: {exc}")
    if "cooling.demand_pct" not in rt.engine.outputs:
        pytest.skip("no predictive_cooling block")
    m = pub.map
    start = next(c for c in m.commands if c.name == "cooling.cmd_job_start_utc")
    load = next(c for c in m.commands if c.name == "cooling.cmd_job_load_kw")
    run_scans(rt, 1)
    job_at = int(rt.clock.wall()) + 60
    with connect(port) as w:
        assert write(w, start.address + 2, [job_at >> 16, job_at & 0xFFFF]) is None
        assert write(w, load.address, f32_words(700.0)) is None
    run_scans(rt, 1)
    snap = rt.last_result.snapshot
    assert snap["cooling.cmd_job_start_utc"].value == job_at  # to the second
    assert rt.last_result.outputs["cooling.demand_pct"] == 0.0  # 60 s ahead: not yet
    rt.clock.advance(31.0)
    run_scans(rt, 1)
    assert rt.last_result.outputs["cooling.demand_pct"] > 0.0  # within lead_s of the start
    out = m.record_of("cooling.demand_pct").address
    run_scans(rt, 1)
    with connect(port) as r:
        assert f32(read(r, out, 2)) == rt.last_result.outputs["cooling.demand_pct"]
