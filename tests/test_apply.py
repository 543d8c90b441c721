"""`busguard apply` against a real running `busguard run` subprocess: validate, back up,
replace atomically, reload, health from the status file, roll back, idempotence."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from busguard.cli import main

SITE = """\
[site]
name = "apply-test"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

[service]
realtime = "off"
status_every_s = 0.1

[[meter]]
name = "m1"
driver = "memory"
points = ["current_l1_a"]
initial = {{ current_l1_a = 100.0 }}

[[block]]
name = "hi"
type = "threshold_alarm"
point = "m1.current_l1_a"
high = {high}
"""


def _status(d: Path) -> dict:
    return json.loads((d / "state" / "status.json").read_text())


def _wait(pred, timeout: float = 15.0) -> None:
    ev = threading.Event()
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        ev.wait(0.05)  # polling another process's files


def _ready(d: Path) -> bool:
    try:
        return _status(d).get("ready") is True
    except (OSError, ValueError):
        return False


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(high=500.0))
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(site),
                             "--stats-every", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _ready(tmp_path))
        yield site, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _backups(site: Path) -> list[Path]:
    return sorted(site.parent.glob("site.toml.*.bak"))


def test_apply_good_file_then_again_is_idempotent(running, tmp_path: Path, capsys) -> None:
    site, proc = running
    old = site.read_bytes()
    new = tmp_path / "new.toml"
    new.write_text(SITE.format(high=50.0))
    assert main(["apply", str(new), "--site", str(site), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "ok: the runtime runs config" in out
    assert site.read_bytes() == new.read_bytes()
    [bak] = _backups(site)
    assert bak.read_bytes() == old
    st = _status(tmp_path)
    assert st["config_hash"] == hashlib.sha256(new.read_bytes()).hexdigest()
    assert st["pid"] == proc.pid and st["alarms_active"] == 1  # the new threshold acts
    # the same file again: nothing changes, no second backup, no reload
    reloads = st["last_reload"]["t"]
    assert main(["apply", str(new), "--site", str(site), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["action"] == "unchanged" and res["backup"] is None
    assert len(_backups(site)) == 1
    assert _status(tmp_path)["last_reload"]["t"] == reloads


def test_apply_bad_file_changes_nothing(running, tmp_path: Path, capsys) -> None:
    site, _proc = running
    old = site.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text(SITE.format(high=50.0).replace('point = "m1.current_l1_a"',
                                                  'point = "m1.current_l2_a"'))
    assert main(["apply", str(bad), "--site", str(site)]) == 2
    err = capsys.readouterr().err
    assert "block[0].point: no input point named 'm1.current_l2_a'" in err
    assert site.read_bytes() == old and not _backups(site)
    assert not list(tmp_path.glob(".site.toml.apply-*"))


def test_apply_rolls_back_when_the_runtime_is_not_healthy(running, tmp_path: Path,
                                                          capsys) -> None:
    site, proc = running
    old = site.read_bytes()
    old_hash = _status(tmp_path)["config_hash"]
    new = tmp_path / "new.toml"
    new.write_text(SITE.format(high=60.0))
    proc.send_signal(signal.SIGSTOP)  # a hung runtime: never confirms the new config
    try:
        assert main(["apply", str(new), "--site", str(site), "--timeout", "1.5",
                     "--json"]) == 1
    finally:
        proc.send_signal(signal.SIGCONT)
    res = json.loads(capsys.readouterr().out)
    assert res["rolled_back"] is True and "not healthy within 1.5 s" in res["detail"]
    assert site.read_bytes() == old  # the previous file is back
    assert len(_backups(site)) == 1
    # the runtime, once it runs again, takes the (restored) file: the old config goes on
    _wait(lambda: _status(tmp_path)["last_reload"].get("t", 0) > 0)
    assert _status(tmp_path)["config_hash"] == old_hash
    assert proc.poll() is None


def test_apply_no_reload_and_no_instance(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(high=500.0))
    os.chmod(site, 0o640)
    new = tmp_path / "new.toml"
    new.write_text(SITE.format(high=70.0))
    assert main(["apply", str(new), "--site", str(site), "--no-reload"]) == 0
    assert "not reloaded (--no-reload)" in capsys.readouterr().out
    assert site.read_text() == new.read_text() and len(_backups(site)) == 1
    assert site.stat().st_mode & 0o777 == 0o640  # mode kept
    new.write_text(SITE.format(high=80.0))
    assert main(["apply", str(new), "--site", str(site)]) == 0  # nothing running: replaced
    assert "no running instance found" in capsys.readouterr().out
    assert len(_backups(site)) == 2
