"""The fleet: 16 busguard controllers, each in its own network namespace with its own 10.x
address, reading the simulator's hall (`busguard simulate --hall`'s files), two row
aggregators and a hall aggregator reading them through busguard_peer; checked through the
hall aggregator's register map as the core DCIM reads it.

On this 2-core machine shared with other work the fleet runs with a 100 ms scan period and
no spin (``[scan] spin_ms = 0``), meters polled every 500 ms and peers every 1000 ms: 19
busguard processes must leave the CPUs to each other. Every wait is bounded.

Every controller also publishes as a Sparkplug B edge node to a real Mosquitto broker on the
bridge (persistent sessions, QoS 1); a Sparkplug host application in the test subscribes. The
Sparkplug checks skip with the reason when mosquitto or the [sparkplug] publisher is missing.

Made as root with iproute2 (``ip netns``, a bridge and veth pairs); skipped with the reason
when namespaces cannot be made.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def sparkplug_missing() -> str:
    """'' when the Sparkplug checks can run, else why not."""
    if not shutil.which("mosquitto"):
        return "mosquitto (Debian package mosquitto) is not installed"
    try:
        for module in ("paho.mqtt.client", "busguard.sparkplug.publisher"):
            importlib.import_module(module)
    except ImportError as exc:
        return f"the [sparkplug] publisher is not available: {exc}"
    return ""


@dataclass
class Fleet:
    plan: HallPlan
    net: Net
    procs: Procs
    sim: Simulator
    broker: Broker | None
    host: SpHost | None
    no_sparkplug: str

    def step(self, meter: str, delta: float) -> None:
        """Move simulated meter ``meter``'s power_kw by ``delta`` kW from now on."""
        self.sim.step_power(meter, delta)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    why = can_make_netns()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("fleet")
    spb = sparkplug_missing()
    mqtt_port = 18830 + os.getpid() % 1000
    plan = write_hall(out / "hall", ROWS, UNITS, METERS, meter_host=BRIDGE_IP,
                      meter_base_port=21000,
                      controller_addr=lambda r, u: (f"{NET}.{r}.{u}", 502),
                      agg_addr=lambda r: (BRIDGE_IP, 23000 + r), peer_poll_ms=PEER_POLL_MS,
                      sparkplug=None if spb else (BRIDGE_IP, mqtt_port))
    net, procs = Net(), Procs(out)
    sim: Simulator | None = None
    broker: Broker | None = None
    host: SpHost | None = None
    try:
        net.up([(n.name, n.host) for n in plan.controllers])
        if not spb:
            broker = Broker(out, mqtt_port)
            broker.start()
            host = SpHost(mqtt_port)
        # model time nearly frozen: the values a controller serves stay put while the test
        # compares them level by level; step() moves one meter's power_kw on purpose
        sim = Simulator(load_site_for_sim(plan.sim_site), speed=1e-6)
        sim.start()
        for n in plan.controllers:
            procs.start(n.name, n.site, net.spaces[n.name])
        for n in (*plan.row_aggs, plan.hall):
            procs.start(n.name, n.site)
        yield Fleet(plan, net, procs, sim, broker, host, spb)
    finally:
        procs.stop_all()
        if host is not None:
            host.close()
        if broker is not None:
            broker.stop()
        if sim is not None:
            sim.stop()
        net.down()


class Broker:
    """mosquitto on the bridge (for the namespaces) and on loopback (for the test's host),
    persistent, so a subscriber's QoS 1 session outlives a broker restart."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.conf = folder / "mosquitto.conf"
        # as root mosquitto would switch to its own user, who cannot write to the test's folder
        self.conf.write_text(f"listener {port} {BRIDGE_IP}\nlistener {port} 127.0.0.1\n"
                             f"user root\nallow_anonymous true\npersistence true\n"
                             f"queue_qos0_messages true\nmax_queued_messages 0\n"
                             f"max_queued_bytes 0\n"
                             f"persistence_location {folder}/\nlog_dest file "
                             f"{folder}/mosquitto.log\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _listening("127.0.0.1", self.port), 10, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _listening(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), 0.3).close()
        return True
    except OSError:
        return False


class SpHost:
    """A Sparkplug host application: a persistent QoS 1 subscription to spBv1.0/hall/#, every
    message decoded and kept in arrival order."""

    def __init__(self, port: int) -> None:
        import threading

        mqtt = importlib.import_module("paho.mqtt.client")
        self.Payload = importlib.import_module(
            "busguard.sparkplug.sparkplug_b_pb2").Payload
        self.msgs: list[tuple[str, str, str, Any]] = []  # kind, node, device, payload
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{TAG}-host",
                             clean_session=False)
        self.c.on_connect = lambda c, *a: c.subscribe("spBv1.0/hall/#", qos=1)
        self.c.on_message = self._on
        self.c.reconnect_delay_set(0.2, 2)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()

    def _on(self, _c, _u, msg) -> None:
        parts = msg.topic.split("/")
        p = self.Payload.FromString(msg.payload)
        with self.lock:
            self.msgs.append((parts[2], parts[3], parts[4] if len(parts) > 4 else "", p))

    def all(self, kind: str | None = None, node: str | None = None) -> list[tuple]:
        with self.lock:
            return [m for m in self.msgs if (kind is None or m[0] == kind)
                    and (node is None or m[1] == node)]

    def rebirth(self, node: str) -> None:
        p = self.Payload(timestamp=int(time.time() * 1000))
        p.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
        self.c.publish(f"spBv1.0/hall/NCMD/{node}", p.SerializeToString(), qos=1)

    def values(self, node: str, device: str, metric: str) -> list[tuple[float, int, bool]]:
        """(value, timestamp, historical) of meter ``metric`` in the node's DBIRTHs and DDATAs,
        in arrival order. DDATA names a metric by its alias: the one a DBIRTH gave, or the
        stable alias of docs/sparkplug.md (a point first read after the DBIRTH)."""
        from busguard.sparkplug.metrics import alias_of

        out: list[tuple[float, int, bool]] = []
        slot = int(device[1:]) - 1  # the hall's controllers: m1, m2... in meter slots 0, 1...
        alias: dict[int, str] = {alias_of("meter", slot, metric): metric}
        for kind, _n, d, p in self.all(node=node):
            if d != device or kind not in ("DBIRTH", "DDATA"):
                continue
            for m in p.metrics:
                if kind == "DBIRTH":
                    alias[m.alias] = m.name
                if (m.name or alias.get(m.alias)) == metric and not m.is_null:
                    out.append((m.float_value, m.timestamp, m.is_historical))
        return out

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def seq_gaps(host: SpHost, node: str) -> list[tuple[int, int]]:
    """(previous, next) seq pairs of the node's messages that skip a number: every message of
    a session after its NBIRTH (seq 0) counts up by one, wrapping at 255. A QoS 1 message
    delivered twice (the same seq and payload again: at-least-once) is not a gap."""
    gaps: list[tuple[int, int]] = []
    last: int | None = None
    seen: set[bytes] = set()
    for kind, _n, _d, p in host.all(node=node):
        raw = p.SerializeToString()
        if kind in ("NDEATH", "NCMD", "DCMD") or raw in seen:  # commands: the host's own
            continue
        seen.add(raw)
        if kind == "NBIRTH":
            last = p.seq
            continue
        if last is not None and p.seq != (last + 1) % 256:
            gaps.append((last, p.seq))
        last = p.seq
    return gaps


def outputs(m: dict | None) -> dict[str, float | None]:
    return {k: r["value"] for k, r in (m or {"outputs": {}})["outputs"].items()}


def controller_kw(node) -> float | None:
    m = read_map(node.host, node.port)
    if m is None:
        return None
    kws = [d["points"].get("power_kw", {}).get("value") for d in m["devices"]
           if d["kind"] == "meter"]
    return sum(kws) if kws and all(k is not None for k in kws) else None


def test_sparkplug_births_data_a_broker_outage_and_rebirth(fleet):
    """Every controller's NBIRTH and DBIRTHs reach a Sparkplug host; a meter change arrives
    as DDATA; the broker stopped for 30 s loses no change (sent historical, in timestamp
    order, no seq gap); a rebirth request is honoured."""
    if fleet.no_sparkplug:
        pytest.skip(fleet.no_sparkplug)
    host, plan = fleet.host, fleet.plan
    assert host is not None and fleet.broker is not None
    nodes = [n.name for n in plan.controllers]
    devices = {f"m{k}" for k in range(1, METERS + 1)} | {"b1"}

    def born() -> bool:
        births = {m[1] for m in host.all("NBIRTH")}
        dbirths = {(m[1], m[2]) for m in host.all("DBIRTH")}
        return set(nodes) <= births and all((n, d) in dbirths for n in nodes for d in devices)
    wait_for(born, 240, "NBIRTH and DBIRTH (m1, m2, b1) from every controller")

    # a change: +100 kW on c101's m1 arrives as DDATA
    wait_for(lambda: host.values("c101", "m1", "power_kw"), 60, "c101/m1 power_kw read")
    before = host.values("c101", "m1", "power_kw")[-1][0]
    fleet.step("c101-m1", 100.0)
    wait_for(lambda: any(abs(v - before - 100.0) < 1.0
                         for v, _t, _h in host.values("c101", "m1", "power_kw")), 60,
             "c101/m1 power_kw +100 kW in a DDATA")
    # every DDATA names a metric its device's DBIRTH declared (births before the first
    # meter read declare every point of the layout, null until read)
    declared: dict[tuple[str, str], set[int]] = {}
    for kind, n, d, p in host.all():
        if kind == "DBIRTH":
            declared[(n, d)] = {m.alias for m in p.metrics}
        elif kind == "DDATA":
            assert {m.alias for m in p.metrics} <= declared.get((n, d), set()), (n, d)

    # the broker away for 30 s: three changes of c102's m1 meanwhile, none lost
    wait_for(lambda: host.values("c102", "m1", "power_kw"), 60, "c102/m1 power_kw read")
    base = host.values("c102", "m1", "power_kw")[-1][0]
    fleet.broker.stop()
    t_stop = time.monotonic()
    for _ in range(3):
        time.sleep(8.0)  # > a meter poll + a scan + the publisher's poll: each is an image
        fleet.step("c102-m1", 50.0)
    time.sleep(max(0.0, 30.0 - (time.monotonic() - t_stop)))
    fleet.broker.start()
    want = [base + 50.0, base + 100.0, base + 150.0]

    def all_three() -> bool:
        got = [v for v, _t, _h in host.values("c102", "m1", "power_kw")]
        return all(any(abs(g - w) < 1.0 for g in got) for w in want)
    wait_for(all_three, 120, "c102/m1's three changes during the outage")
    seen = [(v, t, h) for v, t, h in host.values("c102", "m1", "power_kw")
            if any(abs(v - w) < 1.0 for w in want)]
    firsts = [next(x for x in seen if abs(x[0] - w) < 1.0) for w in want]
    assert [t for _v, t, _h in firsts] == sorted(t for _v, t, _h in firsts)  # in order
    assert all(h for _v, _t, h in firsts[:2])  # queued while away: sent historical
    for n in nodes:
        assert seq_gaps(host, n) == [], n

    # rebirth: the primary host asks c103 for it
    births = len(host.all("NBIRTH", "c103"))
    host.rebirth("c103")
    wait_for(lambda: len(host.all("NBIRTH", "c103")) > births, 60, "c103's NBIRTH again")
    wait_for(lambda: {m[2] for m in host.all("DBIRTH", "c103")} >= devices, 60,
             "c103's DBIRTHs again")
    assert seq_gaps(host, "c103") == []


def test_every_controller_and_trip_reaches_the_hall_and_a_dead_one_goes_not_connected(fleet):
    plan, net, procs = fleet.plan, fleet.net, fleet.procs
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
    if shutil.which("mosquitto") is not None:  # the controllers on Sparkplug beside it
        assert rows["broker messages"]["value"] > 0 and rows["broker bytes"]["value"] > 0
        assert m["details"]["to_sparkplug_s"]  # the step was seen by the subscriber
        assert rows["meter change -> Sparkplug subscriber, p50"]["value"] > 0
