"""The fleet: 16 busguard controllers, each in its own network namespace with its own 10.x
address, reading the simulator's hall (`busguard simulate --hall`'s files), two row
aggregators and a hall aggregator reading them through busguard_peer; checked through the
hall aggregator's register map as the core DCIM reads it.

On this 2-core machine shared with other work the fleet runs with a 100 ms scan period and
no spin (``[scan] spin_ms = 0``), meters polled every 500 ms and peers every 1000 ms: 19
busguard processes must leave the CPUs to each other. Every wait is bounded.

Made as root with iproute2 (``ip netns``, a bridge and veth pairs); skipped with the reason
when namespaces cannot be made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from busguard.gpio.mock import write_line
from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard.northbound.reader import read_all
from busguard.sim.hall import LED_LINE, HallPlan, write_hall
from busguard.sim.runner import Simulator, load_site_for_sim

pytestmark = pytest.mark.integration

ROWS, UNITS, METERS = 2, 8, 2
NET = "10.218"  # the fleet's /16; the bridge (root namespace) is .0.1
BRIDGE_IP = f"{NET}.0.1"
PEER_POLL_MS = 1000
TAG = f"bg{os.getpid() % 100000}"
BUSGUARD = str(Path(sys.executable).with_name("busguard"))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def can_make_netns() -> str:
    """'' when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed"
    probe = f"{TAG}probe"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


class Net:
    """A bridge in the root namespace and one namespace per controller on it."""

    def __init__(self) -> None:
        self.bridge = f"{TAG}br"
        self.spaces: dict[str, str] = {}  # controller -> namespace

    def up(self, controllers: list[tuple[str, str]]) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, (name, addr) in enumerate(controllers):
            ns, host_if = f"{TAG}{name}", f"{TAG}v{i}"
            sh("ip", "netns", "add", ns)
            self.spaces[name] = ns
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host_if, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/16", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in self.spaces.values():
            sh("ip", "netns", "del", ns, check=False)  # takes its veth pair along
        sh("ip", "link", "del", self.bridge, check=False)


class Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, site: Path, ns: str | None = None) -> None:
        cmd = [BUSGUARD, "run", str(site)]
        if ns:
            cmd = ["ip", "netns", "exec", ns, *cmd]
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        log.close()

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def read_map(host: str, port: int) -> dict | None:
    c = ModbusTcpClient(host, port, 3.0)
    try:
        return read_all(c.read)
    except (CommError, ExceptionReply, OSError):
        return None
    finally:
        c.close()


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    assert cond(), f"not within {timeout_s:g} s: {what}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[tuple[HallPlan, Net, Procs, Simulator]]:
    why = can_make_netns()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("fleet")
    plan = write_hall(out / "hall", ROWS, UNITS, METERS, meter_host=BRIDGE_IP,
                      meter_base_port=21000,
                      controller_addr=lambda r, u: (f"{NET}.{r}.{u}", 502),
                      agg_addr=lambda r: (BRIDGE_IP, 23000 + r), peer_poll_ms=PEER_POLL_MS)
    net, procs = Net(), Procs(out)
    sim: Simulator | None = None
    try:
        net.up([(n.name, n.host) for n in plan.controllers])
        # model time nearly frozen: the values a controller serves stay put while the test
        # compares them level by level
        sim = Simulator(load_site_for_sim(plan.sim_site), speed=1e-6)
        sim.start()
        for n in plan.controllers:
            procs.start(n.name, n.site, net.spaces[n.name])
        for n in (*plan.row_aggs, plan.hall):
            procs.start(n.name, n.site)
        yield plan, net, procs, sim
    finally:
        procs.stop_all()
        if sim is not None:
            sim.stop()
        net.down()


def outputs(m: dict | None) -> dict[str, float | None]:
    return {k: r["value"] for k, r in (m or {"outputs": {}})["outputs"].items()}


def controller_kw(node) -> float | None:
    m = read_map(node.host, node.port)
    if m is None:
        return None
    kws = [d["points"].get("power_kw", {}).get("value") for d in m["devices"]
           if d["kind"] == "meter"]
    return sum(kws) if kws and all(k is not None for k in kws) else None


def test_every_controller_and_trip_reaches_the_hall_and_a_dead_one_goes_not_connected(fleet):
    plan, net, procs, _sim = fleet
    assert len(plan.controllers) >= 16
    hall = plan.hall
    assert hall is not None
    names = [(f"r{n.name[1]}", n.name) for n in plan.controllers]

    def all_good() -> bool:
        o = outputs(read_map(hall.host, hall.port))
        return all(o.get(f"{r}.{c}.q") == 0.0 and o.get(f"{r}.{c}.kw") is not None
                   for r, c in names)
    wait_for(all_good, 240, "every controller good in the hall aggregator's map")
    # every controller's power: the hall's figure is the sum its own map serves
    o = outputs(read_map(hall.host, hall.port))
    for node in plan.controllers:
        want = controller_kw(node)
        assert want is not None, node.name
        assert o[f"r{node.name[1]}.{node.name}.kw"] == pytest.approx(want, rel=1e-3, abs=0.05)
    assert o["hall.peers"] == float(len(plan.controllers)) and o["hall.q"] == 0.0
    assert o["hall.kw"] == pytest.approx(sum(o[f"{r}.{c}.kw"] for r, c in names), rel=1e-4)
    assert o["hall.trips"] == 0.0
    print("hall map:", {k: o[k] for k in ("hall.kw", "hall.kva", "hall.pf_min", "hall.peers",
                                          "r1.c101.kw", "r2.c208.kw")})
    assert all(o[f"{r}.{c}.kw"] > 0 for r, c in names)  # every rack draws power

    # a trip: c105's breaker LED solid (its own trip unit tripped); busguard latches it
    write_line(plan.gpio_dir("c105"), LED_LINE, 1)
    wait_for(lambda: outputs(read_map(hall.host, hall.port)).get("r1.c105.b1.trip") == 1.0,
             60, "c105's trip in the hall aggregator's map")
    o = outputs(read_map(hall.host, hall.port))
    assert o["hall.trips"] == 1.0
    assert [c for r, c in names if o[f"{r}.{c}.b1.trip"] == 1.0] == ["c105"]

    # a controller killed: not connected at its row aggregator after 3 lost polls (the
    # peer driver's loss_limit; each lost poll is one lost request), then at the hall
    victim = next(n for n in plan.controllers if n.name == "c203")
    row2 = next(n for n in plan.row_aggs if n.name == "row2")
    procs.kill("c203")
    wait_for(lambda: outputs(read_map(row2.host, row2.port)).get("r2.c203.q") == 3.0, 60,
             "c203 not connected at row2")
    assert "c203: peer 10.218.2.3:502: 3 requests in a row lost" in procs.log("row2")
    wait_for(lambda: outputs(read_map(hall.host, hall.port)).get("r2.c203.q") == 3.0, 60,
             "c203 not connected at the hall")
    o = outputs(read_map(hall.host, hall.port))
    assert o["r2.c202.q"] == 0.0 and o["hall.q"] == 3.0
    # and back
    procs.start("c203", victim.site, net.spaces["c203"])
    wait_for(lambda: outputs(read_map(hall.host, hall.port)).get("r2.c203.q") == 0.0, 120,
             "c203 back at the hall")
    assert outputs(read_map(hall.host, hall.port))["r2.c203.kw"] == pytest.approx(
        controller_kw(victim), rel=1e-3, abs=0.05)


def test_the_fleet_bench_reports_requests_latency_and_lateness(tmp_path):
    """`busguard bench --only fleet` end to end at smoke size (loopback, no namespaces)."""
    import json

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "bench", "--smoke", "--only",
                          "fleet", "--json", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    m = next(x for x in json.loads(out.read_text())["measurements"] if x["key"] == "18-fleet")
    rows = {r["metric"]: r for r in m["rows"]}
    full = rows["core DCIM requests per full hall read, via the hall aggregator"]
    assert full["value"] > 0 and full["baseline"] > 0
    assert rows["meter change -> hall aggregator's map, p50"]["value"] > 0
    assert m["details"]["to_hall_s"]  # the step was seen at the hall
