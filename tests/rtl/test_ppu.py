# amaranth: UnusedElaboratable=no
"""Requantizer against the golden model's ``requantize``, bit-exact, under random valid and ready gaps."""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from haneul.rtl import ppu
from haneul.sim.golden import kernels, quant
from haneul.sim.golden.quant import INT32_MAX, INT32_MIN


# -- stream testbench helpers (shared by the eltwise and pool tests) --------------------------------------------

async def send(ctx, beats, rng, gap):
    """Present ``beats`` in order; each beat is a list of ``(stream, payload)`` that must handshake together.

    Every ``valid`` rises after a random number of idle cycles (probability ``gap`` per cycle) and stays high until
    the handshake.
    """
    for beat in beats:
        for stream, payload in beat:
            while rng.random() < gap:
                await ctx.tick()
            ctx.set(stream.payload, payload)
            ctx.set(stream.valid, 1)
        ready = beat[0][0].ready
        for stream, _ in beat[1:]:
            ready = ready & stream.ready
        await ctx.tick().until(ready)
        for stream, _ in beat:
            ctx.set(stream.valid, 0)


async def receive(ctx, stream, count, rng, gap, *, max_cycles):
    """Collect ``count`` payloads from ``stream`` with ``ready`` low with probability ``gap`` per cycle.

    Also checks the stream rules on the transmitter: once ``valid`` is high it stays high, with a stable payload,
    until the handshake.
    """
    got = []
    held = None
    for _ in range(max_cycles):
        if len(got) == count:
            return got
        ctx.set(stream.ready, int(rng.random() >= gap))
        _, _, valid, ready, payload = await ctx.tick().sample(stream.valid, stream.ready, stream.payload)
        payload = payload.as_value().value
        if held is not None:
            assert valid, "valid dropped before the handshake"
            assert payload == held, "payload changed before the handshake"
        held = None
        if valid and ready:
            got.append(payload)
        elif valid:
            held = payload
    raise AssertionError(f"only {len(got)} of {count} beats after {max_cycles} cycles")


def check_backpressure(dut, param, beats, expected, *, depth, cycles_per_beat=1):
    """With ``o.ready`` low, a unit with an output FIFO of ``depth`` entries takes exactly ``depth`` of the offered
    ``beats`` and then holds its inputs' ``ready`` low; released, it sends exactly those beats' results
    (``expected``, payload integers), in order, and nothing more. ``busy`` is high from the first beat taken until
    the last result has left, low before and after.

    ``param`` is a ``(stream, payload)`` parameter beat sent first; each beat is a list of ``(stream, payload)``
    offered together (the adder's ``a`` and ``b``), with ``valid`` held high throughout.
    """
    streams = [stream for stream, _ in beats[0]]
    taken, got, busy = [], [], []

    async def tb(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(param[0].payload, param[1])
        ctx.set(param[0].valid, 1)
        await ctx.tick().until(param[0].ready)
        ctx.set(param[0].valid, 0)
        for stream in streams:
            ctx.set(stream.valid, 1)
        for cycle in range((depth + 8) * cycles_per_beat + 40):
            for stream, payload in beats[len(taken)]:
                ctx.set(stream.payload, payload)
            _, _, ready, owing = await ctx.tick().sample(streams[0].ready, dut.busy)
            busy.append(owing)
            if ready:
                taken.append(cycle)
        for stream in streams:
            ctx.set(stream.valid, 0)
        ctx.set(dut.o.ready, 1)
        for _ in range((depth + 8) * cycles_per_beat + 40):
            _, _, valid, payload, owing = await ctx.tick().sample(dut.o.valid, dut.o.payload, dut.busy)
            if valid:
                got.append(payload.as_value().value)
        busy.append(ctx.get(dut.busy))

    run(dut, tb)
    assert len(taken) == depth
    assert not busy[0] and all(busy[taken[0] + 1:-1]) and not busy[-1]     # -1: after the release
    assert got == expected[:depth]


def run(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def pack(values, width=8):
    """The payload integer of signed lanes (the inverse of :func:`unpack`)."""
    return sum((int(v) & ((1 << width) - 1)) << (width * k) for k, v in enumerate(values))


def unpack(raw, lanes, width=8):
    """Signed lanes of a packed payload integer."""
    vals = np.array([(raw >> (width * k)) & ((1 << width) - 1) for k in range(lanes)], dtype=np.int64)
    return np.where(vals >= 1 << (width - 1), vals - (1 << width), vals)


# -- stimulus ------------------------------------------------------------------------------------------------------

def clamp_bounds(rng, zero_point, scale=0.05):
    """Clamp bounds of a random fused activation (or an arbitrary range)."""
    kind = rng.integers(6)
    if kind == 0:
        return -128, 127                                     # NONE
    if kind == 1:
        return max(-128, zero_point), 127                    # RELU
    if kind == 2:
        return max(-128, zero_point), min(127, zero_point + int(round(6 / scale)))   # RELU6
    if kind == 3:
        return max(-128, zero_point - 20), min(127, zero_point + 20)                 # RELU_N1_TO_1-like
    if kind == 4:
        v = int(rng.integers(-128, 128))
        return v, v                                          # degenerate single value
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return lo, hi


def zero_point(rng):
    return int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))


def lane_params(rng, single):
    mult = int(rng.choice([0, 1, 1 << 30, 1 << 30, 1 << 30, INT32_MAX, INT32_MIN, -(1 << 30) - 12345,
                           *rng.integers(1 << 30, 1 << 31, 6)]))
    if rng.random() < 0.2:
        shift = int(rng.integers(-31, 31 if single else 32))   # the whole supported range
    else:
        shift = int(rng.integers(-31, 8))
    bias = int(rng.choice([0, INT32_MIN, INT32_MAX, int(rng.integers(-1000, 1000)),
                           int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))]))
    return bias, mult, shift


def accumulator(rng, bias, mult, shift):
    kind = rng.integers(5)
    if kind == 0:
        return int(rng.choice([INT32_MIN, INT32_MAX, INT32_MIN + 1, -1, 0, 1]))
    if kind == 1:
        return int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))
    if kind == 2:
        # odd multiples of 2^-shift: with a multiplier of 2^30 they make exact halves for both roundings
        x = int(rng.integers(-64, 64)) * 2 + 1 << max(-shift, 0)
    else:
        # values whose result lands around the int8 range
        gain = max(abs(mult), 1) / 2**31 * 2.0**shift
        span = min(INT32_MAX, int(300 / gain) + 1)
        x = int(rng.integers(-span, span + 1))
    # the accumulator that makes acc + bias == x (with int32 wrap)
    return int(quant.wrap_int32(x - bias))


def make_params(rng, lanes):
    single = bool(rng.integers(2))
    zp = zero_point(rng)
    act_min, act_max = clamp_bounds(rng, zp)
    lanes_p = [lane_params(rng, single) for _ in range(lanes)]
    if rng.random() < 0.15:
        # the INT32_MIN * INT32_MIN saturation of SaturatingRoundingDoublingHighMul
        lanes_p[0] = (0, INT32_MIN, int(rng.integers(-3, 1)))
    return dict(single=single, output_offset=zp, act_min=act_min, act_max=act_max, lanes=lanes_p)


def param_payload(p):
    return {
        "config": {"output_offset": p["output_offset"], "act_min": p["act_min"], "act_max": p["act_max"],
                   "rounding": ppu.Rounding.SINGLE if p["single"] else ppu.Rounding.DOUBLE},
        "lanes": [{"bias": b, "multiplier": m, "shift": s} for b, m, s in p["lanes"]],
    }


def golden(p, acc):
    bias, mult, shift = (np.array(v, dtype=np.int64) for v in zip(*p["lanes"]))
    return kernels.requantize(np.array(acc, dtype=np.int64) + bias, mult, shift, p["output_offset"],
                              p["act_min"], p["act_max"], single_rounding=p["single"]).astype(np.int64)


def make_program(rng, lanes, beats, *, special=()):
    """A list of ("param", params) and ("data", accumulators) events, with parameter reloads at random points."""
    events = [("param", p) for p in special]
    p = make_params(rng, lanes)
    events.append(("param", p))
    for _ in range(beats):
        if rng.random() < 0.08:
            p = make_params(rng, lanes)
            events.append(("param", p))
        acc = [accumulator(rng, b, m, s) for b, m, s in p["lanes"]]
        # the INT32_MIN * INT32_MIN saturation needs x == INT32_MIN after the bias add
        if p["lanes"][0][1] == INT32_MIN and rng.random() < 0.5:
            acc[0] = INT32_MIN - p["lanes"][0][0]
        events.append(("data", acc))
    return events


def check_requantizer(lanes, events, *, seed, valid_gap, ready_gap, fold=1):
    dut = ppu.Requantizer(lanes, fold=fold)
    rng = np.random.default_rng(seed)
    expected, current, beats = [], None, []
    for kind, value in events:
        if kind == "param":
            current = value
            beats.append([(dut.param, param_payload(value))])
        else:
            expected.append(golden(current, value))
            beats.append([(dut.i, value)])
    got = []

    async def producer(ctx):
        await send(ctx, beats, rng, valid_gap)

    async def consumer(ctx):
        got.extend(await receive(ctx, dut.o, len(expected), rng, ready_gap,
                                 max_cycles=20 * fold * len(events) + 100))

    run(dut, producer, consumer)
    for n, (raw, exp) in enumerate(zip(got, expected, strict=True)):
        assert list(unpack(raw, lanes)) == list(exp), f"beat {n}: got {unpack(raw, lanes)}, expected {exp}"


# -- tests ---------------------------------------------------------------------------------------------------------

def corner_params(lanes):
    """Parameter sets that pin the corners: shift extremes, multiplier extremes, zero points, both roundings."""
    sets = []
    for single in (False, True):
        for shift in (-31, 7, 30 if single else 31, 0):
            for mult in (0, 1 << 30, INT32_MAX, INT32_MIN):
                sets.append(dict(single=single, output_offset=-128 if mult & 1 else 127, act_min=-128, act_max=127,
                                 lanes=[(INT32_MAX if k % 2 else INT32_MIN, mult, shift) for k in range(lanes)]))
    return sets


def corner_program(lanes):
    events = []
    accs = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, INT32_MAX - 1, 12345]
    for p in corner_params(lanes):
        events.append(("param", p))
        for k in range(0, len(accs), lanes):
            events.append(("data", (accs[k:k + lanes] * lanes)[:lanes]))
    return events


@pytest.mark.parametrize("valid_gap,ready_gap,seed", [(0.3, 0.3, 1), (0.0, 0.6, 2), (0.6, 0.0, 3)])
def test_random(valid_gap, ready_gap, seed):
    rng = np.random.default_rng(seed)
    check_requantizer(4, make_program(rng, 4, 400), seed=seed, valid_gap=valid_gap, ready_gap=ready_gap)


def test_corners():
    check_requantizer(4, corner_program(4), seed=4, valid_gap=0.2, ready_gap=0.2)


@pytest.mark.parametrize("lanes,fold,valid_gap,ready_gap,seed", [
    (4, 2, 0.3, 0.3, 11), (4, 4, 0.0, 0.5, 12), (8, 2, 0.5, 0.0, 13), (6, 3, 0.2, 0.2, 14), (16, 2, 0.0, 0.0, 15),
    (9, 2, 0.3, 0.3, 16), (5, 3, 0.0, 0.3, 17)])
def test_folded(lanes, fold, valid_gap, ready_gap, seed):
    """A folded requantiser (ceil(lanes / fold) pipeline lanes, a beat in fold parts, each element with its own
    parameters; the last part short when the fold does not divide the lanes) gives the same results, with parameter reloads between beats and the corner parameters."""
    rng = np.random.default_rng(seed)
    events = corner_program(lanes)[:40] + make_program(rng, lanes, 150)
    check_requantizer(lanes, events, seed=seed, valid_gap=valid_gap, ready_gap=ready_gap, fold=fold)


def test_fold_validation():
    with pytest.raises(ValueError, match=r"^Fold must be a positive integer up to the lane count 16, not 17$"):
        ppu.Requantizer(16, fold=17)
    with pytest.raises(ValueError, match=r"^Fold must be a positive integer up to the lane count 16, not 0$"):
        ppu.Requantizer(16, fold=0)


@pytest.mark.parametrize("fold", [1, 2, 4])
def test_throughput(fold):
    """Without gaps, one beat per cycle (per fold cycles when folded) after the pipeline latency."""
    lanes, beats = 4, 60
    rng = np.random.default_rng(5)
    p = make_params(rng, lanes)
    dut = ppu.Requantizer(lanes, fold=fold)
    accs = [[accumulator(rng, b, m, s) for b, m, s in p["lanes"]] for _ in range(beats)]
    cycles = {}

    async def producer(ctx):
        ctx.set(dut.param.payload, param_payload(p))
        ctx.set(dut.param.valid, 1)
        await ctx.tick().until(dut.param.ready)
        ctx.set(dut.param.valid, 0)
        ctx.set(dut.o.ready, 1)
        for n, acc in enumerate(accs):
            ctx.set(dut.i.payload, acc)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        got = []
        for cycle in range(beats * fold + 30):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload.as_value().value)
                cycles.setdefault("first", cycle)
                cycles["last"] = cycle
        for raw, acc in zip(got, accs, strict=True):
            assert list(unpack(raw, lanes)) == list(golden(p, acc))

    run(dut, producer, consumer)
    # parameter beat offered on cycle 0, loaded and accepted two cycles after a cycle it may be seen in (folded,
    # the load is on the last part cycle of a beat: 2 for fold 1, 3 for folds 2 and 4), first beat offered the
    # cycle after and accepted in the first cycle before a beat cycle (beats enter the pipeline on every fold-th
    # cycle from reset, `Fold(aligned=True)`, from the input register)
    assert dut.latency == ppu.Requantizer.LATENCY + fold - 1
    offered = 3 if fold == 1 else 4
    assert cycles["first"] == offered + (-(offered + 1)) % fold + dut.latency
    assert cycles["last"] - cycles["first"] == (beats - 1) * fold


@pytest.mark.parametrize("fold", [1, 2, 4])
def test_ready_next(fold):
    """`i_ready_next` is `i.ready` of the next cycle, under random output backpressure (the accumulator's queue
    keeps copies of `i.ready` loaded from it); `i.ready` never outruns the output queue's credits (the results
    are checked), and with the output always ready the folded unit still takes a beat every `fold` cycles."""
    lanes = 4
    rng = np.random.default_rng(60 + fold)
    p = make_params(rng, lanes)
    dut = ppu.Requantizer(lanes, fold=fold)
    accs = [[accumulator(rng, b, m, s) for b, m, s in p["lanes"]] for _ in range(120)]
    mismatches, takes = [], []

    async def producer(ctx):
        ctx.set(dut.param.payload, param_payload(p))
        ctx.set(dut.param.valid, 1)
        await ctx.tick().until(dut.param.ready)
        ctx.set(dut.param.valid, 0)
        for acc in accs:
            ctx.set(dut.i.payload, acc)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def checker(ctx):
        previous = None
        for cycle in range(len(accs) * fold * 3 + 100):
            _, _, ready, ready_next, valid = await ctx.tick().sample(dut.i.ready, dut.i_ready_next, dut.i.valid)
            if previous is not None and ready != previous:
                mismatches.append(cycle)
            previous = ready_next
            if ready and valid:
                takes.append(cycle)

    async def consumer(ctx):
        got = []
        for cycle in range(len(accs) * fold * 3 + 100):
            # output always ready in the second half: full rate again
            ctx.set(dut.o.ready, 1 if len(got) >= len(accs) // 2 else int(rng.random() < 0.3))
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got.append(payload.as_value().value)
        assert len(got) == len(accs)
        for raw, acc in zip(got, accs, strict=True):
            assert list(unpack(raw, lanes)) == list(golden(p, acc))

    run(dut, producer, checker, consumer)
    assert not mismatches, f"i.ready differs from the i_ready_next of the cycle before in cycles {mismatches[:5]}"
    late = takes[len(takes) * 3 // 4:]
    assert all(b - a == fold for a, b in zip(late, late[1:])), late


@pytest.mark.parametrize("fold, offset", [(1, 0), (2, 0), (2, 1), (4, 2), (4, 3)])
def test_param_load_during_traffic(fold, offset):
    """A parameter beat offered while accumulator beats stream in without gaps: every beat accepted before the
    cycle the parameter beat is accepted has the old parameters in all its parts, every later one (and one in that
    cycle) the new (folded, the load never falls between two parts of a beat)."""
    lanes, beats = 4, 24
    rng = np.random.default_rng(40 + 10 * fold + offset)
    old, new = make_params(rng, lanes), make_params(rng, lanes)
    dut = ppu.Requantizer(lanes, fold=fold)
    accs = [[accumulator(rng, b, m, s) for b, m, s in old["lanes"]] for _ in range(beats)]
    taken, loaded = [], []

    async def until(ctx, ready, clock):
        """Tick until a handshake with ``ready`` (sampled at the clock edge); ``clock[0]`` counts the edges."""
        while True:
            *_, value = await ctx.tick().sample(ready)
            clock[0] += 1
            if value:
                return clock[0]

    async def params(ctx):
        clock = [0]
        ctx.set(dut.param.payload, param_payload(old))
        ctx.set(dut.param.valid, 1)
        await until(ctx, dut.param.ready, clock)
        ctx.set(dut.param.valid, 0)
        for _ in range(4 * fold + offset):
            await ctx.tick()
            clock[0] += 1
        ctx.set(dut.param.payload, param_payload(new))
        ctx.set(dut.param.valid, 1)
        loaded.append(await until(ctx, dut.param.ready, clock))
        ctx.set(dut.param.valid, 0)

    async def producer(ctx):
        clock = [0]
        ctx.set(dut.o.ready, 1)
        await until(ctx, dut.param.ready, clock)       # after the first parameter beat
        for acc in accs:
            ctx.set(dut.i.payload, acc)
            ctx.set(dut.i.valid, 1)
            taken.append(await until(ctx, dut.i.ready, clock))
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        got = []
        while len(got) < beats:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(list(unpack(payload.as_value().value, lanes)))
        (load,) = loaded
        assert taken[0] <= load < taken[-1]
        for cycle, acc, out in zip(taken, accs, got, strict=True):
            assert out == list(golden(old if cycle < load else new, acc)), (cycle, load)

    run(dut, params, producer, consumer)


def test_default_16_lanes():
    """The default configuration converts to Verilog and computes a short run bit-exactly."""
    dut = ppu.Requantizer()
    assert dut.lanes == 16
    text = verilog.convert(dut, name="requantizer")
    for port in ("i__valid", "i__ready", "i__payload", "param__payload", "o__payload", "o__valid", "o__ready"):
        assert port in text
    rng = np.random.default_rng(6)
    check_requantizer(16, make_program(rng, 16, 12), seed=6, valid_gap=0.2, ready_gap=0.2)


@pytest.mark.parametrize("fold", [1, 2])
def test_backpressure(fold):
    """With o.ready low the requantiser takes fifo_depth beats, then holds i.ready low; nothing is lost."""
    lanes = 4
    rng = np.random.default_rng(7)
    dut = ppu.Requantizer(lanes, fold=fold)
    p = make_params(rng, lanes)
    accs = [[accumulator(rng, b, m, s) for b, m, s in p["lanes"]] for _ in range(dut.fifo_depth + 8)]
    check_backpressure(dut, (dut.param, param_payload(p)), [[(dut.i, acc)] for acc in accs],
                       [pack(golden(p, acc)) for acc in accs], depth=dut.fifo_depth, cycles_per_beat=fold)


def test_rounding_identities():
    """The shift-then-round identities the datapath relies on, against the golden functions on many values."""
    rng = np.random.default_rng(7)
    n = 200_000
    x = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    x[:1000] = rng.integers(-64, 65, 1000)
    mult = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    mult[:2000] = rng.choice([0, 1 << 30, 1 << 29, INT32_MAX, INT32_MIN], 2000)
    x[:100], mult[:100] = INT32_MIN, INT32_MIN
    prod = x * mult
    # SaturatingRoundingDoublingHighMul = ((prod >> 30) + 1) >> 1, saturated
    high = np.minimum(((prod >> 30) + 1) >> 1, INT32_MAX)
    assert np.array_equal(high, quant.saturating_rounding_doubling_high_mul(x, mult))
    # RoundingDivideByPOT(h, e): y = (2h) >> e, carry 0 only for negative exact halves, then (y + carry) >> 1
    for e in range(32):
        z = 2 * high
        y = z >> e
        exact_half = ((z & ((1 << e) - 1)) == 0) & (y & 1 == 1)
        carry = np.where((z < 0) & exact_half, 0, 1)
        assert np.array_equal((y + carry) >> 1, quant.rounding_divide_by_pot(high, e))
    # single rounding: (prod + 2^(30-s)) >> (31-s) = ((prod >> (30-s)) + 1) >> 1
    for s in range(-31, 31):
        assert np.array_equal(((prod >> (30 - s)) + 1) >> 1,
                              quant.multiply_by_quantized_multiplier_single_rounding(x, mult, s))


def test_lanes_validation():
    with pytest.raises(TypeError, match="Lane count must be a positive integer"):
        ppu.Requantizer(0)
    with pytest.raises(TypeError, match="Lane count must be a positive integer"):
        ppu.Requantizer(True)


def test_rounding_ties():
    """Exact halves of both signs through the last rounding step (round half away from zero with double rounding,
    half up with single rounding): small negative shifts and multipliers of 1/2 and 3/4 on a sweep of accumulators
    make a tie every few values."""
    lanes = 4
    events = []
    for single in (False, True):
        for shift in (-1, -2, -3):
            for mult in (1 << 30, 3 << 29):
                events.append(("param", dict(single=single, output_offset=0, act_min=-128, act_max=127,
                                             lanes=[(0, mult, shift)] * lanes)))
                for x in range(-160, 160, lanes):
                    events.append(("data", [x + k for k in range(lanes)]))
    check_requantizer(lanes, events, seed=5, valid_gap=0.1, ready_gap=0.1)


def test_two_stage_rounding_shift():
    """``shift_right_coarse`` then ``rounding_shift_right`` (the requantiser's S8-S9) give ``z >> amount`` and the
    rounding carry of one shift: every amount, both rounding modes, values with many trailing zeros (exact halves)."""
    m = Module()
    z = Signal(signed(64))
    amount = Signal(unsigned(6))
    away = Signal()
    shifted, low_zero, fine = ppu.shift_right_coarse(z, amount)
    y, carry = ppu.rounding_shift_right(shifted, fine, away, low_zero)
    y_out, carry_out = Signal(signed(64)), Signal()
    m.d.comb += [y_out.eq(y), carry_out.eq(carry)]

    rng = np.random.default_rng(11)
    values = [0, -1, 1, INT32_MIN, -(1 << 63), (1 << 63) - 1]
    for _ in range(40):
        value = int(rng.integers(-(1 << 62), 1 << 62))
        values.append(value >> int(rng.integers(0, 60)) << int(rng.integers(0, 40)))

    async def testbench(ctx):
        for value in values:
            value = (value + (1 << 63)) % (1 << 64) - (1 << 63)
            for shift in range(64):
                for mode in (0, 1):
                    ctx.set(z, value)
                    ctx.set(amount, shift)
                    ctx.set(away, mode)
                    exact_half = (value % (1 << shift) == 0) and (value >> shift) & 1
                    expected_carry = 0 if (mode and value < 0 and exact_half) else 1
                    assert ctx.get(y_out) == value >> shift, (value, shift)
                    assert ctx.get(carry_out) == expected_carry, (value, shift, mode)

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
