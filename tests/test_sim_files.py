"""The simulator's file-backed hardware: the 1-Wire tree and the mock GPIO lines, as files."""

from __future__ import annotations

from pathlib import Path

from busguard.gpio.led import LedDecoder
from busguard.gpio.mock import read_line, write_line
from busguard.sim.files import GpioLines, LedLine, ProbeFile, ShuntLine, W1Tree
from busguard.sim.model import MeterSpec, ProbeSpec, SiteModel
from busguard.sim.scenarios import SCENARIOS


def test_w1_tree_has_the_kernel_layout_and_the_model_temperatures(tmp_path: Path) -> None:
    model = SiteModel([MeterSpec("m1")], [ProbeSpec("p1", 0), ProbeSpec("p2", 0)],
                      scenario=SCENARIOS["thermal-runaway"])
    base = tmp_path / "w1/devices"
    tree = W1Tree(base, [ProbeFile("p1", "28-00000a1c0001"), ProbeFile("p2", "28-00000a1c0002")])
    for t in (0.0, 300.0):
        tree.update(lambda i, t=t: model.probe(i, t))
        text = (base / "28-00000a1c0001" / "w1_slave").read_text(encoding="ascii")
        first, second = text.splitlines()
        assert first.endswith("YES") and " : crc=" in first
        milli = int(second.rsplit("t=", 1)[1])
        assert abs(milli / 1000.0 - model.probe(0, t)) <= 1 / 16  # 12-bit resolution
    assert milli / 1000.0 > 90.0  # thermal-runaway at t=300 s, as the kernel would show it
    tree.remove()
    assert not (base / "28-00000a1c0001").exists()


def test_led_lines_show_the_pattern_and_shunt_lines_are_read(tmp_path: Path) -> None:
    gpio = GpioLines(tmp_path, [LedLine("b1", 4), LedLine("b2", 5, active_low=True)],
                     [ShuntLine("b1", 17), ShuntLine("b2", 27, active_low=True)])
    codes = {0: 2, 1: 0}
    dec = LedDecoder()
    writes = []
    for k in range(500):  # 10 s of wall time at 20 ms, as the simulator's LED task runs
        t = 5000.0 + k * 0.02
        before = dict(gpio.levels)
        gpio.update_leds(lambda i: codes[i], t)
        writes.append(gpio.levels != before)
        dec.feed(t, read_line(tmp_path, 4))
    assert dec.classify(5010.0).code == 2
    assert read_line(tmp_path, 5) == 1  # off, wired active-low: the line sits high
    assert 0 < sum(writes) < 100  # only changes are written, not every tick
    assert gpio.shunt_active() == []  # b2's active-low line absent: reads inactive
    write_line(tmp_path, 17, 1)
    write_line(tmp_path, 27, 0)
    assert gpio.shunt_active() == [0, 1]
