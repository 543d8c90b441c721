"""busguard.linkhealth, the link health both polled drivers share (meter and peer): the
up/down rule with its log lines, the health items from a CommStats, the points' specs."""

from __future__ import annotations

import logging
import math

import pytest

from busguard import linkhealth as lh
from busguard.clock import MonotonicClock
from busguard.image import PointSpec, ProcessImage, Quality
from busguard.modbus.commstats import CRC, OK, TIMEOUT
from busguard.northbound import mapdef as md

LOG = logging.getLogger("busguard.test_linkhealth")
WORDING = lh.Wording(down="%(device)s: %(lost)d lost at %(where)s, last: %(last)s (%(extra)s)",
                     up="%(device)s: back at %(where)s after %(outage)d lost",
                     first_loss="%(device)s: first loss: %(last)s")
DATA = ["dev.power_kw", "dev.current_l1_a"]


def _link(limit: int = 3, **kw: object) -> tuple[lh.LinkHealth, ProcessImage]:
    image = ProcessImage(lh.comm_specs("dev", 60.0, "link health")
                         + [PointSpec(n, source="dev") for n in DATA], MonotonicClock())
    image.write_many([(n, 1.0, Quality.GOOD) for n in DATA])
    link = lh.LinkHealth("dev", limit, WORDING, LOG, lambda: DATA, lambda: "10.0.0.9:502",
                         context={"extra": "ctx"}, **kw)  # type: ignore[arg-type]
    return link, image


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_loss_limit_losses_in_a_row_take_the_link_down_once_and_an_answer_up(caplog):
    link, image = _link(limit=3)
    with caplog.at_level(logging.INFO, LOG.name):
        for _ in range(2):  # loss_limit - 1: still up
            link.lost(TIMEOUT, "timed out")
            assert link.update(False, True, image) == ""
        assert not link.down and _warnings(caplog) == []
        assert all(image.snapshot()[n].quality == Quality.GOOD for n in DATA)
        # the first loss of the streak said once, at INFO
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert infos == ["dev: first loss: timed out"]

        link.lost(TIMEOUT, "timed out again")
        assert link.update(False, True, image) == lh.DOWN
        assert link.down
        assert _warnings(caplog) == ["dev: 3 lost at 10.0.0.9:502, last: timed out again (ctx)"]
        assert all(image.snapshot()[n].quality == Quality.NOT_CONNECTED for n in DATA)

        link.lost(TIMEOUT, "still dead")  # more losses while down: no more lines
        assert link.update(False, True, image) == ""
        assert len(_warnings(caplog)) == 1

        link.comm.record(OK, 0.01)
        assert link.update(True, False, image) == lh.UP
        assert not link.down
        assert _warnings(caplog)[1:] == ["dev: back at 10.0.0.9:502 after 4 lost"]
        assert link.update(True, False, image) == ""
        assert len(_warnings(caplog)) == 2
        assert link.outage_lost == 0


def test_a_poll_that_answered_and_lost_keeps_the_link_up_and_the_outage_count():
    link, image = _link(limit=1)
    link.lost(TIMEOUT, "one block lost")
    assert link.update(True, True, image) == ""  # another block answered: not down
    assert not link.down and link.outage_lost == 1 and link.answered_once
    link.update(True, False, image)  # a clean poll ends the count
    assert link.outage_lost == 0


def test_health_items_from_a_commstats():
    link, _image = _link()
    assert [v for _n, v, _q in link.items(False, 250.0)] == [0.0, 0.0, 0.0, 0.0, 0.0, 250.0]
    for ms in (10, 20, 30):
        link.comm.record(OK, ms / 1e3)
    link.lost(TIMEOUT, "lost")
    link.lost(CRC, "garbage")
    items = dict((n, (v, q)) for n, v, q in link.items(True, 500.0))
    assert list(items) == [f"dev.{p}" for p in lh.COMM_POINTS]
    assert {q for _v, q in items.values()} == {Quality.GOOD}
    assert items["dev.comm_ok"][0] == 1.0
    assert items["dev.comm_latency_p50_ms"][0] == pytest.approx(20.0)
    assert items["dev.comm_latency_p99_ms"][0] == pytest.approx(30.0)
    assert items["dev.comm_loss_pct"][0] == pytest.approx(20.0)  # 1 timeout in 5
    assert items["dev.comm_error_pct"][0] == pytest.approx(20.0)  # 1 CRC error in 5
    assert items["dev.comm_poll_ms"][0] == 500.0


def test_a_subset_of_points_writes_only_those():
    pts = ("comm_ok", "comm_loss_pct", "comm_poll_ms")
    link, _image = _link(points=pts)
    link.lost(TIMEOUT, "lost")
    assert [(n, v) for n, v, _q in link.items(True, 100.0)] == [
        ("dev.comm_ok", 1.0), ("dev.comm_loss_pct", 100.0), ("dev.comm_poll_ms", 100.0)]
    with pytest.raises(ValueError, match="no link health point comm_bogus"):
        lh.LinkHealth("dev", 3, WORDING, LOG, list, str, points=("comm_bogus",))


def test_specs_carry_the_map_units_and_the_callers_age_and_doc():
    specs = lh.comm_specs("m1", 12.5, "link health", ("comm_ok", "comm_loss_pct"))
    assert [(s.name, s.unit, s.max_age_s, s.doc, s.retained) for s in specs] == [
        ("m1.comm_ok", "", 12.5, "link health", False),
        ("m1.comm_loss_pct", "%", 12.5, "link health", False)]
    # the units are the map's (a DCIM reads them in the name table / docs)
    for p in lh.COMM_POINTS:
        assert p in md.METER_QUANTITIES
        assert lh.COMM_UNITS[p] == md.unit_of(p)
    assert lh.nan0(math.nan) == 0.0 and lh.nan0(1.5) == 1.5
