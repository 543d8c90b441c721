"""row_summary: two real controllers served over Modbus TCP, a row aggregator that reads them
through busguard_peer and sums them, and a hall aggregator stacked on the row; each level
checked through its own register map as a DCIM reads it (busguard.northbound.reader)."""

from __future__ import annotations

import pytest

from busguard.commands.status import connect, reader
from busguard.errors import ConfigError
from busguard.image import Quality
from busguard.northbound.reader import read_all
from busguard_blocks.row_summary import row_records
from test_peer import q, v, wait_for

CONTROLLER = """
[site]
name = "{name}"
[[meter]]
name = "m1"
driver = "memory"
points = ["power_kw", "power_l1_kw", "power_l2_kw", "power_l3_kw", "apparent_power_kva",
          "power_factor", "thd_v_l1_pct", "thd_i_l1_pct", "current_l1_a", "current_l2_a",
          "current_l3_a"]
[[probe]]
name = "t1"
driver = "memory"
points = ["temp_c"]
[[breaker]]
name = "cb1"
driver = "memory"
points = ["led"]
[[block]]
name = "st"
type = "shunt_trip"
breaker = "cb1"
meter = "m1"
[modbus_server]
port = 0
"""
PEER = """
[[meter]]
name = "{name}"
driver = "busguard_peer"
host = "127.0.0.1"
port = {port}
poll_ms = 50
timeout_ms = 300
{what}
"""
AGG = """
[site]
name = "{name}"
[scan]
stale_after_polls = 100  # the fake clock runs ahead of the peers' real-time polls
{peers}
[[block]]
name = "{block}"
type = "row_summary"
{sources}
{rating}
[modbus_server]
port = 0
"""
METER = {"power_kw": 30.0, "power_l1_kw": 10.0, "power_l2_kw": 11.0, "power_l3_kw": 9.0,
         "apparent_power_kva": 32.0, "power_factor": 0.94, "thd_v_l1_pct": 2.0,
         "thd_i_l1_pct": 8.0, "current_l1_a": 40.0, "current_l2_a": 41.0, "current_l3_a": 39.0}
WHAT = 'meters = ["m1"]\nprobes = ["t1"]\nbreakers = ["cb1"]'


def port(rt) -> int:
    return rt.publishers[0].port()


@pytest.fixture
def hall(make_runtime, run_scans):
    ctl = {}
    for name, scale, temp in (("c1", 1.0, 40.0), ("c2", 2.0, 60.0)):
        rt = make_runtime(CONTROLLER.format(name=name), start=True)
        rt.image.write_many([(f"m1.{k}", x * scale if k not in ("power_factor",) else x,
                              Quality.GOOD) for k, x in METER.items()]
                            + [("t1.temp_c", temp, Quality.GOOD), ("cb1.led", 0.0, Quality.GOOD)])
        run_scans(rt, 2)
        ctl[name] = rt
    peers = "".join(PEER.format(name=n, port=port(rt), what=WHAT) for n, rt in ctl.items())
    row = make_runtime(AGG.format(name="row-a", peers=peers, block="ra",
                                  sources='peers = ["c1", "c2"]', rating="rating_kva = 200.0"),
                       start=True)
    records = row_records("ra", [("c1", ["cb1"]), ("c2", ["cb1"])])
    what = f"records = {records!r}".replace("'", '"')
    top = make_runtime(AGG.format(name="hall", peers=PEER.format(name="r1", port=port(row),
                                                                 what=what),
                                  block="hall", sources='rows = ["r1"]', rating=""),
                       start=True)
    return ctl, row, top


def dcim_read(rt) -> dict:
    client = connect("127.0.0.1", port(rt), 3.0)
    try:
        return read_all(reader(client, 1))
    finally:
        client.close()


def settle(rt, run_scans, name: str, want: float) -> None:
    """Scan ``rt`` until its own output ``name`` (as a DCIM reads it) is ``want`` (bounded)."""
    def ok() -> bool:
        run_scans(rt, 1)
        got = dcim_read(rt)["outputs"].get(name, {}).get("value")
        return got is not None and got == pytest.approx(want)
    assert wait_for(ok), dcim_read(rt)["outputs"].get(name)


def test_row_totals_and_the_hall_stacked_on_it(hall, run_scans):
    ctl, row, top = hall
    ctl["c2"].image.write("cb1.led", 1.0)  # solid red: the breaker tripped on overcurrent
    run_scans(ctl["c2"], 3)
    settle(row, run_scans, "ra.trips", 1.0)
    out = dcim_read(row)["outputs"]
    val = {k: r["value"] for k, r in out.items()}
    assert val["ra.kw"] == pytest.approx(90.0)  # 30 + 60
    assert (val["ra.kw_l1"], val["ra.kw_l2"], val["ra.kw_l3"]) == pytest.approx((30, 33, 27))
    assert val["ra.kva"] == pytest.approx(96.0)
    assert val["ra.headroom_kva"] == pytest.approx(104.0)  # rating 200
    assert val["ra.pf_min"] == pytest.approx(0.94)
    assert val["ra.temp_max"] == pytest.approx(60.0)
    assert val["ra.temp_mean"] == pytest.approx(50.0)
    assert val["ra.thd_i_max"] == pytest.approx(16.0)
    assert val["ra.c1.kw"] == pytest.approx(30.0) and val["ra.c2.kw"] == pytest.approx(60.0)
    assert (val["ra.c1.q"], val["ra.c2.q"], val["ra.q"]) == (0.0, 0.0, 0.0)
    assert (val["ra.c1.cb1.trip"], val["ra.c2.cb1.trip"]) == (0.0, 1.0)
    assert val["ra.alarms_critical"] + val["ra.alarms_major"] >= 1  # c2's trip alarm
    assert val["ra.peers"] == 2.0 and val["ra.peers_down"] == 0.0
    # the hall: the row's totals combined, every controller's power and trip carried
    settle(top, run_scans, "hall.trips", 1.0)
    hv = {k: r["value"] for k, r in dcim_read(top)["outputs"].items()}
    assert hv["hall.kw"] == pytest.approx(90.0)
    assert hv["ra.c1.kw"] == pytest.approx(30.0) and hv["ra.c2.kw"] == pytest.approx(60.0)
    assert hv["ra.c2.cb1.trip"] == 1.0 and hv["ra.c1.cb1.trip"] == 0.0
    assert hv["hall.temp_mean"] == pytest.approx(50.0) and hv["hall.temp_max"] == 60.0
    assert hv["hall.headroom_kva"] == pytest.approx(104.0)  # the tightest row's
    assert hv["hall.peers"] == 2.0 and hv["hall.q"] == 0.0


def test_a_controller_down_shows_at_the_row_and_the_hall(hall, run_scans):
    ctl, row, top = hall
    settle(row, run_scans, "ra.kw", 90.0)
    ctl["c1"].stop()
    settle(row, run_scans, "ra.c1.q", 3.0)  # not connected
    val = {k: r["value"] for k, r in dcim_read(row)["outputs"].items()}
    assert val["ra.kw"] == pytest.approx(60.0) and val["ra.peers_down"] == 1.0
    assert val["ra.q"] == 3.0
    assert dcim_read(row)["header"]["active_alarms"] >= 1  # BG-PEER-DOWN
    settle(top, run_scans, "ra.c1.q", 3.0)
    assert q(top, "r1.ra.c2.kw") == Quality.GOOD and v(top, "r1.ra.c2.kw") == 60.0


def test_a_row_summary_over_something_that_is_not_a_peer(make_runtime):
    site = AGG.format(name="x", peers='[[meter]]\nname = "m1"\ndriver = "memory"\n',
                      block="ra", sources='peers = ["m1", "zz"]', rating="")
    with pytest.raises(ConfigError) as err:
        make_runtime(site)
    text = str(err.value)
    assert "block[0].peers[0]" in text and "driver = \"busguard_peer\" named 'm1'" in text
    assert "block[0].peers[1]" in text


@pytest.mark.parametrize("case", ["fingerprint", "not-busguard"])
def test_a_refused_peer_raises_its_alarm_in_the_aggregators_table(case, make_runtime,
                                                                  run_scans, modbus_meter):
    if case == "fingerprint":
        ctl = make_runtime(CONTROLLER.format(name="c1"), start=True)
        run_scans(ctl, 2)
        target, extra, code = port(ctl), 'accept_fingerprint = "0x00000001"', \
            "BG-PEER-FINGERPRINT"
    else:  # a plain Modbus meter where a busguard should be
        target, extra, code = modbus_meter().port, "", "BG-PEER-MAP"
    peers = PEER.format(name="c1", port=target, what=WHAT + "\n" + extra)
    row = make_runtime(AGG.format(name="row", peers=peers, block="ra",
                                  sources='peers = ["c1"]', rating=""), start=True)

    def raised() -> bool:
        run_scans(row, 1)
        return any(a["code"] == code for a in dcim_read(row)["alarm_table"])
    assert wait_for(raised)
    alarm = next(a for a in dcim_read(row)["alarm_table"] if a["code"] == code)
    assert alarm["severity"] == "major"
    assert q(row, "c1.m1.power_kw") == Quality.BAD
