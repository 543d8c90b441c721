"""[snmp]: the SNMPv3 agent against net-snmp's own tools on loopback: a walk of the whole
BUSGUARD-MIB subtree matches `busguard status --json` (scaled as the MIB says), and a wrong
key, an unknown user, a lower security level, v2c and a source outside `allow` are refused."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

import pytest

from busguard.commands.status import connect, reader
from busguard.errors import ConfigError
from busguard.northbound import mapdef as md
from busguard.northbound.reader import read_all
from busguard.snmp import tree
from busguard.snmp.mib import mib_text
from busguard.snmp.users import make_user, read_users, write_users

USER, AUTH_PASS, PRIV_PASS = "bms", "auth passphrase 1", "priv passphrase 2"
PREFIX = tree.DEFAULT_OID
SITE = """
[site]
name = "snmptest"

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "current_l2_a", "voltage_l1_l2_v", "power_kw", "power_factor",
          "energy_import_wh"]

[[meter]]
name = "m2"
driver = "memory"
points = ["current_l1_a", "power_kw"]

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

[snmp]
port = 0
{snmp}
"""

needs_snmp = pytest.mark.skipif(shutil.which("snmpwalk") is None,
                                reason="net-snmp's tools (Debian `snmp`) are not installed")


def users(folder):
    path = folder / "snmp.users"
    write_users(path, {USER: make_user(USER, AUTH_PASS, PRIV_PASS)})
    return path


@pytest.fixture
def served(make_runtime, tmp_path, run_scans):
    def make(snmp: str = ""):
        users(tmp_path)
        rt = make_runtime(SITE.replace("{snmp}", snmp), start=True)
        rt.image.write("m1.current_l1_a", 150.0)  # over 100 A: BG-LIMIT
        rt.image.write("m1.current_l2_a", -3.2104)
        rt.image.write("m1.power_kw", 88.5)
        rt.image.write("m1.power_factor", 0.9731)
        rt.image.write("m1.energy_import_wh", 123456.0)
        rt.image.write("m2.power_kw", 1.25)
        rt.image.write("p1.temp_c", 41.25)
        run_scans(rt, 3)
        return rt, next(p for p in rt.publishers if p.section == "snmp").port()
    return make


def v3(port, *oids, cmd="snmpwalk", user=USER, auth=AUTH_PASS, priv=PRIV_PASS,
       level="authPriv", extra=()):
    args = [cmd, "-v3", "-l", level, "-u", user, "-a", "SHA-256", "-A", auth, "-x", "AES",
            "-X", priv, "-On", "-Oe", "-Ot", "-r", "0", "-t", "3", *extra,
            f"127.0.0.1:{port}", *(oids or (PREFIX,))]
    if level == "authNoPriv":
        args[args.index("-x"):args.index("-x") + 4] = []
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


LINE = re.compile(r"^\.?([\d.]+) = (?:([\w-]+): )?(.*)$")


def parse(out: str) -> dict[tuple[int, ...], str]:
    got = {}
    for line in out.splitlines():
        if "No more variables left in this MIB View" in line:  # endOfMibView: the end
            continue
        m = LINE.match(line)
        assert m, f"unexpected snmpwalk line {line!r}"
        oid = tuple(int(x) for x in m.group(1).split("."))
        got[oid] = m.group(3).strip().strip('"')
    return got


def status_json(rt):
    mb = next(p for p in rt.publishers if p.section == "modbus_server")
    client = connect("127.0.0.1", mb.port(), 3.0)
    try:
        return read_all(reader(client, 1))
    finally:
        client.close()


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(("snmp", "message"), [
    ('host = "10.0.0.5"', "is not loopback but `allow` is empty"),
    ('allow = ["10.0.0.0/33"]', "expected CIDRs"),
    ('enterprise_oid = "1.3.x"', "is not a dotted OID"),
])
def test_bad_snmp_tables_name_the_key_and_what_is_valid(make_runtime, tmp_path, snmp, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        make_runtime(SITE.replace("{snmp}", snmp))
    assert "snmp" in str(exc.value)


def test_a_users_file_readable_by_others_is_refused(make_runtime, tmp_path):
    path = users(tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        make_runtime(SITE.replace("{snmp}", ""), start=True)


def test_user_add_writes_master_keys_mode_0600_not_passphrases(tmp_path, monkeypatch, capsys):
    import io

    from busguard.cli import main

    path = tmp_path / "u"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(os.sys.executable), "busguard"), "snmp", "user-add",
         "nms", "--file", str(path), "--passphrases-stdin"],
        input=f"{AUTH_PASS}\n{PRIV_PASS}\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert AUTH_PASS not in text and PRIV_PASS not in text
    u = read_users(path)["nms"]
    assert (u.auth, u.priv, len(u.auth_key)) == ("SHA-256", "AES", 32)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{AUTH_PASS}\n{PRIV_PASS}\n"))
    assert main(["snmp", "user-add", "x", "--file", str(path), "--auth", "MD5",
                 "--passphrases-stdin"]) == 1
    assert "auth 'MD5': one of SHA-256, SHA-384, SHA-512" in capsys.readouterr().err
    assert set(read_users(path)) == {"nms"}  # unchanged


def test_the_shipped_mib_is_the_generated_one_and_passes_smilint(tmp_path):
    shipped = os.path.join(os.path.dirname(__file__), "..", "packaging", "mibs",
                           "BUSGUARD-MIB.txt")
    with open(shipped) as fh:
        assert fh.read() == mib_text(), "regenerate: busguard snmp mib > " + shipped
    if shutil.which("smilint") is None:
        pytest.skip("smilint (Debian smitools) is not installed")
    # Debian's smitools carries no IETF MIBs: minimal stand-ins of the three SMI modules
    env = dict(os.environ, SMIPATH=os.path.join(os.path.dirname(__file__), "mibs"))
    proc = subprocess.run(["smilint", "-l", "3", shipped], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), \
        proc.stdout + proc.stderr


# -- what it serves --------------------------------------------------------------------------
def expected(data) -> dict[tuple[int, ...], str]:
    """The walk `busguard status --json` implies, OID -> snmpwalk's text (-Oe -Ot: numbers)."""
    p = tuple(int(x) for x in PREFIX.split("."))
    out: dict[tuple[int, ...], str] = {}
    head = data["header"]
    for h in tree.HEADER:
        kind, v = tree.header_value(h, head)
        out[(*p, 1, 1, h.sub, 0)] = v.hex(" ").upper() if kind == "s" else str(v)
    for dev in data["devices"]:
        t, slot = tree.KIND_TABLE[dev["kind"]], dev["slot"]
        out[(*p, 1, t, 1, 2, slot)] = dev["name"]
        out[(*p, 1, t, 1, 3, slot)] = str(tree.QUALITY[dev["status"]])
        if dev["kind"] == "breaker":
            out[(*p, 1, t, 1, 4, slot)] = str(dev["trip_cause"])
            out[(*p, 1, t, 1, 5, slot)] = str(int(dev["trip_utc"] or 0))
        for j, q in enumerate(md.STANDARD[dev["kind"]]):
            if q in dev["points"]:
                rec, col = dev["points"][q], tree.POINT_BASE + 3 * j
                v = rec["value"]
                out[(*p, 1, t, 1, col, slot)] = str(
                    tree.NO_VALUE if v is None else round(v * tree.scale_of(q)))
                out[(*p, 1, t, 1, col + 1, slot)] = str(tree.QUALITY[rec["quality"]])
                out[(*p, 1, t, 1, col + 2, slot)] = str(rec["age_ms"])
    for rank, a in enumerate(data["alarm_table"], 1):
        b = (*p, 1, tree.ALARM_TABLE, 1)
        out.update({(*b, 2, rank): a["code"], (*b, 3, rank): str(a["code_num"]),
                    (*b, 4, rank): str(md.SEVERITY_WORDS.index(a["severity"])),
                    (*b, 5, rank): a["device"], (*b, 6, rank): str(a["slot"]),
                    (*b, 7, rank): str(md.ALARM_STATES.index(a["state"])),
                    (*b, 8, rank): "1" if a["acked"] else "2",
                    (*b, 9, rank): str(int(a["raised_utc"]))})
    return out


VOLATILE = {8, 7}  # header: uptime, cycle count (they move between the two reads)


@needs_snmp
@pytest.mark.integration
def test_snmpwalk_authpriv_matches_busguard_status_json(served):
    rt, port = served()
    walk = v3(port)
    bulk = v3(port, cmd="snmpbulkwalk", extra=("-Cr25",))
    assert walk.returncode == 0, walk.stderr
    assert bulk.returncode == 0, bulk.stderr
    got = parse(walk.stdout)
    assert parse(bulk.stdout).keys() == got.keys()
    want = expected(status_json(rt))
    p = tuple(int(x) for x in PREFIX.split("."))
    for vol in VOLATILE:
        got.pop((*p, 1, 1, vol, 0)), want.pop((*p, 1, 1, vol, 0))
    ages = {k for k in want if k[len(p) + 1] in (2, 3, 4) and k[len(p) + 4] >= 10
            and (k[len(p) + 4] - 10) % 3 == 2}
    for k in ages:  # ages move by a scan or two between the walk and the Modbus read
        assert abs(int(got.pop(k)) - int(want.pop(k))) < 5000
    assert got == want
    # spot checks of the scaling the MIB documents (x 1000; Wh x 1)
    m1 = (*p, 1, 2, 1)
    cols = {q: tree.POINT_BASE + 3 * j for j, q in enumerate(md.STANDARD["meter"])}
    slot = next(d["slot"] for d in status_json(rt)["devices"] if d["name"] == "m1")
    assert got[(*m1, cols["current_l1_a"], slot)] == "150000"
    assert got[(*m1, cols["current_l2_a"], slot)] == str(round(-3.2104 * 1000))
    assert got[(*m1, cols["power_factor"], slot)] == "973"
    assert got[(*m1, cols["energy_import_wh"], slot)] == "123456"
    assert got[(*p, 1, 5, 1, 2, 1)] == "BG-LIMIT"


@needs_snmp
@pytest.mark.integration
def test_get_of_a_missing_instance_and_set_are_refused_cleanly(served):
    _rt, port = served()
    r = v3(port, PREFIX + ".1.1.1.0", PREFIX + ".1.2.1.2.999", cmd="snmpget")
    assert re.search(r"\.1\.1\.1\.0 = (Gauge32: )?\d+", r.stdout), r.stdout + r.stderr
    assert "No Such Instance" in r.stdout
    s = subprocess.run(["snmpset", "-v3", "-l", "authPriv", "-u", USER, "-a", "SHA-256", "-A",
                        AUTH_PASS, "-x", "AES", "-X", PRIV_PASS, "-r", "0", "-t", "3",
                        f"127.0.0.1:{port}", PREFIX + ".1.1.1.0", "u", "1"],
                       capture_output=True, text=True, timeout=60)
    assert s.returncode != 0


@needs_snmp
@pytest.mark.integration
def test_wrong_key_unknown_user_lower_level_and_v2c_are_refused(served):
    rt, port = served()
    pub = next(p for p in rt.publishers if p.section == "snmp")
    wrong = v3(port, cmd="snmpget", auth="not the right key", extra=())
    assert wrong.returncode != 0 and "Authentication failure" in wrong.stderr, wrong.stderr
    unknown = v3(port, cmd="snmpget", user="mallory")
    assert unknown.returncode != 0 and "Unknown user name" in unknown.stderr, unknown.stderr
    nopriv = v3(port, PREFIX + ".1.1.1.0", cmd="snmpget", level="authNoPriv")
    assert nopriv.returncode != 0 and "Unsupported security level" in nopriv.stderr
    assert " = " not in nopriv.stdout
    v2c = subprocess.run(["snmpget", "-v2c", "-c", "public", "-r", "0", "-t", "1",
                          f"127.0.0.1:{port}", PREFIX + ".1.1.1.0"],
                         capture_output=True, text=True, timeout=60)
    assert v2c.returncode != 0 and "Timeout" in v2c.stderr, v2c.stdout + v2c.stderr
    st = pub.status()
    assert st["usmStatsUnknownUserNames"] >= 1 and st["usmStatsWrongDigests"] >= 1
    assert st["usmStatsUnsupportedSecLevels"] >= 1 and st["requests"] == 0


@needs_snmp
@pytest.mark.integration
def test_a_manager_outside_allow_and_over_its_rate_gets_no_answer(served):
    rt, port = served('allow = ["127.0.0.2/32"]\nmax_requests_per_s = 2')
    pub = next(p for p in rt.publishers if p.section == "snmp")
    ok = v3(port, PREFIX + ".1.1.1.0", cmd="snmpget", extra=("--clientaddr=127.0.0.2",))
    assert ok.returncode == 0, ok.stderr
    out = v3(port, PREFIX + ".1.1.1.0", cmd="snmpget", extra=("--clientaddr=127.0.0.3",))
    assert out.returncode != 0 and "Timeout" in out.stderr
    assert pub.status()["refused_address"] >= 1
    walk = v3(port, extra=("--clientaddr=127.0.0.2",))  # a walk needs > 4 requests at 2/s
    assert walk.returncode != 0 and pub.status()["refused_rate"] >= 1


@needs_snmp
@pytest.mark.integration
def test_lab_v2c_answers_and_warns_at_start(served, caplog):
    _rt, port = served('lab_v2c_community = "labonly"')
    assert "LAB MODE: SNMPv2c is answered" in caplog.text
    r = subprocess.run(["snmpget", "-v2c", "-c", "labonly", "-On", "-r", "0", "-t", "3",
                        f"127.0.0.1:{port}", PREFIX + ".1.1.1.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and re.search(r"1\.1\.1\.0 = Gauge32: \d+", r.stdout), r.stderr


def test_the_table_is_rebuilt_per_new_image_at_most_every_refresh_s():
    """Many requests on a fast-changing image cost one rebuild per ``refresh_s``, and a
    rebuild only when the image changed; the varbind objects are made once per rebuild."""
    from busguard.snmp.agent import Table

    now = [100.0]
    gen = [1]
    data = {"header": {"fingerprint": 7, "runtime_state": "running", "data_origin": "LIVE",
                       "highest_severity": 0}, "devices": [], "alarm_table": []}
    decodes = []

    def latest():
        decodes.append(gen[0])
        return data

    t = Table((1, 3, 6, 1, 4, 1, 32473), latest, lambda: gen[0], 1.0, clock=lambda: now[0])
    t.refresh()
    assert t.rebuilds == 1 and t.get((1, 3, 6, 1, 4, 1, 32473, 1, 1, 1, 0)) == ("u", 7)
    first = t.varbind((1, 3, 6, 1, 4, 1, 32473, 1, 1, 1, 0))
    assert t.varbind((1, 3, 6, 1, 4, 1, 32473, 1, 1, 1, 0)) is first
    for _ in range(50):  # a new image every "scan", requests within the second
        gen[0] += 1
        now[0] += 0.01
        t.refresh()
    assert t.rebuilds == 1 and len(decodes) == 1
    now[0] += 0.6
    t.refresh()
    assert t.rebuilds == 2 and len(decodes) == 2
    assert t.varbind((1, 3, 6, 1, 4, 1, 32473, 1, 1, 1, 0)) is not first
    now[0] += 5.0  # due, but the same image: nothing rebuilt
    t.refresh()
    assert t.rebuilds == 2
    assert t.next_varbind((1, 3, 6, 1, 4, 1, 32473, 1, 1, 11, 0)) is None  # past the end


@needs_snmp
@pytest.mark.integration
def test_a_bulkwalk_counts_requests_not_varbinds(served):
    rt, port = served()
    pub = next(p for p in rt.publishers if p.section == "snmp")
    before = pub.status()["requests"]
    bulk = v3(port, cmd="snmpbulkwalk", extra=("-Cr25",))
    assert bulk.returncode == 0, bulk.stderr
    varbinds = len(bulk.stdout.splitlines())
    requests = pub.status()["requests"] - before
    assert varbinds > 50
    assert varbinds / 25 <= requests <= varbinds / 25 + 2  # one GETBULK per 25 varbinds


ENT_PHYS = "1.3.6.1.2.1.47.1.1.1.1"
ENT_SENSOR = "1.3.6.1.2.1.99.1.1.1"


@needs_snmp
@pytest.mark.integration
def test_entity_and_entity_sensor_tables_match_busguard_status_json(served):
    """entPhysicalTable: the unit, one entry per device (index from its slot), one sensor
    entry per point contained in its meter; entPhySensorTable: type, scale, precision,
    value, status and units as RFC 3433 has them, the values those of `busguard status`."""
    from busguard.snmp import entity

    rt, port = served()
    bulk = {"cmd": "snmpbulkwalk", "extra": ("-Cr25",)}  # (a walk's GETNEXTs: > 100/s)
    phys, sens = v3(port, ENT_PHYS, **bulk), v3(port, ENT_SENSOR, **bulk)
    assert phys.returncode == 0 and sens.returncode == 0, phys.stderr + sens.stderr
    ep = tuple(int(x) for x in ENT_PHYS.split("."))
    es = tuple(int(x) for x in ENT_SENSOR.split("."))
    got_p, got_s = parse(phys.stdout), parse(sens.stdout)
    data = status_json(rt)
    devs = {d["name"]: d for d in data["devices"]}
    assert got_p[(*ep, 5, 1)] == "3" and got_p[(*ep, 4, 1)] == "0"  # the unit: chassis
    assert got_p[(*ep, 7, 1)] == "snmptest"
    m1 = entity.KIND_BASE["meter"] + 100 * devs["m1"]["slot"]
    p1 = entity.KIND_BASE["probe"] + 100 * devs["p1"]["slot"]
    b1 = entity.KIND_BASE["breaker"] + 100 * devs["b1"]["slot"]
    for idx, name, cls in ((m1, "m1", "9"), (p1, "p1", "8"), (b1, "b1", "1")):
        assert got_p[(*ep, 7, idx)] == name and got_p[(*ep, 5, idx)] == cls
        assert got_p[(*ep, 4, idx)] == "1"  # contained in the unit
    # every declared point of m1 is a sensor contained in m1, named device.point
    j = {q: i for i, q in enumerate(md.STANDARD["meter"])}
    for q in devs["m1"]["points"]:
        s = m1 + 1 + j[q]
        assert got_p[(*ep, 7, s)] == f"m1.{q}" and got_p[(*ep, 4, s)] == str(m1)
        assert got_p[(*ep, 5, s)] == "8"
    cur = m1 + 1 + j["current_l1_a"]
    assert [got_s[(*es, c, cur)] for c in (1, 2, 3, 4, 5, 6)] == \
        ["5", "9", "3", "150000", "1", "A"]  # amperes, units, 3 decimals, 150.000, ok
    kw = m1 + 1 + j["power_kw"]
    assert [got_s[(*es, c, kw)] for c in (1, 2, 3, 4, 6)] == ["6", "10", "3", "88500", "kW"]
    wh = m1 + 1 + j["energy_import_wh"]
    assert [got_s[(*es, c, wh)] for c in (1, 3, 4, 6)] == ["1", "0", "123456", "Wh"]
    assert [got_s[(*es, c, p1)] for c in (1, 2, 3, 4, 5)] == ["8", "9", "3", "41250", "1"]
    # the breaker's trip state sensor: truthvalue, false
    assert [got_s[(*es, c, b1 + 1)] for c in (1, 4)] == ["12", "2"]
    # one value per sensor entry, and no sensor row without its physical entry
    sensors = {k[-1] for k in got_s}
    assert sensors <= {k[-1] for k in got_p if got_p[(*ep, 5, k[-1])] == "8"}
    assert len(sensors) == len(devs["m1"]["points"]) + len(devs["m2"]["points"]) + 1 + 1


def test_entity_sensor_status_says_what_the_quality_and_range_allow():
    """No value, stale, bad and a value past ENTITY-SENSOR-MIB's +-10^9 each have their
    entPhySensorOperStatus; the value is clamped, never wrapped."""
    from busguard.snmp import entity

    def dev(points):
        return {"header": {"uptime_s": 10}, "devices": [{
            "kind": "meter", "name": "m", "slot": 3, "status": "good",
            "points": {q: {"value": v, "quality": qual, "age_ms": 500}
                       for q, (v, qual) in points.items()}}]}

    rows = entity.rows(dev({"current_l1_a": (None, "good"), "current_l2_a": (5.0, "stale"),
                            "current_l3_a": (5.0, "bad"), "energy_kwh": (2e6, "good"),
                            "power_kw": (-12.5, "good")}))
    j = {q: i for i, q in enumerate(md.STANDARD["meter"])}
    base = entity.KIND_BASE["meter"] + 300

    def col(q, c):
        return rows[(*entity.ENT_SENSOR, c, base + 1 + j[q])][1]

    assert (col("current_l1_a", 4), col("current_l1_a", 5)) == (0, entity.UNAVAILABLE)
    assert (col("current_l2_a", 4), col("current_l2_a", 5)) == (5000, entity.UNAVAILABLE)
    assert col("current_l3_a", 5) == entity.NONOPERATIONAL
    assert (col("energy_kwh", 4), col("energy_kwh", 5)) == (entity.LIMIT, entity.UNAVAILABLE)
    assert (col("power_kw", 4), col("power_kw", 5), col("power_kw", 2)) == \
        (-12500, entity.OK, entity.KILO)
    assert col("power_kw", 7) == 1000 - 50  # valueTimeStamp: uptime 10 s less the 500 ms age
    assert rows[(*entity.ENT_PHYSICAL, 4, base + 1 + j["power_kw"])] == ("i", base)
