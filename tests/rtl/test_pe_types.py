"""Tests of the processing-element types (DSP and LUT multipliers) and of arrays that mix them.

* Every LUT multiplier is checked against Python on all 65536 int8 x int8 pairs (and exhaustively at 3 to 6 bits,
  which exercises the odd-width sign extension of the Booth recoding), through the same ``encode`` and ``product``
  the PE uses. The logic is simulated one weight at a time with all 256 activations side by side.
* Each PE type runs a random cycle-by-cycle stream (loads, swaps, partial sums) against a register-level model.
* The RTLIL of a LUT PE has no ``$mul`` cell (Yosys cannot put it in a DSP) and the array has exactly
  ``dsp_count`` of them.
* Arrays with DSP and LUT columns, or LUT PEs only, compute GEMM tiles bit-exactly under random traffic.
"""

import random

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from haneul.rtl.axi import amba_ports
from haneul.rtl.config import DatapathConfig
from haneul.rtl.carry import CarryChainModel
from haneul.rtl.pe import MULTIPLIERS, PRODUCT_STAGES, Multiplier, ProcessingElement, get_multiplier
from haneul.rtl.systolic import SystolicArray

from .test_systolic import TRAFFIC, check, random_tile, simulate

LUT_TYPES = sorted(name for name, mult in MULTIPLIERS.items() if not mult.uses_dsp)


# Multipliers on every input pair ------------------------------------------------------------------------------------

class AllProducts(wiring.Component):
    """``mult``'s product of one weight with each of the ``2**width`` activations, side by side.

    ``acts`` is an input (not constants) so that the simulated logic is the logic synthesised; ``products`` packs
    the ``2**width`` products of ``2 * width`` bits, activation ``i - 2**(width-1)`` at index ``i``. With
    ``registered``, the products come from :meth:`~haneul.rtl.pe.Multiplier.registered_product`, one cycle after the
    inputs; with ``registered="pipelined"`` from :meth:`~haneul.rtl.pe.Multiplier.pipelined_product` (the path the
    PE uses), ``PRODUCT_STAGES`` cycles after them; otherwise from the combinational
    :meth:`~haneul.rtl.pe.Multiplier.product`.
    """

    def __init__(self, mult, width, *, registered, platform=None):
        self.mult = get_multiplier(mult)
        self.width = width
        self.registered = registered
        self.platform = platform
        count = 1 << width
        super().__init__({
            "weight":   In(signed(width)),
            "acts":     In(count * width),
            "products": Out(count * 2 * width),
        })

    def elaborate(self, platform):
        m = Module()
        platform = self.platform or platform
        width = self.width
        stored = Signal(self.mult.weight_shape(width))
        m.d.comb += stored.eq(self.mult.encode(self.weight))
        products = []
        for i in range(1 << width):
            act = self.acts[i * width:(i + 1) * width].as_signed()
            if self.registered == "pipelined":
                product = self.mult.pipelined_product(m, act, stored, platform)
            elif self.registered:
                product = self.mult.registered_product(m, act, stored, platform)
            else:
                product = self.mult.product(m, act, stored)
            products.append(product[:2 * width])
        m.d.comb += self.products.eq(Cat(*products))
        return m


def all_products(mult, width, *, registered, platform=None):
    """``table[w + 2**(width-1)][a + 2**(width-1)]``: the simulated product of every weight and activation."""
    dut = AllProducts(mult, width, registered=registered, platform=platform)
    count = 1 << width
    values = range(-(count // 2), count // 2)
    table = []

    async def tb(ctx):
        ctx.set(dut.acts, sum((a & (count - 1)) << (i * width) for i, a in enumerate(values)))
        mask = (1 << 2 * width) - 1
        for w in values:
            ctx.set(dut.weight, w)
            for _ in range(PRODUCT_STAGES if registered == "pipelined" else int(bool(registered))):
                await ctx.tick()
            packed = ctx.get(dut.products)
            row = [(packed >> (2 * width * i)) & mask for i in range(count)]
            table.append([p - (1 << 2 * width) if p >> (2 * width - 1) else p for p in row])

    sim = Simulator(dut)
    if registered:
        sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(table, dtype=np.int64)


# The pipelined product is what the PE uses: every type, on every int8 pair (and the `chain` type's at every width,
# with the carry chains as an ECP5 build has them). The registered product (its first stage) too, and the
# combinational `product` of the LUT types (the same rows and adders, registered nowhere) at the narrow widths; the
# DSP type needs one width only.
@pytest.mark.parametrize("mult, width, registered",
                         [(mult, width, True) for mult in LUT_TYPES for width in (3, 4, 5, 6, 8)]
                         + [(mult, width, False) for mult in LUT_TYPES for width in (3, 4, 5, 6)]
                         + [(mult, 8, "pipelined") for mult in (*LUT_TYPES, "dsp")]
                         + [("dsp", 8, True)]
                         + [("chain", width, "ecp5") for width in (2, 3, 4, 5, 6, 8)]
                         + [("chain", width, "pipelined-ecp5") for width in (2, 3, 5, 8)])
def test_multiplier_exhaustive(mult, width, registered):
    # "ecp5": the carry chains as an ECP5 build has them (the CCU2C model)
    half = 1 << (width - 1)
    values = np.arange(-half, half, dtype=np.int64)
    expected = np.outer(values, values)              # expected[w][a] = w * a
    platform = None
    if isinstance(registered, str) and registered.endswith("ecp5"):
        platform = CarryChainModel()
        registered = "pipelined" if registered.startswith("pipelined") else True
    got = all_products(mult, width, registered=registered, platform=platform)
    mismatch = np.argwhere(got != expected)
    assert mismatch.size == 0, (f"{len(mismatch)} wrong products, first {values[mismatch[0][1]]} * "
                                f"{values[mismatch[0][0]]} = {got[tuple(mismatch[0])]}")


def test_booth_encoding():
    # The stored digits of a few weights, decoded: one, two, neg per digit, digit i worth 4**i.
    def decode(bits, digits):
        total = 0
        for i in range(digits):
            one, two, neg = (bits >> 3 * i) & 1, (bits >> 3 * i + 1) & 1, (bits >> 3 * i + 2) & 1
            assert not (one and two) and not (neg and not (one or two)), f"digit {i} of {bits:#x} is malformed"
            total += (-1 if neg else 1) * (one + 2 * two) * 4 ** i
        return total

    booth = MULTIPLIERS["booth"]
    weight = Signal(signed(8))
    stored = Signal(booth.weight_shape(8))
    assert len(stored) == 12
    m = Module()
    m.d.comb += stored.eq(booth.encode(weight))

    async def tb(ctx):
        for w in range(-128, 128):
            ctx.set(weight, w)
            assert decode(ctx.get(stored), 4) == w

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


# Processing elements of every type -----------------------------------------------------------------------------------

def pe_model(stimulus, acc_width=32):
    """Expected ``psum_out`` in cycle ``c + 1`` for each cycle ``c`` of ``stimulus``, or None before it is defined.

    ``stimulus[c] = (act, swap, psum, load)``: the product of cycle ``c`` meets the ``psum`` of cycle ``c + d``
    and leaves in cycle ``c + d + 1``, ``d = ProcessingElement.LATENCY - 1``.
    """
    d = ProcessingElement.LATENCY - 1
    active = shadow = 0
    products = []
    for act, swap, _, load in stimulus:
        weight = shadow if swap else active
        if swap:
            active = shadow
        if load is not None:
            shadow = load
        products.append(act * weight)
    wrap = lambda x: (x + 2 ** (acc_width - 1)) % 2 ** acc_width - 2 ** (acc_width - 1)
    return [None] * d + [wrap(stimulus[c][2] + products[c - d]) for c in range(d, len(stimulus))]


@pytest.mark.parametrize("mult", sorted(MULTIPLIERS))
def test_pe_random_stream(mult):
    rng = random.Random(sum(map(ord, mult)))
    pe = ProcessingElement(mult=mult)
    assert pe.mult is MULTIPLIERS[mult]
    extremes = [-128, 127, -1, 0, 1]
    stimulus = [(rng.choice(extremes) if rng.random() < 0.3 else rng.randint(-128, 127),
                 int(rng.random() < 0.2),
                 rng.choice([-2**31, 2**31 - 1, 0]) if rng.random() < 0.2 else rng.randint(-2**31, 2**31 - 1),
                 (rng.choice(extremes) if rng.random() < 0.3 else rng.randint(-128, 127))
                 if rng.random() < 0.4 else None)
                for _ in range(400)]
    expected = pe_model(stimulus)
    got = []

    async def tb(ctx):
        for act, swap, psum, load in stimulus:
            ctx.set(pe.act_in, {"value": act, "swap": swap})
            ctx.set(pe.psum_in, psum)
            ctx.set(pe.w_load, load is not None)
            ctx.set(pe.w_data, 0 if load is None else load)
            await ctx.tick()
            got.append(ctx.get(pe.psum_out))
            out = ctx.get(pe.act_out)
            assert (out.value, out.swap) == (act, swap)

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # got[c] is psum_out in cycle c + 1; expected[c] is defined for products of cycles c - d >= 0.
    d = ProcessingElement.LATENCY - 1
    assert got[d:] == expected[d:]


def test_custom_multiplier_type():
    # A Multiplier instance is accepted directly: here a DSP product of the weight stored negated.
    class Negated(Multiplier):
        name = "negated"

        def weight_shape(self, width):
            return signed(width + 1)

        def encode(self, weight):
            return -weight

        def product(self, m, act, stored):
            return -(act * stored)

    pe = ProcessingElement(mult=Negated())
    assert len(pe.active) == 9
    # the partial sums 7, 1, 2 meet the products of cycles 0, 1, 2
    d = ProcessingElement.LATENCY - 1
    stimulus = ([(-128, 0, 0, -128), (-128, 1, 0, None), (127, 0, 0, None)] + [(0, 0, 0, None)] * (d - 3)
                + [(0, 0, 7, None), (0, 0, 1, None), (0, 0, 2, None)])
    expected = pe_model(stimulus)
    got = []

    async def tb(ctx):
        for act, swap, psum, load in stimulus:
            ctx.set(pe.act_in, {"value": act, "swap": swap})
            ctx.set(pe.psum_in, psum)
            ctx.set(pe.w_load, load is not None)
            ctx.set(pe.w_data, 0 if load is None else load)
            await ctx.tick()
            got.append(ctx.get(pe.psum_out))

    sim = Simulator(pe)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got[d:] == expected[d:] == [7, 1 + 16384, 2 + 127 * -128]


# What reaches Yosys ---------------------------------------------------------------------------------------------------

def mul_cells(elaboratable):
    return rtlil.convert(elaboratable, name="top", ports=amba_ports(elaboratable)).count("cell $mul ")


@pytest.mark.parametrize("mult, count", [("dsp", 1), ("lut", 0), ("booth", 0), ("chain", 0)])
def test_pe_mul_cells(mult, count):
    assert mul_cells(ProcessingElement(mult=mult)) == count


@pytest.mark.parametrize("rows, cols, dsp_pes, count", [(4, 4, 6, 6), (4, 4, 0, 0), (4, 4, 99, 16), (3, 2, 4, 4)])
def test_array_mul_cells(rows, cols, dsp_pes, count):
    cfg = DatapathConfig(rows=rows, cols=cols, dsp_pes=dsp_pes)
    assert cfg.dsp_count == count
    assert mul_cells(SystolicArray(cfg)) == count


def test_pe_type_placement():
    # The default 16 x 16 array is all LUT PEs (the DSP blocks go to the post-processing and depthwise units); with a
    # budget of 96, columns 0-5 on DSPs, the rest in LUTs.
    assert DatapathConfig().dsp_count == 0
    assert {DatapathConfig().pe_mult(k, n) for k in range(16) for n in range(16)} == {"chain"}
    cfg = DatapathConfig(dsp_pes=96)
    assert cfg.dsp_count == 96
    assert [cfg.pe_mult(0, n) for n in range(16)] == ["dsp"] * 6 + ["chain"] * 10
    assert {cfg.pe_mult(k, n) for k in range(16) for n in range(6)} == {"dsp"}
    # A budget that is not a whole number of columns fills the next column from the top.
    cfg = DatapathConfig(rows=4, cols=4, dsp_pes=6)
    assert [[cfg.pe_mult(k, n) for n in range(4)] for k in range(4)] == [
        ["dsp", "dsp", "chain", "chain"],
        ["dsp", "dsp", "chain", "chain"],
        ["dsp", "chain", "chain", "chain"],
        ["dsp", "chain", "chain", "chain"],
    ]
    assert DatapathConfig(rows=8, cols=8, dsp_pes=96).dsp_count == 64    # the budget is an upper bound
    with pytest.raises(IndexError, match=r"^PE \(4, 0\) is outside the 4 x 4 array$"):
        cfg.pe_mult(4, 0)


class ECP5:
    """Stands in for an ECP5 platform: ``elaborate`` only looks at ``family``."""
    family = "ecp5"


def test_ecp5_dsp_uses_output_register():
    # For ECP5 the DSP PE instantiates MULT18X18D with its output register as the product register; LUT PEs and the
    # generic (simulation) elaboration are unchanged.
    text = rtlil.convert(ProcessingElement(mult="dsp"), name="top", platform=ECP5())
    assert text.count("cell \\MULT18X18D ") == 1 and text.count("cell $mul ") == 0
    cell = text[text.index("cell \\MULT18X18D "):]
    cell = cell[:cell.index("\n  end\n")]
    for line in ('parameter \\REG_OUTPUT_CLK "CLK0"', 'parameter \\REG_INPUTA_CLK "NONE"',
                 'parameter \\REG_INPUTB_CLK "NONE"', 'parameter \\REG_PIPELINE_CLK "NONE"',
                 "connect \\CLK0 \\clk", "connect \\CE0 1'1", "connect \\RST0 1'0",
                 "connect \\SIGNEDA 1'1", "connect \\SIGNEDB 1'1"):
        assert line in cell, line
    for mult in LUT_TYPES:
        assert "MULT18X18D" not in rtlil.convert(ProcessingElement(mult=mult), name="top", platform=ECP5())
    cfg = DatapathConfig(rows=4, cols=4, dsp_pes=6)
    arr = SystolicArray(cfg)
    assert rtlil.convert(arr, name="top", platform=ECP5(), ports=amba_ports(arr)).count("cell \\MULT18X18D ") == 6


# Arrays mixing PE types -----------------------------------------------------------------------------------------------

MIXED_CASES = [
    # rows, cols, dsp_pes, lut_mult, vectors per tile
    (4, 4, 6, "lut", [6, 1, 9, 5]),
    (4, 4, 6, "booth", [6, 1, 9, 5]),
    (4, 4, 0, "lut", [5, 7]),
    (4, 4, 0, "booth", [5, 7]),
    (4, 4, 6, "chain", [6, 1, 9, 5]),
    (4, 4, 0, "chain", [5, 7]),
    (5, 3, 7, "booth", [8, 2, 6]),
    (8, 8, 24, "lut", [12, 3, 10]),
]


@pytest.mark.parametrize("rows, cols, dsp_pes, lut_mult, ms",
                         [pytest.param(*case, id=f"{case[0]}x{case[1]}-{case[2]}dsp-{case[3]}") for case in MIXED_CASES])
@pytest.mark.parametrize("traffic", ["smooth", "gappy"])
def test_mixed_gemm(rows, cols, dsp_pes, lut_mult, ms, traffic):
    seed = rows * 100 + cols * 10 + dsp_pes + len(lut_mult) + list(TRAFFIC).index(traffic)
    rng = np.random.default_rng(seed)
    kinds = ["uniform", "sparse", "extreme"]
    tiles = [random_tile(rng, rows, cols, m, kinds[i % 3]) for i, m in enumerate(ms)]
    arr = SystolicArray(DatapathConfig(rows=rows, cols=cols, dsp_pes=dsp_pes, lut_mult=lut_mult))
    act_idle, weight_idle = TRAFFIC[traffic]
    run = simulate(arr, tiles, act_idle=act_idle, weight_idle=weight_idle, seed=seed)
    check(arr, tiles, run)
    assert [r - a for a, r in zip(run.act_cycles, run.result_cycles)] == [arr.latency] * len(run.act_cycles)


def test_16x16_mixed():
    # The default array, as synthesised, is 256 `chain` PEs, which the 16 x 16 cases of tests/rtl/test_systolic.py
    # run; the 16 x 16 array with 96 DSP PEs (the default until session 9, and the better choice on a device whose
    # DSP blocks are spread less thinly) runs here, one full-size simulation (about 10 s).
    assert {DatapathConfig().pe_mult(k, n) for k in range(16) for n in range(16)} == {"chain"}
    cfg = DatapathConfig(dsp_pes=96)
    kinds = [cfg.pe_mult(k, n) for k in range(16) for n in range(16)]
    assert (kinds.count("dsp"), kinds.count("chain")) == (96, 160)
    rng = np.random.default_rng(1616)
    tiles = [random_tile(rng, 16, 16, m, kind) for m, kind in ((20, "uniform"), (3, "extreme"), (17, "sparse"))]
    arr = SystolicArray(cfg)
    run = simulate(arr, tiles, act_idle=TRAFFIC["gappy"][0], weight_idle=TRAFFIC["gappy"][1], seed=1616)
    check(arr, tiles, run)
