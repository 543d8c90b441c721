"""(sparkplug) The Sparkplug B edge node: message and byte rates, DDATA size, latency to a
subscriber, and what it costs the scan.

The measured runtime (:mod:`busguard_bench.target`) scans every 10 ms with 32 simulated
meters on Modbus TCP (their values move at every poll, so every poll is a change) and a
``[modbus_server]`` on loopback. It runs four times, back to back: with ``[scan] io =
"process"`` (the judged mode: the edge node runs in the I/O process) without ``[sparkplug]``
(baseline) and with it, publishing to a Mosquitto broker on loopback (Debian ``mosquitto``)
with deadband 0 (every change reported); then the same pair with ``io = "thread"`` (the edge
node's thread beside the scan, in the scan process: what the I/O side saves). A subscriber in
this bench process (paho-mqtt) decodes every message of the io = "process" run: messages and
bytes per second, bytes per DDATA, and the latency from a point's acquisition (the metric's
timestamp: image time less the point's age) to its arrival at the subscriber, p50/p99 (one
clock: the same machine). Target: scan lateness p99 with the publisher in the I/O process no
worse than 1.2x the baseline's (or within 10 us of it: below that the p99 is noise).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from typing import Any

from busguard_bench import northbound_map
from busguard_bench.context import Bench
from busguard_bench.result import INFO, MISS, PASS, SKIP, Measurement, Row, pct
from busguard_bench.sites import SiteSpec, add_tcp_meters

KEYS = (("sparkplug", "Sparkplug B edge node: messages, bytes, latency to a subscriber and "
                      "scan lateness beside a run without it"),)
NEEDS = ("modbus_server", "modbus_tcp")
METERS, PERIOD_MS, POLL_MS, RATIO = 32, 10.0, 100.0, 1.2
# below this the p99 of a few thousand scans is the timer's and the machine's noise, not a
# cost (0.1 % of the 10 ms period): a difference under it passes whatever the ratio
SLACK_MS = 0.01


def missing() -> str:
    """What a Sparkplug measurement lacks here ("" when nothing): the broker or the client."""
    if shutil.which("mosquitto") is None:
        return "needs mosquitto (Debian package)"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "needs paho-mqtt"
    return ""


def host(port: int, client_id: str, on_message: Any, who: str) -> Any:
    """A Sparkplug host in this process: a paho client on the loopback broker, subscribed to
    everything under spBv1.0/ (returns once the broker acknowledged the subscription, or
    raises after 10 s). Stop it with ``loop_stop()`` and ``disconnect()``."""
    import paho.mqtt.client as mqtt

    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda cl, *a: cl.subscribe("spBv1.0/#", qos=0)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    if not ready.wait(10):
        c.loop_stop()
        raise RuntimeError(f"{who} could not subscribe")
    return c


class Subscriber:
    """A Sparkplug host in this process: counts and decodes everything under spBv1.0/."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.messages = self.bytes = self.ddata = self.ddata_bytes = 0
        self.lat_ms: list[float] = []
        self.counting = False
        self.c = host(port, "bench-host", self._on_message, "the bench subscriber")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        from busguard.sparkplug.sparkplug_b_pb2 import Payload

        now_ms = time.time() * 1000.0
        if not self.counting:
            return
        with self.lock:
            self.messages += 1
            self.bytes += len(msg.payload)
            if "/DDATA/" in msg.topic:
                self.ddata += 1
                self.ddata_bytes += len(msg.payload)
                for m in Payload.FromString(msg.payload).metrics:
                    if m.timestamp and not m.is_historical:
                        self.lat_ms.append(now_ms - m.timestamp)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def start_mosquitto(b: Bench) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = b.workdir / "sparkplug-mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npersistence false\nallow_anonymous true\n"
                    f"max_queued_messages 100000\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("mosquitto did not listen within 10 s")


def run(b: Bench) -> list[Measurement]:
    why = missing()
    if why:
        return [Measurement(k, t, skipped=f"skipped: {why}") for k, t in KEYS]
    dur = b.seconds(30.0, 5.0)
    warm = b.seconds(3.0, 2.0)
    n = b.count(METERS, 8)
    broker, port = start_mosquitto(b)
    sub = None
    runs: dict[str, dict[str, Any]] = {}
    span = 0.0
    try:
        with b.child("meters", ["--count", n, "--backend", b.meters_backend],
                     "sparkplug-meters") as mt:
            def spec(with_spb: bool, io: str) -> SiteSpec:
                s = SiteSpec(name="bench-spb", period_ms=PERIOD_MS,
                             stats_window=int(dur * 1000 / PERIOD_MS) + 1000, io=io)
                add_tcp_meters(s, mt.ready["ports"], POLL_MS)
                northbound_map.configure(s)
                if with_spb:
                    state = b.workdir / f"sparkplug-state-{io}"
                    s.tables["sparkplug"] = {"host": "127.0.0.1", "port": port,
                                             "group_id": "bench", "edge_node_id": "node1",
                                             "queue_file": str(state / "q.sqlite")}
                return s

            sub = Subscriber(port)
            for io in ("process", "thread"):
                with b.target(spec(False, io), f"sparkplug-baseline-{io}") as tgt:
                    runs[f"base-{io}"] = tgt.request("measure", warmup_s=warm, duration_s=dur,
                                                     timeout_s=dur + 60)
                with b.target(spec(True, io), f"sparkplug-on-{io}") as tgt:
                    time.sleep(warm)
                    sub.counting = io == "process"
                    t0 = time.monotonic()
                    runs[f"on-{io}"] = tgt.request("measure", warmup_s=0.0, duration_s=dur,
                                                   timeout_s=dur + 60)
                    sub.counting = False
                    if io == "process":
                        span = time.monotonic() - t0
    finally:
        if sub is not None:
            sub.close()
        broker.terminate()
        broker.wait(10)
    return [_rows(runs["base-process"], runs["on-process"], sub, span, n,
                  (runs["base-thread"], runs["on-thread"]))]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _rows(a: dict[str, Any], on: dict[str, Any], sub: Subscriber, span: float,
          meters: int, threads: tuple[dict[str, Any], dict[str, Any]]) -> Measurement:
    sa, s = a["stats"], on["stats"]
    ratio = _ratio(s["lateness_p99_ms"], sa["lateness_p99_ms"])
    ta, ts = threads[0]["stats"], threads[1]["stats"]
    tratio = _ratio(ts["lateness_p99_ms"], ta["lateness_p99_ms"])
    lat = sub.lat_ms
    rows = [
        Row("lateness p99, io = process", s["lateness_p99_ms"], "ms", sa["lateness_p99_ms"],
            "no [sparkplug]", f"<= {RATIO:g}x baseline or +{SLACK_MS * 1000:g} us",
            PASS if ratio <= RATIO or s["lateness_p99_ms"] - sa["lateness_p99_ms"] <= SLACK_MS
            else MISS, f"ratio {ratio:.2f}; the edge node in the I/O process"),
        Row("lateness p99, io = thread", ts["lateness_p99_ms"], "ms", ta["lateness_p99_ms"],
            "no [sparkplug]", status=INFO, note=f"ratio {tratio:.2f}; the edge node's "
                                                f"thread in the scan process"),
        Row("overruns", s["overruns"], "", sa["overruns"], "no [sparkplug]", status=INFO,
            note=f"{s['cycles']} scans measured per run (io = process)"),
        Row("CPU share, scan process", 100.0 * on["cpu_share"], "%",
            100.0 * a["cpu_share"], "no [sparkplug]", note="of one core, user+system "
                                                           "(io = process)"),
        Row("broker messages", sub.messages / span if span else 0.0, "/s", status=INFO,
            note=f"{sub.messages} in {span:.1f} s, all kinds, as the subscriber got them"),
        Row("broker bytes", sub.bytes / span if span else 0.0, "B/s", status=INFO,
            note="Sparkplug payloads (protobuf), MQTT framing not counted"),
        Row("bytes per DDATA", sub.ddata_bytes / sub.ddata if sub.ddata else 0.0, "B",
            status=INFO, note=f"{sub.ddata} DDATA, one per meter and image with changes"),
        Row("latency p50, acquisition -> subscriber", pct(lat, 50) if lat else None, "ms",
            status=INFO if lat else SKIP, note=f"{len(lat)} metrics"),
        Row("latency p99, acquisition -> subscriber", pct(lat, 99) if lat else None, "ms",
            status=INFO if lat else SKIP, note="metric timestamp (image time less the "
                                               "point's age) to arrival, same clock"),
    ]
    return Measurement(KEYS[0][0], KEYS[0][1], rows, details={
        "meters": meters, "baseline": a, "on": on, "baseline_thread": threads[0],
        "on_thread": threads[1], "messages": sub.messages,
        "bytes": sub.bytes, "ddata": sub.ddata, "ddata_bytes": sub.ddata_bytes,
        "span_s": span})
