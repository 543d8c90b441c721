"""[web]: the page's server against real clients on loopback: configuration errors, auth,
the allowlist, TLS-only, oversized headers, idle floods, the rate cap, headers, and that
/api/status is what `busguard status --json` prints (the register map's snapshot)."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time

import pytest

from busguard.commands.status import connect, reader
from busguard.errors import ConfigError
from busguard.northbound.reader import read_all
from busguard.testing import io_process, running
from test_web_helpers import (
    PASSWORD,
    USER,
    closed_without_reply,
    get,
    site_text,
    web_of,
)


@pytest.fixture
def served(make_runtime, tmp_path, run_scans):
    def make(web: str = "", tls: bool = True):
        rt = make_runtime(site_text(tmp_path, web, tls), start=True)
        rt.image.write("m1.current_l1_a", 150.0)  # over 100 A: BG-LIMIT
        rt.image.write("m1.power_kw", 88.5)
        rt.image.write("p1.temp_c", 41.25)
        run_scans(rt, 3)
        return rt, web_of(rt).port()

    return make


def serving(port: int, tls: bool = True, source: str = "127.0.0.1") -> bool:
    r = get(port, "/api/view", tls=tls, source=source)
    return r.status == 200 and json.loads(r.body)["taps"][0]["meter"] == "m1"


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(("web", "message"), [
    ('host = "10.0.0.5"\nallow = ["10.0.0.0/24"]\ntls = false',
     "false (plain HTTP) is only allowed on a loopback host"),
    ('host = "10.0.0.5"', "is not loopback but `allow` is empty"),
    ('cert = "nope.pem"\nkey = "nope.key"', "no such file"),
    ("", "missing: HTTPS (tls = true, the default) needs the certificate"),
    ('allow = ["10.0.0.0/33"]\ntls = false', "expected CIDRs"),
])
def test_bad_web_tables_name_the_key_and_what_is_valid(make_runtime, tmp_path, web, message):
    text = site_text(tmp_path, tls=False).replace("tls = false\n", web + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        make_runtime(text)
    assert "web" in str(exc.value)


def test_web_without_a_modbus_server_says_what_to_add(make_runtime, tmp_path):
    text = site_text(tmp_path, tls=False).replace("[modbus_server]\nport = 0\n", "")
    with pytest.raises(ConfigError, match=r"needs a \[modbus_server\] table"):
        make_runtime(text)


# -- what it serves --------------------------------------------------------------------------
def test_api_status_is_what_busguard_status_json_reads(served, run_scans):
    rt, port = served()
    mb = next(p for p in rt.publishers if p.section == "modbus_server")
    client = connect("127.0.0.1", mb.port(), 3.0)
    try:
        over_tcp = read_all(reader(client, 1))
    finally:
        client.close()
    got = json.loads(get(port, "/api/status").body)
    assert got.pop("server") == f"127.0.0.1:{rt.site.publishers['modbus_server'].params['port']}"
    for volatile in ("uptime_s", "image_utc", "last_good_scan_utc"):
        got["header"].pop(volatile), over_tcp["header"].pop(volatile)
    assert got == json.loads(json.dumps(over_tcp))
    m1 = next(d for d in got["devices"] if d["name"] == "m1")
    assert m1["points"]["current_l1_a"]["value"] == pytest.approx(150.0)


def test_page_view_groups_a_tap_off_and_lists_the_alarm(served):
    _rt, port = served()
    v = json.loads(get(port, "/api/view").body)
    tap = v["taps"][0]
    assert (tap["meter"], tap["probes"], tap["breaker"]) == ("m1", ["p1"], "b1")
    assert tap["power_kw"] == pytest.approx(88.5) and tap["temp_c"] == pytest.approx(41.25)
    assert [a["code"] for a in v["alarm_table"]] == ["BG-LIMIT"]
    assert v["header"]["data_origin"] == "LIVE"
    layout = json.loads(get(port, "/api/layout").body)
    assert layout["taps"][0]["breaker"] == "b1"


def test_the_page_and_its_static_files_carry_the_security_headers(served):
    _rt, port = served()
    page = get(port, "/")
    assert page.status == 200 and b'src="/static/app.js"' in page.body
    assert b"<script>" not in page.body  # no inline script (the CSP forbids it)
    for path in ("/", "/static/app.js", "/static/app.css", "/api/view"):
        h = get(port, path).headers
        assert "script-src 'self'" in h["content-security-policy"]
        assert "unsafe-inline" not in h["content-security-policy"]
        assert h["strict-transport-security"].startswith("max-age=")
        assert h["x-content-type-options"] == "nosniff"
    assert get(port, "/static/../publisher.py").status == 404


def test_the_server_is_read_only(served):
    _rt, port = served()
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                       context=ssl._create_unverified_context())
    conn.request("POST", "/api/status", body=b"{}")
    assert conn.getresponse().status in (401, 405)  # never 2xx


def test_the_snapshot_is_refreshed_at_most_every_refresh_ms(served, run_scans):
    rt, port = served('refresh_ms = 60000.0')
    web = web_of(rt)
    first = json.loads(get(port, "/api/view").body)
    rt.image.write("m1.power_kw", 12.0)
    run_scans(rt, 3)
    for _ in range(5):
        assert json.loads(get(port, "/api/view").body) == first
    assert web.cache.refreshes == 1


# -- refusals (each leaves the runtime serving) ---------------------------------------------
def test_wrong_password_gets_401_and_is_logged_once(served, caplog):
    rt, port = served()
    with caplog.at_level(logging.WARNING, "busguard.web"):
        for _ in range(3):
            r = get(port, "/api/view", auth=(USER, "wrong password"))
            assert r.status == 401
            assert r.headers["www-authenticate"].startswith('Basic realm="busguard webtest"')
        assert get(port, "/metrics", auth=None).status == 401
        assert get(port, "/api/view", auth=("nobody", PASSWORD)).status == 401
    lines = [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]
    assert sum("wrong user or password" in m for m in lines) == 1  # once per streak
    assert sum("no credentials" in m for m in lines) == 1
    assert serving(port)
    assert rt.state == "running"


def test_a_client_outside_allow_is_closed_at_accept(served, caplog):
    rt, port = served('allow = ["127.0.0.2/32"]')
    with caplog.at_level(logging.WARNING, "busguard.web"):
        assert closed_without_reply(port, source="127.0.0.1")
    assert any("refused a connection (allowlist)" in r.getMessage() for r in caplog.records)
    assert serving(port, source="127.0.0.2")
    assert web_of(rt).connection_counts()["refused_allowlist"] == 1


def test_plain_http_to_the_tls_port_is_told_to_use_https(served):
    _rt, port = served()
    r = get(port, "/api/view", tls=False)
    assert r.status == 400
    assert f"use https://127.0.0.1:{port}/".encode() in r.body
    assert serving(port)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_ten_megabyte_header_is_refused_with_400(served, caplog, tls):
    rt, port = served(tls=tls)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    got = b""
    try:
        s.sendall(b"GET /api/view HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            for _ in range(160):  # 10 MB
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            # refused: the server closed (reset), or, over TLS, sent its 400 and its
            # close_notify and reads no more of the request (the send blocks: CI on 3.10)
            pass
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            pass
    finally:
        s.close()
    assert got.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), got[:200]
    assert b"8190" in got or b"too long" in got.lower()
    assert serving(port, tls=tls)
    assert web_of(rt).connection_counts()["refused_bad_request"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_five_hundred_idle_connections_neither_hold_the_server_nor_the_scan(served,
                                                                            run_scans, tls):
    """500 connections that send nothing (on the HTTPS port: never start their handshake)."""
    rt, port = served("max_connections_per_client = 8\nfirst_byte_s = 1.0", tls=tls)
    idle = []
    try:
        for _ in range(500):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        # another client address is served meanwhile: the flood holds 8 slots, not 500
        assert serving(port, tls=tls, source="127.0.0.2")
        run_scans(rt, 5)
        assert rt.state == "running"
        counts = web_of(rt).connection_counts()
        assert counts["refused_cap"] >= 400
        deadline = time.monotonic() + 20
        while web_of(rt).connection_counts()["closed_silent"] < 8:
            assert time.monotonic() < deadline, web_of(rt).connection_counts()
            time.sleep(0.1)
    finally:
        for s in idle:
            s.close()
    assert serving(port, tls=tls)  # the silent ones were closed: the address is back


def test_over_the_request_rate_gets_429(served):
    _rt, port = served("max_requests_per_s = 2.0", tls=False)
    statuses = [get(port, "/api/layout", tls=False).status for _ in range(12)]
    assert statuses[:4] == [200] * 4
    assert 429 in statuses
    r = [get(port, "/api/layout", tls=False) for _ in range(3)][-1]
    if r.status == 429:
        assert int(r.headers["retry-after"]) >= 1


def test_passwd_file_readable_by_others_refuses_everyone_with_the_reason(served, tmp_path,
                                                                         caplog):
    _rt, port = served()
    (tmp_path / "web.passwd").chmod(0o644)
    with caplog.at_level(logging.WARNING, "busguard.web"):
        assert get(port, "/api/view").status == 401
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
    (tmp_path / "web.passwd").chmod(0o600)
    assert serving(port)


def test_with_an_io_process_the_page_is_served_from_there(tmp_path):
    """[scan] io = "process": the web server runs in the I/O process (no web thread beside
    the scan), serves the same snapshot, and /metrics still has the scan's lateness
    histogram (shared from the scan process)."""
    import threading

    text = io_process(site_text(tmp_path))
    site = tmp_path / "site.toml"
    site.write_text(text)
    with running(site) as rt:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            try:
                port = web_of(rt).port()
            except KeyError:
                assert time.monotonic() < deadline, "the I/O process never served the page"
                time.sleep(0.2)
        assert not [th for th in threading.enumerate() if th.name == "busguard-web"]
        while True:
            rt.image.write("m1.power_kw", 42.0)
            v = json.loads(get(port, "/api/view").body)
            if v["taps"] and v["taps"][0]["power_kw"] == 42.0:
                break
            assert time.monotonic() < deadline, v
            time.sleep(0.3)
        text = get(port, "/metrics").body.decode()
        count = re.search(r"^busguard_scan_lateness_seconds_count (\S+)$", text, re.MULTILINE)
        assert count and float(count.group(1)) > 10


def test_api_history_serves_the_history_stores_samples(make_runtime, tmp_path, run_scans):
    """/api/history reads the on-box history store ([history]): the trend's samples."""
    text = site_text(tmp_path) + '\n[history]\nseconds_dir = "sec"\n'
    rt = make_runtime(text, start=True)
    port = web_of(rt).port()
    assert get(port, "/api/history?point=m1.power_kw&range=2h").status == 400
    deadline = time.monotonic() + 20
    while True:
        rt.image.write("m1.power_kw", 77.0)
        run_scans(rt, 2)
        r = get(port, "/api/history?point=m1.power_kw&range=1h")
        if r.status == 200:
            samples = json.loads(r.body)["samples"]
            if len([s for s in samples if s[2] == 77.0]) >= 2:
                break
        assert time.monotonic() < deadline, (r.status, r.body[:300])
        time.sleep(0.3)
    assert all(len(s) == 5 for s in samples)  # t, min, avg, max, quality
    assert get(port, "/api/history?point=nope.x&range=1h").status == 404
    assert "m1.power_kw" in json.loads(get(port, "/api/history/points").body)


def test_a_certificate_that_does_not_load_fails_the_start_naming_the_files(make_runtime,
                                                                           tmp_path):
    rt = make_runtime(site_text(tmp_path))
    (tmp_path / "web.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    with pytest.raises(OSError, match=r"cannot load the certificate .*web\.pem and key"):
        rt.start()
