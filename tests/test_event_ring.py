"""Trip causes, the alarm table and the event ring, read over real Modbus TCP as a DCIM does.

Addresses come from the map's own table (``pub.map``: RegisterMap), never from literals. The
scan runs on the fake clock: "every 10 s" is 1000 scans of 10 ms, not a sleep.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from busguard import alarmcodes
from busguard.image import Quality
from busguard.northbound import mapdef as md
from busguard.northbound.reader import read_all, read_chunked
from busguard.testing import run_scans

ROOT = Path(__file__).resolve().parents[1]

SITE = """
[site]
name = "ev"

[scan]
period_ms = 10

[[meter]]
name = "m1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "current_l2_a", "current_l3_a", "residual_current_ma", "thd_v_l1_pct",
          "energy_import_wh", "energy_export_varh"]

[[probe]]
name = "bb0"
driver = "memory"
points = ["temp_c"]

[[probe]]
name = "bb1"
driver = "memory"
points = ["temp_c"]

[[breaker]]
name = "cb0"
driver = "memory"
points = ["led"]

[[breaker]]
name = "cb1"
driver = "memory"
points = ["led"]

[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
pickup_a = 1000.0
delay_s = 0.5
residual_pickup_ma = 300.0
residual_delay_s = 0.0
probes = ["bb1"]
{block}

[[block]]
name = "lim"
type = "threshold_alarm"
point = "m1.thd_v_l1_pct"
high = 5.0
hysteresis = 0.0

[modbus_server]
port = 0
write_allow = ["127.0.0.1/32"]
"""

NORMAL = [("m1.current_l1_a", 500.0), ("m1.current_l2_a", 510.0), ("m1.current_l3_a", 490.0),
          ("m1.residual_current_ma", 20.0), ("m1.thd_v_l1_pct", 1.0), ("bb0.temp_c", 40.0),
          ("bb1.temp_c", 55.0), ("cb0.led", 0.0), ("cb1.led", 0.0)]
SCANS_PER_10_S = 1000  # 10 ms scans


def write(rt, items) -> None:
    """Set inputs; they stay set: :func:`scans` writes them again before every scan, as the
    drivers would (a value not refreshed goes stale and raises BG-INPUT)."""
    live = rt.__dict__.setdefault("_test_inputs", {})
    live.update({n: float(v) for n, v in items})
    rt.image.write_many([(n, float(v), Quality.GOOD) for n, v in items])


def scans(rt, n: int) -> None:
    """``n`` scans with the inputs refreshed before each, as a driver polling them would."""
    live = rt.__dict__.setdefault("_test_inputs", {})
    run_scans(rt, n, lambda r, _i: r.image.write_many(
        [(k, v, Quality.GOOD) for k, v in live.items()]))


@pytest.fixture
def unit(make_runtime):
    """A started runtime serving the map on loopback, fed normal values, and a client."""
    made = []

    def make(block: str = "", retained: bool = False, site: str | None = None):
        rt = make_runtime(site if site is not None else SITE.format(block=block),
                          start=True, retained=retained)
        write(rt, NORMAL)
        scans(rt, 2)
        pub = rt.publishers[0]
        client = ModbusTcpClient("127.0.0.1", port=pub.server.port(), timeout=3, retries=0)
        assert client.connect()
        made.append(client)
        return rt, pub, client

    yield make
    for c in made:
        c.close()


def reader(client):
    return lambda a, n: client.read_holding_registers(a, count=n, device_id=1).registers


def breaker(status: dict, name: str) -> dict:
    return next(d for d in status["devices"] if d["name"] == name)


# -- the code table ---------------------------------------------------------------------------
def test_code_numbers_are_fixed_and_round_trip():
    assert alarmcodes.code_number("0xCF") == 0xCF and alarmcodes.code_number("0x02") == 2
    assert alarmcodes.code_number("errno 110") == 0x0100 + 110
    assert alarmcodes.code_number("BG-TRIP-OC") == 0x0201
    assert alarmcodes.code_number("") == 0
    assert alarmcodes.code_number("ACME-42") == alarmcodes.OTHER
    for num, code, _doc in alarmcodes.table():
        if code != "other":
            assert alarmcodes.code_name(num) == code
            assert alarmcodes.code_number(code) == num


def test_every_trip_cause_of_the_blocks_has_a_number():
    from busguard_blocks.shunt_trip import CAUSES, ShuntTrip
    from busguard_blocks.thermal_interlock import ThermalInterlock

    for code, _words in CAUSES.values():
        assert alarmcodes.code_number(code) != alarmcodes.OTHER, code
    for cls in (ShuntTrip, ThermalInterlock):
        for code in cls.codes:
            assert alarmcodes.code_number(code) != alarmcodes.OTHER, code


def test_code_table_is_rendered_in_the_docs():
    table = alarmcodes.markdown_table()
    for doc in ("docs/northbound.md", "docs/register-map.md"):
        assert table in (ROOT / doc).read_text(encoding="utf-8"), \
            f"{doc}: the code table is out of step with busguard/alarmcodes.py"


# -- trip causes --------------------------------------------------------------------------------
# cause -> (block options, inputs that trip, scans to run)
CAUSES = {
    "BG-TRIP-OC": ("", [("m1.current_l2_a", 1500.0)], 80),
    "BG-TRIP-OC-LED": ("", [("cb1.led", 1.0)], 2),
    "BG-TRIP-GF": ("", [("cb1.led", 2.0)], 2),
    "BG-TRIP-RCM": ("", [("m1.residual_current_ma", 450.0)], 2),
    "0xCF": ("", [("bb1.temp_c", 93.0)], 2),
    "BG-TRIP-THERMAL": ("thermal_ib_a = 400.0\nthermal_tau_s = 1.0",
                        [("m1.current_l1_a", 900.0)], 300),
    "BG-TRIP-INPUT-LOSS": ("trip_on_input_loss = true\ninput_loss_delay_s = 0.1", [], 30),
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_trip_cause_and_time_per_cause(unit, cause):
    block, inputs, n = CAUSES[cause]
    rt, pub, client = unit(block)
    before = breaker(read_all(reader(client)), "cb1")
    assert (before["trip_cause"], before["trip_cause_name"], before["trip_utc"]) == (0, "", None)
    t0 = rt.clock.wall()
    if cause == "BG-TRIP-INPUT-LOSS":  # the meter stops answering
        for name in [k for k in rt._test_inputs if k.startswith("m1.")]:
            del rt._test_inputs[name]
        rt.image.write_many([(k, v, Quality.BAD) for k, v in NORMAL if k.startswith("m1.")])
    write(rt, inputs)
    scans(rt, n)
    got = read_all(reader(client))
    b = breaker(got, "cb1")
    assert "trip_latched" in b["flags"]
    assert b["trip_cause"] == alarmcodes.code_number(cause)
    assert b["trip_cause_name"] == cause
    st = rt.blocks[0].trip
    assert b["trip_utc"] == pytest.approx(st["t_utc"], abs=0.002)
    assert t0 <= b["trip_utc"] <= rt.clock.wall()
    other = breaker(got, "cb0")  # an unprotected breaker says no trip
    assert (other["trip_cause"], other["trip_utc"]) == (0, None)
    # the same words are in the documented fields
    fields = {f.name: f for f in pub.map.fields()}
    assert fields["cb1.trip_cause"].address == \
        next(d for d in pub.map.devices if d.name == "cb1").address + md.BREAKER_TRIP_OFFSET


def test_trip_cause_clears_with_the_reset(unit):
    rt, _pub, client = unit()
    write(rt, [("cb1.led", 1.0)])
    scans(rt, 2)
    assert breaker(read_all(reader(client)), "cb1")["trip_cause_name"] == "BG-TRIP-OC-LED"
    write(rt, [("cb1.led", 0.0), ("cb1.cmd_reset", 0.0)])
    scans(rt, 1)
    write(rt, [("cb1.cmd_reset", 1.0)])
    scans(rt, 2)
    b = breaker(read_all(reader(client)), "cb1")
    assert "trip_latched" not in b["flags"]
    assert (b["trip_cause"], b["trip_cause_name"], b["trip_utc"]) == (0, "", None)


def test_thermal_interlock_declares_its_breaker_trip_0xcf(unit):
    block = """
[[block]]
name = "th0"
type = "thermal_interlock"
probes = ["bb0"]
output = "relay.trip0"
breaker = "cb0"
"""
    rt, _pub, client = unit(site=SITE.format(block="") + block)
    b = breaker(read_all(reader(client)), "cb0")
    assert b["trip_cause"] == 0
    write(rt, [("bb0.temp_c", 95.0)])
    scans(rt, 2)
    t_trip = rt.clock.wall()
    scans(rt, 3)
    b = breaker(read_all(reader(client)), "cb0")
    assert (b["trip_cause"], b["trip_cause_name"]) == (0xCF, "0xCF")
    assert "shunt_trip" in b["flags"]
    assert b["trip_utc"] == pytest.approx(t_trip, abs=0.05)
    write(rt, [("bb0.temp_c", 40.0)])
    scans(rt, 12)  # no edge (the 0xCF alarm latches): seen within 10 scans
    b = breaker(read_all(reader(client)), "cb0")
    assert (b["trip_cause"], b["trip_utc"]) == (0, None)


def test_thermal_interlock_breaker_needs_an_output(make_runtime):
    from busguard.errors import ConfigError

    block = """
[[block]]
name = "th0"
type = "thermal_interlock"
probes = ["bb0"]
breaker = "cb0"
"""
    with pytest.raises(ConfigError, match=r"block\[\d\]\.breaker.*needs `output`"):
        make_runtime(SITE.format(block="") + block)


def test_trip_cause_and_time_survive_a_restart(make_runtime, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(block="") + '[paths]\nstate_dir = "state"\n', encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    write(rt, NORMAL)
    scans(rt, 2)
    write(rt, [("m1.residual_current_ma", 450.0)])
    scans(rt, 2)
    t_trip = rt.blocks[0].trip["t_utc"]
    rt.stop()
    rt2 = make_runtime(site, start=True, retained=True)
    scans(rt2, 1)
    client = ModbusTcpClient("127.0.0.1", port=rt2.publishers[0].server.port(), timeout=3,
                             retries=0)
    assert client.connect()
    try:
        b = breaker(read_all(reader(client)), "cb1")
    finally:
        client.close()
    assert "trip_latched" in b["flags"]
    assert (b["trip_cause"], b["trip_cause_name"]) == (0x0204, "BG-TRIP-RCM")
    assert b["trip_utc"] == pytest.approx(t_trip, abs=0.002)


# -- the alarm table -----------------------------------------------------------------------------
def test_alarm_table_lists_code_severity_device_state_and_time(unit):
    rt, pub, client = unit()
    t_raise = rt.clock.wall()
    write(rt, [("bb1.temp_c", 93.0), ("m1.thd_v_l1_pct", 9.0)])
    scans(rt, 2)
    table = read_all(reader(client))["alarm_table"]
    assert [a["code"] for a in table] == ["0xCF", "BG-LIMIT"]  # most urgent first
    trip, lim = table
    assert trip == {"code": "0xCF", "code_num": 0xCF, "severity": "critical", "device": "cb1",
                    "slot": 1, "state": "active", "acked": False,
                    "raised_utc": pytest.approx(t_raise, abs=0.05)}
    assert (lim["code_num"], lim["severity"], lim["device"], lim["slot"]) == \
        (0x0304, "warning", "m1", 0)
    # the record's words at the documented place
    base = pub.map.bases["alarm_table"]
    head = md.ALARM_TABLE_HEAD.unpack(reader(client)(base, md.AREA_HEAD_WORDS))
    assert (head["listed"], head["total"], head["capacity"]) == (2, 2, md.ALARM_TABLE_CAPACITY)
    # acknowledged, then the threshold's condition goes: its alarm clears (not latching)
    write(rt, [("cmd.ack_alarms", 0.0)])
    scans(rt, 1)
    write(rt, [("cmd.ack_alarms", 1.0), ("m1.thd_v_l1_pct", 1.0)])
    scans(rt, 12)
    table = read_all(reader(client))["alarm_table"]
    assert [(a["code"], a["acked"]) for a in table] == [("0xCF", True)]


def test_alarm_table_states_latched_and_cleared_unacked(unit):
    block = """
[[block]]
name = "th0"
type = "thermal_interlock"
probes = ["bb0"]
"""
    rt, _pub, client = unit(site=SITE.format(block="") + block)
    write(rt, [("bb0.temp_c", 95.0)])
    scans(rt, 2)
    states = {a["code"]: a["state"] for a in read_all(reader(client))["alarm_table"]}
    assert states["0xCF"] == "latched"  # holds, and latches (latch_trip_alarm)
    write(rt, [("bb0.temp_c", 30.0)])
    scans(rt, 12)
    table = read_all(reader(client))["alarm_table"]
    cf = next(a for a in table if a["code"] == "0xCF")
    assert (cf["state"], cf["acked"], cf["device"], cf["slot"]) == \
        ("cleared-unacked", False, "bb0", 0)


# -- the event ring ------------------------------------------------------------------------------
class PollingDcim:
    """What a DCIM does every 10 s: read the ring's head, then the records after the last
    sequence number it saw, in order; a jump in the numbers is an overflow it can count."""

    def __init__(self, client: ModbusTcpClient, regmap: md.RegisterMap) -> None:
        self.read = reader(client)
        self.base = regmap.bases["event_ring"]
        self.last_seq = 0
        self.seen: list[tuple[int, str, str, int]] = []  # (seq, kind, code, code_num)
        self.lost = 0

    def poll(self) -> None:
        head = md.EVENT_RING_HEAD.unpack(self.read(self.base, md.AREA_HEAD_WORDS))
        seq, count, cap = head["seq"], head["count"], head["capacity"]
        if seq == self.last_seq:
            return
        oldest = seq - count + 1
        first = max(self.last_seq + 1, oldest)
        self.lost += first - (self.last_seq + 1)  # edges that left the ring unread
        words = read_chunked(self.read, self.base + md.AREA_HEAD_WORDS, cap * md.EVENT_WORDS)
        for s in range(first, seq + 1):
            o = ((s - 1) % cap) * md.EVENT_WORDS
            rec = md.EVENT.unpack(words[o:o + md.EVENT_WORDS])
            assert rec["seq"] == s, "the record of this number was overwritten meanwhile"
            self.seen.append((s, md.EVENT_KINDS[rec["kind"]],
                              rec["code"].rstrip(b"\0").decode(), rec["code_num"]))
        self.last_seq = seq


def burst(rt, edges: int) -> None:
    """``edges`` alarm edges, one per scan: the threshold goes over and back."""
    for _k in range(edges):
        over = rt.__dict__.get("_test_inputs", {}).get("m1.thd_v_l1_pct", 1.0) > 5.0
        write(rt, [("m1.thd_v_l1_pct", 1.0 if over else 9.0)])
        scans(rt, 1)


def test_polling_dcim_sees_every_edge_of_a_burst_that_fits(unit):
    rt, pub, client = unit()
    dcim = PollingDcim(client, pub.map)
    dcim.poll()
    total = 0
    for size in (md.EVENT_CAPACITY, 7, md.EVENT_CAPACITY - 1):
        burst(rt, size)
        total += size
        scans(rt, SCANS_PER_10_S - size)  # the rest of the 10 s
        dcim.poll()
    assert dcim.lost == 0
    assert [s for s, *_ in dcim.seen] == list(range(1, total + 1))  # consecutive, in order
    kinds = [k for _s, k, _c, _n in dcim.seen]
    assert kinds[:4] == ["raised", "cleared", "raised", "cleared"]
    assert {(c, n) for _s, _k, c, n in dcim.seen} == {("BG-LIMIT", 0x0304)}
    # the decoded snapshot agrees
    ev = read_all(reader(client))["events"]
    assert ev["seq"] == total and ev["capacity"] == md.EVENT_CAPACITY
    assert [e["seq"] for e in ev["edges"]] == list(range(total - 63, total + 1))


def test_polling_dcim_can_tell_a_larger_burst_overflowed(unit):
    rt, pub, client = unit()
    dcim = PollingDcim(client, pub.map)
    dcim.poll()
    burst(rt, 100)
    scans(rt, SCANS_PER_10_S - 100)
    dcim.poll()
    assert dcim.lost == 100 - md.EVENT_CAPACITY  # the gap in the numbers says how many
    assert [s for s, *_ in dcim.seen] == list(range(101 - md.EVENT_CAPACITY, 101))


def test_event_seq_goes_on_after_a_clean_restart_and_jumps_after_a_crash(make_runtime,
                                                                           tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(block="") + '[paths]\nstate_dir = "state"\n', encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    write(rt, NORMAL)
    scans(rt, 2)
    burst(rt, 5)
    seq = rt.alarms.events.seq
    assert seq == 5
    rt.stop()  # a clean stop saves the exact number
    rt2 = make_runtime(site, start=True, retained=True)
    assert rt2.alarms.events.seq == 5
    assert [e.seq for e in rt2.alarms.events.edges] == [1, 2, 3, 4, 5]
    write(rt2, NORMAL)
    scans(rt2, 2)
    burst(rt2, 3)
    after = rt2.alarms.events.seq
    assert after > 5  # on from 5, no gap: every number 1..after is an edge held
    assert [e.seq for e in rt2.alarms.events.edges] == list(range(1, after + 1))
    # a crash: the state on disk is the last save during the run (no shutdown save)
    retained = rt2.pm.get_plugin("busguard-retained")
    retained._stopping = True
    retained._wake.set()
    retained._thread.join(timeout=10)
    saved = rt2.alarms.events.reserved
    rt2.pm.set_blocked("busguard-retained")  # its shutdown save never happens
    rt2.stop()
    rt3 = make_runtime(site, start=True, retained=True)
    assert rt3.alarms.events.seq > after  # never back
    assert rt3.alarms.events.seq == saved
    scans(rt3, 2)
    burst(rt3, 2)
    new = [e.seq for e in rt3.alarms.events.edges if e.seq > saved]
    assert len(new) >= 2 and new == list(range(saved + 1, saved + 1 + len(new)))
    # what the DCIM reads: the numbers jumped (edges since the last save are lost), never back
    assert all(e.seq <= after for e in rt3.alarms.events.edges if e.seq <= saved)


def test_a_damaged_ring_in_the_state_file_never_costs_the_latched_trip(make_runtime,
                                                                      tmp_path, caplog):
    from busguard.statefile import encode_state, load_newest, slot_paths

    site = tmp_path / "site.toml"
    site.write_text(SITE.format(block="") + '[paths]\nstate_dir = "state"\n', encoding="utf-8")
    rt = make_runtime(site, start=True, retained=True)
    write(rt, NORMAL)
    scans(rt, 2)
    burst(rt, 3)
    write(rt, [("cb1.led", 2.0)])  # ground fault: a latched trip
    scans(rt, 2)
    seq = rt.alarms.events.seq
    rt.stop()
    path = rt.pm.get_plugin("busguard-retained").path
    gen, _src, body = load_newest(path).found[0]
    body["events"]["edges"] = [{"seq": "x"}, 7]  # a hand edit, a bug of another version
    for slot in slot_paths(path):
        slot.write_bytes(encode_state(body, gen + 1))
    rt2 = make_runtime(site, start=True, retained=True)
    assert rt2.pm.get_plugin("busguard-retained").status == "loaded"
    assert rt2.blocks[0].latched and rt2.blocks[0].trip["code"] == "BG-TRIP-GF"
    assert rt2.alarms.events.seq >= seq and not rt2.alarms.events.edges
    assert "event ring is damaged" in caplog.text


def test_seq_reservation_and_wrap():
    from busguard.alarms import SEQ_MASK, SEQ_RESERVE, EventRing, seq_after

    assert seq_after(SEQ_MASK) == 1 and seq_after(SEQ_MASK - 1, 2) == 1  # 0 is skipped
    ring = EventRing()
    assert not ring.wants_save()
    ring.seq = 10
    assert ring.wants_save()  # nothing reserved on disk yet
    st = ring.state()
    assert st["reserved"] == 10 + SEQ_RESERVE and not ring.wants_save()
    ring.seq = 10 + SEQ_RESERVE // 2 + 1
    assert ring.wants_save()  # less than half the reservation left
    again = EventRing()
    again.restore(st)
    assert again.seq == 10 + SEQ_RESERVE  # after a crash: on from the reservation
    assert ring.state(clean=True)["reserved"] == ring.seq


def test_mbpoll_reads_the_trip_cause_at_its_documented_address(unit):
    import shutil
    import subprocess

    mbpoll = shutil.which("mbpoll")
    if mbpoll is None:
        pytest.skip("mbpoll is not installed (CI installs it: apt-get install mbpoll)")
    rt, pub, _client = unit()
    write(rt, [("bb1.temp_c", 93.0)])
    scans(rt, 2)
    fields = {f.name: f for f in pub.map.fields()}
    cause, utc = fields["cb1.trip_cause"], fields["cb1.trip_utc"]
    out = subprocess.run([mbpoll, "-m", "tcp", "-p", str(pub.server.port()), "-1", "-o", "2",
                          "-0", "-B", "-t", "4:hex", "-r", str(cause.address), "-c", "1",
                          "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"[{cause.address}]: \t0x00CF" in out.stdout
    out = subprocess.run([mbpoll, "-m", "tcp", "-p", str(pub.server.port()), "-1", "-o", "2",
                          "-0", "-B", "-t", "4:int", "-r", str(utc.address), "-c", "1",
                          "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    secs = int(out.stdout.split(f"[{utc.address}]:")[1].split()[0])
    assert secs & 0xFFFFFFFF == math.floor(rt.blocks[0].trip["t_utc"])
    # the breaker's own unit id serves its block from address 0: the same words at offset 12
    dev = next(d for d in pub.map.devices if d.name == "cb1")
    assert dev.unit_id is not None
    out = subprocess.run([mbpoll, "-m", "tcp", "-p", str(pub.server.port()), "-1", "-o", "2",
                          "-a", str(dev.unit_id), "-0", "-B", "-t", "4:hex", "-r",
                          str(md.BREAKER_TRIP_OFFSET), "-c", "1", "127.0.0.1"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"[{md.BREAKER_TRIP_OFFSET}]: \t0x00CF" in out.stdout


# -- counters ------------------------------------------------------------------------------------
def test_counters_are_exact_past_2_to_the_24(unit):
    rt, pub, client = unit()
    rt.stats.cycles = 2 ** 24 + 11  # 46.6 h at 10 ms, and odd: float32 cannot hold it
    scans(rt, 200)  # the runtime publishes scan.cycles every STATS_EVERY_S
    want = rt.image.snapshot()["scan.cycles"].value
    assert want > 2 ** 24 and float(struct.unpack(">f", struct.pack(">f", want))[0]) != want
    rec = pub.map.record_of("scan.cycles")
    words = reader(client)(rec.address, md.POINT_WORDS)
    assert md.COUNTER.unpack(words)["value"] == want
    assert read_all(reader(client))["extras"]["scan.cycles"]["value"] == want
    fields = {f.name: f for f in pub.map.fields()}
    assert fields["scan.cycles"].type == "uint32" and fields["scan.overruns"].type == "uint32"
    assert fields["cycle_count"].type == "uint32" and fields["overruns"].type == "uint32"


# -- with [scan] io = "process": the frames carry them to the I/O process's server --------------
IO_BREAKER = """
[[breaker]]
name = "cb1"
driver = "memory"
points = ["led"]

[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
pickup_a = 1000.0
delay_s = 0.05
overcurrent_led = false
ground_fault_led = false
"""

def test_alarm_table_and_events_served_by_the_io_process(modbus_meter, tmp_path):
    from busguard.sim.testing import distinct_values
    from busguard.testing import wait_until
    from test_io_process import Running, site_text

    gen, values = distinct_values()
    meter = modbus_meter(gen, values)
    path = tmp_path / "site.toml"
    path.write_text(site_text(meter.port, str(tmp_path / "state")) + IO_BREAKER,
                    encoding="utf-8")
    r = Running(str(path))
    try:
        rt = r.rt
        pub = rt.publishers[0]
        wait_until(lambda: rt.io.ready.get("publishers"), what="the server's port")
        client = ModbusTcpClient("127.0.0.1", port=pub.port(), timeout=3, retries=0)
        assert client.connect()
        try:
            meter.set(current_l1_a=612.0)

            def raised():
                got = read_all(reader(client))
                # the areas are read in several requests, maybe from two images: wait for both
                return got if any(e["code"] == "BG-T" for e in got["events"]["edges"]) and \
                    any(a["code"] == "BG-T" for a in got["alarm_table"]) else None

            got = wait_until(raised, what="the limit alarm's edge in the served ring")
            edge = next(e for e in got["events"]["edges"] if e["code"] == "BG-T")
            assert (edge["kind"], edge["code"], edge["code_num"], edge["severity"]) == \
                ("raised", "BG-T", alarmcodes.OTHER, "warning")
            assert edge["device"] == "m1"
            seqs = [e["seq"] for e in got["events"]["edges"]]
            assert seqs == list(range(1, got["events"]["seq"] + 1))
            row = next(a for a in got["alarm_table"] if a["code"] == "BG-T")
            assert (row["state"], row["device"], row["slot"]) == ("active", "m1", 0)
            # a trip: its cause and time reach the I/O process's map, with the flags
            meter.set(current_l1_a=2500.0)

            def tripped():
                b = breaker(read_all(reader(client)), "cb1")
                return b if b["trip_cause"] else None

            b = wait_until(tripped, what="the trip cause served by the I/O process")
            assert (b["trip_cause"], b["trip_cause_name"]) == (0x0201, "BG-TRIP-OC")
            assert {"shunt_trip", "trip_latched"} <= set(b["flags"])
            assert b["reset_command"] == pub.map.reset_command("cb1").address
            assert b["trip_utc"] == pytest.approx(rt.blocks[-1].trip["t_utc"], abs=0.002)
        finally:
            client.close()
    finally:
        r.stop()


def test_meter_energy_counters_are_exact_uint64_beside_the_float32(unit):
    rt, pub, client = unit()
    big = 2 ** 40 + 3  # 1.1 TWh: a float32 is off by thousands of Wh here
    write(rt, [("m1.energy_import_wh", big)])
    scans(rt, 1)
    m1 = next(d for d in read_all(reader(client))["devices"] if d["name"] == "m1")
    # (a declared point never read reads like an undeclared one: the reader leaves both out)
    assert m1["counters"] == {"energy_import_wh": big}
    assert m1["points"]["energy_import_wh"]["value"] != big  # the float32 record rounds
    fields = {f.name: f for f in pub.map.fields()}
    f = fields["m1.energy_import_wh:u64"]
    assert f.type == "uint64" and f.words == 4 and f.unit == "Wh"
    words = reader(client)(f.address, 4)
    assert struct.unpack(">Q", struct.pack(">4H", *words))[0] == big
    assert "m1.energy_export_wh:u64" not in fields  # not declared by this meter
    never = fields["m1.energy_export_varh:u64"]  # declared, never read: "not available"
    assert reader(client)(never.address, 4) == [0xFFFF] * 4


def test_busguard_status_shows_trip_cause_alarm_table_and_events(unit, capsys):
    import json

    from busguard.cli import main

    rt, pub, _client = unit()
    write(rt, [("cb1.led", 2.0)])
    scans(rt, 2)
    port = str(pub.server.port())
    assert main(["status", "--port", port]) == 0
    out = capsys.readouterr().out
    assert "trip BG-TRIP-GF since 2026-01-01" in out
    assert "alarm critical BG-TRIP-GF" in out and "cb1" in out
    assert "events: last #1 (1 of 64 held): raised BG-TRIP-GF cb1" in out
    assert main(["status", "--port", port, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    cb1 = breaker(data, "cb1")
    assert (cb1["trip_cause"], cb1["trip_cause_name"]) == (0x0203, "BG-TRIP-GF")
    assert data["events"]["seq"] == 1 and data["alarm_table"][0]["code"] == "BG-TRIP-GF"
