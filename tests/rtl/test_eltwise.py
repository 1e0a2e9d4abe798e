# amaranth: UnusedElaboratable=no
"""Element-wise ADD against the golden model's ``add``, bit-exact, under random valid and ready gaps."""

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.back import verilog

from haneul.firmware.ir import Activation, OpType
from haneul.rtl import eltwise
from haneul.sim.golden import kernels, params
from haneul.sim.golden.quant import INT32_MAX

from .test_ppu import check_backpressure, pack, receive, run, send, unpack


def tensor(scale, zero_point):
    return SimpleNamespace(quant=SimpleNamespace(scale=[scale]), scale=scale, zero_point=zero_point)


def zero_point(rng):
    return int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))


def prepared(rng):
    """AddParams as the compiler prepares them, from random scales, zero points and activations."""
    scales = np.float32(2.0) ** rng.uniform(-12, 2, 3)
    if rng.random() < 0.2:
        scales[1] = scales[0]                        # equal input scales: multipliers of exactly 1/2
    op = SimpleNamespace(
        type=OpType.ADD,
        inputs=[tensor(np.float32(scales[0]), zero_point(rng)), tensor(np.float32(scales[1]), zero_point(rng))],
        outputs=[tensor(np.float32(scales[2]), zero_point(rng))],
        options=SimpleNamespace(activation=rng.choice(list(Activation))))
    return params.prepare(op)


def extreme(rng):
    """AddParams with multipliers, shifts and offsets at the ends of their ranges."""
    def mult():
        return int(rng.choice([0, 1, 1 << 30, INT32_MAX, int(rng.integers(1 << 30, 1 << 31))]))

    def shift():
        return int(rng.choice([0, -1, -31, int(rng.integers(-31, 1))]))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return params.AddParams(left_shift=20,
                            input1_offset=int(rng.choice([-127, 128, 0])), input1_multiplier=mult(),
                            input1_shift=shift(),
                            input2_offset=int(rng.choice([-127, 128, 0])), input2_multiplier=mult(),
                            input2_shift=shift(),
                            output_offset=int(rng.choice([-128, 127])), output_multiplier=mult(),
                            output_shift=shift(), act_min=lo, act_max=hi)


def observable(rng):
    """AddParams under which every rounding step (both inputs and the output) shows in the int8 result.

    With realistic parameters a rounding error of one in a rescaled input (about 2^20 times the int8 step) almost
    never reaches the output; these keep the intermediate values small enough for it to do so.
    """
    def input_scaling():
        if rng.random() < 0.5:
            # SaturatingRoundingDoublingHighMul(v << 20, m) with a small m is itself an int8-sized value
            return int(rng.integers(1, 1 << 12)), 0
        # multipliers of about 1/2: v * 2^19 divided by 2^19..2^22, exact halves included
        return int(rng.choice([1 << 30, int(rng.integers(1 << 30, 1 << 31))])), int(rng.integers(-22, -18))
    m1, s1 = input_scaling()
    m2, s2 = input_scaling()
    mo, so = [(INT32_MAX, 0), (1 << 30, 0), (1 << 30, -1), (1 << 30, -2),
              (int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-2, 1)))][rng.integers(5)]
    return params.AddParams(left_shift=20,
                            input1_offset=-zero_point(rng), input1_multiplier=m1, input1_shift=s1,
                            input2_offset=-zero_point(rng), input2_multiplier=m2, input2_shift=s2,
                            output_offset=zero_point(rng), output_multiplier=mo, output_shift=so,
                            act_min=-128, act_max=127)


def payload(p):
    return {
        "input1": {"offset": p.input1_offset, "multiplier": p.input1_multiplier, "shift": p.input1_shift},
        "input2": {"offset": p.input2_offset, "multiplier": p.input2_multiplier, "shift": p.input2_shift},
        "output_offset": p.output_offset, "output_multiplier": p.output_multiplier, "output_shift": p.output_shift,
        "act_min": p.act_min, "act_max": p.act_max,
    }


def vector(rng, lanes):
    if rng.random() < 0.2:
        return [int(v) for v in rng.choice([-128, 127, 0], lanes)]
    return [int(v) for v in rng.integers(-128, 128, lanes)]


def make_params(rng):
    kind = rng.random()
    return extreme(rng) if kind < 0.2 else observable(rng) if kind < 0.6 else prepared(rng)


def overflow_params(rng):
    """AddParams whose output stage's value before its last rounding step spans about 2^15 to 2^19 (the adder
    saturates it to 18 bits) for every output shift from 0 to -3: values on both sides of the saturation bound."""
    def mult():
        return int(rng.choice([1 << 30, int(rng.integers(1 << 30, 1 << 31))]))
    return params.AddParams(left_shift=20,
                            input1_offset=int(rng.choice([128, -127])), input1_multiplier=mult(),
                            input1_shift=int(rng.integers(-14, -8)),
                            input2_offset=int(rng.choice([128, -127])), input2_multiplier=mult(),
                            input2_shift=int(rng.integers(-14, -8)),
                            output_offset=0, output_multiplier=mult(), output_shift=int(rng.integers(-3, 1)),
                            act_min=-128, act_max=127)


def check(lanes, beats, *, seed, valid_gap, ready_gap, fold=1, make=make_params):
    rng = np.random.default_rng(seed)
    dut = eltwise.Adder(lanes, fold=fold)
    events, expected = [], []
    p = None
    for n in range(beats):
        if p is None or rng.random() < 0.05:
            p = make(rng)
            events.append([(dut.param, payload(p))])
        x1, x2 = vector(rng, lanes), vector(rng, lanes)
        expected.append(kernels.add(np.array(x1, dtype=np.int8), np.array(x2, dtype=np.int8), p).astype(np.int64))
        # a and b handshake together; their valids rise independently
        events.append([(dut.a, x1), (dut.b, x2)] if rng.random() < 0.5 else [(dut.b, x2), (dut.a, x1)])
    got = []

    async def producer(ctx):
        await send(ctx, events, rng, valid_gap)

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.o, beats, rng, ready_gap, max_cycles=20 * fold * len(events) + 100))

    run(dut, producer, consumer)
    for n, (raw, exp) in enumerate(zip(got, expected, strict=True)):
        assert list(unpack(raw, lanes)) == list(exp), f"beat {n}: got {unpack(raw, lanes)}, expected {exp}"


@pytest.mark.parametrize("valid_gap,ready_gap,seed", [(0.3, 0.3, 11), (0.0, 0.6, 12), (0.6, 0.0, 13)])
def test_random(valid_gap, ready_gap, seed):
    check(4, 300, seed=seed, valid_gap=valid_gap, ready_gap=ready_gap)


def test_output_saturation():
    """The output stage's 18-bit saturation, with values on both sides of its bound for every shift."""
    check(4, 300, seed=31, valid_gap=0.1, ready_gap=0.1, make=overflow_params)


@pytest.mark.parametrize("lanes,fold,valid_gap,ready_gap,seed", [
    (4, 2, 0.3, 0.3, 16), (4, 4, 0.0, 0.6, 17), (4, 4, 0.6, 0.0, 18), (6, 3, 0.2, 0.2, 19), (4, 2, 0.0, 0.0, 20)])
def test_folded(lanes, fold, valid_gap, ready_gap, seed):
    """A folded adder (lanes // fold pipeline lanes, a beat in fold parts) gives the same results."""
    check(lanes, 150, seed=seed, valid_gap=valid_gap, ready_gap=ready_gap, fold=fold)


@pytest.mark.parametrize("fold", [1, 2, 4])
def test_throughput(fold):
    """Without gaps the adder takes a beat every cycle (every fold cycles when folded); each result follows after
    the latency."""
    lanes, beats = 4, 12
    rng = np.random.default_rng(21)
    p = prepared(rng)
    dut = eltwise.Adder(lanes, fold=fold)
    assert (dut.fold, dut.latency) == (fold, eltwise.Adder.LATENCY + fold - 1)
    xs = [(vector(rng, lanes), vector(rng, lanes)) for _ in range(beats)]
    taken, cycles = [], []

    async def producer(ctx):
        ctx.set(dut.param.payload, payload(p))
        ctx.set(dut.param.valid, 1)
        await ctx.tick()
        ctx.set(dut.param.valid, 0)
        ctx.set(dut.o.ready, 1)
        cycle = 0
        for x1, x2 in xs:
            ctx.set(dut.a.payload, x1)
            ctx.set(dut.b.payload, x2)
            ctx.set(dut.a.valid, 1)
            ctx.set(dut.b.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.a.ready)
                cycle += 1
                if ready:
                    taken.append(cycle)
                    break
        ctx.set(dut.a.valid, 0)
        ctx.set(dut.b.valid, 0)

    async def consumer(ctx):
        await ctx.tick()
        for cycle in range(1, fold * beats + 40):
            _, _, valid, raw = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                n = len(cycles)
                cycles.append(cycle)
                x1, x2 = (np.array(v, dtype=np.int8) for v in xs[n])
                assert list(unpack(raw.as_value().value, lanes)) == list(kernels.add(x1, x2, p))

    run(dut, producer, consumer)
    # The first beat waits two cycles after the parameter load (`pending`: the parameters are loaded through two
    # stages).
    assert taken == [3 + fold * n for n in range(beats)]
    assert cycles == [t + dut.latency for t in taken]


@pytest.mark.parametrize("fold", [1, 4])
def test_backpressure(fold):
    """With o.ready low the adder takes fifo_depth beats (LATENCY + 1 unfolded), then holds a.ready and b.ready
    low; nothing is lost or duplicated."""
    lanes = 4
    rng = np.random.default_rng(22 + fold)
    dut = eltwise.Adder(lanes, fold=fold)
    assert dut.fifo_depth == (eltwise.Adder.LATENCY + 1 if fold == 1 else dut.latency // fold + 1)
    p = prepared(rng)
    xs = [(vector(rng, lanes), vector(rng, lanes)) for _ in range(dut.fifo_depth + 8)]
    expected = [pack(kernels.add(np.array(x1, dtype=np.int8), np.array(x2, dtype=np.int8), p)) for x1, x2 in xs]
    check_backpressure(dut, (dut.param, payload(p)), [[(dut.a, x1), (dut.b, x2)] for x1, x2 in xs], expected,
                       depth=dut.fifo_depth, cycles_per_beat=fold)


def test_default_16_lanes():
    dut = eltwise.Adder()
    assert (dut.lanes, dut.left_shift) == (16, 20)
    text = verilog.convert(dut, name="adder")
    for port in ("a__valid", "b__ready", "param__payload", "o__payload"):
        assert port in text
    check(16, 10, seed=15, valid_gap=0.2, ready_gap=0.2)


def test_validation():
    with pytest.raises(TypeError, match="Lane count must be a positive integer"):
        eltwise.Adder(0)
    with pytest.raises(ValueError, match="Left shift must be an integer in"):
        eltwise.Adder(4, left_shift=23)
    for fold in (0, 3, True):
        with pytest.raises(ValueError, match="Fold must be a positive integer dividing the lane count 4"):
            eltwise.Adder(4, fold=fold)
