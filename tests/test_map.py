"""The register map: defined once in code, generated docs up to date, layout rules, config."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from busguard.cli import main
from busguard.commands.map import build
from busguard.errors import ConfigError
from busguard.northbound import docs, mapdef
from test_northbound_helpers import site_text

ROOT = Path(__file__).resolve().parents[1]


def test_docs_register_map_is_up_to_date_for_the_bundled_site():
    regmap, name, port = build(ROOT / "site.toml")
    want = docs.render(regmap, "md", name, "site.toml", port)
    have = (ROOT / "docs" / "register-map.md").read_text(encoding="utf-8")
    assert have == want, ("docs/register-map.md is out of date with site.toml or the map "
                          "definition: run `make register-map` and commit the result")


def test_map_command_formats(tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text(site_text(), encoding="utf-8")
    assert main(["map", str(site), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["map_version"] == mapdef.MAP_VERSION
    assert data["areas"]["meter"] == {"base": 1000, "count": 2, "stride": 256,
                                      "capacity": 128}
    assert data["fingerprint"] == build(site)[0].fingerprint
    assert data["units"]["devices"]["2"]["name"] == "pqm-a1"
    names = {f["name"] for f in data["fields"]}
    assert {"pqm-a1.current_l1_a", "cmd.ack_alarms", "relay.alarm",
            "pqm-a2.vendor_special_x"} <= names
    assert main(["map", str(site), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    row = next(r for r in rows if r["name"] == "cmd.ack_alarms")
    assert row["access"] == "RW" and row["type"] == "float32"
    assert int(row["address_1based"]) == int(row["address"]) + 1
    assert row["register_4x"] == f"4{int(row['address']) + 1:05d}" and len(row["register_4x"]) == 6
    volt = next(r for r in rows if r["name"] == "pqm-a1.voltage_l1_n_v")
    assert volt["unit"] == "V" and volt["description"] != "V"  # the unit in its column
    age = next(r for r in rows if r["name"] == "pqm-a1.voltage_l1_n_v:age_ms")
    assert age["unit"] == "ms"
    out = tmp_path / "map.md"
    assert main(["map", str(site), "-o", str(out)]) == 0
    text = out.read_text()
    assert "mbpoll -m tcp" in text and "-B" in text and "## Command area" in text


def test_fields_never_overlap_and_stay_inside_the_map(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(site_text(), encoding="utf-8")
    regmap, _name, _port = build(site)
    used: dict[int, str] = {}
    for f in regmap.fields():
        for a in range(f.address, f.address + f.words):
            assert a < regmap.size
            assert a not in used, f"{f.name} overlaps {used[a]} at {a}"
            used[a] = f.name


def test_blocks_fit_one_request_and_quantities_keep_their_offsets(tmp_path):
    for kind, quantities in mapdef.STANDARD.items():
        words = mapdef.DEVICE_HEADER_WORDS + mapdef.POINT_WORDS * len(quantities)
        assert words <= mapdef.STRIDE[kind]
        if kind != "meter":
            assert words <= mapdef.MAX_READ
    # a meter block takes two requests since issue 15's quantities; the quantities before
    # them (up to comm_poll_ms) keep their offsets and still fit the first request
    first = mapdef.METER_QUANTITIES.index("comm_poll_ms") + 1
    assert mapdef.DEVICE_HEADER_WORDS + mapdef.POINT_WORDS * first <= mapdef.MAX_READ
    one = tmp_path / "one.toml"
    one.write_text(site_text(), encoding="utf-8")
    three = tmp_path / "three.toml"
    three.write_text(site_text() + """
[[meter]]
name = "pqm-a3"
driver = "memory"
points = ["thd_i_l3_pct"]
""", encoding="utf-8")
    m1, _, _ = build(one)
    m3, _, _ = build(three)
    a3 = next(d for d in m3.devices if d.name == "pqm-a3")
    assert a3.address == 1000 + 2 * mapdef.STRIDE["meter"]  # a new meter: the next stride
    j = mapdef.METER_QUANTITIES.index("thd_i_l3_pct")
    assert a3.points[j].address - a3.address == 8 + 4 * j
    r1 = m1.record_of("pqm-a1.current_l1_a")
    r3 = m3.record_of("pqm-a1.current_l1_a")
    assert r1.address == r3.address  # meters before it keep their addresses


def test_block_outputs_and_command_points_appear_automatically(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(site_text() + """
[[block]]
name = "shunt-cb"
type = "shunt_trip"
breaker = "cb-a1-01"
meter = "pqm-a1"
pickup_a = 600.0
""", encoding="utf-8")
    try:
        regmap, _, _ = build(site)
    except ConfigError as exc:  # the shunt_trip block's options are its owner's business
        pytest.skip(f"shunt_trip options changed: {exc}")
    assert regmap.record_of("cb-a1-01.shunt_trip") in regmap.outputs
    cmd = next(c for c in regmap.commands if c.name == "cb-a1-01.cmd_reset")
    assert (cmd.minval, cmd.maxval) == (0, 65535)
    assert [b for b, _a in regmap.alarm_blocks] == ["thd-a1", "shunt-cb"]


@pytest.mark.parametrize(("server", "message"), [
    ('allow = ["10.0.5.300/32"]', "modbus_server.allow: "),
    ('allow = ["10.0.5.0/24"]\nwrite_allow = ["10.0.6.10/32"]',
     "modbus_server.write_allow: 10.0.6.10/32 is not inside `allow`"),
    ('tls = { cert = "c.pem", key = "k.pem" }', "modbus_server.tls.ca: missing"),
    ('tls = { cert = "c.pem", key = "k.pem", ca = "ca.pem", prot = 802 }',
     "modbus_server.tls.prot: unknown option 'prot'; did you mean 'port'?"),
    ('tls = { cert = "nope.pem", key = "k.pem", ca = "ca.pem" }',
     "modbus_server.tls.cert: no such file"),
    ("max_connections = 0", "modbus_server.max_connections: got 0; expected an integer >= 1"),
])
def test_bad_server_options_are_config_errors(make_runtime, server, message, tmp_path):
    for f in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / f).write_text("x")
    with pytest.raises(ConfigError) as exc:
        make_runtime(site_text(server + "\n"))
    assert message in str(exc.value)


def test_public_host_without_allowlist_binds_loopback_only(make_runtime, caplog):
    rt = make_runtime(site_text('host = "0.0.0.0"\n'), start=True)
    pub = rt.publishers[0]
    assert [h for _k, h, _p in pub.server.bound] == ["127.0.0.1"]
    assert "no `allow` list: serving 127.0.0.1 only" in caplog.text


def test_busguard_check_reports_server_option_problems(tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text(site_text('allow = ["10.0.5.0/24"]\nwrite_allow = ["10.9.9.9/32"]\n'),
                    encoding="utf-8")
    assert main(["check", str(site)]) == 2
    assert "modbus_server.write_allow: 10.9.9.9/32 is not inside `allow`" in \
        capsys.readouterr().err


def test_breaker_block_points_at_its_reset_command(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(site_text().replace('"led"]', '"led"]\n').replace(
        "[modbus_server]", """[[block]]
name = "trip"
type = "latch_trip"
point = "pqm-a1.current_l1_a"
breaker = "cb-a1-01"
above = 1000.0

[modbus_server]"""), encoding="utf-8")
    import importlib.util

    from busguard.runtime import Runtime
    from test_retained_restart import PLUGIN_SRC

    mod_path = tmp_path / "bgplug_map.py"
    mod_path.write_text(PLUGIN_SRC)
    spec = importlib.util.spec_from_file_location("bgplug_map", mod_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rt = Runtime.from_file(site, extra=[mod])
    regmap = mapdef.for_runtime(rt)
    reset = regmap.reset_command("cb-a1-01")
    assert reset is not None and reset.name == "cb-a1-01.cmd_reset"
    f = next(f for f in regmap.fields() if f.name == "cb-a1-01.reset_command")
    from busguard.northbound.encode import Encoder

    img = Encoder(regmap, rt.image.index, 10, "").template
    assert int.from_bytes(img[2 * f.address:2 * f.address + 2], "big") == reset.address


def test_northbound_docs_worked_example_matches_the_map():
    """The DCIM import example in docs/northbound.md is hand-written: its offsets and 4x
    references must be the map's."""
    import re

    doc = (ROOT / "docs" / "northbound.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (4\d{5}) \| `(\w+)`", doc, re.M)
    assert len(rows) >= 6
    for reg, ref, q in rows:
        j = mapdef.METER_QUANTITIES.index(q)
        assert int(reg) == mapdef.DEVICE_HEADER_WORDS + j * mapdef.POINT_WORDS, q
        assert ref == docs.register_4x(int(reg)), q
    for area, (base, cap, _stride) in mapdef.LAYOUT.items():
        if cap:
            assert re.search(rf"^\| {area} \| {base} \| {cap} \|", doc, re.M), area
