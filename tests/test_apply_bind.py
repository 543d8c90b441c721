"""`busguard apply` of a site whose northbound port is taken, against a real `busguard run`
in both io modes (issue 21): the reload is refused (not "healthy": true), the file is rolled
back, and the report says the rollback is healthy when it is."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from busguard.cli import main
from busguard.northbound import mapdef
from test_apply import _ready, _status, _wait
from test_northbound_helpers import connect, read

SITE = """\
[site]
name = "apply-bind"

[scan]
io = "{io}"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

[service]
realtime = "off"
status_every_s = 0.1

[modbus_server]
port = {port}

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
initial = {{ current_l1_a = 100.0 }}
"""


@pytest.fixture
def blocker() -> Iterator[int]:
    """A port some other program listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def _start(tmp_path: Path, io: str) -> subprocess.Popen:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(io=io, port=0))
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    with open(tmp_path / "run.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(site),
                                 "--stats-every", "0"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=log, text=True)
    _wait(lambda: _ready(tmp_path), timeout=30)
    return proc


def _served_port(tmp_path: Path) -> int:
    """The port of the last "serving the register map" line of the runtime's log."""
    text = (tmp_path / "run.log").read_text(errors="replace")
    found = re.findall(r"serving the register map .* on tcp 127\.0\.0\.1:(\d+)", text)
    assert found, "no listener in the log"
    return int(found[-1])


@pytest.mark.parametrize("io", ["thread", pytest.param("process",
                                                       marks=pytest.mark.reliability)])
def test_apply_to_a_taken_port_is_refused_and_rolled_back(tmp_path: Path, capsys, blocker,
                                                          io: str) -> None:
    proc = _start(tmp_path, io)
    try:
        site = tmp_path / "site.toml"
        old = site.read_bytes()
        old_hash = _status(tmp_path)["config_hash"]
        new = tmp_path / "new.toml"
        new.write_text(SITE.format(io=io, port=blocker))
        assert main(["apply", str(new), "--site", str(site), "--timeout", "30",
                     "--json"]) == 1
        res = json.loads(capsys.readouterr().out)
        assert res["healthy"] is False
        assert f"cannot listen on 127.0.0.1:{blocker}" in res["detail"]
        assert res["rolled_back"] is True and res["rollback_healthy"] is True, res
        assert site.read_bytes() == old
        st = _status(tmp_path)
        assert st["config_hash"] == old_hash and st["pid"] == proc.pid
        if io == "process":  # the previous site's I/O process serves again
            _wait(lambda: _serves(tmp_path), timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serves(tmp_path: Path) -> bool:
    """The port of the last listener logged answers a read of the map (the previous site,
    started again, serves its DCIM)."""
    try:
        with connect(_served_port(tmp_path)) as s:
            return read(s, 0, 1) == [mapdef.MAGIC]
    except (AssertionError, OSError):
        return False
