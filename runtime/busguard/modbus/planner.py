"""Read planning: a device's points merged into the fewest register reads.

Points are grouped by function (holding/input) and sorted by address; a point joins the
current read when the registers between them (the gap) are at most ``max_gap`` and the read
stays within ``max_registers`` (125, the Modbus limit for function 3/4). Reading a few unused
registers costs far less than one more round trip, but a gap may cross registers the device
does not implement (an exception 0x02), so ``max_gap`` is configurable per meter and 0 means
"contiguous only".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from busguard.modbus.profiles import PointDef

MAX_REGISTERS = 125


@dataclass(frozen=True)
class ReadBlock:
    """One request: ``count`` registers of ``function`` from ``address``, feeding ``points``."""

    function: str
    address: int
    count: int
    points: tuple[PointDef, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def slice(self, regs: list[int], point: PointDef) -> list[int]:
        off = point.address - self.address
        return regs[off:off + point.count]

    def describe(self) -> str:
        return f"{self.function} registers {self.address}..{self.end - 1}"


def plan_reads(points: Iterable[PointDef], max_gap: int = 8,
               max_registers: int = MAX_REGISTERS) -> list[ReadBlock]:
    """The fewest reads covering every point (greedy over sorted addresses, which is optimal
    for interval lists where each read must be one contiguous range of bounded size)."""
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS}, got {max_registers}")
    blocks: list[ReadBlock] = []
    by_fn: dict[str, list[PointDef]] = {}
    for p in points:
        by_fn.setdefault(p.function, []).append(p)
    for fn in sorted(by_fn):
        pts = sorted(by_fn[fn], key=lambda p: (p.address, p.count))
        start = end = -1
        members: list[PointDef] = []
        for p in pts:
            if p.count > max_registers:
                raise ValueError(f"point {p.name} needs {p.count} registers, more than "
                                 f"max_registers {max_registers}")
            if members and p.address - end <= max_gap and max(end, p.end) - start <= \
                    max_registers:
                members.append(p)
                end = max(end, p.end)
                continue
            if members:
                blocks.append(ReadBlock(fn, start, end - start, tuple(members)))
            start, end, members = p.address, p.end, [p]
        if members:
            blocks.append(ReadBlock(fn, start, end - start, tuple(members)))
    return blocks


def split_refused(block: ReadBlock) -> list[ReadBlock]:
    """The reads that replace ``block`` after the meter refused it with exception 0x02: its
    contiguous runs when it spans gaps (the unused registers between points are the usual
    culprit: a meter that does not implement them), else one read per point, to find the
    points whose own registers are missing. A meter with one unimplemented register between
    two runs is then read in two requests a poll, not one per point."""
    runs = plan_reads(block.points, max_gap=0, max_registers=block.count)
    if len(runs) > 1:
        return runs
    return [ReadBlock(block.function, pd.address, pd.count, (pd,)) for pd in block.points]
