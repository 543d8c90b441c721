"""[sparkplug]: the edge node against a real Mosquitto broker and a decoding host on
loopback: births with every point's alias, type, quality and timestamp, report by exception,
seq 0-255, NCMD rebirth, the primary host's STATE, store-and-forward across a broker outage
and a restart, auth refusal, the queue-full alarm and TLS with a test CA."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from busguard.errors import ConfigError
from busguard.sparkplug import metrics as mx
from busguard.sparkplug.node import EdgeNode, rebirth_requested
from busguard.sparkplug.sparkplug_b_pb2 import Payload
from busguard.sparkplug.store import Store
from test_sparkplug_helpers import SITE, Broker, Host, names, value

pytestmark = []


def spb_of(rt):
    return next(p for p in rt.publishers if p.section == "sparkplug")


def site(tmp_path, port: int, extra: str = "") -> str:
    return SITE.format(state=tmp_path / "state", port=port, extra=extra)


@pytest.fixture
def broker(tmp_path):
    made: list[Broker] = []

    def make(extra: str = "") -> Broker:
        b = Broker(tmp_path, extra)
        b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def host():
    made: list[Host] = []

    def make(port: int, **kw) -> Host:
        h = Host(port, **kw).connect()
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# -- fast: the bookkeeping without a broker -------------------------------------------------
SNAP = {"header": {"runtime_state": "running", "active_alarms": 0, "alarm_summary": []},
        "devices": [{"kind": "meter", "name": "m1", "slot": 0, "status": "good", "alarms": [],
                     "flags": [], "points": {"power_kw": {"value": 10.0, "quality": "good",
                                                          "age_ms": 5}}}],
        "outputs": {}, "alarms": {}, "extras": {}}


def with_power(kw: float, quality: str = "good") -> dict:
    dev = dict(SNAP["devices"][0], points={"power_kw": {"value": kw, "quality": quality,
                                                        "age_ms": 5}})
    return dict(SNAP, devices=[dev])


def test_report_by_exception_honours_the_deadband_and_reports_quality_changes():
    node = EdgeNode("g", "n", deadbands={"m1.power_kw": 0.5})
    node.baseline(node.current(with_power(10.0), {}))
    assert node.delta(node.current(with_power(10.4), {})).changes == {}
    d = node.delta(node.current(with_power(10.6), {}))
    assert [c.value.value for c in d.changes["m1"]] == [10.6]
    assert not d.changes["m1"][0].quality_changed
    d = node.delta(node.current(with_power(10.6, "stale"), {}))
    assert d.changes["m1"][0].quality_changed  # inside the deadband, but the quality moved
    p = EdgeNode.data(d.changes["m1"], 1_000_000)
    m = p.metrics[0]
    assert m.alias == mx.alias_of("meter", 0, "power_kw") and not m.name
    assert m.timestamp == 1_000_000 - 5
    assert dict(zip(m.properties.keys, [value(v) for v in m.properties.values],
                    strict=True)) == {"Quality": 64, "quality": "stale"}


def test_aliases_derive_from_kind_slot_and_name_only():
    a = mx.alias_of("meter", 3, "power_kw")
    assert a == mx.alias_of("meter", 3, "power_kw")
    assert len({a, mx.alias_of("meter", 4, "power_kw"), mx.alias_of("probe", 3, "power_kw"),
                mx.alias_of("meter", 3, "power_factor")}) == 4


def test_rebirth_request_is_recognised_by_name_or_alias_and_garbage_is_not():
    p = Payload()
    p.metrics.add(name=mx.REBIRTH, boolean_value=True)
    assert rebirth_requested(p.SerializeToString())
    p = Payload()
    p.metrics.add(alias=mx.alias_of("", 0, mx.REBIRTH), boolean_value=True)
    assert rebirth_requested(p.SerializeToString())
    p = Payload()
    p.metrics.add(name=mx.REBIRTH, boolean_value=False)
    assert not rebirth_requested(p.SerializeToString())
    assert not rebirth_requested(b"\xff\xff\xff garbage")


def test_the_queue_is_bounded_keeps_order_and_survives_reopening(tmp_path):
    st = Store(tmp_path / "q.sqlite", max_changes=5)
    assert st.put([("m1", b"a", 2), ("m1", b"b", 2), ("m2", b"c", 2)]) == 2
    assert (st.held, st.dropped, st.full) == (4, 2, False)
    assert st.put([("m1", b"d", 1)]) == 0 and st.full
    st.close()
    st = Store(tmp_path / "q.sqlite", max_changes=5)
    rows = list(st.peek())
    assert [r[2] for r in rows] == [b"a", b"b", b"d"] and st.held == 5
    st.remove_through(rows[1][0], 2, 4)
    assert [r[2] for r in st.peek()] == [b"d"] and st.held == 1


@pytest.mark.parametrize(("extra", "message"), [
    ('group_id = "a/b"', "not a valid Sparkplug id"),
    ('ca = "nope.pem"\ntls = true', "no such file"),
    ('cert = "c.pem"\ntls = true', "needs both `cert` and `key`"),
    ('deadbands = { power_kw = "x" }', "expected a number >= 0"),
    ('password_file = "pw"\nusername = "u"', "cannot read"),
    ("qos = 2", "one of 0, 1"),
])
def test_bad_sparkplug_tables_name_the_key_and_what_is_valid(make_runtime, tmp_path, extra,
                                                            message):
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        make_runtime(site(tmp_path, 1883, extra))
    assert "sparkplug" in str(exc.value)


def test_a_password_file_readable_by_others_is_refused(make_runtime, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        make_runtime(site(tmp_path, 1883, f'username = "u"\npassword_file = "{pw}"'))


# -- against Mosquitto ----------------------------------------------------------------------
def started(make_runtime, tmp_path, port: int, extra: str = ""):
    rt = make_runtime(site(tmp_path, port, extra), start=True)
    rt.image.write("m1.current_l1_a", 12.5)
    rt.image.write("m1.power_kw", 40.0)
    rt.image.write("m2.power_kw", 7.0)
    return rt


@pytest.mark.integration
def test_births_data_and_rebirth_reach_a_decoding_host(make_runtime, tmp_path, broker, host,
                                                       run_scans):
    b = broker()
    h = host(b.port)
    rt = started(make_runtime, tmp_path, b.port)
    run_scans(rt, 2)
    nb = h.wait(lambda: h.all("NBIRTH"))[0]
    assert nb.topic == "spBv1.0/busguard/NBIRTH/spbtest" and nb.payload.seq == 0
    nm = names(nb)
    assert value(nm["bdSeq"]) == 0 and value(nm["Node Control/Rebirth"]) is False
    h.wait(lambda: len(h.all("DBIRTH")) == 3)
    births = {m.device: m for m in h.all("DBIRTH")}
    assert set(births) == {"m1", "m2", "b1"}
    m1 = names(births["m1"])
    assert value(m1["power_kw"]) == pytest.approx(40.0)
    assert m1["power_kw"].datatype == mx.FLOAT
    assert m1["power_kw"].alias == mx.alias_of("meter", 0, "power_kw")
    props = dict(zip(m1["power_kw"].properties.keys,
                     [value(v) for v in m1["power_kw"].properties.values], strict=True))
    assert props == {"Quality": 192, "quality": "good"}
    assert abs(m1["power_kw"].timestamp - time.time() * 1000) < 60_000
    assert [m.payload.seq for m in h.all() if m.payload is not None] == [0, 1, 2, 3]

    rt.image.write("m1.power_kw", 41.5)
    run_scans(rt, 1)
    dd = h.wait(lambda: h.all("DDATA"))[0]
    assert dd.device == "m1" and dd.payload.seq == 4
    assert [(m.alias, value(m)) for m in dd.payload.metrics] == [
        (mx.alias_of("meter", 0, "power_kw"), pytest.approx(41.5))]
    assert not dd.payload.metrics[0].is_historical

    h.rebirth("busguard", "spbtest")
    h.wait(lambda: len(h.all("NBIRTH")) == 2)
    h.wait(lambda: len(h.all("DBIRTH")) == 6)
    nb2 = h.all("NBIRTH")[1]
    assert nb2.payload.seq == 0 and value(names(nb2)["bdSeq"]) == 0  # same session
    reborn = next(m for m in h.all("DBIRTH")[3:] if m.device == "m1")
    assert value(names(reborn)["power_kw"]) == pytest.approx(41.5)


@pytest.mark.integration
def test_a_broker_outage_loses_no_change_and_sends_them_historical_in_order(
        make_runtime, tmp_path, broker, host, run_scans):
    b = broker()
    h = host(b.port, host_id="scada")
    rt = started(make_runtime, tmp_path, b.port, 'primary_host = "scada"')
    run_scans(rt, 2)
    pub = spb_of(rt)
    h.wait(lambda: pub.connected)
    assert not h.all("NBIRTH")  # the primary host has not said it is online
    h.state(True)
    h.wait(lambda: len(h.all("DBIRTH")) == 3)
    h.close()
    b.stop()
    h.wait(lambda: not pub.connected)
    sent = []
    for i in range(20):  # changes while the broker is away
        kw = 50.0 + i
        rt.image.write("m1.power_kw", kw)
        run_scans(rt, 1)
        h.wait(lambda kw=kw: any(p["value"] == kw for d in pub.snap.latest()["devices"]
                                 if d["name"] == "m1" for p in [d["points"]["power_kw"]]))
        before = pub.store.held if pub.store else 0
        h.wait(lambda before=before: pub.store.held > before)
        sent.append((kw, int(time.time() * 1000)))
    assert pub.store.held >= 20 and pub.status()["queue_held"] == pub.store.held
    b.start()  # a broker without persistence: the host's retained STATE is gone
    h2 = host(b.port, host_id="scada")
    h2.state(True)  # so the node births only once this host hears it
    h2.wait(lambda: len([m for m in h2.all("DDATA") if m.payload.metrics[0].is_historical])
            >= 20, timeout=30)
    nb = h2.all("NBIRTH")[0]
    assert value(names(nb)["bdSeq"]) >= 1  # a new session
    ordered = [m for m in h2.all() if m.payload is not None]
    seqs = [m.payload.seq for m in ordered]
    assert seqs == [(seqs[0] + i) % 256 for i in range(len(seqs))] and seqs[0] == 0
    hist = [(value(m.payload.metrics[0]), m.payload.metrics[0].timestamp)
            for m in h2.all("DDATA") if m.device == "m1" and m.payload.metrics[0].is_historical]
    assert [v for v, _t in hist] == [pytest.approx(kw) for kw, _t in sent]
    stamps = [t for _v, t in hist]
    assert stamps == sorted(stamps)
    assert all(abs(t - at) < 5000 for t, (_kw, at) in zip(stamps, sent, strict=True))
    h2.wait(lambda: pub.store.held == 0)
    rt.image.write("m1.power_kw", 99.0)  # live again: not historical
    run_scans(rt, 1)
    live = h2.wait(lambda: [m for m in h2.all("DDATA") if value(m.payload.metrics[0]) == 99.0])
    assert not live[0].payload.metrics[0].is_historical


@pytest.mark.integration
def test_bdseq_is_persisted_across_restarts(make_runtime, tmp_path, broker, host, run_scans):
    b = broker()
    h = host(b.port)
    rt = started(make_runtime, tmp_path, b.port)
    run_scans(rt, 1)
    h.wait(lambda: h.all("NBIRTH"))
    rt.stop()
    death = h.wait(lambda: h.all("NDEATH"))[0]
    assert value(names(death)["bdSeq"]) == 0
    rt2 = started(make_runtime, tmp_path, b.port)
    run_scans(rt2, 1)
    h.wait(lambda: len(h.all("NBIRTH")) == 2)
    assert value(names(h.all("NBIRTH")[1])["bdSeq"]) == 1


# -- refusals, the full queue, TLS ----------------------------------------------------------
@pytest.mark.integration
def test_a_broker_refusing_auth_is_a_clear_error_and_changes_wait_in_the_queue(
        make_runtime, tmp_path, broker, host, run_scans, caplog):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd (Debian package mosquitto) is not installed")
    users = tmp_path / "users"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(users), "ctl", "right"], check=True,
                   capture_output=True, timeout=30)
    b = broker(f"allow_anonymous false\npassword_file {users}\n")
    pw = tmp_path / "mqtt.passwd"
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    rt = started(make_runtime, tmp_path, b.port, f'username = "ctl"\npassword_file = "{pw}"')
    pub = spb_of(rt)
    run_scans(rt, 1)
    Host.wait_for(lambda: pub.counts["refused"] >= 1)
    assert "refused the connection" in pub.error and "authori" in pub.error.lower()
    assert any("refused the connection" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)
    assert not pub.connected and pub.status()["error"] == pub.error
    rt.image.write("m1.power_kw", 77.0)
    run_scans(rt, 1)
    Host.wait_for(lambda: pub.store.held >= 1)  # kept for later, not dropped
    def lines():  # the publisher's own (the BG-SPB-REFUSED alarm has its journal line too)
        return [r for r in caplog.records if "refused the connection" in r.getMessage()
                and r.name == "busguard.sparkplug"]
    Host.wait_for(lambda: pub.counts["refused"] >= 2)
    assert len(lines()) == 1  # logged once per streak, not per retry


@pytest.mark.integration
def test_a_full_queue_raises_the_alarm_with_its_numbers_and_keeps_what_it_holds(
        make_runtime, tmp_path, broker, host, run_scans, caplog):
    b = Broker(tmp_path)  # not started yet: the node starts offline
    rt = started(make_runtime, tmp_path, b.port, "queue_max_changes = 5")
    pub = spb_of(rt)
    run_scans(rt, 1)
    Host.wait_for(lambda: pub.node.last)  # the reference image
    for i in range(8):
        kw = 60.0 + i
        rt.image.write("m1.power_kw", kw)
        run_scans(rt, 1)
        Host.wait_for(lambda kw=kw: pub.node.last["m1"]["power_kw"].value == kw)
    st = pub.status()
    # at least the 3 power changes past the bound; the queue-full alarm's own raise changes
    # the node's alarm metrics, which are refused too
    assert (st["queue_held"], st["queue_full"]) == (5, True) and st["queue_dropped"] >= 3
    full = [r for r in caplog.records if "queue full" in r.getMessage()
            and r.name == "busguard.sparkplug"]  # the publisher's line (the alarm has its own)
    assert len(full) == 1 and "5 changes held" in full[0].getMessage()
    assert "3 change(s) dropped" in full[0].getMessage() or "dropped" in full[0].getMessage()
    b.start()
    try:
        h = host(b.port)
        pub.want_rebirth = True
        nb = h.wait(lambda: h.all("NBIRTH"))[0]
        hist = h.wait(lambda: [m for m in h.all("DDATA") if m.payload.metrics[0].is_historical
                               and len(h.all("DDATA")) >= 5])
        assert [value(m.payload.metrics[0]) for m in hist][:5] == [60.0, 61.0, 62.0, 63.0,
                                                                   64.0]
        assert value(names(nb)["Sparkplug/queue_dropped"]) >= 3
    finally:
        b.stop()


def make_ca(folder):
    """A test CA, a broker certificate for 127.0.0.1 and a client certificate (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make the test CA")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60,
                       cwd=folder)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
        "/CN=busguard test CA")
    for name, ext in (("broker", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


@pytest.mark.integration
def test_tls_with_a_test_ca_and_a_client_certificate(make_runtime, tmp_path, host, run_scans):
    make_ca(tmp_path)
    b = Broker(tmp_path)
    b.conf.write_text(b.head() + "allow_anonymous true\n"
                      f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'broker.pem'}\n"
                      f"keyfile {tmp_path / 'broker.key'}\nrequire_certificate true\n")
    b.start()
    try:
        tls = {"ca_certs": str(tmp_path / "ca.pem"), "certfile": str(tmp_path / "client.pem"),
               "keyfile": str(tmp_path / "client.key")}
        h = host(b.port, tls=tls)
        rt = started(make_runtime, tmp_path, b.port,
                     f'tls = true\nca = "{tmp_path / "ca.pem"}"\n'
                     f'cert = "{tmp_path / "client.pem"}"\nkey = "{tmp_path / "client.key"}"')
        run_scans(rt, 1)
        h.wait(lambda: len(h.all("DBIRTH")) == 3)
        # without its client certificate, the same node is refused, with the reason
        rt2 = make_runtime(site(tmp_path / "x", b.port, f'tls = true\nca = '
                                f'"{tmp_path / "ca.pem"}"\nedge_node_id = "nocert"'), start=True)
        pub2 = spb_of(rt2)
        Host.wait_for(lambda: pub2.error)
        assert not pub2.connected and "127.0.0.1" in pub2.error
        Host.wait_for(lambda: pub2.refused)  # sparkplug.refused = 1: BG-SPB-REFUSED
    finally:
        b.stop()


@pytest.mark.integration
def test_the_bench_module_measures_messages_bytes_and_latency(tmp_path):
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto (Debian package mosquitto) is not installed")
    import json
    import sys

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "bench", "--smoke", "--only",
                          "sparkplug", "--json", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: a figure missed its floor
    m = json.loads(out.read_text())["measurements"][0]
    assert m["key"] == "sparkplug" and not m["error"], m
    rows = {r["metric"]: r for r in m["rows"]}
    assert rows["broker messages"]["value"] > 0 and rows["bytes per DDATA"]["value"] > 20
    assert m["details"]["ddata"] > 0
    assert rows["lateness p99, io = process"]["baseline"] is not None
    assert rows["lateness p99, io = thread"]["baseline"] is not None
