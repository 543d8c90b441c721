"""Unit-id views and Read Device Identification (issue 15), over real Modbus TCP on loopback:
each device's block from address 0 at its own unit id, the whole map at 1 (0, 255), 0x0B for
a unit id nobody has, 43/14 read with pymodbus's own client."""

from __future__ import annotations

import struct

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import DeviceInformation

from busguard import __version__
from busguard.image import Quality
from busguard.northbound import mapdef
from busguard.northbound.reader import read_all
from busguard.testing import run_scans
from test_northbound_helpers import connect, f32, frame, read, response, site_text


@pytest.fixture
def served(make_runtime):
    text = site_text().replace('"power_kw",', '"power_kw", "power_l2_kw",', 1)
    rt = make_runtime(text.replace('name = "tap-a2"', 'name = "tap-a2"\nunit_id = 77', 1),
                      start=True)
    rt.image.write_many([("pqm-a1.power_l2_kw", -41.5, Quality.GOOD),
                         ("pqm-a2.current_l1_a", 12.25, Quality.GOOD),
                         ("tap-a2.temp_c", 61.5, Quality.GOOD)])
    run_scans(rt, 1)
    pub = rt.publishers[0]
    return rt, pub, pub.server.port()


def read_unit(s, unit: int, address: int, count: int) -> list[int] | int:
    s.sendall(frame(3, struct.pack(">HH", address, count), tid=5, unit=unit))
    _tid, fc, data = response(s)
    if fc & 0x80:
        return data[0]
    return list(struct.unpack(f">{data[0] // 2}H", data[1:1 + data[0]]))


def test_each_device_is_served_at_its_unit_id_from_address_0(served):
    _rt, pub, port = served
    j = mapdef.METER_QUANTITIES.index("power_l2_kw")
    off = mapdef.DEVICE_HEADER_WORDS + j * mapdef.POINT_WORDS
    a1 = pub.map.record_of("pqm-a1.power_l2_kw").address
    with connect(port) as s:
        by_unit = read_unit(s, 2, off, 4)  # meter slot 0: unit id 2
        assert f32(by_unit[:2]) == -41.5 and by_unit[2] == 0
        for unit in mapdef.SITE_UNITS:  # the same record in the whole-site map
            assert read_unit(s, unit, a1, 4) == by_unit
        assert read_unit(s, 2, 0, 1) == [0]  # device word 0: its slot
        cur = mapdef.DEVICE_HEADER_WORDS + mapdef.METER_QUANTITIES.index(
            "current_l1_a") * mapdef.POINT_WORDS
        assert f32(read_unit(s, 3, cur, 2)) == 12.25  # meter slot 1: unit id 3
        assert f32(read_unit(s, 77, 8, 2)) == 61.5  # tap-a2: explicit unit_id = 77
        assert read_unit(s, 193, 0, 1) == 0x0B  # its default is not served then
        assert read_unit(s, 192, 0, 1) == [0]  # tap-a1, probe slot 0
        assert read_unit(s, 130, 0, 1) == [0]  # cb-a1-01, breaker slot 0
        assert read_unit(s, 2, mapdef.STRIDE["meter"] - 1, 1) != 0x02  # last word of block
        assert read_unit(s, 2, mapdef.STRIDE["meter"], 1) == 0x02  # past it: 0x02
        assert read_unit(s, 50, 0, 1) == 0x0B  # nobody: gateway target failed to respond
        assert read(s, 0, 2) == [mapdef.MAGIC, mapdef.MAP_VERSION]  # the connection goes on
        s.sendall(frame(16, struct.pack(">HHBHH", 0, 2, 4, 0, 0), unit=2))
        assert response(s)[1:] == (0x90, b"\x02")  # a device view is read-only


def test_status_decodes_slots_and_the_fingerprint(served):
    _rt, pub, _port = served
    img = pub.image()

    def rd(a: int, n: int) -> list[int]:
        return list(struct.unpack_from(f">{n}H", img, 2 * a))

    got = read_all(rd)
    assert got["header"]["map_version"] == 2
    assert got["header"]["fingerprint"] == pub.map.fingerprint != 0
    assert [(d["name"], d["slot"]) for d in got["devices"]] == [
        ("pqm-a1", 0), ("pqm-a2", 1), ("tap-a1", 0), ("tap-a2", 1), ("tap-a3", 2),
        ("cb-a1-01", 0)]
    assert got["devices"][0]["points"]["power_l2_kw"]["value"] == -41.5
    assert "cmd.ack_alarms" in got["commands"] and "relay.alarm" in got["outputs"]


def test_read_device_identification_with_the_pymodbus_client(served):
    """43/14, which DCIM discovery sends: basic, regular and extended objects per unit id;
    it was refused with 0x01."""
    rt, pub, port = served
    with ModbusTcpClient("127.0.0.1", port=port, timeout=5) as c:
        site = c.read_device_information(read_code=DeviceInformation.EXTENDED, device_id=1)
        assert not site.isError()
        info = {k: v.decode() for k, v in site.information.items()}
        assert info[0x00] == "busguard" and info[0x01] == "BG-SITE"
        assert info[0x02] == __version__ and info[0x06] == rt.site.name
        assert info[0x80] == f"0x{pub.map.fingerprint:08x}" and info[0x81] == "2"
        meter = c.read_device_information(read_code=DeviceInformation.REGULAR, device_id=2)
        assert meter.information[0x01] == b"BG-METER"
        assert meter.information[0x05] == b"pqm-a1"
        basic = c.read_device_information(device_id=130)
        assert basic.information == {0x00: b"busguard", 0x01: b"BG-BREAKER",
                                     0x02: __version__.encode()}
        one = c.read_device_information(read_code=DeviceInformation.SPECIFIC, object_id=0x80,
                                        device_id=77)
        assert one.information == {0x80: f"0x{pub.map.fingerprint:08x}".encode()}
        nobody = c.read_device_information(device_id=50)
        assert nobody.isError() and nobody.exception_code == 0x0B


def test_a_vacant_slot_reads_vacant_not_zero(served):
    """The fixed layout has room for slots nobody holds: they read slot 65535 and quality
    4 (vacant), never a 0.0 of good quality a DCIM could take for a reading."""
    _rt, _pub, port = served
    base, _cap, stride = mapdef.LAYOUT["meter"]
    with connect(port) as s:
        block = read(s, base + 5 * stride, 12)  # meter slot 5: nobody
        assert block[0] == mapdef.VACANT and block[1] == mapdef.QUALITY_VACANT
        assert f32(block[8:10]) != f32(block[8:10])  # NaN
        assert block[10] == mapdef.QUALITY_VACANT and block[11] == mapdef.AGE_MAX_MS
        out_base = mapdef.LAYOUT["output"][0] + 4 * 100  # output index 100: nobody
        assert read(s, out_base + 2, 1) == [mapdef.QUALITY_VACANT]
        assert read_unit(s, 2 + 5, 0, 1) == 0x0B  # and no unit id serves it


def test_before_the_first_scan_present_records_are_not_vacant(make_runtime):
    """The template (served until the first scan) tells present records from vacant ones:
    the name table and the reader stay aligned from the first answer."""
    from busguard.northbound.encode import Encoder

    rt = make_runtime(site_text())
    m = mapdef.for_runtime(rt)
    img = Encoder(m, rt.image.index, 10, "").template

    def rd(a: int, n: int) -> list[int]:
        return list(struct.unpack_from(f">{n}H", img, 2 * a))

    got = read_all(rd)
    assert [d["name"] for d in got["devices"]] == [d.name for d in m.devices]
    assert all(d["status"] == "not-connected" for d in got["devices"])
    assert list(got["outputs"]) == [r.name for r in m.outputs]
    assert all(o["quality"] == "stale" for o in got["outputs"].values())  # not yet computed
    assert list(got["extras"]) == [r.name for r in m.extras]
    assert list(got["commands"]) == [c.name for c in m.commands]
    assert list(got["alarms"]) == [b for b, _a in m.alarm_blocks]
