"""Meter profiles: bundled maps, the codec (types x word orders) and profile errors."""

from __future__ import annotations

import math
import re

import pytest

from busguard.config.site import load_site
from busguard.errors import ConfigError
from busguard.modbus import bundled_names, load_profile
from busguard.modbus.codec import TYPES, WORD_ORDERS, decode, decode_raw, encode, encode_raw
from busguard.northbound.mapdef import METER_MEASURED
from busguard.runtime import load_types

METER_POINTS = METER_MEASURED  # every measured standard quantity (not demand, not comm_*)


def test_bundled_profiles_load_and_generic_has_every_meter_point():
    assert {"generic-pqm", "pm5000", "umg96rm"} <= set(bundled_names())
    for name in bundled_names():
        prof = load_profile(name)
        assert prof.points and prof.source
    generic = load_profile("generic-pqm")
    assert sorted(generic.names) == sorted(METER_POINTS)
    assert {p.name for p in generic.points if p.type != "float32"} == {
        "power_factor_quadrant", "energy_import_wh", "energy_export_wh", "energy_import_varh",
        "energy_export_varh"}  # uint16 and uint64 counters
    assert generic.neutral_measured is True
    assert {p.function for p in generic.points} == {"holding", "input"}


def test_pm5000_documented_register_numbers_are_one_based():
    pm = load_profile("pm5000")
    assert pm.address_base == 1
    cur = pm.point("current_l1_a")
    assert (cur.register, cur.address) == (3000, 2999)
    assert pm.point("voltage_l1_l2_v").address == 3019
    jan = load_profile("umg96rm")
    energy = pm.point("energy_kwh")
    assert (energy.type, energy.address, energy.count) == ("int64", 3203, 4)
    assert pm.decode("energy_kwh", [0, 0, 0x00BC, 0x614E]) == pytest.approx(12345.678)
    assert jan.point("voltage_l1_n_v").address == 19000  # Janitza lists protocol addresses
    assert jan.point("power_kw").scale == 0.001


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("order", WORD_ORDERS)
def test_encode_decode_round_trip(dtype, order):
    values = {"int16": [-32768, -1, 0, 1234, 32767], "uint16": [0, 1, 54321, 65535],
              "int32": [-2**31, -70000, 0, 70000, 2**31 - 1],
              "uint32": [0, 70000, 2**32 - 1], "float32": [-1.5, 0.0, 230.25, 1e6],
              "int64": [-2**63, -1, 12_345_678_901, 2**63 - 1],
              "uint64": [0, 2**40 + 7, 2**64 - 1]}[dtype]
    for v in values:
        regs = encode_raw(v, dtype, order)
        assert len(regs) == {"16": 1, "32": 2, "64": 4}[dtype[-2:]]
        assert all(0 <= r <= 0xFFFF for r in regs)
        assert decode_raw(regs, dtype, order) == v  # exact, also for 64-bit extremes
        if abs(v) < 2**53:
            assert decode(encode(v, dtype, order), dtype, order) == v


def test_word_orders_known_vectors():
    # 1.0f = 0x3F800000: bytes A=3F B=80 C=00 D=00
    assert encode(1.0, "float32", "ABCD") == [0x3F80, 0x0000]
    assert encode(1.0, "float32", "CDAB") == [0x0000, 0x3F80]
    assert encode(1.0, "float32", "BADC") == [0x803F, 0x0000]
    assert encode(1.0, "float32", "DCBA") == [0x0000, 0x803F]
    assert decode([0x0001, 0x0002], "uint32", "ABCD") == 0x00010002
    assert decode([0x0001, 0x0002], "uint32", "CDAB") == 0x00020001
    assert decode([1, 2, 3, 4], "uint64", "ABCD") == 0x0001000200030004
    assert decode([1, 2, 3, 4], "uint64", "CDAB") == 0x0004000300020001
    assert decode([0x1234], "uint16", "BADC") == 0x3412
    assert decode([0xFFFE], "int16") == -2
    assert decode([0x0064], "int16", scale=0.1) == pytest.approx(10.0)
    assert encode(10.0, "int16", scale=0.1) == [100]
    assert encode(1e9, "int16") == [0x7FFF]  # clamped, not wrapped


def test_profile_point_encode_is_the_inverse_of_decode():
    for name in bundled_names():
        prof = load_profile(name)
        for p in prof.points:
            v = 0.95 if p.encoding == "pf4q" else 123.5  # a power factor is within -1..1
            got = prof.decode(p.name, prof.encode(p.name, v))
            step = 0.0 if p.type.startswith("float") else abs(p.scale) / 2  # one count
            assert math.isclose(got, v, rel_tol=1e-6, abs_tol=step), (name, p.name)


def _write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_profile_errors_name_file_key_and_what_is_valid(tmp_path):
    path = _write(tmp_path, """
[profile]
name = "x"
word_order = "ABDC"
adress_base = 1

[points.current_l1_a]
address = 70000
type = "float64"

[points.power_kw]
type = "int32"
scale = 0

[points."bad name"]
address = 1
""")
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    lines = str(exc.value).splitlines()
    f = str(path)
    assert f"{f}: profile.word_order: got 'ABDC'; expected one of 'ABCD', 'CDAB', 'BADC', " \
           f"'DCBA'; did you mean 'BADC'?" in lines
    assert f"{f}: profile.adress_base: unknown option 'adress_base'; did you mean " \
           f"'address_base'?" in lines
    assert f"{f}: points.current_l1_a.address: got 70000; expected an integer >= 0 and " \
           f"<= 65535" in lines
    assert any(line.startswith(f"{f}: points.current_l1_a.type: got 'float64'; expected one "
                               f"of 'int16'") for line in lines)
    assert f"{f}: points.power_kw.address: missing required option; expected an integer " \
           f">= 0 and <= 65535" in lines
    assert f"{f}: points.bad name: point name 'bad name' may hold letters, digits and '_' " \
           f"only" in lines


def test_profile_syntax_error_and_unknown_name(tmp_path):
    path = _write(tmp_path, "[profile\nname = 1\n")
    with pytest.raises(ConfigError, match=r"\(syntax\): not valid TOML"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match="no bundled profile named 'generic-pq'; did you "
                                          "mean 'generic-pqm'"):
        load_profile("generic-pq")


def test_address_base_one_rejects_register_zero(tmp_path):
    path = _write(tmp_path, '[profile]\nname = "x"\naddress_base = 1\n'
                            '[points.temp_c]\naddress = 0\n')
    with pytest.raises(ConfigError, match=re.escape("points.temp_c.address: got 0; expected "
                                                    ">= 1 with address_base = 1")):
        load_profile(str(path))


def _site(tmp_path, meter: str) -> str:
    return f'[site]\nname = "t"\n\n[[meter]]\nname = "m1"\nhost = "127.0.0.1"\n{meter}\n'


def test_site_uses_its_own_profile_file_relative_to_the_site(tmp_path):
    (tmp_path / "profiles").mkdir()
    _write(tmp_path, '[profile]\nname = "mine"\nword_order = "CDAB"\n'
                     '[points.current_l1_a]\naddress = 10\nunit = "A"\n'
                     '[points.temp_c]\naddress = 12\ntype = "int16"\nscale = 0.1\n',
           "profiles/mine.toml")
    site = _write(tmp_path, _site(tmp_path, 'profile = "profiles/mine.toml"'), "site.toml")
    _pm, reg = load_types()
    cfg = load_site(site, reg)
    names = [p.name for p in cfg.points]
    assert "m1.current_l1_a" in names and "m1.temp_c" in names and "m1.comm_ok" in names
    assert "m1.voltage_l1_n_v" not in names


def test_a_profile_file_is_read_once_until_it_changes(tmp_path):
    """64 meters of one model share one parsed profile; an edited file is read again (a
    reload sees it), and a file made invalid is reported, not served from memory."""
    path = tmp_path / "mine.toml"
    path.write_text('[profile]\nname = "mine"\n[points.current_l1_a]\naddress = 10\n',
                    encoding="utf-8")
    first = load_profile(str(path))
    assert load_profile(str(path)) is first
    path.write_text('[profile]\nname = "mine"\n[points.current_l1_a]\naddress = 20\n'
                    '[points.temp_c]\naddress = 30\n', encoding="utf-8")
    second = load_profile(str(path))
    assert second is not first
    assert second.point("current_l1_a").address == 20 and "temp_c" in second
    path.write_text('[profile]\nname = "mine"\n[points.current_l1_a]\naddress = -1\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError):
        load_profile(str(path))
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(str(path))


def test_site_with_bad_profile_gets_precise_errors(tmp_path):
    _pm, reg = load_types()
    site = _write(tmp_path, _site(tmp_path, 'profile = "pm5001"'), "site.toml")
    with pytest.raises(ConfigError) as exc:
        load_site(site, reg)
    assert f"{site}: meter[0].profile: no bundled profile named 'pm5001'; did you mean " \
           f"'pm5000'?" in str(exc.value)
    _write(tmp_path, '[profile]\nname = "b"\n[points.temp_c]\naddress = "x"\n', "b.toml")
    site = _write(tmp_path, _site(tmp_path, 'profile = "b.toml"\npoints = ["temp_c", "tmp_c"]'),
                  "site2.toml")
    with pytest.raises(ConfigError) as exc:
        load_site(site, reg)
    assert f"{tmp_path / 'b.toml'}: points.temp_c.address: got 'x' (string); expected an " \
           f"integer >= 0 and <= 65535" in str(exc.value)
    site = _write(tmp_path, _site(tmp_path, 'points = ["temp_c", "tmp_c"]\n'
                                            'calibration = { current_l1_a = { gian = 1.0 } }'),
                  "site3.toml")
    with pytest.raises(ConfigError) as exc:
        load_site(site, reg)
    text = str(exc.value)
    assert f"{site}: meter[0].points[1]: no point 'tmp_c' in profile 'generic-pqm'" in text
    assert f"{site}: meter[0].calibration.current_l1_a.gian: unknown key 'gian'; valid: " \
           f"gain, offset, ct_ratio" in text


def test_rtu_meter_needs_a_known_line(tmp_path):
    _pm, reg = load_types()
    site = _write(tmp_path, '[site]\nname = "t"\n[[rs485]]\nname = "bus1"\nport = "/dev/x"\n'
                            '[[meter]]\nname = "m1"\ndriver = "modbus_rtu"\nline = "bus2"\n',
                  "site.toml")
    with pytest.raises(ConfigError) as exc:
        load_site(site, reg)
    assert f"{site}: meter[0].line: no [[rs485]] line named 'bus2'; known: bus1" in str(exc.value)
