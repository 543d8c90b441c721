"""Helpers for the [sparkplug] tests (no tests here): a real Mosquitto broker on a loopback
port, a Sparkplug subscriber that decodes what it receives, and a site that publishes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from busguard.sparkplug.sparkplug_b_pb2 import Payload

SITE = """
[site]
name = "spbtest"
[paths]
state_dir = "{state}"
[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a", "power_kw", "power_factor"]
[[meter]]
name = "m2"
driver = "memory"
points = ["power_kw"]
[[breaker]]
name = "b1"
driver = "memory"
[modbus_server]
port = 0
[sparkplug]
port = {port}
poll_ms = 20
reconnect_s = 0.2
{extra}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``mosquitto -c conf`` on 127.0.0.1:port; stop() and start() again on the same port."""

    def __init__(self, folder: Path, extra: str = "") -> None:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto (Debian package mosquitto) is not installed")
        self.folder = folder
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(self.head() + (extra or "allow_anonymous true\n"))
        self.proc: subprocess.Popen[bytes] | None = None

    def head(self) -> str:
        """The listener, no persistence, and (run as root) no drop to the mosquitto user, who
        could not read the test's private temporary folder."""
        return (f"listener {self.port} 127.0.0.1\npersistence false\nlog_dest stderr\n"
                f"user root\n")

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "mosquitto.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: "
                                   + (self.folder / "mosquitto.log").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Msg:
    topic: str
    kind: str
    device: str
    payload: Payload | None
    raw: bytes
    at: float


class Host:
    """A Sparkplug host application: subscribes to spBv1.0/#, decodes every message."""

    def __init__(self, port: int, host_id: str = "", tls: dict | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.msgs: list[Msg] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{port}-"
                             f"{time.monotonic_ns()}")
        if auth:
            self.c.username_pw_set(*auth)
        if tls:
            self.c.tls_set(**tls)
        self.c.on_message = self._on_message
        self.host_id = host_id
        self.port = port
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)

    def connect(self) -> Host:
        self.subscribed.clear()
        self.c.connect("127.0.0.1", self.port, 30)
        self.c.loop_start()
        assert self.subscribed.wait(10), "the test host could not subscribe"
        return self

    def _on_message(self, _c, _u, msg) -> None:
        parts = msg.topic.split("/")
        payload = None
        if parts[1] != "STATE":
            payload = Payload.FromString(msg.payload)
        with self.lock:
            self.msgs.append(Msg(msg.topic, parts[2] if len(parts) > 2 else "",
                                 parts[4] if len(parts) > 4 else "", payload, msg.payload,
                                 time.monotonic()))

    def state(self, online: bool) -> None:
        import json

        self.c.publish(f"spBv1.0/STATE/{self.host_id}", json.dumps(
            {"online": online, "timestamp": int(time.time() * 1000)}), qos=1, retain=True)

    def rebirth(self, group: str, node: str) -> None:
        p = Payload(timestamp=int(time.time() * 1000))
        p.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
        self.c.publish(f"spBv1.0/{group}/NCMD/{node}", p.SerializeToString(), qos=1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()

    def all(self, kind: str | None = None) -> list[Msg]:
        with self.lock:
            return [m for m in self.msgs if kind is None or m.kind == kind]

    @staticmethod
    def wait_for(what: Callable[[], object], timeout: float = 15.0) -> object:
        """Wait (bounded) until ``what()`` is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.02)
        raise AssertionError(f"not true within {timeout} s")

    def wait(self, what: Callable[[], object], timeout: float = 15.0, poll: Callable[[], None]
             | None = None) -> object:
        """Wait (bounded) until ``what()`` is truthy, calling ``poll`` between looks."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            if poll is not None:
                poll()
            time.sleep(0.02)
        seen = [(m.topic, m.payload.seq if m.payload else None) for m in self.all()]
        raise AssertionError(f"not seen within {timeout} s; messages: {seen[-20:]}")


def names(msg: Msg) -> dict[str, object]:
    """A BIRTH's metrics: name -> the metric."""
    assert msg.payload is not None
    return {m.name: m for m in msg.payload.metrics}


def value(m) -> object:
    if m.is_null:
        return None
    return getattr(m, m.WhichOneof("value"))
