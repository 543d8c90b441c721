"""Pytest fixtures for busguard and for plugin authors (loaded through the ``pytest11`` entry
point, so any project that installs busguard gets them).

- ``fake_clock``: a :class:`busguard.clock.FakeClock`.
- ``site_file(text)``: writes a site.toml into the test's tmp folder and returns its path.
- ``make_runtime(text_or_path, extra=())``: a built (not started) :class:`Runtime` on the fake
  clock; ``extra`` registers plugin objects directly. Each made runtime starts fresh: retained
  state (``{state_dir}/retained.json``) is neither restored nor saved unless
  ``retained=True`` (tests of restarts).
- ``run_scans(rt, n, between=None)``: runs ``n`` scans on the fake clock (no sleeping);
  ``between(rt, i)`` runs before scan ``i`` to drive inputs.
- ``w1_tree``, ``iio_tree`` and ``mock_gpio``: a 1-Wire file tree, an IIO file tree and
  mock GPIO lines in the tmp folder (see :mod:`busguard.w1.testing`,
  :mod:`busguard.iio.testing` and :mod:`busguard.gpio.testing`).
- ``modbus_meter(profile, values)``: a simulated Modbus TCP meter on 127.0.0.1, the
  simulator's own server and profile encoding, with its fault knobs
  (:mod:`busguard.sim.testing`); ``modbus_line()``: a simulated RS-485 line (RTU on a pty)
  to which ``line.meter(unit_id, profile, values)`` adds units.
- ``wait_until(pred, timeout, what)`` and ``point(rt, name)``: for tests whose drivers talk
  to real sockets or ptys (bounded waits, never a bare sleep).
- ``running(site)``: a runtime on the real clock scanning in a thread for the ``with`` block
  (publishers, the I/O process, real servers), stopped after it; ``io_process(text)`` puts a
  site's text in ``[scan] io = "process"``.
Tests never sleep to wait for the scan: they advance the fake clock.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from busguard.clock import FakeClock
from busguard.gpio.testing import mock_gpio  # noqa: F401  (fixture, re-exported)
from busguard.iio.testing import iio_tree  # noqa: F401  (fixture, re-exported)
from busguard.retained import PLUGIN_NAME as RETAINED_PLUGIN
from busguard.runtime import Runtime
from busguard.scan import CycleResult

if TYPE_CHECKING:
    from busguard.modbus.profiles import Profile
    from busguard.sim.testing import SimLine, SimMeter
from busguard.w1.testing import w1_tree  # noqa: F401  (fixture, re-exported)

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 8.0, what: str = "condition") -> T:
    """Poll ``pred`` until it is true and return what it returned; fails the test after
    ``timeout`` s (for waits on real sockets and threads; scans use the fake clock)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def point(rt: Runtime, name: str) -> tuple[float, int]:
    """(value, quality) of a point in a runtime's live input image."""
    i = rt.image.index[name]
    return rt.image.values[i], rt.image.quality[i]


def run_scans(rt: Runtime, n: int,
              between: Callable[[Runtime, int], None] | None = None) -> list[CycleResult]:
    """Run ``n`` scan cycles of a runtime on its (fake) clock; returns each cycle's result.

    Successive calls continue on the same deadline grid, so tests can interleave input
    changes and scans.
    """
    loop = rt.loop
    if not loop.begun:
        loop.begin()
    results: list[CycleResult] = []
    for i in range(n):
        if between is not None:
            between(rt, i)
        loop.step_once()
        assert rt.last_result is not None
        results.append(rt.last_result)
    return results


def io_process(text: str) -> str:
    """A site's text with ``[scan] io = "process"`` (added to its ``[scan]`` table, or a new
    one at the end)."""
    if re.search(r"^\[scan\]\s*$", text, re.MULTILINE):
        return re.sub(r"^\[scan\]\s*$", '[scan]\nio = "process"', text, count=1,
                      flags=re.MULTILINE)
    return text.rstrip("\n") + '\n\n[scan]\nio = "process"\n'


@contextlib.contextmanager
def running(site: str | Path, extra: Iterable[object] = ()) -> Iterator[Runtime]:
    """The runtime of ``site`` started on the real clock and scanning in a thread for the
    ``with`` block; then stopped as ``busguard run`` stops it (the scan ends, outputs go to
    fail-safe, publishers and the I/O process close)."""
    rt = Runtime.from_file(Path(site), extra=extra)
    rt.start()
    scan = threading.Thread(target=rt.run, name="busguard-test-scan", daemon=True)
    scan.start()
    try:
        yield rt
    finally:
        rt.request_stop()
        scan.join(10)
        rt.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def site_file(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1_000_000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"site{next(counter)}.toml")
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_runtime(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(site: str | Path, extra: Iterable[object] = (), start: bool = False,
             retained: bool = False) -> Runtime:
        path = Path(site) if isinstance(site, Path) else tmp_path / f"rt{len(made)}.toml"
        if not isinstance(site, Path):
            path.write_text(site, encoding="utf-8")
        rt = Runtime.from_file(path, clock=fake_clock, extra=extra)
        if not retained:
            rt.pm.set_blocked(RETAINED_PLUGIN)
        made.append(rt)
        if start:
            rt.start()
        return rt

    yield make
    for rt in made:
        if rt.state in ("running", "stopping"):
            rt.stop()


@pytest.fixture(name="run_scans")
def run_scans_fixture() -> Callable[..., list[CycleResult]]:
    return run_scans


@pytest.fixture
def modbus_meter() -> Iterator[Callable[..., SimMeter]]:
    """``modbus_meter(profile="generic-pqm", values=None, unit_id=1)``: a started simulated
    Modbus TCP meter (:class:`busguard.sim.testing.SimMeter`), stopped after the test. The
    simulator is imported only when a test asks for one (a runtime-only install has none)."""
    made: list[SimMeter] = []

    def make(profile: str | Profile | None = "generic-pqm",
             values: Mapping[str, float] | None = None, unit_id: int = 1) -> SimMeter:
        from busguard.sim.testing import SimMeter

        meter = SimMeter(profile, values, unit_id, name=f"meter{len(made)}")
        made.append(meter)
        return meter

    yield make
    for m in made:
        m.stop()


@pytest.fixture
def modbus_line(tmp_path: Path) -> Iterator[Callable[..., SimLine]]:
    """``modbus_line(baudrate=115200)``: a started simulated RS-485 line
    (:class:`busguard.sim.testing.SimLine`; its ``path`` goes in ``[[rs485]] port``), stopped
    after the test; ``line.meter(unit_id, profile, values)`` adds a unit."""
    made: list[SimLine] = []

    def make(baudrate: int = 115200) -> SimLine:
        from busguard.sim.testing import SimLine

        line = SimLine(tmp_path / f"ttySIM{len(made)}", baudrate, name=f"line{len(made)}")
        made.append(line)
        return line

    yield make
    for line in made:
        line.stop()
