"""`busguard alarms`, `busguard ack`, `busguard reset` against a real `busguard run` on
loopback, through its Modbus command area: a latched trip listed, acknowledged, reset; a
reset refused while the cause persists (with the block's reason); a host outside
`write_allow` told so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_retained_restart import SITE, feed, first_read, free_port, install_plugin, start, stop

pytestmark = pytest.mark.integration


def busguard(d, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "busguard.cli", *args, "--site",
                           str(d / "site.toml")], capture_output=True, text=True, timeout=60,
                          cwd=d)


def alarms(d) -> list[dict]:
    out = busguard(d, "alarms", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_alarm(d, code: str, tries: int = 50) -> list[dict]:
    import time

    for _ in range(tries):
        table = alarms(d)
        if any(a["code"] == code for a in table):
            return table
        time.sleep(0.2)
    raise AssertionError(f"{code} never in the alarm table")


@pytest.fixture
def running(tmp_path):
    procs = []

    def make(site_text: str):
        d = install_plugin(tmp_path)
        port = free_port()
        (d / "site.toml").write_text(site_text.format(port=port, interval=0.05),
                                     encoding="utf-8")
        feed(d, 400.0, 230.0)
        proc = start(d, d / "site.toml")
        procs.append(proc)
        first_read(port, proc)
        return d

    yield make
    for p in procs:
        stop(p)


def test_alarms_ack_and_reset_a_latched_trip(running):
    d = running(SITE)
    assert busguard(d, "alarms").stdout.strip() == "no alarms"
    feed(d, 1500.0, 230.0)  # above 1000 A: the latch_trip block trips cb-a1-01
    table = wait_alarm(d, "BG-TEST-TRIP")
    trip = next(a for a in table if a["code"] == "BG-TEST-TRIP")
    assert trip["severity"] == "critical" and trip["device"] == "cb-a1-01"
    assert not trip["acked"]
    text = busguard(d, "alarms").stdout
    assert "BG-TEST-TRIP" in text and "critical" in text and "NO" in text

    out = busguard(d, "ack", "0xCF")
    assert out.returncode == 1 and "no alarm '0xCF'" in out.stderr
    out = busguard(d, "ack")
    assert out.returncode == 2 and "name one alarm CODE, or --all" in out.stderr
    out = busguard(d, "ack", "BG-TEST-TRIP")
    assert out.returncode == 0, out.stderr
    assert "acknowledged 1 alarm: BG-TEST-TRIP" in out.stdout
    assert all(a["acked"] for a in alarms(d))

    out = busguard(d, "reset", "cb-a1-99")
    assert out.returncode == 1 and "no breaker 'cb-a1-99'" in out.stderr
    assert "cb-a1-01" in out.stderr
    # still 1500 A: this block keeps the latch while the cause holds (and raises no refusal)
    out = busguard(d, "reset", "cb-a1-01", "--wait", "1")
    assert out.returncode == 1 and "still latched" in out.stderr
    feed(d, 400.0, 230.0)
    out = busguard(d, "reset", "cb-a1-01")
    assert out.returncode == 0, out.stderr
    assert "cb-a1-01: trip reset" in out.stdout
    out = busguard(d, "reset", "cb-a1-01")
    assert out.returncode == 0 and "no latched trip; nothing to reset" in out.stdout


def test_a_host_outside_write_allow_is_told_what_to_change(running):
    d = running(SITE.replace('write_allow = ["127.0.0.1/32"]\n', ""))
    feed(d, 1500.0, 230.0)
    wait_alarm(d, "BG-TEST-TRIP")
    for args in (("ack", "--all"), ("reset", "cb-a1-01")):
        out = busguard(d, *args)
        assert out.returncode == 1, out
        assert "this host is not in the unit's [modbus_server] write_allow" in out.stderr
    assert not any(a["acked"] for a in alarms(d))  # nothing was acknowledged


SHUNT_SITE = SITE.replace('points = ["current_l1_a", "voltage_l1_n_v"]',
                         'points = ["current_l1_a", "current_l2_a", "current_l3_a", '
                         '"voltage_l1_n_v"]').replace('''[[block]]
name = "trip-a1"
type = "latch_trip"
point = "pqm-a1.current_l1_a"
breaker = "cb-a1-01"
above = 1000.0
''', '''[[block]]
name = "trip-a1"
type = "shunt_trip"
breaker = "cb-a1-01"
meter = "pqm-a1"
pickup_a = 480.0
delay_s = 0.1
''')


def feed3(d, amps: float) -> None:
    import os

    tmp = d / "feed.json.tmp"
    tmp.write_text(json.dumps({"pqm-a1": {"current_l1_a": amps, "current_l2_a": amps,
                                          "current_l3_a": amps, "voltage_l1_n_v": 230.0}}))
    os.replace(tmp, d / "feed.json")


def test_a_reset_refused_while_the_cause_persists_says_why(running):
    d = running(SHUNT_SITE)
    feed3(d, 2000.0)
    import time

    trips: list[dict] = []
    for _ in range(50):
        trips = [a for a in alarms(d) if a["device"] == "cb-a1-01"
                 and a["severity"] == "critical"]
        if trips:
            break
        time.sleep(0.2)
    assert trips, "the shunt_trip block never latched"
    out = busguard(d, "reset", "cb-a1-01")
    assert out.returncode == 1, out
    assert "reset refused by the unit (BG-RESET-REFUSED), the trip stays latched" in out.stderr
    assert "cb-a1-01: reset refused, still present: overcurrent" in out.stderr


# poll_ms 500: stale only after 1.5 s without a read, so a loaded machine does not suspend
# the limit checks (which clears their alarms and raises them afresh, unacknowledged)
CODES_SITE = SITE.replace("poll_ms = 20\n", "poll_ms = 500\n").replace(
    "[modbus_server]", '''[[block]]
name = "limit-2a"
type = "threshold_alarm"
point = "pqm-a1.current_l1_a"
high = 1200.0
severity = "major"
code = "0x2A"

[[block]]
name = "limit-default"
type = "threshold_alarm"
point = "pqm-a1.current_l1_a"
high = 1300.0

[modbus_server]''')


def waiting(d) -> set[str]:
    return {a["code"] for a in alarms(d) if not a["acked"]}


def test_ack_code_leaves_the_other_codes_waiting_cli_and_mbpoll(running):
    """`busguard ack CODE` acknowledges that code alone (cmd.ack_code); mbpoll, as a DCIM,
    writes the same command from the documented address; a code without a number of its own
    is acknowledged only while it is the one waiting."""
    import shutil
    import time

    d = running(CODES_SITE)
    feed(d, 1500.0, 230.0)
    for _ in range(50):
        if waiting(d) == {"BG-TEST-TRIP", "0x2A", "BG-LIMIT"}:
            break
        time.sleep(0.2)
    assert waiting(d) == {"BG-TEST-TRIP", "0x2A", "BG-LIMIT"}

    out = busguard(d, "ack", "BG-TEST-TRIP")  # a plugin's own code: number 0xFFFF
    assert out.returncode == 1, out
    assert "BG-TEST-TRIP has no number of its own in the register map" in out.stderr
    assert "0x2A, BG-LIMIT also wait for acknowledgement" in out.stderr
    assert waiting(d) == {"BG-TEST-TRIP", "0x2A", "BG-LIMIT"}  # nothing written

    out = busguard(d, "ack", "0x2A")
    assert out.returncode == 0, out.stderr
    assert "acknowledged 1 alarm: 0x2A" in out.stdout
    assert "still waiting for acknowledgement: BG-LIMIT, BG-TEST-TRIP" in out.stdout
    # the CLI saw 0x2A acknowledged (it waits for that); the others were not touched. (Not
    # asserted: 0x2A stays acknowledged. On a loaded machine the 20 ms file feed can go
    # stale, the limit check is suspended, and 0x2A clears and is raised afresh, unacked.)
    assert {"BG-TEST-TRIP", "BG-LIMIT"} <= waiting(d)

    mbpoll = shutil.which("mbpoll")
    if mbpoll is not None:  # the DCIM's way: the documented address, uint32, high word first
        rows = json.loads(subprocess.run(
            [sys.executable, "-m", "busguard.cli", "map", "site.toml", "--format", "json"],
            capture_output=True, text=True, timeout=60, cwd=d, check=True).stdout)["fields"]
        addr = next(r["address"] for r in rows if r["name"] == "cmd.ack_code:u32")
        port = site_port(d)
        w = subprocess.run([mbpoll, "-m", "tcp", "-p", str(port), "-1", "-o", "2", "-0", "-B",
                            "-t", "4:int", "-r", str(addr), "127.0.0.1",
                            str((7 << 16) | 0x0304)], capture_output=True, text=True,
                           timeout=20)
        assert w.returncode == 0, w.stdout + w.stderr
        for _ in range(50):
            if "BG-LIMIT" not in waiting(d):
                break
            time.sleep(0.2)
        left = waiting(d)
        assert "BG-LIMIT" not in left and "BG-TEST-TRIP" in left  # 0x0304 alone
    else:
        out = busguard(d, "ack", "BG-LIMIT")
        assert out.returncode == 0, out.stderr

    for code in waiting(d) - {"BG-TEST-TRIP"}:  # raised afresh meanwhile (see above)
        assert busguard(d, "ack", code).returncode == 0
    out = busguard(d, "ack", "BG-TEST-TRIP")  # now the one waiting: cmd.ack_alarms
    assert out.returncode == 0, out.stderr
    assert "acknowledged 1 alarm: BG-TEST-TRIP" in out.stdout
    assert "BG-TEST-TRIP" not in waiting(d)


def site_port(d) -> int:
    """The [modbus_server] port the fixture wrote into the site file."""
    import re

    return int(re.search(r"^port = (\d+)$", (d / "site.toml").read_text(), re.M).group(1))
