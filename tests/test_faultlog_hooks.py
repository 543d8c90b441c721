"""Every hook of busguard.hookspecs, exercised through a real runtime by an observer plugin;
and the meta-test (datasette's idea) that every hook has a test named ``test_hook_<name>``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import ClassVar

from busguard import hookimpl, hookspecs
from busguard.block import Block, BlockResult
from busguard.faultlog import parse_line

SITE = """
[site]
name = "hooks"
[scan]
period_ms = 100
[paths]
fault_log = "fault.log"
state_dir = "state-hooks"
[[probe]]
name = "bb1"
driver = "memory"
poll_ms = 100
points = ["temp_c"]
[[block]]
name = "th"
type = "thermal_interlock"
probes = ["bb1"]
[[block]]
name = "boom"
type = "explodes_at_60"
"""


class ExplodesAt60(Block):
    """A block that raises when the probe reads 60 C or more: exercises busguard_fault."""

    type_name = "explodes_at_60"
    params: ClassVar[dict] = {}

    def inputs(self) -> tuple[str, ...]:
        return ("bb1.temp_c",)

    def outputs(self) -> dict[str, float]:
        return {"boom.out": 0.0}

    def scan(self, inputs, now) -> BlockResult:
        if inputs.value("bb1.temp_c") >= 60:
            raise RuntimeError("probe too warm for this test block")
        return BlockResult({"boom.out": 1.0})


class Observer:
    """A plugin object that records every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def busguard_register_types(self, registry) -> None:
        registry.add_block(ExplodesAt60)
        self.calls.append(("register_types", registry))

    @hookimpl
    def busguard_startup(self, runtime) -> None:
        self.calls.append(("startup", runtime.state))

    @hookimpl
    def busguard_scan_complete(self, runtime, result) -> None:
        self.calls.append(("scan_complete", result.cycle))

    @hookimpl
    def busguard_alarm_raised(self, runtime, edge) -> None:
        self.calls.append(("alarm_raised", (edge.alarm.id, edge.alarm.condition.code)))

    @hookimpl
    def busguard_alarm_cleared(self, runtime, edge) -> None:
        self.calls.append(("alarm_cleared", (edge.alarm.id, edge.alarm.condition.code)))

    @hookimpl
    def busguard_fault(self, runtime, source, error, details) -> None:
        self.calls.append(("fault", (source, str(error), details)))

    @hookimpl
    def busguard_command_written(self, runtime, point, value, client, t_utc) -> None:
        self.calls.append(("command_written", (point, value, client)))

    @hookimpl
    def busguard_shutdown(self, runtime) -> None:
        self.calls.append(("shutdown", runtime.state))

    def of(self, name: str) -> list[object]:
        return [arg for n, arg in self.calls if n == name]


def run_site(make_runtime, run_scans, temps):
    obs = Observer()
    rt = make_runtime(SITE, extra=[obs])
    rt.start()
    for t in temps:
        rt.image.write("bb1.temp_c", t)
        run_scans(rt, 1)
    rt.stop()
    log = (Path(rt.site.file).parent / "fault.log").read_text().splitlines()
    return obs, log


def test_hook_register_types(make_runtime, run_scans):
    obs, _log = run_site(make_runtime, run_scans, [20.0])
    (registry,) = obs.of("register_types")  # called once, with the runtime's registry
    assert registry.blocks["explodes_at_60"] is ExplodesAt60
    assert "shunt_trip" in registry.blocks  # the built-ins registered into the same one


def test_hook_startup(make_runtime, run_scans):
    obs, _log = run_site(make_runtime, run_scans, [20.0])
    assert obs.of("startup") == ["built"]
    assert obs.calls.index(("startup", "built")) < obs.calls.index(("scan_complete", 1))


def test_hook_scan_complete(make_runtime, run_scans):
    obs, _log = run_site(make_runtime, run_scans, [20.0, 21.0, 22.0])
    assert obs.of("scan_complete") == [1, 2, 3]


def test_hook_alarm_raised(make_runtime, run_scans):
    obs, log = run_site(make_runtime, run_scans, [20.0, 71.0, 71.5, 72.0])
    assert ("th:warn", "BG-TEMP-WARN") in obs.of("alarm_raised")
    assert obs.of("alarm_raised").count(("th:warn", "BG-TEMP-WARN")) == 1
    assert sum(" raised code=BG-TEMP-WARN " in ln for ln in log) == 1


def test_hook_alarm_cleared(make_runtime, run_scans):
    obs, log = run_site(make_runtime, run_scans, [20.0, 71.0, 55.0, 50.0])
    assert obs.of("alarm_cleared") == [("th:warn", "BG-TEMP-WARN")]
    assert sum(" cleared code=BG-TEMP-WARN " in ln for ln in log) == 1


def test_hook_fault(make_runtime, run_scans):
    obs, log = run_site(make_runtime, run_scans, [20.0, 61.0, 62.0])
    (fault,) = obs.of("fault")
    source, error, details = fault
    assert source == "boom" and "too warm" in error and details["forced"] == {"boom.out": 0.0}
    assert ("boom:block-fault", "BG-BLOCK-FAULT") in obs.of("alarm_raised")
    (line,) = [ln for ln in log if " fault code=BG-FAULT " in ln]
    assert "device=boom" in line and "RuntimeError: probe too warm" in line


def test_hook_shutdown(make_runtime, run_scans):
    obs, _log = run_site(make_runtime, run_scans, [20.0])
    assert obs.of("shutdown") == ["stopping"]
    assert obs.calls[-1][0] == "shutdown"


def hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
            if n.startswith("busguard_")]


def test_every_hook_has_a_test():
    tests = "\n".join(p.read_text(encoding="utf-8")
                      for p in Path(__file__).parent.glob("test_*.py"))
    names = hook_names()
    assert len(names) >= 7
    missing = [n for n in names
               if not re.search(rf"^def test_hook_{n.removeprefix('busguard_')}\b", tests,
                                re.MULTILINE)]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_hook_command_written(make_runtime, run_scans):
    """A DCIM's write to a command point, over a real Modbus TCP connection from a
    write-allowed address: the observer hears who wrote what, and the fault log keeps the
    audit line (who and from where) before the scan acts on it."""
    from test_northbound_helpers import connect, site_text, write

    obs = Observer()
    rt = make_runtime(site_text(), extra=[obs], start=True)
    pub = rt.publishers[0]
    run_scans(rt, 1)
    ack = next(c for c in pub.map.commands if c.name == "cmd.ack_alarms")
    with connect(pub.server.port(), "127.0.0.2") as sock:
        assert write(sock, ack.address + 2, [0, 7]) is None
    assert obs.of("command_written") == [("cmd.ack_alarms", 7.0, "127.0.0.2")]
    run_scans(rt, 1)
    rt.stop()
    log = (Path(rt.site.file).parent / "var/log/power/distribution_fault.log").read_text()
    (line,) = [ln for ln in log.splitlines() if " command " in ln]
    assert " info command code=BG-CMD device=cmd alarm=cmd.ack_alarms " in line
    assert 'msg="cmd.ack_alarms = 7 written by 127.0.0.2"' in line
    assert parse_line(line)["values"]["client"] == "127.0.0.2"
