"""The meter behind the ``modbus_meter`` pytest fixture (defined in :mod:`busguard.testing`, so
plugin authors get it through the ``pytest11`` entry point): a simulated Modbus TCP meter on
127.0.0.1, served by the simulator's own server (:class:`busguard.sim.serve.TcpMeterServer`
over a :class:`~busguard.sim.serve.SimUnit`), so tests read what ``busguard simulate`` and
``make demo`` serve, through the same profile encoding and the same fault knobs.

``modbus_meter(profile="generic-pqm", values=None)`` returns a started :class:`SimMeter`;
every meter made is stopped after the test::

    def test_limit(modbus_meter, make_runtime, ...):
        meter = modbus_meter(values={"current_l1_a": 612.0})
        rt = make_runtime(f'... [[meter]] host = "127.0.0.1" port = {meter.port} ...')
        meter.set(current_l1_a=20.0)          # the next read serves the new value
        meter.faults(drop_pct=100.0)          # the meter goes silent (errno 110 at the driver)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from busguard.modbus.profiles import Profile, load_profile
from busguard.sim.scenarios import NO_FAULTS, CommFaults

START_TIMEOUT_S = 10.0


class SimMeter:
    """One simulated meter: a profile, the values it serves, its fault knobs, its port."""

    def __init__(self, profile: str | Profile = "generic-pqm",
                 values: Mapping[str, float] | None = None, unit_id: int = 1,
                 name: str = "meter") -> None:
        from busguard.sim.serve import SimUnit, TcpMeterServer

        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self._values: Mapping[str, float] = dict(values or {})
        self._faults = NO_FAULTS
        self.unit = SimUnit(name, unit_id, self.profile, self._source)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"sim-meter-{name}")
        self._thread.start()
        self._server = TcpMeterServer(self.unit, "127.0.0.1", 0)
        self._call(self._server.start())
        self.port: int = self._server.port

    def _source(self) -> tuple[Mapping[str, float], CommFaults]:
        return self._values, self._faults

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT_S)

    @property
    def values(self) -> Mapping[str, float]:
        return self._values

    def set(self, values: Mapping[str, float] | None = None, **more: float) -> None:
        """Serve these values from now on (points not named keep theirs)."""
        self._values = {**self._values, **(values or {}), **more}  # a new object: re-encoded

    def faults(self, **knobs: float) -> None:
        """Set the fault knobs (``latency_ms``, ``drop_pct``, ``exception_pct``,
        ``garbage_pct``); no arguments: no faults."""
        self._faults = CommFaults(**knobs) if knobs else NO_FAULTS

    @property
    def requests(self) -> int:
        return self.unit.stats.requests

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()
