"""(18) The fleet: what row and hall aggregators save the core DCIM, and what they cost.

A hall of ROWS x UNITS controllers (`busguard simulate --hall`'s site files, 2 meters and a
breaker each, 100 ms scan, no spin) runs on loopback as real ``busguard run`` processes with
two row aggregators and a hall aggregator (busguard_peer every 1000 ms, meters every 500 ms);
one in-process simulator serves every meter. Measured:

- core DCIM requests per full hall read: without aggregators, busguard's own map reader
  (:func:`busguard.northbound.reader.read_all`, what `busguard status` reads) against every
  controller, counted; with them, the same reader against the hall aggregator alone, and the
  lightest useful read (header + the hall's output area);
- end-to-end latency, meter change -> hall aggregator's map: the simulator steps one meter's
  power_kw by +/-100 kW and a client polls the hall's record of that controller's power every
  20 ms until it shows; the baseline is the same change seen in the controller's own map;
- the aggregators' scan lateness p99 with their N peers, from their map headers;
- Sparkplug: every controller also publishes to one Mosquitto broker on loopback (Debian
  ``mosquitto``; QoS 1, deadband 0) and a subscriber in this process (paho-mqtt) decodes
  everything: the same meter steps' latency to the subscriber (the stepped meter's power_kw
  DDATA, by the alias its DBIRTH declared), and the broker's messages and bytes per second
  over the latency phase (Sparkplug payloads; MQTT framing not counted). Skipped, with the
  reason, without mosquitto or paho-mqtt.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard_bench.context import Bench
from busguard_bench.northbound_map import free_port
from busguard_bench.result import INFO, SKIP, Measurement, Row, pct

KEYS = (("18-fleet", "row/hall aggregators: DCIM requests, latency, lateness"),)
NEEDS = ("modbus_server", "modbus_tcp")
STEP_KW = 100.0
POLL_S = 0.02


def _busguard() -> str:
    return str(Path(sys.executable).with_name("busguard"))


class _Counting:
    def __init__(self, client: ModbusTcpClient) -> None:
        self.client = client
        self.requests = 0

    def read(self, address: int, count: int) -> list[int]:
        self.requests += 1
        return self.client.read(address, count)


def _full_read(host: str, port: int) -> tuple[int, dict[str, Any]]:
    from busguard.northbound.reader import read_all

    c = ModbusTcpClient(host, port, 3.0)
    try:
        counting = _Counting(c)
        m = read_all(counting.read)
        return counting.requests, m
    finally:
        c.close()


def _wait(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except (CommError, ExceptionReply, OSError):
            pass
        time.sleep(0.2)
    return False


def _record_address(host: str, port: int, name: str) -> int:
    """The address of output/extra record ``name`` in a busguard's map (peer layout)."""
    from busguard.peer import layout as ly

    c = ModbusTcpClient(host, port, 3.0)
    try:
        head = ly.header(c.read)
        return ly.discover(c.read, head, True).records[name]
    finally:
        c.close()


def _device_point(host: str, port: int, device: str, quantity: str) -> int:
    from busguard.northbound import mapdef as md
    from busguard.peer import layout as ly

    c = ModbusTcpClient(host, port, 3.0)
    try:
        lay = ly.discover(c.read, ly.header(c.read), False)
        d = lay.devices[device]
        return d.address + md.DEVICE_HEADER_WORDS + \
            md.STANDARD["meter"].index(quantity) * md.POINT_WORDS
    finally:
        c.close()


def _value(c: ModbusTcpClient, address: int) -> float:
    from busguard.northbound import reader as rd

    v = rd.point(c.read(address, 4))["value"]
    return math.nan if v is None else v


class _SpbWatch:
    """A Sparkplug host for the fleet: counts every message and follows one metric."""

    def __init__(self, port: int, node: str, device: str, metric: str) -> None:
        import threading

        from busguard_bench.sparkplug import host

        self.lock = threading.Lock()
        self.node, self.device, self.metric = node, device, metric
        self.messages = self.bytes = 0
        self.counting = False
        self.alias: int | None = None
        self.value = math.nan
        self.c = host(port, "bench-fleet-host", self._on_message,
                      "the fleet's Sparkplug subscriber")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        from busguard.sparkplug.sparkplug_b_pb2 import Payload

        parts = msg.topic.split("/")
        with self.lock:
            if self.counting:
                self.messages += 1
                self.bytes += len(msg.payload)
            if len(parts) < 5 or parts[3] != self.node or parts[4] != self.device:
                return
            p = Payload.FromString(msg.payload)
            for m in p.metrics:
                if parts[2] == "DBIRTH" and m.name == self.metric:
                    self.alias = m.alias
                if m.alias == self.alias and self.alias is not None and not m.is_null and \
                        not m.is_historical:
                    self.value = m.float_value

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def run(b: Bench) -> list[Measurement]:
    from busguard.sim.hall import write_hall
    from busguard.sim.runner import Simulator, load_site_for_sim
    from busguard_bench.sparkplug import missing, start_mosquitto

    logging.getLogger("pymodbus").setLevel(logging.WARNING)  # the simulator's frame traces
    rows_n, units = 2, b.count(8, 4)
    steps = b.count(12, 4)
    ports: dict[str, int] = {}

    def c_addr(r: int, u: int) -> tuple[str, int]:
        return "127.0.0.1", ports.setdefault(f"c{r}{u}", free_port())

    def a_addr(r: int) -> tuple[str, int]:
        return "127.0.0.1", ports.setdefault(f"a{r}", free_port())

    no_spb = missing()
    broker = None
    watch: _SpbWatch | None = None
    if not no_spb:
        broker, mqtt_port = start_mosquitto(b)
    plan = write_hall(b.workdir / "fleet", rows_n, units, 2, meter_base_port=free_port() + 100,
                      controller_addr=c_addr, agg_addr=a_addr,
                      sparkplug=None if broker is None else ("127.0.0.1", mqtt_port))
    sim = Simulator(load_site_for_sim(plan.sim_site), speed=1e-6)
    procs: list[subprocess.Popen] = []
    log = open(b.workdir / "fleet.log", "w", encoding="utf-8")  # noqa: SIM115
    spb_lat: list[float] = []
    spb_span = 0.0
    try:
        sim.start()
        if broker is not None:  # subscribed before the controllers birth
            watch = _SpbWatch(mqtt_port, plan.controllers[0].name, "m1", "power_kw")
        for n in (*plan.controllers, *plan.row_aggs, plan.hall):
            assert n is not None
            procs.append(subprocess.Popen([_busguard(), "run", str(n.site)], stdout=log,
                                          stderr=log, stdin=subprocess.DEVNULL))
        hall = plan.hall
        assert hall is not None
        first = plan.controllers[0]
        row = f"r1.{first.name}.kw"

        def ready() -> bool:
            _n, m = _full_read(hall.host, hall.port)
            o = m["outputs"]
            return all(o.get(f"r{n.name[1]}.{n.name}.q", {}).get("value") == 0.0
                       for n in plan.controllers)
        if not _wait(ready, 240):
            raise RuntimeError(f"the hall did not come up in 240 s (see {b.workdir}/fleet.log)")
        flat = [_full_read(n.host, n.port)[0] for n in plan.controllers]
        hall_full, _m = _full_read(hall.host, hall.port)
        outs = _m["header"]["directory"]["output"]
        light = 1 + math.ceil(outs["count"] * outs["stride"] / 125)
        # latency: one meter of the first controller stepped, seen at the hall and at home
        hall_addr = _record_address(hall.host, hall.port, row)
        home_addr = _device_point(first.host, first.port, "m1", "power_kw")
        meter_index = next(i for i, m in enumerate(sim.layout.meters)
                           if m.name == f"{first.name}-m1")
        hc = ModbusTcpClient(hall.host, hall.port, 3.0)
        cc = ModbusTcpClient(first.host, first.port, 3.0)
        to_hall: list[float] = []
        to_home: list[float] = []
        if watch is not None:
            _wait(lambda: watch.alias is not None and not math.isnan(watch.value), 30)
            watch.counting = True
        span_t0 = time.monotonic()
        try:
            for k in range(steps):
                before_h, before_c = _value(hc, hall_addr), _value(cc, home_addr)
                before_s = watch.value if watch is not None else math.nan
                delta = STEP_KW if k % 2 == 0 else -STEP_KW
                sim.step_power(meter_index, delta)
                t0 = time.monotonic()
                seen_home = seen_spb = math.nan
                deadline = t0 + 30.0
                while time.monotonic() < deadline:
                    now = time.monotonic()
                    if math.isnan(seen_home) and \
                            abs(_value(cc, home_addr) - before_c - delta) < abs(delta) / 2:
                        seen_home = now - t0
                    if watch is not None and math.isnan(seen_spb) and \
                            abs(watch.value - before_s - delta) < abs(delta) / 2:
                        seen_spb = now - t0
                    if abs(_value(hc, hall_addr) - before_h - delta) < abs(delta) / 2 and \
                            (watch is None or not math.isnan(seen_spb)):
                        to_hall.append(now - t0)
                        break
                    time.sleep(POLL_S)
                if not math.isnan(seen_home):
                    to_home.append(seen_home)
                if not math.isnan(seen_spb):
                    spb_lat.append(seen_spb)
                time.sleep(0.5)
        finally:
            spb_span = time.monotonic() - span_t0
            if watch is not None:
                watch.counting = False
            hc.close()
            cc.close()
        late = {}
        for n in (*plan.row_aggs, hall):
            _n, m = _full_read(n.host, n.port)
            late[n.name] = m["header"]["scan_lateness_p99_ms"]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sim.stop()
        log.close()
        if watch is not None:
            watch.close()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    n_ctl = len(plan.controllers)
    rows = [
        Row("core DCIM requests per full hall read, via the hall aggregator", hall_full,
            "requests", sum(flat), f"every controller read directly ({n_ctl} maps)",
            status=INFO, note="busguard's map reader (read_all: header, areas, names, alarm "
                              "table, event ring), counted"),
        Row("core DCIM requests, hall outputs only (header + output area)", light,
            "requests", sum(flat), "every controller read directly", status=INFO),
        Row("meter change -> hall aggregator's map, p50", pct(to_hall, 50) * 1e3, "ms",
            pct(to_home, 50) * 1e3, "-> the controller's own map", status=INFO,
            note=f"{len(to_hall)}/{steps} steps of {STEP_KW:g} kW seen; meters polled every "
                 f"500 ms, peers every 1000 ms at two levels"),
        Row("meter change -> hall aggregator's map, p99", pct(to_hall, 99) * 1e3, "ms",
            pct(to_home, 99) * 1e3, "-> the controller's own map", status=INFO),
        *[Row(f"{name} scan lateness p99 ({units if name != 'hall' else rows_n} peers)",
              v, "ms", status=INFO) for name, v in late.items()],
        *_spb_rows(no_spb, watch, spb_lat, spb_span, to_home, steps, n_ctl),
    ]
    return [Measurement(KEYS[0][0], KEYS[0][1], rows, details={
        "controllers": n_ctl, "rows": rows_n, "requests_flat": flat,
        "requests_hall_full": hall_full, "requests_hall_light": light,
        "to_hall_s": to_hall, "to_home_s": to_home, "lateness_p99_ms": late,
        "to_sparkplug_s": spb_lat, "broker_messages": watch.messages if watch else None,
        "broker_bytes": watch.bytes if watch else None, "broker_span_s": spb_span,
        "scan_ms": 100, "meter_poll_ms": 500, "peer_poll_ms": 1000})]


def _spb_rows(missing: str, watch: _SpbWatch | None, lat: list[float], span: float,
              to_home: list[float], steps: int, n_ctl: int) -> list[Row]:
    """The Sparkplug rows, next to the Modbus ones."""
    if missing or watch is None:
        return [Row("Sparkplug: latency, broker messages and bytes", None, status=SKIP,
                    note=f"skipped: {missing or 'no subscriber'}")]
    return [
        Row("meter change -> Sparkplug subscriber, p50", pct(lat, 50) * 1e3 if lat else None,
            "ms", pct(to_home, 50) * 1e3, "-> the controller's own map",
            status=INFO if lat else SKIP, note=f"{len(lat)}/{steps} steps seen as DDATA "
                                               f"(deadband 0, QoS 1, poll_ms 100)"),
        Row("meter change -> Sparkplug subscriber, p99", pct(lat, 99) * 1e3 if lat else None,
            "ms", pct(to_home, 99) * 1e3, "-> the controller's own map",
            status=INFO if lat else SKIP),
        Row("broker messages", watch.messages / span if span else 0.0, "/s", status=INFO,
            note=f"{watch.messages} in {span:.1f} s from {n_ctl} edge nodes, all kinds, as "
                 f"the subscriber got them"),
        Row("broker bytes", watch.bytes / span if span else 0.0, "B/s", status=INFO,
            note="Sparkplug payloads (protobuf); MQTT framing not counted"),
    ]
