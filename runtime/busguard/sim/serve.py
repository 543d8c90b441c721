"""Serving simulated meters over Modbus: the simulator's only module that uses pymodbus.

- :class:`TcpMeterServer`: one pymodbus ``ModbusTcpServer`` per ``modbus_tcp`` meter.
- :class:`RtuLineServer`: one RTU slave per RS-485 line, on a pty pair (``os.openpty``), with a
  symlink at the line's port path so the runtime opens it like a real ``/dev/ttyUSB0``; it
  answers every unit id on that line, one request at a time, after the time the bytes would
  take on the wire at the line's baud rate. It uses pymodbus's RTU framer and request PDUs.

pymodbus 3.12+ copies the datastore it is handed, so values are not pushed into a datastore:
:class:`_SimContext` subclasses ``ModbusServerContext`` and answers every read from the
:class:`SimUnit`, which encodes the model's current values with the meter's profile
(:meth:`busguard.modbus.profiles.PointDef.encode`). Reads of addresses the profile does not
map get exception 0x02 (illegal data address), as a real meter would.

Fault knobs (per unit, from the model at each request): latency, drop (no reply at all),
exception 0x02 on mapped addresses, garbage frames (a corrupted reply: a CRC error on RTU,
random bytes on TCP). Tests (:mod:`busguard.sim.testing`) add deterministic ones on the same
unit: :attr:`SimUnit.refusals` (an exception code for an address range, as a meter without
that block answers) and :attr:`SimUnit.ignore_writes` (a device that keeps its own value).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import struct
import tty
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from busguard.hiddenimport import hidden

with hidden("aiohttp"):  # pymodbus.server without its simulator's web page: see there
    from pymodbus.constants import ExcCodes
    from pymodbus.datastore import ModbusServerContext
    from pymodbus.exceptions import NoSuchIdException
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU, ExceptionResponse
    from pymodbus.server import ModbusTcpServer

from busguard.modbus.codec import quadrant_of
from busguard.modbus.profiles import Profile
from busguard.sim.scenarios import NO_FAULTS, CommFaults
from busguard.stats import Counts

log = logging.getLogger("busguard.sim.serve")

FC_TABLE = {3: "holding", 4: "input"}
ValuesSource = Callable[[], tuple[Mapping[str, float], CommFaults]]


@dataclass
class UnitStats(Counts):
    """What one simulated meter did with the requests it got."""

    requests: int = 0
    answered: int = 0
    dropped: int = 0
    exceptions: int = 0
    garbage: int = 0


def pf_quadrant(name: str, values: Mapping[str, float]) -> int:
    """The quadrant a four-quadrant PF register of point ``name`` encodes: the total's from
    ``power_factor_quadrant``, a phase's from the signs of its P and Q (0: not known)."""
    if name == "power_factor":
        return int(values.get("power_factor_quadrant", 0.0))
    if name.startswith("power_factor_l"):
        ph = name[len("power_factor_l"):]
        return quadrant_of(values.get(f"power_l{ph}_kw", math.nan),
                           values.get(f"reactive_power_l{ph}_kvar", math.nan))
    return 0


class SimUnit:
    """One simulated Modbus unit: a profile, a source of values and faults, counters."""

    def __init__(self, name: str, unit_id: int, profile: Profile, source: ValuesSource,
                 seed: int = 1) -> None:
        self.name = name
        self.unit_id = unit_id
        self.profile = profile
        self.source = source
        self.stats = UnitStats()
        self.rng = random.Random(f"{seed}/{name}")  # fault decisions: reproducible per seed
        self._regs_for: object = None
        self._regs: dict[tuple[str, int], int] = {}
        self.writable: dict[int, int] = {}  # holding registers a client may write (a BMS)
        self.writes = 0
        self.recent_writes: deque[tuple[int, tuple[int, ...]]] = deque(maxlen=64)
        self.ignore_writes = False  # accept a write, keep the old value (a BMS that overrides)
        # (function code, first, last, exception code): a request touching those registers
        # gets that exception, as a meter answers for a block it does not have
        self.refusals: list[tuple[int, int, int, int]] = []
        self.in_flight = self.max_in_flight = 0  # requests being answered at once
        # what a register the profile does not map reads as: None, exception 0x02 (as the
        # simulator's meters answer); a word, that word (meters that fill their gaps with 0)
        self.unmapped_word: int | None = None

    def registers(self, values: Mapping[str, float]) -> dict[tuple[str, int], int]:
        regs: dict[tuple[str, int], int] = {}
        for p in self.profile.points:
            # a quantity the model does not know (a site's own profile) still reads, as 0:
            # every mapped register answers, as on the real meter
            v = values.get(p.name, 0.0)
            try:
                words = p.encode(v, pf_quadrant(p.name, values)) if p.encoding else \
                    p.encode(v)
            except (OverflowError, ValueError, struct.error):  # out of the type's range
                words = p.encode(0.0)
            for k, word in enumerate(words):
                regs[(p.function, p.address + k)] = word
        return regs

    def decide(self, faults: CommFaults) -> str:
        """What happens to this request: 'ok', 'drop', 'exception' or 'garbage'."""
        if not faults.any:
            return "ok"
        r = self.rng.random() * 100.0
        if r < faults.drop_pct:
            return "drop"
        r -= faults.drop_pct
        if r < faults.exception_pct:
            return "exception"
        r -= faults.exception_pct
        return "garbage" if r < faults.garbage_pct else "ok"

    def refused(self, func_code: int, address: int, count: int) -> ExcCodes | None:
        """The exception code :attr:`refusals` gives this request, if any."""
        last = address + max(count, 1) - 1
        for fc, lo, hi, code in self.refusals:
            if fc == func_code and address <= hi and last >= lo:
                return ExcCodes(code)
        return None

    def read(self, func_code: int, address: int, count: int,
             values: Mapping[str, float] | None = None) -> list[int] | ExcCodes:
        """The registers of one read, from the model's values now (or ``values``), or
        exception 0x02."""
        table = FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        refused = self.refused(func_code, address, count)
        if refused is not None:
            return refused
        if values is None:
            values, _faults = self.source()
        if values is not self._regs_for:  # the source caches values per tick: encode once
            self._regs, self._regs_for = self.registers(values), values
        regs = self._regs
        store = self.writable if table == "holding" else {}
        out = []
        for a in range(address, address + count):
            word = store.get(a, regs.get((table, a), self.unmapped_word))
            if word is None:
                return ExcCodes.ILLEGAL_ADDRESS
            out.append(word)
        return out

    def write(self, func_code: int, address: int, values: Sequence[int]) -> ExcCodes | None:
        """A write of holding registers (FC 6 or 16): only to the writable ones."""
        if func_code not in (6, 16, 23):
            return ExcCodes.ILLEGAL_FUNCTION
        refused = self.refused(func_code, address, len(values))
        if refused is not None:
            return refused
        if not values or any(a not in self.writable for a in
                             range(address, address + len(values))):
            return ExcCodes.ILLEGAL_ADDRESS
        if not self.ignore_writes:
            for k, word in enumerate(values):
                self.writable[address + k] = int(word) & 0xFFFF
        self.writes += 1
        self.recent_writes.append((address, tuple(int(w) & 0xFFFF for w in values)))
        return None

    async def handle(self, func_code: int, address: int, count: int
                     ) -> tuple[str, list[int] | ExcCodes]:
        """Apply the fault knobs to one read: (decision, registers or exception code)."""
        values, faults = self.source()  # once: a source may change per request
        decision = await self._fault(faults)
        if decision == "drop":
            return decision, ExcCodes.GATEWAY_NO_RESPONSE
        if decision == "exception":
            self.stats.exceptions += 1
            return decision, ExcCodes.ILLEGAL_ADDRESS
        res = self.read(func_code, address, count, values)
        if isinstance(res, ExcCodes):
            self.stats.exceptions += 1
        elif decision == "garbage":
            self.stats.garbage += 1
        else:
            self.stats.answered += 1
        return decision, res

    async def handle_write(self, func_code: int, address: int, values: Sequence[int]
                           ) -> tuple[str, ExcCodes | None]:
        """Apply the latency and drop knobs to one write, then :meth:`write`."""
        _values, faults = self.source()
        decision = await self._fault(faults)
        if decision == "drop":
            return decision, ExcCodes.GATEWAY_NO_RESPONSE
        res = self.write(func_code, address, values)
        if res is None:
            self.stats.answered += 1
        else:
            self.stats.exceptions += 1
        return decision, res

    async def _fault(self, faults: CommFaults) -> str:
        """Count the request, wait its latency, decide its fate (see :meth:`decide`)."""
        self.stats.requests += 1
        decision = self.decide(faults)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000.0)
        finally:
            self.in_flight -= 1
        if decision == "drop":
            self.stats.dropped += 1
        return decision


class _SimContext(ModbusServerContext):
    """A server context whose reads come from :class:`SimUnit` objects (no datastore copy).

    ``any_id``: a TCP meter answers whatever unit id it is asked as (most do).
    """

    def __init__(self, units: Mapping[int, SimUnit], any_id: bool = False) -> None:
        # Deliberately not calling super().__init__: no datastore, no deprecation warning.
        # pymodbus's base server uses a ModbusServerContext as is when old_simulator is set.
        self.units = dict(units)
        self.any_id = any_id
        self.old_simulator = True
        self.simdevices = []
        self.garbage_next = False

    def device_ids(self) -> list[int]:
        return list(self.units)

    def unit(self, device_id: int) -> SimUnit:
        if device_id in self.units:
            return self.units[device_id]
        if self.any_id and self.units:
            return next(iter(self.units.values()))
        raise NoSuchIdException(f"no unit {device_id}")

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        unit = self.unit(device_id)
        decision, res = await unit.handle(func_code, address, count)
        if decision == "drop":  # with ignore_missing_devices the server sends nothing
            raise NoSuchIdException(f"unit {device_id}: reply dropped (fault knob)")
        self.garbage_next = decision == "garbage"
        return res

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int]) -> ExcCodes | None:
        # meters are read-only (0x02); a simulated BMS takes its set point registers
        decision, res = await self.unit(device_id).handle_write(func_code, address, values)
        if decision == "drop":
            raise NoSuchIdException(f"unit {device_id}: reply dropped (fault knob)")
        return res


class TcpMeterServer:
    """A meter on ``host:port`` (port 0: an ephemeral port, see :attr:`port`)."""

    def __init__(self, unit: SimUnit, host: str, port: int) -> None:
        self.unit = unit
        self.host = host
        self.port = port
        self.context = _SimContext({unit.unit_id: unit}, any_id=True)
        self.server: ModbusTcpServer | None = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending and self.context.garbage_next:
            self.context.garbage_next = False
            return bytes(self.unit.rng.getrandbits(8) for _ in data)
        return data

    async def start(self) -> None:
        self.server = ModbusTcpServer(self.context, address=(self.host, self.port),
                                      ignore_missing_devices=True, trace_packet=self._trace)
        await self.server.serve_forever(background=True)
        sockets = getattr(self.server.transport, "sockets", None)
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


class RtuLineServer:
    """All units of one RS-485 line, as an RTU slave on the master side of a pty pair."""

    def __init__(self, name: str, link: Path, units: Mapping[int, SimUnit],
                 baudrate: int = 19200) -> None:
        self.name = name
        self.link = Path(link)
        self.context = _SimContext(units)
        self.baudrate = baudrate
        self.framer = FramerRTU(DecodePDU(True))
        self.master = self.slave = -1
        self.slave_path = ""
        self.buffer = b""
        self.frames_in = self.crc_errors_in = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def _wire_s(self, nbytes: int) -> float:
        return nbytes * 11.0 / self.baudrate  # 1 start + 8 data + parity/stop bits

    async def start(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes as on a serial line
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self.slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(self.slave_path)
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        loop.add_reader(self.master, self._readable)
        self._task = loop.create_task(self._serve(), name=f"rtu-{self.name}")

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: nobody holds the slave side (we do, so only at shutdown)
            return
        self.buffer += data
        assert self._wake is not None
        self._wake.set()

    async def _serve(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # a frame is complete once the line has been quiet for 3.5 characters
            await asyncio.sleep(max(0.002, self._wire_s(4)))
            while self.buffer:
                data, self.buffer = self.buffer, b""
                try:
                    used, pdu = self.framer.handleFrame(data, 0, 0)
                except Exception:  # an undecodable request: a real slave stays silent
                    self.crc_errors_in += 1
                    break
                if pdu is None:
                    if used == 0 and len(data) < 256:
                        self.buffer = data + self.buffer  # incomplete: wait for more bytes
                    else:
                        self.crc_errors_in += 1
                    break
                self.buffer = data[used:] + self.buffer
                self.frames_in += 1
                await self._answer(pdu, len(data[:used]))

    async def _answer(self, pdu: object, req_len: int) -> None:
        dev_id = pdu.dev_id  # type: ignore[attr-defined]
        if dev_id not in self.context.units:
            return  # another slave's address (or broadcast): stay silent
        try:
            response = await pdu.datastore_update(self.context, dev_id)  # type: ignore[attr-defined]
        except NoSuchIdException:
            return  # dropped reply
        except Exception:
            log.exception("RTU line %s: unit %d could not answer", self.name, dev_id)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)  # type: ignore[attr-defined]
        response.dev_id = dev_id
        response.transaction_id = 0
        frame = bytearray(self.framer.buildFrame(response))
        if self.context.garbage_next:
            self.context.garbage_next = False
            unit = self.context.units[dev_id]
            pos = unit.rng.randrange(1, len(frame))
            frame[pos] ^= unit.rng.randrange(1, 256)  # one corrupted byte: a CRC error
        await asyncio.sleep(self._wire_s(len(frame)))
        try:
            os.write(self.master, bytes(frame))
        except (BlockingIOError, OSError):
            log.debug("RTU line %s: reply to unit %d not written (nobody reading)", self.name,
                      dev_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.master >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master)
            for fd in (self.master, self.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.master = self.slave = -1
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()


def stats_of(units: Mapping[str, SimUnit]) -> dict[str, dict[str, int]]:
    return {name: u.stats.as_dict() for name, u in units.items()}


__all__ = ["NO_FAULTS", "RtuLineServer", "SimUnit", "TcpMeterServer", "stats_of"]
