"""The busguard_peer driver against a real busguard serving its map v2 over Modbus TCP on
loopback: values, quality and age carried; an unreachable peer goes not-connected; a changed
fingerprint is refused until accepted; a non-busguard server and garbage get a clear state
and log line, never a crash."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable

import pytest

from busguard.image import Quality
from busguard.northbound import mapdef as md
from busguard.peer import driver as pd
from busguard.peer import layout as ly

CONTROLLER = """
[site]
name = "ctl"
[[meter]]
name = "m1"
driver = "memory"
points = ["power_kw", "current_l1_a", "power_l1_kw"]
[[meter]]
name = "m2"
driver = "memory"
points = ["power_kw"]
[[breaker]]
name = "cb1"
driver = "memory"
points = ["led"]
[[block]]
name = "limit"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
severity = "major"
code = "BG-LIMIT"
[modbus_server]
port = 0
"""


def aggregator(port: int, extra: str = "") -> str:
    return f"""
[site]
name = "row"
[[meter]]
name = "ctl1"
driver = "busguard_peer"
host = "127.0.0.1"
port = {port}
poll_ms = 50
timeout_ms = 300
meters = ["m1", "m2"]
breakers = ["cb1"]
{extra}
[modbus_server]
port = 0
"""


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll a condition the peer thread makes true (bounded: ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def q(rt, name: str) -> Quality:
    return Quality(rt.image.quality[rt.image.index[name]])


def v(rt, name: str) -> float:
    return rt.image.values[rt.image.index[name]]


def state(rt, peer: str = "ctl1") -> int:
    return int(v(rt, f"{peer}.peer_state")) if q(rt, f"{peer}.peer_state") == 0 else -1


@pytest.fixture
def controller(make_runtime, run_scans):
    rt = make_runtime(CONTROLLER, start=True)
    rt.image.write_many([("m1.power_kw", 12.5, Quality.GOOD),
                         ("m1.current_l1_a", 150.0, Quality.GOOD),
                         ("m2.power_kw", 7.25, Quality.GOOD), ("cb1.led", 1.0, Quality.GOOD)])
    run_scans(rt, 2)
    return rt


def test_points_come_over_with_the_peers_quality_and_age(controller, make_runtime, run_scans,
                                                         fake_clock):
    port = controller.publishers[0].port()
    agg = make_runtime(aggregator(port), start=True)
    assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.GOOD)
    assert v(agg, "ctl1.m1.power_kw") == pytest.approx(12.5)
    assert v(agg, "ctl1.m2.power_kw") == pytest.approx(7.25)
    assert v(agg, "ctl1.cb1.led") == 1.0
    # a quantity m2 does not declare: not connected at the peer, so here too
    assert q(agg, "ctl1.m2.current_l1_a") == Quality.NOT_CONNECTED
    # the peer's alarm table: the threshold block's major alarm
    assert wait_for(lambda: v(agg, "ctl1.alarms_major") == 1.0)
    assert v(agg, "ctl1.alarms_critical") == 0.0
    assert state(agg) == pd.OK_STATE
    # stale at the peer (its max age passed) stays stale here, its age carried
    fake_clock.advance(10.0)
    controller.image.write("m2.power_kw", 8.0)
    run_scans(controller, 1)
    assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.STALE)
    assert wait_for(lambda: v(agg, "ctl1.m2.power_kw") == pytest.approx(8.0))
    assert q(agg, "ctl1.m2.power_kw") == Quality.GOOD
    i = agg.image.index["ctl1.m1.power_kw"]
    assert fake_clock.monotonic() - agg.image.t_mono[i] >= 10.0  # the peer's age, not ours
    # the aggregator's own map: the peer entry's comm_ok in its meter block, the peer's
    # points not as extra records
    run_scans(agg, 1)
    m = md.for_runtime(agg)
    assert m.record_of("ctl1.comm_ok") is not None
    assert m.record_of("ctl1.m1.power_kw") is None


def test_an_unreachable_peer_goes_not_connected_and_comes_back(controller, make_runtime,
                                                               run_scans, caplog):
    port = controller.publishers[0].port()
    agg = make_runtime(aggregator(port), start=True)
    assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.GOOD)
    controller.stop()
    with caplog.at_level(logging.WARNING, "busguard.peer"):
        assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.NOT_CONNECTED)
        assert state(agg) == pd.NOT_CONNECTED
        assert v(agg, "ctl1.comm_ok") == 0.0
        assert "points NOT_CONNECTED" in caplog.text


def test_a_changed_fingerprint_is_refused_until_accepted(controller, make_runtime, caplog,
                                                         tmp_path):
    port = controller.publishers[0].port()
    agg = make_runtime(aggregator(port))
    pd.accept(agg.site.state_dir, "ctl1", 0x12345678)  # what we accepted before: another map
    with caplog.at_level(logging.ERROR, "busguard.peer"):
        agg.start()
        assert wait_for(lambda: state(agg) == pd.FINGERPRINT_CHANGED)
        assert q(agg, "ctl1.m1.power_kw") == Quality.BAD
        assert "fingerprint changed from 0x12345678" in caplog.text
        assert caplog.text.count("fingerprint changed") == 1  # once per streak
    real = md.for_runtime(controller).fingerprint
    assert f"{real:#010x}" in caplog.text
    pd.accept(agg.site.state_dir, "ctl1", real)  # what `busguard peer-accept` writes
    assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.GOOD)
    assert state(agg) == pd.OK_STATE


def test_accept_fingerprint_in_site_toml_wins(controller, make_runtime):
    port = controller.publishers[0].port()
    agg = make_runtime(aggregator(port, 'accept_fingerprint = "0xdeadbeef"'), start=True)
    assert wait_for(lambda: state(agg) == pd.FINGERPRINT_CHANGED)
    assert q(agg, "ctl1.m2.power_kw") == Quality.BAD


def test_a_missing_device_is_bad_and_named(controller, make_runtime, caplog):
    port = controller.publishers[0].port()
    site = aggregator(port).replace('meters = ["m1", "m2"]', 'meters = ["m1", "m9"]')
    with caplog.at_level(logging.WARNING, "busguard.peer"):
        agg = make_runtime(site, start=True)
        assert wait_for(lambda: state(agg) == pd.MISSING)
        assert q(agg, "ctl1.m9.power_kw") == Quality.BAD
        assert wait_for(lambda: q(agg, "ctl1.m1.power_kw") == Quality.GOOD)
        assert "serves no m9" in caplog.text


def test_a_plain_modbus_meter_is_not_a_busguard(modbus_meter, make_runtime, caplog):
    meter = modbus_meter()
    with caplog.at_level(logging.ERROR, "busguard.peer"):
        agg = make_runtime(aggregator(meter.port), start=True)
        assert wait_for(lambda: state(agg) == pd.NOT_BUSGUARD)
        assert q(agg, "ctl1.m1.power_kw") == Quality.BAD
        assert "not a busguard map v2" in caplog.text


def _garbage_server() -> tuple[socket.socket, threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    done = threading.Event()
    rng = random.Random(7)

    def serve() -> None:
        conns = []
        while not done.is_set():
            try:
                c, _ = srv.accept()
                c.settimeout(0.2)
                conns.append(c)
            except OSError:
                pass
            for c in list(conns):
                try:
                    if c.recv(260):
                        c.sendall(bytes(rng.randrange(256) for _ in range(40)))
                except TimeoutError:
                    pass
                except OSError:
                    conns.remove(c)
        for c in conns:
            c.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, done


def test_garbage_answers_do_not_crash_the_driver(make_runtime, caplog):
    srv, done = _garbage_server()
    try:
        with caplog.at_level(logging.WARNING, "busguard.peer"):
            agg = make_runtime(aggregator(srv.getsockname()[1]), start=True)
            assert wait_for(lambda: state(agg) in (pd.NOT_CONNECTED, pd.NOT_BUSGUARD))
            assert q(agg, "ctl1.m1.power_kw") in (Quality.NOT_CONNECTED, Quality.BAD)
            drv = next(d for d in agg.drivers if d.name == "ctl1")
            assert drv.polls >= 1
            assert "poll failed" not in caplog.text
    finally:
        done.set()


@pytest.mark.parametrize("seed", range(20))
def test_random_words_are_never_taken_for_a_map(seed):
    rng = random.Random(seed)
    words = [rng.randrange(0x10000) for _ in range(0x10000)]
    if seed % 2:  # the right magic and version, garbage after
        words[0], words[1] = md.MAGIC, md.MAP_VERSION
    with pytest.raises(ly.NotBusguard):
        ly.header(lambda a, n: words[a:a + n])


def test_reads_are_planned_per_device_block():
    # two breakers side by side share one read; a meter block (208 words) takes two
    assert ly.plan([(38100, 16), (38116, 16)]) == [(38100, 32)]
    assert ly.plan([(1000, 208)]) == [(1000, 125), (1125, 83)]
    assert ly.plan([(1000, 208), (1256, 208)]) == [(1000, 125), (1125, 83), (1256, 125),
                                                   (1381, 83)]


def test_bad_peer_entries_name_the_file_and_key(make_runtime):
    from busguard.errors import ConfigError
    site = aggregator(1502, 'accept_fingerprint = "zz"\npoints = ["power_kw", "watts"]\n'
                      f'records = ["{"x" * 33}"]')
    with pytest.raises(ConfigError) as err:
        make_runtime(site)
    text = str(err.value)
    assert "meter[0].accept_fingerprint" in text and "32-bit hex" in text
    assert "meter[0].points[1]" in text and "'watts' is not a map v2 meter quantity" in text
    assert "meter[0].records[0]" in text and "is 33 characters" in text


def test_peer_accept_command_records_the_peers_fingerprint(controller, tmp_path, capsys):
    from busguard.cli import main
    port = controller.publishers[0].port()
    site = tmp_path / "agg.toml"
    site.write_text(aggregator(port), encoding="utf-8")
    assert main(["peer-accept", str(site), "ctl1"]) == 0
    real = md.for_runtime(controller).fingerprint
    assert f"{real:#010x} accepted" in capsys.readouterr().out
    assert (tmp_path / "var/lib/busguard/peers/ctl1.fingerprint").read_text().strip() == \
        f"{real:#010x}"
    assert main(["peer-accept", str(site), "nope"]) == 2
    assert "no busguard_peer entry named 'nope'; known: ctl1" in capsys.readouterr().err


@pytest.mark.skipif(__import__("shutil").which("openssl") is None,
                    reason="the openssl CLI is needed to make test certificates")
def test_a_peer_over_modbus_tcp_security(make_runtime, run_scans, tmp_path):
    from test_northbound_tls import make_ca, make_cert

    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    make_ca(pki, "rogue-ca")
    make_cert(pki, "server", "ca")
    make_cert(pki, "row", "ca")
    make_cert(pki, "intruder", "rogue-ca")
    ctl = make_runtime(CONTROLLER.replace(
        "[modbus_server]\nport = 0\n",
        f'[modbus_server]\nport = 0\nallow = ["127.0.0.0/8"]\ntls = {{ cert = '
        f'"{pki}/server.pem", key = "{pki}/server.key", ca = "{pki}/ca.pem", port = 0 }}\n'),
        start=True)
    ctl.image.write("m1.power_kw", 12.5)
    run_scans(ctl, 2)
    tls_port = ctl.publishers[0].server.port("tls")

    def agg(cert: str):
        return make_runtime(aggregator(tls_port, f'tls_ca = "{pki}/ca.pem"\n'
                                       f'tls_cert = "{pki}/{cert}.pem"\n'
                                       f'tls_key = "{pki}/{cert}.key"'), start=True)
    good = agg("row")
    assert wait_for(lambda: q(good, "ctl1.m1.power_kw") == Quality.GOOD)
    assert v(good, "ctl1.m1.power_kw") == pytest.approx(12.5)
    rogue = agg("intruder")  # the controller refuses a certificate of another CA
    assert wait_for(lambda: state(rogue) == pd.NOT_CONNECTED)
    assert q(rogue, "ctl1.m1.power_kw") == Quality.NOT_CONNECTED
