"""The simulator brought up from a site file, read by the runtime's own drivers: Modbus TCP
meters on 127.0.0.1, RTU units on a pty line, the 1-Wire tree, the breaker LED and the
shunt-trip line closing the loop. Bounded waits only, no timing assertions."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from busguard.cli import main as cli_main
from busguard.image import Quality
from busguard.runtime import Runtime
from busguard.sim.runner import Simulator, load_site_for_sim
from busguard.w1.tree import list_sensors

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def site_text(p1: int, p2: int, confirm_groups: int = 2) -> str:
    return f"""
[site]
name = "sim-test"
[scan]
period_ms = 10
[paths]
state_dir = "var/state"
fault_log = "var/log/fault.log"
[[rs485]]
name = "line-1"
port = "var/sim/ttyRS485-1"
baudrate = 115200
parity = "N"
[onewire]
base_dir = "var/sim/w1/devices"
[gpio]
backend = "mock"
mock_dir = "var/sim/gpio"
[[meter]]
name = "pqm-t1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {p1}
poll_ms = 50
[[meter]]
name = "pqm-t2"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {p2}
poll_ms = 50
[[meter]]
name = "pqm-r1"
driver = "modbus_rtu"
line = "line-1"
unit = 1
poll_ms = 100
[[meter]]
name = "pqm-r2"
driver = "modbus_rtu"
line = "line-1"
unit = 2
poll_ms = 100
[[probe]]
name = "tap-1"
sensor_id = "28-00000a1c0001"
poll_ms = 200
[[probe]]
name = "tap-2"
sensor_id = "28-00000a1c0002"
poll_ms = 200
[[breaker]]
name = "brk-1"
led_line = 4
shunt_trip_line = 17
confirm_groups = {confirm_groups}
off_ms = 1100
[[breaker]]
name = "brk-2"
led_line = 5
confirm_groups = {confirm_groups}
off_ms = 1100
"""


@pytest.fixture
def make_site(tmp_path: Path) -> Callable[..., Path]:
    def make(**kw: int) -> Path:
        path = tmp_path / "site.toml"
        path.write_text(site_text(*free_ports(2), **kw), encoding="utf-8")
        return path
    return make


@pytest.fixture
def running() -> Iterator[list]:
    """Things to stop at the end of a test, whatever happens."""
    items: list = []
    yield items
    for obj in reversed(items):
        obj.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def good(rt: Runtime, *names: str) -> bool:
    snap = rt.image.snapshot()
    return all(snap[n].quality is Quality.GOOD for n in names)


def test_runtime_reads_every_simulated_device(make_site, running, tmp_path: Path) -> None:
    path = make_site()
    sim = Simulator(load_site_for_sim(path), "normal", speed=1.0, seed=3)
    sim.start()
    running.append(sim)
    link = tmp_path / "var/sim/ttyRS485-1"
    assert link.is_symlink()
    assert list_sensors(tmp_path / "var/sim/w1/devices") == ["28-00000a1c0001",
                                                             "28-00000a1c0002"]
    rt = Runtime.from_file(path)
    rt.start()
    running.append(rt)
    names = ("pqm-t1.current_l1_a", "pqm-t2.thd_v_l1_pct", "pqm-r1.voltage_l1_n_v",
             "pqm-r2.temp_c", "pqm-r2.residual_current_ma", "tap-1.temp_c", "tap-2.temp_c",
             "brk-1.led", "brk-2.led")
    wait_for(lambda: good(rt, *names), 15.0, "every device good")
    snap = rt.image.snapshot()
    t = sim.model_time()
    # values are the model's (they drift slowly: a few percent over a second)
    for name in names[:5]:
        dev, q = name.split(".", 1)
        idx = [m.name for m in sim.layout.meters].index(dev)
        assert snap.values[snap.index[name]] == pytest.approx(sim.model.meter(idx, t)[q],
                                                              rel=0.1), name
    assert snap.values[snap.index["tap-1.temp_c"]] == pytest.approx(sim.model.probe(0, t),
                                                                    abs=1.0)
    assert snap.values[snap.index["brk-1.led"]] == 0.0
    assert sim.units["pqm-r1"].stats.answered > 0 and sim.units["pqm-r2"].stats.answered > 0
    sim.stop()
    # the simulator cleans up: no pty link, no sensor folders, no LED files
    assert not link.is_symlink()
    assert list_sensors(tmp_path / "var/sim/w1/devices") == []


def test_ground_fault_shows_two_blink_and_shunt_trip_opens_the_breaker(make_site,
                                                                        running) -> None:
    path = make_site(confirm_groups=1)
    sim = Simulator(load_site_for_sim(path), "ground-fault", speed=40.0, seed=3)
    sim.start()
    running.append(sim)
    rt = Runtime.from_file(path)
    rt.start()
    running.append(rt)

    def led(name: str) -> float:
        snap = rt.image.snapshot()
        return snap.values[snap.index[name]] if snap.is_good(name) else math.nan

    # ground-fault hits the second breaker at model t=20 s (0.5 s of wall time at x40)
    wait_for(lambda: led("brk-2.led") == 2.0, 15.0, "brk-2 LED read as 2-blink")
    assert led("brk-1.led") == 0.0
    # the runtime drives brk-1's shunt-trip line; the simulator opens that breaker
    wait_for(lambda: good(rt, "pqm-t1.current_l1_a"), 10.0, "pqm-t1 good")
    for drv in rt.drivers:
        drv.apply({"brk-1.shunt_trip": 1.0})
    wait_for(lambda: not sim.model.breaker(0, sim.model_time()).closed, 10.0,
             "brk-1 opened by its shunt-trip line")
    assert sim.model.breaker(0, sim.model_time()).cause == "shunt-trip"
    wait_for(lambda: rt.image.snapshot().values[rt.image.index["pqm-t1.current_l1_a"]] == 0.0,
             10.0, "pqm-t1 reads 0 A behind the open breaker")


def test_bundled_site_layout() -> None:
    sim = Simulator(load_site_for_sim(REPO / "site.toml"))
    lay = sim.layout
    assert len(lay.meters) >= 8 and {m.bus for m in lay.meters} == {"tcp", "rtu"}
    assert len(lay.probes) >= 8 and len(lay.leds) >= 2 and len(lay.shunts) >= 2
    assert next(m.port for m in lay.meters if m.bus == "tcp") == 15021
    assert all(line.port.parent == REPO / "var/sim" for line in lay.lines.values())
    assert lay.skipped == []


def test_simulate_command_serves_until_duration_and_reports_json(make_site) -> None:
    path = make_site()
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "simulate", str(path), "--json",
                          "--duration", "1.0", "--status-every", "0.4", "--scenario",
                          "rs485-noise", "--speed", "20", "--drop-pct", "5"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    objs = [json.loads(line) for line in run.stdout.splitlines()]
    ready, status = objs[0], objs[-1]
    assert ready["ready"] and set(ready["tcp"]) == {"pqm-t1", "pqm-t2"}
    assert ready["rtu"] == {"line-1": str(path.parent / "var/sim/ttyRS485-1")}
    assert ready["probes"] == 2 and ready["leds"] == 2 and ready["scenario"] == "rs485-noise"
    assert status["t_model_s"] > 10 and set(status["breakers"]) == {"brk-1", "brk-2"}
    assert not (path.parent / "var/sim/ttyRS485-1").is_symlink()  # cleaned up at exit


def test_simulate_refuses_a_bad_site_with_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nname = "x"\n[[meter]]\nname = "m"\ndriver = "modbus_tcp"\n',
                   encoding="utf-8")
    assert cli_main(["simulate", str(bad)]) == 2  # refused before anything starts
    assert "meter[0].host" in capsys.readouterr().err


def test_simulate_survives_a_burst_of_signals_and_exits_0(make_site) -> None:
    """Ctrl-C pressed repeatedly: the handler takes no lock, so a second signal landing inside
    the first stop can not deadlock (a simulator once hung that way)."""
    path = make_site()
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "simulate", str(path),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["ready"]
        for i in range(30):
            proc.send_signal(signal.SIGINT if i % 2 else signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_port_in_use_is_a_clear_error_and_nothing_is_left(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        path = tmp_path / "site.toml"
        path.write_text(site_text(free_ports(1)[0], busy.getsockname()[1]), encoding="utf-8")
        run = subprocess.run([sys.executable, "-m", "busguard.cli", "simulate", str(path)],
                             capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert run.returncode == 1
    assert "meter pqm-t2: cannot listen on 127.0.0.1:" in run.stderr
    assert not (tmp_path / "var/sim/ttyRS485-1").is_symlink()


def test_runtime_writes_the_cooling_demand_to_the_simulated_bms(tmp_path: Path,
                                                                running) -> None:
    p1, p2, bms = free_ports(3)
    path = tmp_path / "site.toml"
    path.write_text(site_text(p1, p2) + f"""
[[output]]
name = "bms"
driver = "modbus_write"
output = "cooling.demand_pct"
host = "127.0.0.1"
port = {bms}
address = 200
type = "float32"
""", encoding="utf-8")
    sim = Simulator(load_site_for_sim(path), "normal", speed=1.0, seed=3)
    sim.start()
    running.append(sim)
    assert sim.ready_info()["setpoints"] == {"bms": f"127.0.0.1:{bms}"}
    rt = Runtime.from_file(path)
    rt.start()
    running.append(rt)
    for drv in rt.drivers:
        drv.apply({"cooling.demand_pct": 60.0})
    wait_for(lambda: sim.setpoint_values()["bms"] == 60.0, 10.0, "BMS got 60 %")
    wait_for(lambda: sim.model.cooling_pct(sim.model_time()) == 60.0, 5.0, "model cooled")
    wait_for(lambda: good(rt, "bms.readback"), 10.0, "the driver read its write back")
    assert rt.image.snapshot().values[rt.image.index["bms.readback"]] == 60.0


def test_a_power_step_moves_one_meters_served_power_from_now_on(make_site) -> None:
    """step_power (the fleet test's and bench's timed change) adds to the model's power_kw
    of that meter only, at once (the value cache is not waited out), and steps add up."""
    sim = Simulator(load_site_for_sim(make_site()), "normal", speed=1e-6, seed=3)
    name = sim.layout.meters[0].name
    before = [sim.meter_state(i)[0]["power_kw"] for i in range(len(sim.layout.meters))]
    sim.step_power(name, 25.0)
    sim.step_power(0, 5.0)
    after = [sim.meter_state(i)[0]["power_kw"] for i in range(len(sim.layout.meters))]
    assert after[0] == pytest.approx(before[0] + 30.0, abs=0.01)
    assert after[1:] == pytest.approx(before[1:], abs=0.01)
