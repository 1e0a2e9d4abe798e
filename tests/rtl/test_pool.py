# amaranth: UnusedElaboratable=no
"""Pooling unit against the golden model's ``max_pool_2d`` and ``average_pool_2d``, bit-exact, with random gaps."""

import re

import numpy as np
import pytest
from amaranth.back import rtlil, verilog

from haneul.rtl import pool
from haneul.sim.golden import kernels
from haneul.sim.golden.params import PoolParams, compute_padding

from .test_pe_types import ECP5
from .test_ppu import check_backpressure, pack, receive, run, send, unpack


def clamp_bounds(rng):
    kind = rng.integers(4)
    if kind == 0:
        return -128, 127
    if kind == 1:
        return int(rng.integers(-128, 128)), 127
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return lo, hi


def random_input(rng, shape):
    kind = rng.integers(4)
    if kind == 0:
        return np.full(shape, rng.choice([-128, 127]), dtype=np.int8)
    if kind == 1:
        return rng.choice(np.array([-128, 127, -1, 0, 1], dtype=np.int8), shape)
    return rng.integers(-128, 128, shape).astype(np.int8)


def pool_op(rng, lanes):
    """A random pooling layer: input [1, H, W, lanes], its PoolParams and the windows as lists of positions."""
    h, w = (int(v) for v in rng.integers(1, 7, 2))
    kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
    sh, sw = (int(v) for v in rng.integers(1, 3, 2))
    if rng.random() < 0.5:   # SAME
        oh, ow = -(-h // sh), -(-w // sw)
        padding = (compute_padding(h, kh, sh, 1, oh), compute_padding(w, kw, sw, 1, ow))
    else:                    # VALID
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        padding = ((0, 0), (0, 0))
    act_min, act_max = clamp_bounds(rng)
    p = PoolParams(filter=(kh, kw), stride=(sh, sw), padding=padding, output_size=(oh, ow),
                   act_min=act_min, act_max=act_max)
    windows = []
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * sh - padding[0][0], ox * sw - padding[1][0]
            windows.append([(y, x) for y in range(max(y0, 0), min(y0 + kh, h))
                                   for x in range(max(x0, 0), min(x0 + kw, w))])
    return random_input(rng, (1, h, w, lanes)), p, windows


def long_window(rng, lanes, n, fill=None):
    """A single window of n positions: a [1, 1, n, lanes] input under a (1, n) filter (``fill``: no clamp)."""
    if fill is None:
        x = random_input(rng, (1, 1, n, lanes))
        act_min, act_max = clamp_bounds(rng)
    else:
        x = np.full((1, 1, n, lanes), fill, dtype=np.int8)
        act_min, act_max = -128, 127
    p = PoolParams(filter=(1, n), stride=(1, 1), padding=((0, 0), (0, 0)), output_size=(1, 1),
                   act_min=act_min, act_max=act_max)
    return x, p, [[(0, k) for k in range(n)]]


def check(dut, ops, *, seed, valid_gap, ready_gap):
    """Run ``ops`` (lists of (mode, input, PoolParams, windows)) and compare with the golden kernels."""
    rng = np.random.default_rng(seed)
    lanes = dut.lanes
    events, expected = [], []
    for mode, x, p, windows in ops:
        events.append([(dut.param, {"mode": mode, "act_min": p.act_min, "act_max": p.act_max})])
        golden = kernels.max_pool_2d if mode is pool.Mode.MAX else kernels.average_pool_2d
        expected.extend(golden(x, p).astype(np.int64).reshape(-1, lanes))
        for window in windows:
            for k, (y, xx) in enumerate(window):
                events.append([(dut.i, {"data": [int(v) for v in x[0, y, xx]], "last": k == len(window) - 1})])
    got = []

    async def producer(ctx):
        await send(ctx, events, rng, valid_gap)

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.o, len(expected), rng, ready_gap, max_cycles=20 * len(events) + 100))

    run(dut, producer, consumer)
    for n, (raw, exp) in enumerate(zip(got, expected, strict=True)):
        assert list(unpack(raw, lanes)) == list(exp), f"window {n}: got {unpack(raw, lanes)}, expected {exp}"


def random_ops(rng, lanes, count):
    modes = [pool.Mode.MAX, pool.Mode.AVERAGE]
    return [(modes[rng.integers(2)], *pool_op(rng, lanes)) for _ in range(count)]


@pytest.mark.parametrize("valid_gap,ready_gap,seed", [(0.3, 0.3, 21), (0.0, 0.7, 22), (0.6, 0.0, 23)])
def test_random(valid_gap, ready_gap, seed):
    rng = np.random.default_rng(seed)
    check(pool.Pool(4), random_ops(rng, 4, 12), seed=seed, valid_gap=valid_gap, ready_gap=ready_gap)


def test_long_windows():
    """Window sizes up to max_count, with all-extreme inputs (sums of -128*n and 127*n)."""
    rng = np.random.default_rng(24)
    ops = []
    for n in (1, 2, 3, 4, 5, 7, 64, 255, 256):
        for mode in (pool.Mode.AVERAGE, pool.Mode.MAX):
            ops.append((mode, *long_window(rng, 4, n)))
    for n in (1, 3, 256):
        for fill in (-128, 127):
            ops.append((pool.Mode.AVERAGE, *long_window(rng, 4, n, fill)))
    check(pool.Pool(4, max_count=256), ops, seed=24, valid_gap=0.1, ready_gap=0.3)


def test_small_max_count():
    rng = np.random.default_rng(25)
    ops = [(pool.Mode.AVERAGE, *long_window(rng, 2, n)) for n in (1, 9, 10, 10, 3, 10)]
    check(pool.Pool(2, max_count=10), ops, seed=25, valid_gap=0.3, ready_gap=0.3)


def test_large_max_count():
    """max_count above 256 takes the three-stage multiplication; same latency, same results."""
    rng = np.random.default_rng(28)
    ops = [(pool.Mode.AVERAGE, *long_window(rng, 2, n, fill)) for n, fill in ((2048, -128), (2047, 127), (1, -128))]
    ops += [(pool.Mode.AVERAGE, *long_window(rng, 2, n)) for n in (1000, 3)]
    check(pool.Pool(2, max_count=2048), ops, seed=28, valid_gap=0.0, ready_gap=0.3)


def test_throughput():
    """Without gaps a beat is accepted every cycle and a result follows LATENCY cycles after the last beat."""
    lanes = 4
    rng = np.random.default_rng(26)
    dut = pool.Pool(lanes)
    x, p, windows = long_window(rng, lanes, 3)
    beats = 3 * 10
    cycles = []

    async def producer(ctx):
        ctx.set(dut.param.payload, {"mode": pool.Mode.AVERAGE, "act_min": p.act_min, "act_max": p.act_max})
        ctx.set(dut.param.valid, 1)
        await ctx.tick()
        ctx.set(dut.param.valid, 0)
        ctx.set(dut.o.ready, 1)
        for k in range(beats):
            ctx.set(dut.i.payload, {"data": [int(v) for v in x[0, 0, k % 3]], "last": k % 3 == 2})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        expected = list(kernels.average_pool_2d(x, p).reshape(lanes))
        for cycle in range(beats + 20):
            _, _, valid, raw = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                cycles.append(cycle)
                assert list(unpack(raw.as_value().value, lanes)) == expected

    run(dut, producer, consumer)
    # param on cycle 0; window k ends with the beat accepted on cycle 3 + 3k
    assert cycles == [3 + 3 * k + pool.Pool.LATENCY for k in range(10)]


def test_param_waits_for_window():
    """A configuration offered in the middle of a window loads only after the window's last beat."""
    lanes = 2
    dut = pool.Pool(lanes)
    log = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"data": [10, -10], "last": 0})
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.param.payload, {"mode": pool.Mode.AVERAGE, "act_min": -128, "act_max": 127})
        ctx.set(dut.param.valid, 1)
        ctx.set(dut.i.payload, {"data": [20, -21], "last": 1})
        *_, param_ready = await ctx.tick().sample(dut.param.ready)
        assert not param_ready
        log.append("window")
        ctx.set(dut.i.valid, 0)
        await ctx.tick().until(dut.param.ready)
        ctx.set(dut.param.valid, 0)
        ctx.set(dut.i.payload, {"data": [20, -21], "last": 1})
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        for _ in range(pool.Pool.LATENCY + 4):
            _, _, valid, raw = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                log.append(list(unpack(raw.as_value().value, lanes)))

    run(dut, tb)
    # the first window is MAX (reset configuration), the second an average of one value
    assert log == ["window", [20, -10], [20, -21]]


def test_clamp_every_value():
    """Every int8 value through both modes (windows of one beat: the average of one value is the value, with the
    sign applied after the division) under clamp bounds at the ends of the range, empty (act_min > act_max: np.clip
    gives act_max) and single-valued."""
    lanes = 4
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 256 // lanes, lanes)
    ops = []
    for act_min, act_max in ((-128, 127), (-5, 7), (0, 0), (3, -3), (127, -128), (-128, -128), (127, 127),
                             (-127, 126)):
        p = PoolParams(filter=(1, 1), stride=(1, 1), padding=((0, 0), (0, 0)), output_size=(1, 256 // lanes),
                       act_min=act_min, act_max=act_max)
        windows = [[(0, k)] for k in range(256 // lanes)]
        ops += [(mode, x, p, windows) for mode in (pool.Mode.MAX, pool.Mode.AVERAGE)]
    check(pool.Pool(lanes), ops, seed=29, valid_gap=0.1, ready_gap=0.1)


def test_backpressure():
    """With o.ready low the pooling unit takes the last beats of fifo_depth windows, then holds i.ready low;
    nothing is lost or duplicated."""
    lanes = 4
    rng = np.random.default_rng(30)
    dut = pool.Pool(lanes)
    assert dut.fifo_depth == pool.Pool.LATENCY + 1
    xs = [rng.integers(-128, 128, lanes) for _ in range(dut.fifo_depth + 8)]
    check_backpressure(dut, (dut.param, {"mode": pool.Mode.MAX, "act_min": -128, "act_max": 127}),
                       [[(dut.i, {"data": [int(v) for v in x], "last": 1})] for x in xs], [pack(x) for x in xs],
                       depth=dut.fifo_depth)


def test_reciprocal_exact():
    """The reciprocal ROM divides exactly: every n <= max_count and every sum of n int8 values."""
    rng = np.random.default_rng(29)
    for max_count in (1, 2, 3, 10, 49, 100, 256, 2048):
        table, shifts = pool.reciprocals(max_count)
        if max_count <= 256:  # one 18 x 18 signed multiplier: numerator and reciprocal both below 2**17
            assert max(table) < 1 << 17 and 128 * max_count + max_count // 2 < 1 << 17
        counts = range(1, max_count + 1)
        if max_count > 256:   # a sample, with both ends
            counts = sorted({1, 2, 3, max_count - 1, max_count, *rng.integers(1, max_count + 1, 40)})
        for n in counts:
            acc = np.arange(-128 * n, 127 * n + 1, dtype=np.int64)
            half = n // 2
            expected = np.where(acc > 0, (acc + half) // n, -((-acc + half) // n))   # C division
            quotient = ((np.abs(acc) + half) * table[n]) >> shifts[n]
            assert np.array_equal(np.where(acc < 0, -quotient, quotient), expected), (max_count, n)


def test_one_multiplier_per_lane():
    """Up to max_count = 256 each lane divides with one multiplication of at most 18 x 18 signed bits (one ECP5
    MULT18X18D, with its operand and product registers for ECP5); above that the multiplication is split into
    16-bit pieces."""
    def muls(dut):
        text = rtlil.convert(dut, name="top")
        cells = re.findall(r"cell \$mul .*?parameter \\A_WIDTH (\d+).*?parameter \\B_WIDTH (\d+)", text, re.S)
        return [(int(a), int(b)) for a, b in cells]
    # signed: the numerator (16 bits) and the normalised reciprocal (17 bits), each with a zero sign bit
    assert muls(pool.Pool(4)) == [(17, 18)] * 4
    assert len(muls(pool.Pool(2, max_count=2048))) == 8
    text = rtlil.convert(pool.Pool(4), name="top", platform=ECP5())
    assert text.count("cell \\MULT18X18D ") == 4 and text.count("cell $mul ") == 0
    cell = text[text.index("cell \\MULT18X18D "):]
    cell = cell[:cell.index("\n  end\n")]
    for line in ('parameter \\REG_INPUTA_CLK "CLK0"', 'parameter \\REG_INPUTB_CLK "CLK0"',
                 'parameter \\REG_OUTPUT_CLK "CLK0"', "connect \\CE0 1'1", "connect \\RST0 1'0"):
        assert line in cell, line


def test_default_16_lanes():
    dut = pool.Pool()
    assert (dut.lanes, dut.max_count) == (16, 256)
    text = verilog.convert(dut, name="pool")
    for port in ("i__payload", "i__valid", "param__ready", "o__payload"):
        assert port in text
    rng = np.random.default_rng(27)
    check(dut, random_ops(rng, 16, 2), seed=27, valid_gap=0.2, ready_gap=0.2)


def test_validation():
    with pytest.raises(TypeError, match="Lane count must be a positive integer"):
        pool.Pool(-1)
    with pytest.raises(ValueError, match="Maximum window size must be an integer"):
        pool.Pool(4, max_count=0)
