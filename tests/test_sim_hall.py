"""`busguard simulate --hall`: the hall's site files are valid busguard sites and the
simulator serves every controller's meters on its port (read back over Modbus TCP)."""

from __future__ import annotations

import pytest

from busguard.errors import UsageError
from busguard.modbus.tcpclient import ModbusTcpClient
from busguard.runtime import check_site
from busguard.sim.hall import parse_hall, write_hall
from busguard.sim.runner import Simulator, load_site_for_sim


def test_the_hall_sites_check_and_its_meters_answer(tmp_path):
    plan = write_hall(tmp_path / "hall", 2, 3, 2, meter_base_port=24500)
    assert [n.name for n in plan.controllers] == ["c101", "c102", "c103", "c201", "c202",
                                                  "c203"]
    for node in (*plan.controllers, *plan.row_aggs, plan.hall):
        site = check_site(node.site)
        assert site.name == node.name
    hall = check_site(plan.hall.site)
    records = next(d for d in hall.devices if d.name == "row2").params["records"]
    assert "r2.c203.kw" in records and "r2.c203.b1.trip" in records and "r2.kw" in records


def test_simulate_hall_serves_every_meter(tmp_path):
    plan = write_hall(tmp_path / "hall", 1, 2, 2, meter_base_port=24600)
    sim = Simulator(load_site_for_sim(plan.sim_site))
    sim.start()
    try:
        assert len(plan.meter_ports) == 4
        for host, port in plan.meter_ports.values():
            c = ModbusTcpClient(host, port, 2.0)
            try:
                assert c.answers(0)
            finally:
                c.close()
    finally:
        sim.stop()


@pytest.mark.parametrize("bad", ["2", "0x4", "2x", "ax3", "10x2"])
def test_a_bad_hall_size_says_what_is_valid(bad):
    with pytest.raises(UsageError, match=r"expected ROWSxUNITS, e\.g\. 2x8"):
        parse_hall(bad)
