"""A third-party client reads the documented addresses: mbpoll (Debian package).

CI installs mbpoll (.ci/run); locally the tests skip, saying so, when it is missing. mbpoll
reads float32 low word first unless given -B; the map is high word first (docs/register-map.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from busguard.image import Quality
from busguard.testing import run_scans
from test_northbound_helpers import site_text

MBPOLL = shutil.which("mbpoll")
pytestmark = pytest.mark.skipif(MBPOLL is None, reason="mbpoll is not installed (CI installs "
                                "it: apt-get install mbpoll)")

SERVER = 'write_allow = ["127.0.0.1/32"]\n'


def mbpoll(port: int, *args: str, write: str | None = None) -> subprocess.CompletedProcess:
    cmd = [MBPOLL, "-m", "tcp", "-p", str(port), "-1", "-o", "2", *args, "127.0.0.1"]
    if write is not None:
        cmd.append(write)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def values(out: str) -> dict[int, str]:
    return {int(a): v.strip() for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", out, re.M)}


@pytest.fixture
def served(make_runtime):
    rt = make_runtime(site_text(SERVER), start=True)
    rt.image.write_many([("pqm-a1.voltage_l1_n_v", 277.25, Quality.GOOD),
                         ("pqm-a1.current_l1_a", 412.5, Quality.GOOD)])
    run_scans(rt, 1)
    pub = rt.publishers[0]
    return rt, pub, pub.server.port()


def test_mbpoll_reads_documented_addresses_with_big_endian_words(served):
    _rt, pub, port = served
    a = pub.map.record_of("pqm-a1.voltage_l1_n_v").address
    r = mbpoll(port, "-0", "-B", "-t", "4:float", "-r", str(a), "-c", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert values(r.stdout) == {a: "277.25"}
    one_based = mbpoll(port, "-B", "-t", "4:float", "-r", str(a + 1), "-c", "1")
    assert values(one_based.stdout) == {a + 1: "277.25"}  # 1-based reference = address + 1
    swapped = mbpoll(port, "-0", "-t", "4:float", "-r", str(a), "-c", "1")  # no -B
    assert values(swapped.stdout)[a] != "277.25"  # the documented word-order trap
    q = mbpoll(port, "-0", "-t", "4", "-r", str(a + 2), "-c", "1")
    assert values(q.stdout) == {a + 2: "0"}  # quality good
    head = mbpoll(port, "-0", "-t", "4:hex", "-r", "0", "-c", "2")
    assert values(head.stdout) == {0: "0x4247", 1: "0x0002"}  # map version 2


def test_mbpoll_writes_the_command_area_only(served):
    rt, pub, port = served
    ack = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    r = mbpoll(port, "-0", "-B", "-t", "4:int", "-r", str(ack.address + 2), write="5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rt.image.snapshot()["cmd.ack_alarms"].value == 5.0
    a = pub.map.record_of("pqm-a1.current_l1_a").address
    bad = mbpoll(port, "-0", "-B", "-t", "4:int", "-r", str(a), write="5")
    assert bad.returncode != 0
    assert "illegal data address" in (bad.stdout + bad.stderr).lower()


def test_mbpoll_reads_per_phase_power_at_its_documented_address(make_runtime):
    """issue 15: a meter's per-phase power, at the address docs/register-map.md gives for the
    bundled site's first meter (same layout: the first meter block at 1000)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "register-map.md").read_text(
        encoding="utf-8")
    documented = int(re.search(r"^\| (\d+) \| 2 \| float32 \| R \| `pqm-a1\.power_l2_kw` \|",
                               doc, re.M).group(1))
    text = site_text(SERVER).replace('"power_kw",', '"power_kw", "power_l2_kw",', 1)
    rt = make_runtime(text, start=True)
    rt.image.write_many([("pqm-a1.power_l2_kw", -41.5, Quality.GOOD)])  # exporting phase
    run_scans(rt, 1)
    pub = rt.publishers[0]
    assert pub.map.record_of("pqm-a1.power_l2_kw").address == documented
    r = mbpoll(pub.server.port(), "-0", "-B", "-t", "4:float", "-r", str(documented), "-c", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert values(r.stdout) == {documented: "-41.5"}


def test_mbpoll_reads_per_phase_power_by_unit_id_and_in_the_site_map(make_runtime):
    """issue 15: the meter's own unit id (slot 0: unit id 2) serves its block from address
    0 at the offsets of docs/register-map.md's block layout; unit id 1 the whole map."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "register-map.md").read_text(
        encoding="utf-8")
    offset = int(re.search(r"^\| (\d+) \| `power_l2_kw` \|", doc, re.M).group(1))
    unit = int(re.search(r"^\| (\d+) \| meter \| `pqm-a1` \| 0 \|", doc, re.M).group(1))
    text = site_text(SERVER).replace('"power_kw",', '"power_kw", "power_l2_kw",', 1)
    rt = make_runtime(text, start=True)
    rt.image.write_many([("pqm-a1.power_l2_kw", 38.75, Quality.GOOD)])
    run_scans(rt, 1)
    pub = rt.publishers[0]
    port = pub.server.port()
    r = mbpoll(port, "-a", str(unit), "-0", "-B", "-t", "4:float", "-r", str(offset), "-c", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert values(r.stdout) == {offset: "38.75"}
    site = pub.map.record_of("pqm-a1.power_l2_kw").address
    r = mbpoll(port, "-a", "1", "-0", "-B", "-t", "4:float", "-r", str(site), "-c", "1")
    assert values(r.stdout) == {site: "38.75"}
    nobody = mbpoll(port, "-a", "99", "-0", "-t", "4", "-r", "0", "-c", "1")
    assert nobody.returncode != 0


def test_mbpoll_reads_a_breakers_trip_cause_by_unit_id_and_in_the_site_map(make_runtime):
    """issue 15: a latched trip's cause (BG-TRIP-OC-LED) at the breaker block's documented
    word 12 (docs/register-map.md "Trip causes"), through the breaker's own unit id (slot 0:
    unit 130, its block from address 0) and in the whole-site map (unit 1)."""
    from pathlib import Path

    from busguard import alarmcodes
    from test_event_ring import SITE as TRIP_SITE
    from test_event_ring import scans, write

    doc = (Path(__file__).resolve().parents[1] / "docs" / "register-map.md").read_text(
        encoding="utf-8")
    trip = doc[doc.index("## Trip causes"):]
    word = int(re.search(r"^Breaker blocks: words (\d+)\.\.", trip, re.M).group(1))
    assert re.search(r"^\| 0 \| 1 \| uint16 \| `trip_cause` \|", trip, re.M)
    unit = int(re.search(r"^\| (\d+) \| breaker \| `brk-a1` \| 0 \|", doc, re.M).group(1))
    rt = make_runtime(TRIP_SITE.format(block=""), start=True)
    pub = rt.publishers[0]
    port = pub.server.port()
    cb1 = next(d for d in pub.map.devices if d.name == "cb1")
    write(rt, [("cb0.led", 0.0), ("cb1.led", 0.0)])
    scans(rt, 1)
    assert values(mbpoll(port, "-a", str(unit + cb1.slot), "-0", "-t", "4", "-r", str(word),
                         "-c", "1").stdout) == {word: "0"}  # no trip yet
    write(rt, [("cb1.led", 1.0)])  # solid red: the breaker's own trip unit opened it
    scans(rt, 2)
    cause = str(alarmcodes.code_number("BG-TRIP-OC-LED"))
    r = mbpoll(port, "-a", str(unit + cb1.slot), "-0", "-t", "4", "-r", str(word), "-c", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert values(r.stdout) == {word: cause}
    site = cb1.address + word
    r = mbpoll(port, "-a", "1", "-0", "-t", "4", "-r", str(site), "-c", "1")
    assert values(r.stdout) == {site: cause}
