"""[snmp] under hostile input: 100,000 malformed datagrams (bad BER, wrong versions, huge
lengths, truncated and bit-flipped real messages) and the agent still answers net-snmp's
snmpget, and the scan keeps running (reliability suite)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import pytest

from busguard.testing import wait_until
from test_snmp import AUTH_PASS, PREFIX, PRIV_PASS, SITE, USER, users

TOTAL = 100_000
BATCH = 100

pytestmark = pytest.mark.reliability


def real_message(port: int) -> bytes:
    """A real SNMPv3 discovery request (net-snmp's first datagram), captured on loopback."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    cap = s.getsockname()[1]
    subprocess.run(["snmpget", "-v3", "-l", "authPriv", "-u", USER, "-a", "SHA-256", "-A",
                    AUTH_PASS, "-x", "AES", "-X", PRIV_PASS, "-r", "0", "-t", "0.3",
                    f"127.0.0.1:{cap}", PREFIX + ".1.1.1.0"], capture_output=True, timeout=30)
    data = s.recv(65535)
    s.close()
    return data


def malformed(rng: random.Random, seed: bytes) -> bytes:
    k = rng.randrange(8)
    if k == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 300))
    if k == 1:  # a SEQUENCE claiming a huge length
        return b"\x30\x84\xff\xff\xff\xf0" + rng.randbytes(rng.randrange(0, 40))
    if k == 2:  # wrong or absurd versions
        ver = rng.choice([b"\x02\x01\x07", b"\x02\x01\xff", b"\x02\x05\x7f\xff\xff\xff\xff",
                          b"\x02\x01\x00", b"\x02\x01\x01"])
        body = ver + b"\x04\x06public" + rng.randbytes(rng.randrange(0, 60))
        return b"\x30" + bytes([len(body)]) + body if len(body) < 128 else body
    if k == 3:  # truncated real message
        return seed[:rng.randrange(1, len(seed))]
    if k == 4:  # bit flips in a real message
        b = bytearray(seed)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if k == 5:  # indefinite lengths and deep nesting
        return b"\x30\x80" * rng.randrange(1, 200) + b"\x00\x00"
    if k == 6:  # a real message with a length byte made huge
        b = bytearray(seed)
        b[1] = 0x84
        return bytes(b[:2]) + b"\x7f\xff\xff\xff" + bytes(b[2:])
    return seed + rng.randbytes(rng.randrange(1, 100))  # trailing garbage


@pytest.mark.skipif(shutil.which("snmpget") is None, reason="net-snmp's tools are missing")
def test_100k_malformed_datagrams_leave_the_agent_and_the_scan_running(make_runtime, tmp_path,
                                                                       run_scans):
    users(tmp_path)
    rt = make_runtime(SITE.replace("{snmp}", "max_requests_per_s = 100000"), start=True)
    run_scans(rt, 2)
    pub = next(p for p in rt.publishers if p.section == "snmp")
    port = pub.port()
    seed = real_message(port)
    assert seed[:1] == b"\x30"
    rng = random.Random(17)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    base = pub.agent.counts["datagrams"]
    while sent < TOTAL:
        for _ in range(BATCH):
            sock.sendto(malformed(rng, seed), ("127.0.0.1", port))
            sent += 1
        # bounded: the agent has taken this batch off its socket (or the kernel dropped
        # some of it: then the counter stops short and we go on once it stops moving)
        last = [-1, time.monotonic()]

        def settled(last: list[float] = last, sent: int = sent) -> bool:
            n = pub.agent.counts["datagrams"] - base
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return n >= sent or time.monotonic() - last[1] > 1.0
        wait_until(settled, 60.0, "the agent to take the batch")
        run_scans(rt, 1)  # the scan keeps running between batches
    sock.close()
    assert pub.agent.counts["datagrams"] - base >= TOTAL * 0.9  # it parsed them, not the kernel
    assert pub.agent._thread.is_alive()
    assert pub.status()["malformed"] + pub.status()["usmStatsUnknownEngineIDs"] >= 0
    r = subprocess.run(["snmpget", "-v3", "-l", "authPriv", "-u", USER, "-a", "SHA-256", "-A",
                        AUTH_PASS, "-x", "AES", "-X", PRIV_PASS, "-r", "1", "-t", "5", "-On",
                        f"127.0.0.1:{port}", PREFIX + ".1.1.1.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and PREFIX[1:] in r.stdout.replace("." + PREFIX, PREFIX), r.stderr
    results = run_scans(rt, 3)
    assert len(results) == 3
