"""SIGHUP reload in-process: a good file takes over without a trip through fail-safe and keeps
latched block state by name; a bad file is refused and the old runtime goes on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from busguard import hookimpl
from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.driver import Driver
from busguard.errors import DriverError
from busguard.image import Quality, Snapshot
from busguard.reload import Reloader
from busguard.service import Service


class Latch(Block):
    """Trips (output 1, latched alarm) when the point reaches ``limit``; stays tripped."""

    type_name = "test_latch"
    params: ClassVar[Mapping[str, Param]] = {
        "point": Param(str, ref="point"),
        "limit": Param(float),
        "output": Param(str),
    }

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.tripped = False

    def inputs(self) -> tuple[str, ...]:
        return (self.p["point"],)

    def outputs(self) -> Mapping[str, float]:
        return {self.p["output"]: 1.0}  # fail-safe: tripped

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        if inputs.value(self.p["point"], 0.0) >= self.p["limit"]:
            self.tripped = True
        alarms = [AlarmCondition("trip", Severity.CRITICAL, "BG-TEST", "tripped", latch=True)] \
            if self.tripped else []
        return BlockResult({self.p["output"]: 1.0 if self.tripped else 0.0}, alarms)

    def state(self) -> dict[str, Any]:
        return {"tripped": self.tripped}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.tripped = bool(state.get("tripped", False))


class Types:
    @hookimpl
    def busguard_register_types(self, registry) -> None:
        registry.add_block(Latch)


SITE = """\
[site]
name = "reload"

[paths]
state_dir = "{state}"
fault_log = "{state}/fault.log"

[[meter]]
name = "m"
driver = "memory"
points = ["a", "b"]
initial = {{ a = 10.0, b = 1.0 }}

[[output]]
name = "shunts"
driver = "memory"
outputs = ["trip.one", "trip.two"]

[[block]]
name = "one"
type = "test_latch"
point = "m.a"
limit = {limit_one}
output = "trip.one"

[[block]]
name = "two"
type = "test_latch"
point = "m.b"
limit = 5.0
output = "trip.two"
"""


def _write(path: Path, limit_one: float, extra: str = "") -> Path:
    path.write_text(SITE.format(state=path.parent / "state", limit_one=limit_one) + extra)
    return path


def _outputs(rt) -> dict[str, float]:
    drv = next(d for d in rt.drivers if d.name == "shunts")
    return dict(drv.values)


def test_good_reload_keeps_latches_and_never_passes_through_failsafe(
        tmp_path: Path, make_runtime, run_scans, fake_clock) -> None:
    site = _write(tmp_path / "site.toml", limit_one=5.0)
    types = Types()
    rt = make_runtime(site, extra=[types], start=True)
    run_scans(rt, 3)
    assert _outputs(rt) == {"trip.one": 1.0, "trip.two": 0.0}  # one tripped on a = 10
    rt.image.write("m.a", 1.0)  # the cause goes, the latch stays
    run_scans(rt, 2)
    old_driver = next(d for d in rt.drivers if d.name == "shunts")
    cycles = rt.engine.cycle

    # new limits: block one would no longer trip on its own, block two unchanged
    _write(site, limit_one=50.0)
    svc = Service({})
    reloader = Reloader(site, rt, extra=[types], service=svc)
    assert reloader.prepare() is True
    reloader._swap()
    new = reloader.current
    assert new is not rt and rt.state == "stopped" and new.state == "running"
    # the old output driver never saw the fail-safe value of trip.two (1.0)
    assert ("trip.two", 1.0) not in old_driver.history
    run_scans(new, 3)
    assert _outputs(new) == {"trip.one": 1.0, "trip.two": 0.0}  # latch carried by name
    assert new.blocks[0].p["limit"] == 50.0
    assert [a.id for a in new.alarms.active()] == ["one:trip"]
    assert new.engine.cycle == cycles + 3  # cycle counter continues
    assert new.image.snapshot().quality[new.image.index["m.a"]] == Quality.GOOD
    assert svc.last_reload["ok"] is True
    reloader.request_stop()
    new.stop()
    assert _outputs(new)["trip.two"] == 1.0  # a real stop does go to fail-safe


def test_bad_reload_is_refused_and_the_old_runtime_goes_on(tmp_path: Path, make_runtime,
                                                           run_scans) -> None:
    site = _write(tmp_path / "site.toml", limit_one=5.0)
    rt = make_runtime(site, extra=[Types()], start=True)
    run_scans(rt, 2)
    _write(site, limit_one=5.0, extra='\n[[block]]\nname = "one"\ntype = "nope"\n')
    svc = Service({})
    reloader = Reloader(site, rt, extra=[Types()], service=svc)
    assert reloader.prepare() is False
    assert reloader.current is rt and rt.state == "running" and not rt.loop.stop_event.is_set()
    assert reloader.refused == 1
    msg = svc.last_reload["message"]
    assert "block[2].name: duplicate name 'one'" in msg and "block[2].type: got 'nope'" in msg
    run_scans(rt, 2)
    assert _outputs(rt)["trip.one"] == 1.0


def test_unchanged_file_only_reopens_the_fault_log(tmp_path: Path, make_runtime) -> None:
    site = _write(tmp_path / "site.toml", limit_one=5.0)
    rt = make_runtime(site, extra=[Types()], start=True)
    reloader = Reloader(site, rt, extra=[Types()])
    assert reloader.prepare() is False
    assert reloader.refused == 0 and reloader.current is rt
    # a new calibration file is a change (drivers re-read calibration on a rebuild)
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "calibration.toml").write_text(
        '[meter."m"]\na = { gain = 1.01, offset = 0.0 }\n')
    assert reloader.prepare() is True


class Exploding(Driver):
    """An output driver whose start fails (a busy port, a missing serial device)."""

    type_name = "test_exploding"
    kind = "output"
    params: ClassVar[Mapping[str, Param]] = {"outputs": Param(list, item=str)}

    def consumes(self) -> tuple[str, ...]:
        return tuple(self.config.params["outputs"])

    def start(self, ctx) -> None:
        raise DriverError("port busy")


class MoreTypes(Types):
    @hookimpl
    def busguard_register_types(self, registry) -> None:
        registry.add_block(Latch)
        registry.add_driver(Exploding)


def test_new_site_that_fails_to_start_falls_back_to_the_old_one(tmp_path: Path, make_runtime,
                                                                 run_scans) -> None:
    site = _write(tmp_path / "site.toml", limit_one=5.0)
    types = MoreTypes()
    rt = make_runtime(site, extra=[types], start=True)
    run_scans(rt, 2)
    text = site.read_text().replace('driver = "memory"\noutputs',
                                    'driver = "test_exploding"\noutputs')
    site.write_text(text)
    svc = Service({})
    reloader = Reloader(site, rt, extra=[types], service=svc)
    assert reloader.prepare() is True
    reloader._swap()
    back = reloader.current
    assert back is not rt and back.state == "running"
    assert back.site.config_hash == rt.site.config_hash  # the previous site runs again
    assert svc.last_reload["ok"] is False and "port busy" in svc.last_reload["message"]
    run_scans(back, 2)
    assert _outputs(back)["trip.one"] == 1.0  # latch carried through both swaps
    back.stop()


def test_a_reload_carries_an_annunciator_and_the_horn_stays_on(
        tmp_path: Path, make_runtime, run_scans) -> None:
    """A site whose relay follows the alarm table (an annunciator the runtime adds after the
    site's blocks) reloads: the horn sounding for an unacknowledged latched alarm keeps
    sounding through the swap."""
    horn = ('\n[[output]]\nname = "horn"\ndriver = "memory"\noutputs = ["relay.horn"]\n'
            'follows = "alarms"\nseverity = "critical"\nunacked_only = true\n')
    site = _write(tmp_path / "site.toml", limit_one=5.0, extra=horn)
    types = Types()
    rt = make_runtime(site, extra=[types], start=True)
    run_scans(rt, 3)
    assert rt.last_result.outputs["relay.horn"] == 1.0  # one:trip, critical, unacknowledged
    _write(site, limit_one=50.0, extra=horn)
    reloader = Reloader(site, rt, extra=[types], service=Service({}))
    assert reloader.prepare() is True
    reloader._swap()
    new = reloader.current
    (res,) = run_scans(new, 1)
    assert res.outputs["relay.horn"] == 1.0 and [a.id for a in new.alarms.active()] == [
        "one:trip"]
    reloader.request_stop()
    new.stop()


def test_every_reload_is_announced_then_ended_for_systemd(tmp_path: Path, make_runtime,
                                                          run_scans, monkeypatch) -> None:
    """systemd's reload protocol over a real notify socket: ``RELOADING=1`` as soon as a
    SIGHUP's reload begins (before the file is checked, which takes a child process and may
    take seconds on a busy unit) and ``READY=1`` when it ends, whatever the outcome:
    unchanged, refused, or swapped (after the new runtime's first scan). Before, a refused or
    unchanged reload sent no RELOADING=1, and a good one sent it only once built."""
    import socket

    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # sdnotify reads os.environ itself

    def reload_messages() -> list[str]:
        out = []
        while True:
            try:
                m = server.recv(4096).decode()
            except BlockingIOError:
                return out
            if m.startswith(("RELOADING=1", "READY=1")):
                out.append(m)

    try:
        svc = Service({"NOTIFY_SOCKET": str(path)})
        site = _write(tmp_path / "site.toml", limit_one=5.0)
        rt = make_runtime(site, extra=[Types(), svc], start=True)
        run_scans(rt, 2)
        assert [m.split("\n")[0] for m in reload_messages()] == ["READY=1"]
        reloader = Reloader(site, rt, extra=[Types(), svc], service=svc)

        assert reloader.prepare() is False  # unchanged
        got = reload_messages()
        assert [m.split("\n")[0] for m in got] == ["RELOADING=1", "READY=1"]
        assert "reload: unchanged" in got[1] and svc.state == "running"

        _write(site, limit_one=5.0, extra='\n[[block]]\nname = "one"\ntype = "nope"\n')
        assert reloader.prepare() is False  # refused
        got = reload_messages()
        assert [m.split("\n")[0] for m in got] == ["RELOADING=1", "READY=1"]
        assert "reload refused" in got[1] and svc.state == "running"

        _write(site, limit_one=50.0)
        assert reloader.prepare() is True  # built: the swap comes
        got = reload_messages()
        assert [m.split("\n")[0] for m in got] == ["RELOADING=1"] and svc.state == "reloading"
        reloader._swap()
        run_scans(reloader.current, 1)
        got = reload_messages()
        assert [m.split("\n")[0] for m in got] == ["READY=1"] and svc.state == "running"
        assert svc.last_reload["ok"] is True
        reloader.request_stop()
        reloader.current.stop()
    finally:
        server.close()
