# amaranth: UnusedElaboratable=no
# (the constructor tests create components whose __init__ raises; they are never elaborated)
"""Tests of the datapath configuration, the processing element and the weight-stationary systolic array.

Every stream test drives the array cycle by cycle from three concurrent testbenches (weights, activations, results)
and checks the results bit-exactly against an int64 numpy matmul. Runs with random idle cycles on the inputs must give
the same results as runs without; the result stream has no backpressure, so every result must appear exactly
``latency`` cycles after its activation vector.
"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from amaranth.lib import wiring
from amaranth.sim import Simulator

from haneul.rtl.axi import amba_ports
from haneul.rtl.config import DatapathConfig
from haneul.rtl.pe import ProcessingElement
from haneul.rtl.systolic import ActivationBeat, ResultBeat, SystolicArray, WeightBeat

INT8_MIN, INT8_MAX = -128, 127


# Golden model and stimulus ---------------------------------------------------------------------------------------

def reference(tiles):
    """Expected result vectors of a sequence of ``(W, A)`` tiles: ``A @ W`` per tile, in int64."""
    return np.concatenate([a.astype(np.int64) @ w.astype(np.int64) for w, a in tiles])


def random_tile(rng, rows, cols, m, kind="uniform"):
    """One ``(W[rows][cols], A[m][rows])`` int8 tile.

    ``kind`` constrains the values: ``uniform`` over int8, ``extreme`` only -128/127, ``sparse`` mostly zeros
    (and zero-padded partial K: the last rows of W and columns of A are zero).
    """
    if kind == "uniform":
        w = rng.integers(INT8_MIN, INT8_MAX + 1, size=(rows, cols))
        a = rng.integers(INT8_MIN, INT8_MAX + 1, size=(m, rows))
    elif kind == "extreme":
        w = rng.choice([INT8_MIN, INT8_MAX], size=(rows, cols))
        a = rng.choice([INT8_MIN, INT8_MAX], size=(m, rows))
    elif kind == "sparse":
        w = rng.integers(INT8_MIN, INT8_MAX + 1, size=(rows, cols)) * (rng.random((rows, cols)) < 0.3)
        a = rng.integers(INT8_MIN, INT8_MAX + 1, size=(m, rows)) * (rng.random((m, rows)) < 0.5)
        k = int(rng.integers(1, rows + 1))  # partial K, zero-padded by the caller
        w[k:, :] = 0
        a[:, k:] = 0
    else:
        raise ValueError(kind)
    return w.astype(np.int8), a.astype(np.int8)


# Stream testbench ------------------------------------------------------------------------------------------------

class Run:
    """Result of :func:`simulate`: the result vectors, their ``last`` flags, and the cycle of every transfer."""

    def __init__(self):
        self.results = []
        self.lasts = []
        self.act_cycles = []
        self.weight_cycles = []
        self.result_cycles = []


def simulate(arr, tiles, *, act_idle=0.0, weight_idle=0.0, seed=0, max_cycles=5000):
    """Stream ``tiles`` (a list of ``(W, A)``) through ``arr`` and collect the results.

    ``act_idle`` / ``weight_idle`` are the probabilities of an idle cycle (valid low) before each input beat.
    """
    rows = arr.rows
    total = sum(len(a) for _, a in tiles)
    run = Run()

    async def put_beats(ctx, port, beats, idle, rng, cycles):
        cycle = 0
        for beat in beats:
            while rng.random() < idle:
                ctx.set(port.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(port.valid, 1)
            ctx.set(port.payload, beat)
            while True:
                _, _, ready = await ctx.tick().sample(port.ready)
                cycle += 1
                if ready:
                    break
            cycles.append(cycle - 1)
        ctx.set(port.valid, 0)

    async def weight_tb(ctx):
        beats = [[int(x) for x in w[k]] for w, _ in tiles for k in range(rows)]
        await put_beats(ctx, arr.weight, beats, weight_idle, random.Random(seed * 3 + 1), run.weight_cycles)

    async def act_tb(ctx):
        beats = [{"data": [int(x) for x in a[i]], "last": int(i == len(a) - 1)}
                 for _, a in tiles for i in range(len(a))]
        await put_beats(ctx, arr.act, beats, act_idle, random.Random(seed * 3 + 2), run.act_cycles)

    async def result_tb(ctx):
        cycle = 0
        while len(run.results) < total:
            _, _, valid, payload = await ctx.tick().sample(arr.result.valid, arr.result.payload)
            if valid:
                run.results.append(list(payload.data))
                run.lasts.append(payload.last)
                run.result_cycles.append(cycle)
            cycle += 1
        for _ in range(arr.latency + 2):   # and nothing after the last
            _, _, valid = await ctx.tick().sample(arr.result.valid)
            assert not valid, "a result beyond the last"

    async def watchdog(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
        raise AssertionError(f"simulation did not finish in {max_cycles} cycles "
                             f"({len(run.results)} of {total} results)")

    sim = Simulator(arr)
    sim.add_clock(1e-6)
    sim.add_testbench(weight_tb)
    sim.add_testbench(act_tb)
    sim.add_testbench(result_tb)
    sim.add_testbench(watchdog, background=True)
    sim.run()
    return run


def check(arr, tiles, run):
    expected = reference(tiles)
    got = np.array(run.results, dtype=np.int64).reshape(expected.shape)
    mismatch = np.argwhere(got != expected)
    assert mismatch.size == 0, (f"{len(mismatch)} mismatches, first at {tuple(mismatch[0])}: "
                                f"got {got[tuple(mismatch[0])]}, expected {expected[tuple(mismatch[0])]}")
    expected_lasts = [int(i == len(a) - 1) for _, a in tiles for i in range(len(a))]
    assert run.lasts == expected_lasts


def elaborated(elaboratable):
    """Elaborate ``elaboratable`` (checking that it can be) and return it."""
    Fragment.get(elaboratable, None)
    return elaboratable


# DatapathConfig ---------------------------------------------------------------------------------------------------

def test_config_defaults():
    cfg = DatapathConfig()
    assert (cfg.rows, cfg.cols, cfg.input_width, cfg.acc_width) == (16, 16, 8, 32)
    assert cfg.macs_per_cycle == 256
    assert cfg.latency == 29          # 1 + 15 rows of skew + 7 of wavefront (two columns per cycle) + 5 + 1
    assert (cfg.dsp_pes, cfg.dsp_count, cfg.lut_mult, cfg.add_lanes, cfg.requant_lanes, cfg.requant_fold) == (
        0, 0, "chain", 1, 4, 4)
    assert (cfg.dw_taps, cfg.dw_passes, cfg.dw_mult) == (3, 3, "lut")
    assert cfg.spad_row_bits == 128 and cfg.acc_row_bits == 512
    assert cfg.spad_bytes == cfg.spad_depth * 16
    assert cfg.acc_bytes == cfg.acc_depth * 64
    assert cfg.spad_addr_width == 11 and cfg.acc_addr_width == 9
    assert cfg.input_shape.signed and cfg.input_shape.width == 8
    assert cfg.acc_shape.signed and cfg.acc_shape.width == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 8
    assert DatapathConfig(rows=4, cols=8).macs_per_cycle == 32
    # the requantiser folds only arrays wider than its lanes
    assert [DatapathConfig(cols=c).requant_fold for c in (3, 4, 5, 8, 9, 16, 32)] == [1, 1, 2, 2, 3, 4, 8]
    assert DatapathConfig(requant_lanes=16).requant_fold == 1
    assert DatapathConfig(requant_lanes=8).requant_fold == 2
    assert [DatapathConfig(dw_taps=t).dw_passes for t in (9, 5, 4, 3, 1)] == [1, 2, 3, 3, 9]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rows": 0}, ValueError, r"^Row count must be a positive integer, not 0$"),
    ({"cols": -3}, ValueError, r"^Column count must be a positive integer, not -3$"),
    ({"rows": 4.0}, TypeError, r"^Row count must be a positive integer, not 4\.0$"),
    ({"cols": True}, TypeError, r"^Column count must be a positive integer, not True$"),
    ({"rows": "16"}, TypeError, r"^Row count must be a positive integer, not '16'$"),
    ({"input_width": 1}, ValueError, r"^Input width must be at least 2 bits"),
    ({"acc_width": 16}, ValueError, r"^Accumulator width 16 cannot hold the sum of 16 products"),
    ({"spad_depth": 1000}, ValueError, r"^Scratchpad depth must be a power of two, not 1000$"),
    ({"acc_banks": 3}, ValueError, r"^Accumulator bank count must be a power of two, not 3$"),
    ({"spad_depth": 2, "spad_banks": 4}, ValueError, r"^Scratchpad bank count 4 exceeds its depth 2$"),
    ({"dsp_pes": -1}, ValueError, r"^DSP PE budget must be a non-negative integer, not -1$"),
    ({"dsp_pes": 1.5}, TypeError, r"^DSP PE budget must be a non-negative integer, not 1\.5$"),
    ({"lut_mult": "dsp"}, ValueError, r"^LUT multiplier type must be one of 'booth', 'chain', 'lut', not 'dsp'$"),
    ({"add_lanes": 3}, ValueError, r"^Adder lane count must be a positive divisor of the row count 16, not 3$"),
    ({"add_lanes": 0}, ValueError, r"^Adder lane count must be a positive divisor of the row count 16, not 0$"),
    ({"add_lanes": 2.0}, TypeError, r"^Adder lane count must be a positive integer, not 2\.0$"),
    ({"requant_lanes": 0}, ValueError, r"^Requantiser lane count must be a positive integer, not 0$"),
    ({"dw_taps": 10}, ValueError, r"^Depthwise tap count must be an integer in \[1, 9\], not 10$"),
    ({"dw_taps": 0}, ValueError, r"^Depthwise tap count must be an integer in \[1, 9\], not 0$"),
    ({"dw_taps": 4.5}, TypeError, r"^Depthwise tap count must be an integer in \[1, 9\], not 4\.5$"),
    ({"requant_lanes": None}, TypeError, r"^Requantiser lane count must be a positive integer, not None$"),
])
def test_config_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        DatapathConfig(**kwargs)


def test_config_acc_width_bound():
    # 2**17 products of -128 * -128 sum to 2**31, one more than int32 holds; 2**17 - 1 rows still fit.
    DatapathConfig(rows=2**17 - 1)
    with pytest.raises(ValueError, match="use at least 33 bits"):
        DatapathConfig(rows=2**17)


def test_config_psum_width():
    # Row k sums k + 1 products in [-16256, 16384]: 16 bits for one, 20 for 16 (2**18 needs 19 bits and a sign).
    cfg = DatapathConfig()
    assert [cfg.psum_width(k) for k in range(16)] == [16, 17, 17] + [18] * 4 + [19] * 8 + [20]
    for k in range(16):
        width = cfg.psum_width(k)
        assert (k + 1) * 16384 <= 2 ** (width - 1) - 1 and -(k + 1) * 16256 >= -2 ** (width - 1)
        assert (k + 1) * 16384 > 2 ** (width - 2) - 1        # one bit fewer would not hold the maximum
    assert DatapathConfig(input_width=4, rows=2).psum_width(1) == 9      # 2 * 64 = 128
    assert DatapathConfig(rows=2**17 - 1).psum_width(2**17 - 2) == 32
    with pytest.raises(IndexError, match=r"^Row 16 is outside the 16-row array$"):
        cfg.psum_width(16)


def test_array_constructor():
    arr = elaborated(SystolicArray(DatapathConfig(rows=4, cols=8)))
    assert (arr.rows, arr.cols, arr.latency) == (4, 8, 13)    # 1 + 3 + 7 // 2 + 5 + 1
    arr = elaborated(SystolicArray(rows=2, cols=3))
    assert (arr.rows, arr.cols, arr.config) == (2, 3, DatapathConfig(rows=2, cols=3))
    arr = elaborated(SystolicArray(DatapathConfig(acc_width=24), cols=2))
    assert (arr.rows, arr.cols, arr.config.acc_width) == (16, 2, 24)
    with pytest.raises(TypeError, match=r"^Configuration must be a DatapathConfig, not 4$"):
        SystolicArray(4)
    with pytest.raises(ValueError, match=r"^Row count must be a positive integer, not 0$"):
        SystolicArray(rows=0)


def test_array_signature():
    cfg = DatapathConfig(rows=2, cols=3)
    arr = elaborated(SystolicArray(cfg))
    members = arr.signature.members
    assert (members["act"].flow, members["weight"].flow, members["result"].flow) == (wiring.In, wiring.In, wiring.Out)
    assert arr.act.payload.shape() == ActivationBeat(cfg)
    assert arr.weight.payload.shape() == WeightBeat(cfg)
    assert arr.result.payload.shape() == ResultBeat(cfg)
    assert (ActivationBeat(cfg).size, WeightBeat(cfg).size, ResultBeat(cfg).size) == (2 * 8 + 1, 3 * 8, 3 * 32 + 1)


def test_pe_constructor():
    with pytest.raises(TypeError, match=r"^Input width must be an integer, not 'x'$"):
        ProcessingElement(input_width="x")
    with pytest.raises(ValueError, match=r"^Accumulator width 8 is narrower than a product"):
        ProcessingElement(acc_width=8)
    with pytest.raises(ValueError, match=r"^Multiplier type must be one of 'dsp', 'lut', 'booth', 'chain' or a Multiplier"):
        ProcessingElement(mult="fast")


# Processing element -----------------------------------------------------------------------------------------------

def test_pe_double_buffer():
    pe = ProcessingElement()

    async def tb(ctx):
        outputs = []

        async def step(value, swap=0, psum=0, load=None):
            """Drive one cycle; return ``psum_out`` and ``act_out`` of the next."""
            ctx.set(pe.act_in, {"value": value, "swap": swap})
            ctx.set(pe.psum_in, psum)
            ctx.set(pe.w_load, load is not None)
            ctx.set(pe.w_data, 0 if load is None else load)
            await ctx.tick()
            outputs.append(ctx.get(pe.psum_out))
            return ctx.get(pe.act_out)

        # Cycle 0: load a shadow weight while the active (reset) weight 0 computes.
        await step(5, load=-7)
        assert ctx.get(pe.shadow) == -7 and ctx.get(pe.active) == 0
        # Cycle 1: the activation carrying `swap` already uses the new weight; it is forwarded with its marker.
        act = await step(-128, swap=1, load=3)
        assert act.value == -128 and act.swap == 1
        assert ctx.get(pe.active) == -7 and ctx.get(pe.shadow) == 3
        # Cycle 2: without a swap the active weight stays, whatever the shadow holds.
        await step(127)
        # Cycle 3: swap to 3.
        await step(127, swap=1, psum=12345)
        await step(0, psum=1000)          # cycle 4: the partial sum driven now belongs to the activation of cycle 0
        await step(0, psum=-1)            # cycle 5: psum for cycle 1
        await step(0, psum=-5)            # cycle 6: psum for cycle 2
        await step(0, psum=2**31 - 1)     # cycle 7: psum for cycle 3; accumulation wraps modulo 2**32
        # psum_out in cycle c + 5 is psum_in of cycle c + 4 plus the product of cycle c.
        assert ProcessingElement.LATENCY == 5
        assert outputs[4:8] == [1000 + 5 * 0, -1 + -128 * -7, -5 + 127 * -7, -2**31 + 127 * 3 - 1]

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


# Systolic array: correctness under random traffic -----------------------------------------------------------------

TRAFFIC = {
    # name: (act_idle, weight_idle)
    "smooth":       (0.0, 0.0),
    "gappy":        (0.3, 0.3),
    "slow_weights": (0.0, 0.8),
    "slow_acts":    (0.7, 0.0),
}


GEMM_CASES = [
    # rows, cols, vectors per tile
    (1, 1, [1, 3, 2]),
    (1, 3, [2, 1, 4]),
    (3, 1, [1, 5, 2]),
    (2, 2, [1, 4, 3, 7, 1, 2]),
    (4, 4, [6, 1, 9, 5]),
    (4, 8, [7, 3, 8]),
    (8, 4, [10, 2, 9]),
    (8, 8, [12, 3, 10]),
    (16, 16, [20, 17, 2, 24]),
]


@pytest.mark.parametrize("rows, cols, ms", [pytest.param(*case, id=f"{case[0]}x{case[1]}") for case in GEMM_CASES])
@pytest.mark.parametrize("traffic", list(TRAFFIC))
def test_random_gemm(rows, cols, ms, traffic):
    seed = rows * 100 + cols * 10 + len(ms) + list(TRAFFIC).index(traffic)
    rng = np.random.default_rng(seed)
    kinds = ["uniform", "sparse", "extreme"]
    tiles = [random_tile(rng, rows, cols, m, kinds[i % 3]) for i, m in enumerate(ms)]
    arr = SystolicArray(rows=rows, cols=cols)
    act_idle, weight_idle = TRAFFIC[traffic]
    run = simulate(arr, tiles, act_idle=act_idle, weight_idle=weight_idle, seed=seed)
    check(arr, tiles, run)
    # Every result leaves exactly `latency` cycles after its activation vector entered, gaps or not.
    assert [r - a for a, r in zip(run.act_cycles, run.result_cycles)] == [arr.latency] * len(run.act_cycles)


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 4), (16, 2), (3, 2)])
def test_saturation_extremes(rows, cols):
    # The largest and smallest sums an int8 x int8 tile can produce, and a mixture of the extremes: every row's
    # partial sums reach the bound its width (`psum_width`) was derived from.
    full = lambda value, shape: np.full(shape, value, dtype=np.int8)
    rng = np.random.default_rng(7)
    tiles = [
        (full(-128, (rows, cols)), full(-128, (3, rows))),      # rows * 16384, the maximum
        (full(127, (rows, cols)), full(-128, (3, rows))),       # rows * -16256, the minimum
        (full(-128, (rows, cols)), full(127, (2, rows))),       # the minimum again, with the roles swapped
        (full(127, (rows, cols)), full(127, (2, rows))),        # rows * 16129
        random_tile(rng, rows, cols, 5, "extreme"),
    ]
    arr = SystolicArray(rows=rows, cols=cols)
    run = simulate(arr, tiles, act_idle=0.2, seed=rows)
    check(arr, tiles, run)
    assert run.results[0] == [rows * 16384] * cols
    assert run.results[3] == [rows * -16256] * cols


@pytest.mark.parametrize("rows, cols", [(3, 1), (4, 4), (2, 8), (16, 16)])
def test_deskew_delay_lines(rows, cols):
    # Column n waits cols - n cycles in its delay line (flip-flops up to 2, LUT RAM beyond): one-vector tiles with
    # long gaps and back-to-back vectors alike must come out whole, each column from the right vector.
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = [random_tile(rng, rows, cols, m) for m in (1, 2 * cols + 3, 1, 1, cols)]
    arr = SystolicArray(rows=rows, cols=cols)
    run = simulate(arr, tiles, act_idle=0.5, seed=cols)
    check(arr, tiles, run)
    assert [r - a for a, r in zip(run.act_cycles, run.result_cycles)] == [arr.latency] * len(run.act_cycles)


# Systolic array: throughput -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, cols", [(2, 2), (4, 4), (4, 8), (8, 4), (16, 16)])
def test_back_to_back_throughput(rows, cols):
    """Tiles of ``rows + 1`` or more vectors follow each other with no bubble: after the first tile's weights and the
    fill latency, one vector enters and one result leaves every cycle, across every weight swap."""
    rng = np.random.default_rng(rows * cols)
    ms = [rows + 1, rows + 3, rows + 1, 2 * rows]
    tiles = [random_tile(rng, rows, cols, m) for m in ms]
    arr = SystolicArray(rows=rows, cols=cols)
    run = simulate(arr, tiles)
    check(arr, tiles, run)

    total = sum(ms)
    first = rows  # the first tile's weights take `rows` cycles, then its first vector enters at once
    assert run.weight_cycles[:rows] == list(range(rows))
    assert run.act_cycles == list(range(first, first + total)), "the activation stream was stalled"
    assert run.result_cycles == list(range(first + arr.latency, first + arr.latency + total)), \
        "the result stream has bubbles"
    # From the first vector in to the last result out: fill latency plus one cycle per vector, no drain between tiles.
    assert run.result_cycles[-1] + 1 - run.act_cycles[0] == arr.latency + total
    # The next tile's weights were loaded while the previous tile streamed.
    for t in range(1, len(ms)):
        first_of_tile = run.act_cycles[sum(ms[:t])]
        assert run.weight_cycles[t * rows + rows - 1] < first_of_tile


def test_short_tiles_have_bubbles_but_are_correct():
    # Tiles shorter than rows + 1 vectors cannot hide the weight load; they must still compute correctly.
    rng = np.random.default_rng(3)
    tiles = [random_tile(rng, 4, 4, m) for m in (1, 1, 2, 4, 1)]
    arr = SystolicArray(rows=4, cols=4)
    run = simulate(arr, tiles)
    check(arr, tiles, run)
    assert run.act_cycles[1] - run.act_cycles[0] == 4 + 1  # one tile's weight load plus the shadow turnaround


# Elaboration at the default size ----------------------------------------------------------------------------------

def test_default_16x16_converts_to_verilog():
    arr = SystolicArray()
    assert (arr.rows, arr.cols, arr.latency) == (16, 16, 29)
    text = verilog.convert(arr, name="systolic", ports=amba_ports(arr))
    header = text[:text.index(");")]
    for port in ("act__payload", "act__valid", "act__ready", "weight__payload", "weight__valid", "weight__ready",
                 "result__payload", "result__valid"):
        assert port in header
    assert "result__ready" not in header               # no backpressure
    assert "input [128:0] act__payload" in text       # 16 x int8 + last
    assert "input [127:0] weight__payload" in text    # 16 x int8
    assert "output [512:0] result__payload" in text   # 16 x int32 + last
