"""The meters behind the ``modbus_meter`` and ``modbus_line`` pytest fixtures (defined in
:mod:`busguard.testing`, so plugin authors get them through the ``pytest11`` entry point):
simulated Modbus meters on 127.0.0.1 (TCP) or on a pty (an RS-485 line, RTU), served by the
simulator's own servers (:class:`busguard.sim.serve.TcpMeterServer` and
:class:`~busguard.sim.serve.RtuLineServer` over :class:`~busguard.sim.serve.SimUnit`), so tests
read what ``busguard simulate`` and ``make demo`` serve, through the same profile encoding and
the same fault knobs. One simulated meter for the simulator, the bench and the tests.

``modbus_meter(profile="generic-pqm", values=None)`` returns a started :class:`SimMeter`;
every meter made is stopped after the test::

    def test_limit(modbus_meter, make_runtime, ...):
        meter = modbus_meter(values={"current_l1_a": 612.0})
        rt = make_runtime(f'... [[meter]] host = "127.0.0.1" port = {meter.port} ...')
        meter.set(current_l1_a=20.0)          # the next read serves the new value
        meter.faults(drop_pct=100.0)          # the meter goes silent (errno 110 at the driver)
        meter.refuse(4, 100, 103)             # exception 0x02 for those input registers

``modbus_line()`` returns a started :class:`SimLine` (``line.path`` is the serial port to put
in ``[[rs485]] port``); ``line.meter(unit_id, profile, values)`` adds a unit to it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from busguard.modbus.profiles import Profile, load_profile
from busguard.sim.scenarios import NO_FAULTS, CommFaults

START_TIMEOUT_S = 10.0
NO_POINTS = Profile(name="registers", file="", points=())  # a device served by raw registers


def distinct_values(profile: str | Profile = "generic-pqm"
                    ) -> tuple[Profile, dict[str, float]]:
    """A profile and one distinct value per point (100, 101, ...): a test that reads them
    all back knows no two points were swapped."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    return prof, {p.name: 100.0 + i for i, p in enumerate(prof.points)}


class _LoopThread:
    """An asyncio loop in a daemon thread: the servers run there, the test thread calls in."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(START_TIMEOUT_S)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class SimDevice:
    """One simulated Modbus unit and its knobs: the values it serves (through its profile),
    raw registers, fault knobs, refusals, and what it saw (requests, writes)."""

    def __init__(self, profile: str | Profile | None = "generic-pqm",
                 values: Mapping[str, float] | None = None, unit_id: int = 1,
                 name: str = "meter") -> None:
        from busguard.sim.serve import SimUnit

        if profile is None:
            profile = NO_POINTS
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self._values: Mapping[str, float] = dict(values or {})
        self._cycle: Iterator[Mapping[str, float]] | None = None
        self._faults = NO_FAULTS
        self.unit = SimUnit(name, unit_id, self.profile, self._source)

    def _source(self) -> tuple[Mapping[str, float], CommFaults]:
        if self._cycle is not None:
            return next(self._cycle), self._faults
        return self._values, self._faults

    @property
    def values(self) -> Mapping[str, float]:
        return self._values

    def set(self, values: Mapping[str, float] | None = None, **more: float) -> None:
        """Serve these values from now on (points not named keep theirs)."""
        self._values = {**self._values, **(values or {}), **more}  # a new object: re-encoded
        self._cycle = None

    def alternate(self, *changes: Mapping[str, float]) -> None:
        """Each request serves the current values with the next of ``changes`` in turn (a
        reading that flickers); :meth:`set` ends it."""
        sets = [{**self._values, **c} for c in changes]
        self._cycle = itertools.cycle(sets)

    def faults(self, **knobs: float) -> None:
        """Set the fault knobs (``latency_ms``, ``drop_pct``, ``exception_pct``,
        ``garbage_pct``); no arguments: no faults."""
        self._faults = CommFaults(**knobs) if knobs else NO_FAULTS

    def refuse(self, function: int, first: int, last: int, code: int = 0x02) -> None:
        """Answer exception ``code`` to requests of function code ``function`` that touch
        registers ``first..last`` (a meter without that block)."""
        self.unit.refusals.append((function, first, last, code))

    def accept(self) -> None:
        """Drop every :meth:`refuse`."""
        self.unit.refusals.clear()

    def fill_gaps(self, word: int | None = 0) -> None:
        """Registers the profile does not map read as ``word`` (None: exception 0x02, the
        default, as the simulator's meters answer; many real meters read them as 0)."""
        self.unit.unmapped_word = word

    def set_registers(self, address: int, words: Sequence[int]) -> None:
        """Raw holding registers, served as they are and writable by a client (a BMS's set
        points, a module's own encoding); they override the profile's encoding."""
        for k, word in enumerate(words):
            self.unit.writable[address + k] = int(word) & 0xFFFF

    def register(self, address: int) -> int | None:
        """A raw holding register's value now (None: not set)."""
        return self.unit.writable.get(address)

    def ignore_writes(self, on: bool = True) -> None:
        """Accept writes but keep the old values (a device that overrides its set point)."""
        self.unit.ignore_writes = on

    @property
    def writes(self) -> int:
        return self.unit.writes

    @property
    def recent_writes(self) -> list[tuple[int, tuple[int, ...]]]:
        """(address, words) of the last writes, oldest first (at most 64)."""
        return list(self.unit.recent_writes)

    @property
    def requests(self) -> int:
        return self.unit.stats.requests

    @property
    def answered(self) -> int:
        return self.unit.stats.answered

    @property
    def max_in_flight(self) -> int:
        """The most requests this unit was answering at once."""
        return self.unit.max_in_flight


class SimMeter(SimDevice):
    """One simulated Modbus TCP meter on 127.0.0.1: a :class:`SimDevice` and its server."""

    def __init__(self, profile: str | Profile | None = "generic-pqm",
                 values: Mapping[str, float] | None = None, unit_id: int = 1,
                 name: str = "meter") -> None:
        super().__init__(profile, values, unit_id, name)
        self._thread = _LoopThread(f"sim-meter-{name}")
        self._servers: list[Any] = []
        self.port: int = self.add_port()

    def add_port(self, port: int = 0) -> int:
        """Serve this meter on one more port too (0: an ephemeral one); returns the port."""
        from busguard.sim.serve import TcpMeterServer

        server = TcpMeterServer(self.unit, "127.0.0.1", port)
        self._thread.call(server.start())
        self._servers.append(server)
        return server.port

    def drop_connections(self) -> None:
        """Close every open connection; the meter goes on listening (a connection reset)."""
        async def drop() -> None:
            for server in self._servers:
                listener = server.server
                if listener is not None:
                    for conn in list(listener.active_connections.values()):
                        conn.close()
        self._thread.call(drop())

    def stop_serving(self) -> None:
        """Stop listening and close every connection (the meter goes away: refused)."""
        for server in self._servers:
            self._thread.call(server.stop())

    def serve_again(self) -> None:
        """Listen again on the same ports, with the same unit (the meter is back)."""
        for server in self._servers:
            self._thread.call(server.start())

    def stop(self) -> None:
        if self._thread.loop.is_closed():
            return
        try:
            self.stop_serving()
        finally:
            self._thread.close()


class SimLine:
    """One simulated RS-485 line: an RTU slave on a pty, at ``path``, answering for every
    unit added with :meth:`meter` (one request at a time, as on the wire)."""

    def __init__(self, path: str | Path, baudrate: int = 115200, name: str = "line") -> None:
        from busguard.sim.serve import RtuLineServer

        self.path = str(path)
        self._thread = _LoopThread(f"sim-line-{name}")
        self._server = RtuLineServer(name, Path(path), {}, baudrate)
        self._thread.call(self._server.start())

    def meter(self, unit_id: int, profile: str | Profile | None = "generic-pqm",
              values: Mapping[str, float] | None = None) -> SimDevice:
        """A unit on this line (``profile=None``: raw registers only, see
        :meth:`SimDevice.set_registers`)."""
        device = SimDevice(profile, values, unit_id, name=f"unit{unit_id}")
        self._server.context.units[unit_id] = device.unit
        return device

    @property
    def crc_errors_in(self) -> int:
        """Requests the line could not decode."""
        return self._server.crc_errors_in

    def stop(self) -> None:
        if self._thread.loop.is_closed():
            return
        try:
            self._thread.call(self._server.stop())
        finally:
            self._thread.close()
