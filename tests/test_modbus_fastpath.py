"""The poll's fast paths give exactly what the generic paths give: BlockDecoder against
decode_raw per point (every type and word order, gaps, mixed orders, overlaps), and the
incremental comm statistics against sorting and counting the window."""

from __future__ import annotations

import math
import random
import struct

import pytest

from busguard.modbus.codec import REGISTER_COUNT, TYPES, WORD_ORDERS, BlockDecoder, decode_raw
from busguard.modbus.commstats import (
    CRC,
    DISCONNECT,
    EXCEPTION,
    OK,
    TIMEOUT,
    CommStats,
    SampleWindow,
    percentile,
)


def _same(a: float, b: float) -> bool:
    return (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == b


def _check(count: int, points: list[tuple[int, str, str]], regs: list[int]) -> None:
    got = BlockDecoder(count, points).decode(regs)
    want = [decode_raw(regs[off:off + REGISTER_COUNT[t]], t, wo) for off, t, wo in points]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert _same(g, w), (points, g, w)
        assert type(g) is type(w)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("order", WORD_ORDERS)
def test_single_point_every_type_and_order(dtype: str, order: str) -> None:
    rng = random.Random(f"{dtype}{order}")
    n = REGISTER_COUNT[dtype]
    for _ in range(200):
        regs = [rng.randrange(0x10000) for _ in range(n + 3)]
        _check(n + 3, [(1, dtype, order)], regs)


def test_random_blocks_with_gaps_mixed_orders_and_overlaps() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        count = rng.randrange(1, 40)
        points = []
        for _ in range(rng.randrange(0, 8)):
            dtype = rng.choice(TYPES)
            n = REGISTER_COUNT[dtype]
            if n > count:
                continue
            points.append((rng.randrange(0, count - n + 1), dtype,
                           rng.choice(WORD_ORDERS) if rng.random() < 0.5 else "ABCD"))
        if rng.random() < 0.5:
            points.sort()
        regs = [rng.randrange(0x10000) for _ in range(count)]
        _check(count, points, regs)


def test_contiguous_float_block_like_the_bundled_profile() -> None:
    values = [277.0, -1.5, math.inf, 0.1]
    regs = list(struct.unpack(">8H", struct.pack(">4f", *values)))
    points = [(2 * i, "float32", "ABCD") for i in range(4)]
    assert BlockDecoder(8, points).decode(regs) == tuple(struct.unpack(">4f", struct.pack(
        ">4f", *values)))
    nan_regs = [0x7FC0, 0]
    assert math.isnan(BlockDecoder(2, [(0, "float32", "ABCD")]).decode(nan_regs)[0])


def test_out_of_range_registers_use_their_low_16_bits_and_wrong_length_raises() -> None:
    points = [(0, "uint16", "ABCD"), (1, "int16", "DCBA")]
    _check(2, points, [0x1FFFF, -1])
    with pytest.raises(ValueError):
        BlockDecoder(2, points).decode([1])
    with pytest.raises(ValueError):
        BlockDecoder(2, [(1, "float32", "ABCD")])


def test_sample_window_percentiles_equal_sorting_the_window() -> None:
    rng = random.Random(3)
    w = SampleWindow(50)
    ring: list[float] = []
    assert math.isnan(w.percentile(50))
    for i in range(1000):
        x = rng.choice([rng.random(), 0.5, 0.25])  # with repeated values
        w.append(x)
        ring = [*ring, x][-50:]
        assert len(w) == len(ring) and list(w) == ring
        if i % 7 == 0:
            for pct in (0, 1, 50, 99, 100):
                assert w.percentile(pct) == percentile(ring, pct)


def test_comm_stats_shares_follow_the_window() -> None:
    rng = random.Random(5)
    st = CommStats(window=40)
    seen: list[str] = []
    for _ in range(500):
        kind = rng.choice([OK, OK, OK, TIMEOUT, DISCONNECT, CRC, EXCEPTION])
        st.record(kind, 0.001 if kind in (OK, EXCEPTION) else None)
        seen = [*seen, kind][-40:]
        loss = 100.0 * sum(1 for k in seen if k in (TIMEOUT, DISCONNECT)) / len(seen)
        err = 100.0 * sum(1 for k in seen if k == CRC) / len(seen)
        assert st.loss_pct() == loss and st.error_pct() == err
    assert st.requests == 500
    assert CommStats().loss_pct() == 0.0
