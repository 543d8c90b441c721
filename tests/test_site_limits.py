"""Huge and deep site files (issue 21): a size cap, nesting the parser cannot take turned into
configuration errors naming the file (exit 2, never a traceback), parsing judged in a child
process on reload, and the reload status saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from busguard.config.precheck import precheck
from busguard.config.site import MAX_SITE_BYTES, MAX_SITE_DEPTH, read_site_toml
from busguard.errors import ConfigError
from test_apply import _ready, _status, _wait

GOOD = """\
[site]
name = "limits"

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
"""


def deep_array(levels: int) -> str:
    return GOOD + "\n[modbus_server]\nallow = " + "[" * levels + "]" * levels + "\n"


def deep_header(parts: int) -> str:
    return GOOD + "\n[" + ".".join(["a"] * parts) + "]\nx = 1\n"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "busguard.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text", [deep_array(600), deep_array(5000),
                                  GOOD + "\nx = " + "{a = " * 600 + "1" + "}" * 600 + "\n"],
                         ids=["array-600", "array-5000", "inline-table-600"])
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_file_nested_too_deep_is_a_configuration_error(tmp_path: Path, text: str,
                                                         command: str) -> None:
    """It was a RecursionError traceback and exit 1, for `check` and for `run`."""
    site = tmp_path / "site.toml"
    site.write_text(text)
    args = [command, str(site)] + (["--cycles", "1"] if command == "run" else [])
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{site}: (syntax): nested too deeply to parse (RecursionError); at most " \
           f"{MAX_SITE_DEPTH} levels of tables and arrays" in done.stderr


def test_a_deep_dotted_header_is_refused_with_its_depth(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(deep_header(200))
    with pytest.raises(ConfigError) as err:
        read_site_toml(site)
    [p] = err.value.problems
    assert p.file == str(site) and p.key.startswith("a.a.a.")
    assert p.message == f"nested 33 levels deep; at most {MAX_SITE_DEPTH} levels of tables " \
                        f"and arrays"


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    filler = "".join(f"# padding line {i:08d} of a site file that is far too large\n"
                     for i in range(MAX_SITE_BYTES // 60 + 10))
    site.write_text(GOOD + filler)
    size = site.stat().st_size
    assert size > MAX_SITE_BYTES
    done = cli("check", str(site), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{site}: (file): {size} bytes; a site file may be at most 1048576 bytes " \
           f"(1 MiB)" in done.stderr
    with pytest.raises(ConfigError, match="at most 1048576 bytes"):
        precheck(site)  # the reload's child says the same


def test_precheck_passes_a_good_file_and_names_the_problem_of_a_bad_one(tmp_path: Path):
    site = tmp_path / "site.toml"
    site.write_text(GOOD)
    precheck(site)
    site.write_text(deep_array(3000))
    with pytest.raises(ConfigError) as err:
        precheck(site)
    assert str(err.value).startswith(f"{site}: (syntax): nested too deeply to parse")


@pytest.fixture
def running(tmp_path: Path):
    site = tmp_path / "site.toml"
    site.write_text(GOOD)
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(site),
                             "--stats-every", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _ready(tmp_path), timeout=30)
        yield site, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reload_result(tmp_path: Path, proc: subprocess.Popen, after: float) -> dict:
    proc.send_signal(signal.SIGHUP)
    _wait(lambda: _status(tmp_path)["last_reload"].get("t", 0) > after, timeout=60)
    return _status(tmp_path)["last_reload"]


def test_sighup_with_a_deep_file_reports_why_in_the_status(running, tmp_path: Path) -> None:
    """It was "reload failed unexpectedly" in the log and status.json kept the previous
    reload's message."""
    site, proc = running
    old_hash = _status(tmp_path)["config_hash"]
    site.write_text(GOOD.replace('name = "limits"', 'name = "limits-2"'))
    first = _reload_result(tmp_path, proc, 0)
    assert first["ok"] is True and first["message"] == "reloaded"
    site.write_text(deep_array(2000))
    last = _reload_result(tmp_path, proc, first["t"])
    assert last["ok"] is False
    assert last["message"].startswith(f"{site}: (syntax): nested too deeply to parse")
    st = _status(tmp_path)
    assert st["config_hash"] != old_hash and st["state"] == "running"  # the second site
    assert proc.poll() is None


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.reliability
def test_sighup_with_a_50_mb_file_is_refused_without_parsing_it(running, tmp_path: Path):
    """The issue's 5M-key 50 MB file was parsed in the scan process (53-55 missed scans,
    237-461 MB left behind). Now the size cap refuses it before a byte is parsed; the
    memory of the running process does not grow."""
    site, proc = running
    before_kb = _rss_kb(proc.pid)
    with site.open("w") as f:
        f.write(GOOD + "[modbus_server]\n")
        for i in range(0, 5_000_000, 10_000):
            f.write("".join(f"k{j} = {j}\n" for j in range(i, i + 10_000)))
    size = site.stat().st_size
    assert size > 50_000_000
    last = _reload_result(tmp_path, proc, 0)
    assert last["ok"] is False
    assert last["message"] == (f"{site}: (file): {size} bytes; a site file may be at most "
                               f"1048576 bytes (1 MiB)")
    assert _rss_kb(proc.pid) - before_kb < 20_000
    assert json.loads((tmp_path / "state" / "status.json").read_text())["state"] == "running"


@pytest.mark.reliability
def test_sighup_with_1_mb_of_junk_keys_is_judged_outside_the_running_process(
        running, tmp_path: Path) -> None:
    """Under the cap, but 70,000 unknown options: judged by the child's full check, so the
    running process neither parses it nor holds 70,000 problems (before: +47 MB RSS and
    2.7 s of its CPU, beside the scan)."""
    site, proc = running
    before_kb = _rss_kb(proc.pid)
    site.write_text(GOOD + "[modbus_server]\n" + "".join(f"k{i} = {i}\n" for i in range(70_000)))
    assert site.stat().st_size <= MAX_SITE_BYTES
    last = _reload_result(tmp_path, proc, 0)
    assert last["ok"] is False
    lines = last["message"].splitlines()
    assert lines[0] == (f"{site}: modbus_server.k0: unknown option 'k0'; valid options: "
                        f"allow, host, idle_timeout_s, max_connections, "
                        f"max_connections_per_client, max_requests_per_s, port, priority, "
                        f"refresh_ms, reserved_connections, tls, write_allow")
    assert lines[-1] == f"{site}: (file): and 69950 more problems (`busguard check` lists " \
                        f"them all)"
    assert _rss_kb(proc.pid) - before_kb < 20_000


def test_a_memory_error_of_the_parser_is_a_configuration_error(tmp_path: Path, monkeypatch):
    """What the parser raises when the memory limit of the reload's child process (1 GiB)
    is reached, raised here by the parser on a real file."""
    import busguard.config.document as site_mod  # where the site file is parsed

    site = tmp_path / "site.toml"
    site.write_text(GOOD)

    def exhausted(_text: str) -> dict:
        raise MemoryError

    monkeypatch.setattr(site_mod.tomllib, "loads", exhausted)
    with pytest.raises(ConfigError) as err:
        read_site_toml(site)
    assert str(err.value) == f"{site}: (file): too large to parse in the memory available " \
                             f"(MemoryError)"
