"""Modbus/TCP Security (TLS, port 802 by convention) contexts for the northbound server.

pymodbus's TLS server does not check client certificates unless it is given an SSL context
that requires them; this module builds that context: TLS 1.2 or newer, our certificate and
key, and the CA that signs the DCIM's client certificates with ``CERT_REQUIRED``.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, ca: Path | None,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    """A server-side context; raises OSError/ssl.SSLError with the file that failed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context(ca: Path | None, cert: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    """A client-side context (``busguard status --tls-*``, tests): verifies the server
    against ``ca`` (hostname not checked: units are addressed by IP) and presents ``cert``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
