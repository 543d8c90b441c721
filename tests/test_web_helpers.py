"""Helpers for the [web] tests (no tests here): a site with a web server, certificates, a
user, and an HTTP(S) client that reports refusals instead of raising."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from busguard.web.passwd import hash_password, write_users

USER, PASSWORD = "ops", "correct horse battery"

SITE = """
[site]
name = "webtest"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "current_l2_a", "current_l3_a", "voltage_l1_l2_v", "power_kw",
          "power_factor", "thd_v_l1_pct"]
[[probe]]
name = "p1"
driver = "memory"
points = ["temp_c"]
[[breaker]]
name = "b1"
driver = "memory"
[[block]]
name = "limit"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = 100.0
code = "BG-LIMIT"
[modbus_server]
port = 0
[web]
port = 0
{web}
"""


def make_cert(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    cert, key = folder / "web.pem", folder / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=busguard-web-test", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def add_user(folder: Path, user: str = USER, password: str = PASSWORD) -> Path:
    path = folder / "web.passwd"
    write_users(path, {user: hash_password(password)})
    return path


def site_text(folder: Path, web: str = "", tls: bool = True) -> str:
    add_user(folder)
    if tls:
        cert, key = make_cert(folder)
        web = f'cert = "{cert}"\nkey = "{key}"\n' + web
    else:
        web = "tls = false\n" + web
    return SITE.replace("{web}", web)


def web_of(rt) -> object:
    return next(p for p in rt.publishers if p.section == "web")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(port: int, path: str, tls: bool = True, auth: tuple[str, str] | None = (USER, PASSWORD),
        source: str = "127.0.0.1", headers: dict[str, str] | None = None,
        timeout: float = 10.0) -> Reply:
    """One GET (a fresh connection each time, from ``source``)."""
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=ctx, source_address=(source, 0))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                          source_address=(source, 0))
    try:
        conn.request("GET", path, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def closed_without_reply(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    """True when the server closes a new connection from ``source`` without a byte."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0))
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        s.close()
