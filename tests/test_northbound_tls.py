"""Modbus/TCP Security: TLS with client certificates, over real sockets.

A throwaway CA, server and client certificates are made with the openssl CLI per test session
(EC P-256, valid two days); a second CA signs a client the server must refuse.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from busguard.cli import main
from busguard.northbound import mapdef
from busguard.northbound.tls import client_context
from test_northbound_helpers import read, site_text, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl CLI is needed to make test certificates")

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _ossl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    _ossl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj",
          f"/CN={name}", "-days", "2", cwd=d)


def make_cert(d: Path, name: str, ca: str) -> None:
    _ossl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
          cwd=d)
    _ossl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
          "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "ca")
    make_cert(d, "dcim", "ca")
    make_cert(d, "intruder", "rogue-ca")
    return d


@pytest.fixture
def tls_served(make_runtime, pki, tmp_path):
    def make(extra: str = ""):
        server = (f'allow = ["127.0.0.0/8"]\nwrite_allow = ["127.0.0.1/32"]\n'
                  f'tls = {{ cert = "{pki}/server.pem", key = "{pki}/server.key", '
                  f'ca = "{pki}/ca.pem", port = 0{extra} }}\n')
        rt = make_runtime(site_text(server), start=True)
        pub = rt.publishers[0]
        return rt, pub, pub.server.port("tls")

    return make


def tls_connect(port: int, pki: Path, cert: str | None) -> ssl.SSLSocket:
    ctx = client_context(pki / "ca.pem", pki / f"{cert}.pem" if cert else None,
                         pki / f"{cert}.key" if cert else None)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def refused_tls(port: int, pki: Path, cert: str | None) -> bool:
    """The server ends the session: in the handshake (TLS 1.2) or at the first read (1.3)."""
    try:
        s = tls_connect(port, pki, cert)
        with s:
            read(s, 0, 1)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def test_tls_with_a_valid_client_certificate_reads_the_map(tls_served, pki):
    _rt, pub, port = tls_served()
    with tls_connect(port, pki, "dcim") as s:
        assert read(s, 0, 2) == [mapdef.MAGIC, mapdef.MAP_VERSION]
    assert pub.server.port("tcp")  # plain Modbus/TCP still served unless tls.only


def test_tls_without_a_client_certificate_is_refused(tls_served, pki):
    _rt, pub, port = tls_served()
    assert refused_tls(port, pki, None)
    assert refused_tls(port, pki, "intruder")  # signed by another CA
    wait_for(lambda: pub.status()["tls_failed"] == 2, what="two failed handshakes")
    assert pub.status()["connections"] == 0 and pub.status()["requests"] == 0
    with tls_connect(port, pki, "dcim") as s:  # the real DCIM is not locked out
        assert read(s, 0, 1) == [mapdef.MAGIC]


def test_tls_only_serves_no_plain_port(tls_served):
    _rt, pub, _port = tls_served(", only = true")
    assert [k for k, _h, _p in pub.server.bound] == ["tls"]


def test_busguard_status_over_tls(tls_served, pki, capsys):
    _rt, _pub, port = tls_served()
    code = main(["status", "--port", str(port), "--tls-ca", str(pki / "ca.pem"), "--tls-cert",
                 str(pki / "dcim.pem"), "--tls-key", str(pki / "dcim.key"), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"map_version": 2' in out and '"pqm-a1"' in out
