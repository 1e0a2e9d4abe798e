# amaranth: UnusedElaboratable=no
"""Depthwise vector unit and sliding-window buffer: bit-exact against numpy and the golden model's
``depthwise_conv_2d``, under random valid and ready gaps.

Run with ``pytest -W error::DeprecationWarning tests/rtl/test_depthwise.py``.
"""

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Fragment, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

from haneul.rtl import ppu
from haneul.rtl.config import DatapathConfig
from haneul.rtl.carry import CarryChainModel
from haneul.rtl.depthwise import DepthwiseUnit, WindowBuffer, column_schedule
from haneul.sim.golden import kernels
from haneul.sim.golden.params import DepthwiseParams, compute_padding
from haneul.sim.golden.quant import quantize_multiplier, wrap_int32

# Traffic patterns: (probability of an idle cycle before each input beat, probability of ready low per cycle).
TRAFFIC = {
    "smooth":       dict(in_gap=0.0, weight_gap=0.0, out_gap=0.0),
    "gaps":         dict(in_gap=0.3, weight_gap=0.3, out_gap=0.3),
    "slow_weights": dict(in_gap=0.0, weight_gap=0.8, out_gap=0.0),
    "backpressure": dict(in_gap=0.1, weight_gap=0.1, out_gap=0.7),
}


# -- stream helpers -------------------------------------------------------------------------------------------------

async def drive(ctx, stream, payloads, rng, gap):
    """Send ``payloads`` in order; ``valid`` rises after a random number of idle cycles and holds until accepted."""
    for payload in payloads:
        while rng.random() < gap:
            await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)


async def collect(ctx, stream, count, rng, gap, *, max_cycles, lanes=None):
    """Take ``count`` beats from ``stream`` (``ready`` low with probability ``gap``), checking that an offered beat
    stays offered, unchanged, until it is taken. Returns the payloads (lists of lane values when ``lanes``)."""
    got = []
    held = None
    for _ in range(max_cycles):
        if len(got) == count:
            return got
        ctx.set(stream.ready, int(rng.random() >= gap))
        _, _, valid, ready, payload = await ctx.tick().sample(stream.valid, stream.ready, stream.payload)
        raw = payload.as_value().value
        if held is not None:
            assert valid, "valid dropped before the handshake"
            assert raw == held, "payload changed before the handshake"
        held = None
        if valid and ready:
            got.append([payload[k] for k in range(lanes)] if lanes is not None else payload)
        elif valid:
            held = raw
    raise AssertionError(f"only {len(got)} of {count} beats after {max_cycles} cycles")


def simulate(dut, *testbenches, platform=None):
    """Run ``testbenches`` on ``dut``, elaborated for ``platform`` (``CarryChainModel()``: the ECP5 carry chains of
    the depthwise unit, as an Amaranth model of the ``CCU2C`` cell)."""
    sim = Simulator(dut if platform is None else Fragment.get(dut, platform))
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


def zero_point(rng):
    return int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))


# -- the unit on its own: random groups ------------------------------------------------------------------------------

def random_groups(rng, lanes, taps, passes, count):
    """Channel groups: a weight set (1 .. passes * taps lines), a zero point, and output pixels of 1 .. passes
    passes, each pass a window (data, mask)."""
    groups = []
    for _ in range(count):
        lines = int(rng.integers(1, passes * taps + 1)) if rng.random() < 0.5 else passes * taps
        weights = rng.integers(-128, 128, (lines, lanes))
        if rng.random() < 0.2:
            weights[:] = rng.choice([-128, 127])
        pixels = []
        for _ in range(int(rng.integers(1, 12))):
            # now and then one beat more than the weight set has slices: it reuses the last slice
            n_passes = int(rng.integers(1, passes + 1)) if rng.random() < 0.9 else passes + 1
            windows = []
            for _ in range(n_passes):
                win = rng.integers(-128, 128, (taps, lanes))
                mask = int(rng.integers(0, 1 << taps)) if rng.random() < 0.5 else (1 << taps) - 1
                windows.append((win, mask))
            pixels.append(windows)
        # a full-length set may leave out `last`: it closes by itself after passes * taps lines
        unclosed = lines == passes * taps and rng.random() < 0.5
        groups.append(dict(weights=weights, zp=zero_point(rng), pixels=pixels, unclosed=unclosed))
    return groups


def unit_model(groups, lanes, taps, passes):
    """Expected result beats: per pixel and lane, the sum over its passes of masked (x - zp) * w, int32 wrapped
    (pass ``p`` uses weight slice ``min(p, passes - 1)``)."""
    out = []
    for g in groups:
        w = np.zeros((passes * taps, lanes), dtype=np.int64)
        w[:len(g["weights"])] = g["weights"]
        for windows in g["pixels"]:
            acc = np.zeros(lanes, dtype=np.int64)
            for p, (win, mask) in enumerate(windows):
                bits = np.array([(mask >> t) & 1 for t in range(taps)], dtype=np.int64)[:, None]
                q = min(p, passes - 1)
                acc += ((win - g["zp"]) * bits * w[q * taps:(q + 1) * taps]).sum(axis=0)
            out.append(wrap_int32(acc))
    return out


def unit_streams(groups, taps):
    """The weight-stream and window-stream payloads of ``groups``."""
    weights, windows = [], []
    for g in groups:
        lines = g["weights"]
        for k, line in enumerate(lines):
            last = k == len(lines) - 1 and not g.get("unclosed", False)
            weights.append({"data": [int(v) for v in line], "zero_point": g["zp"], "last": int(last)})
        for n, pixel in enumerate(g["pixels"]):
            for p, (win, mask) in enumerate(pixel):
                final = p == len(pixel) - 1
                windows.append({"data": [[int(v) for v in row] for row in win], "mask": mask, "final": int(final),
                                "last": int(final and n == len(g["pixels"]) - 1)})
    return weights, windows


def check_unit(dut, groups, rng, traffic, platform=None):
    expected = unit_model(groups, dut.lanes, dut.taps, dut.passes)
    weights, windows = unit_streams(groups, dut.taps)
    got = []

    async def weight_tb(ctx):
        await drive(ctx, dut.weight, weights, rng, traffic["weight_gap"])

    async def window_tb(ctx):
        await drive(ctx, dut.window, windows, rng, traffic["in_gap"])

    async def result_tb(ctx):
        got.extend(await collect(ctx, dut.result, len(expected), rng, traffic["out_gap"], lanes=dut.lanes,
                                 max_cycles=40 * (len(windows) + len(weights)) + 100))

    simulate(dut, weight_tb, window_tb, result_tb, platform=platform)
    for n, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert list(g) == list(e), f"result {n}: got {list(g)}, expected {list(e)}"


@pytest.mark.parametrize("traffic", sorted(TRAFFIC))
def test_unit_random(traffic, rng):
    dut = DepthwiseUnit(lanes=4, taps=9, passes=2)
    check_unit(dut, random_groups(rng, 4, 9, 2, 6), rng, TRAFFIC[traffic])


@pytest.mark.parametrize("lanes, taps, passes, multiplier", [(2, 3, 3, "lut"), (3, 1, 1, "lut"), (1, 4, 1, "dsp"),
                                                             (2, 5, 2, "lut"), (16, 9, 1, "lut"), (4, 9, 2, "dsp"),
                                                             (1, 2, 2, "lut"), (1, 17, 1, "lut")])
def test_unit_shapes(lanes, taps, passes, multiplier, rng):
    dut = DepthwiseUnit(lanes=lanes, taps=taps, passes=passes, multiplier=multiplier)
    check_unit(dut, random_groups(rng, lanes, taps, passes, 4), rng, TRAFFIC["gaps"])


@pytest.mark.parametrize("multiplier, platform", [("lut", None), ("lut", CarryChainModel()), ("dsp", None)])
def test_unit_extremes(multiplier, platform, rng):
    """The largest sums of both signs (2 passes x 9 taps of 255 * 128) and the mixed corners, every lane; with the
    LUT multipliers also as the ECP5 carry chains compute them (the narrowed adder widths hold exactly these)."""
    lanes, taps, passes = 4, 9, 2
    full = (1 << taps) - 1
    groups = []
    for x, zp, w in [(-128, 127, -128), (127, -128, -128), (127, -128, 127), (-128, 127, 127), (-128, -128, -128),
                     (127, 127, 127), (127, -128, -127), (-128, 127, -127), (0, -128, 64), (-1, 127, -64)]:
        windows = [(np.full((taps, lanes), x), full)] * passes
        groups.append(dict(weights=np.full((passes * taps, lanes), w), zp=zp, pixels=[windows, windows[:1]]))
    # weights alternating in sign and the one-hot and all-ones bit patterns, against inputs at both extremes
    pattern = np.resize([-128, 127, -1, 1, 64, -64, 85, -86, 0], passes * taps)
    groups.append(dict(weights=np.repeat(pattern[:, None], lanes, axis=1), zp=-128,
                       pixels=[[(np.full((taps, lanes), 127), full)], [(np.full((taps, lanes), -128), full)]]))
    expected = unit_model(groups, lanes, taps, passes)
    assert expected[0][0] == 18 * 255 * 128 and expected[2][0] == -18 * 255 * 128    # sanity of the model
    check_unit(DepthwiseUnit(lanes=lanes, taps=taps, passes=passes, multiplier=multiplier), groups, rng,
               TRAFFIC["gaps"], platform)


@pytest.mark.parametrize("lanes, taps, passes", [(2, 9, 2), (3, 9, 1), (1, 4, 2), (2, 3, 1), (1, 1, 1), (1, 17, 1)])
def test_unit_carry_chains(lanes, taps, passes, rng):
    """The LUT multipliers as an ECP5 build has them (the row-selecting ``CCU2C`` chains, simulated with a model of
    the cell): random groups, bit-exact. Odd and even tap counts pair the partial-product rows differently."""
    dut = DepthwiseUnit(lanes=lanes, taps=taps, passes=passes)
    check_unit(dut, random_groups(rng, lanes, taps, passes, 4), rng, TRAFFIC["gaps"], CarryChainModel())


def test_unit_ecp5_netlist():
    """For ECP5 the LUT multipliers are ``CCU2C`` instances (one chain per pair of partial-product rows) and no
    ``$mul``; without a platform, plain adders."""
    class Ecp5:
        family = "ecp5"

    dut = DepthwiseUnit(lanes=1, taps=9, passes=1)
    text = rtlil.convert(dut, name="top", platform=Ecp5())
    assert "$mul" not in text
    # one chain of (bound >> lowest shift) + sign bits per pair of rows, two bits per cell
    widths = [(bound >> min(i for _, i, *_ in pair)).bit_length() + 1
              for pair, bound in zip(dut._pairs(), dut._pair_bounds()) if len(pair) == 2]
    assert len(widths) == 36 and text.count("cell \\CCU2C") == sum((width + 1) // 2 for width in widths)
    assert "CCU2C" not in rtlil.convert(DepthwiseUnit(lanes=1, taps=9, passes=1), name="top")


def test_unit_ecp5_dsp_netlist():
    """For ECP5 the ``"dsp"`` multipliers are ``MULT18X18D`` instances whose output register is the stage 2 register
    (one per tap and lane, no ``$mul``); the datapath builds its unit with ``DatapathConfig.dw_mult``."""
    class Ecp5:
        family = "ecp5"

    text = rtlil.convert(DepthwiseUnit(lanes=3, taps=5, passes=2, multiplier="dsp"), name="top", platform=Ecp5())
    assert "$mul" not in text and text.count("cell \\MULT18X18D ") == 15
    assert text.count('parameter \\REG_OUTPUT_CLK "CLK0"') == 15
    assert text.count('parameter \\REG_INPUTA_CLK "NONE"') == 15
    # without a platform (as the tests simulate it): $mul cells, the same cycle timing
    assert rtlil.convert(DepthwiseUnit(lanes=3, taps=5, passes=2, multiplier="dsp"), name="top").count(
        "cell $mul ") == 15
    assert DatapathConfig().dw_mult == "lut"
    with pytest.raises(ValueError, match=r"^Depthwise multiplier type must be one of 'lut', 'dsp', not 'booth'$"):
        DatapathConfig(dw_mult="booth")


def test_unit_timing():
    """Latency 5 for 9 taps (``DepthwiseUnit.latency``), one window per cycle within a group, and exactly one idle cycle
    (the weight-set swap) between groups of as many windows as the next set has lines."""
    rng = np.random.default_rng(7)
    dut = DepthwiseUnit(lanes=2, taps=9, passes=1)
    assert dut.latency == 5
    lines = dut.weight_lines
    groups = []
    for _ in range(3):
        pixels = [[(rng.integers(-128, 128, (9, 2)), (1 << 9) - 1)] for _ in range(lines)]
        groups.append(dict(weights=rng.integers(-128, 128, (lines, 2)), zp=zero_point(rng), pixels=pixels))
    weights, windows = unit_streams(groups, 9)
    expected = unit_model(groups, 2, 9, 1)
    accepted, results = [], []

    async def weight_tb(ctx):
        for payload in weights:
            ctx.set(dut.weight.payload, payload)
            ctx.set(dut.weight.valid, 1)
            await ctx.tick().until(dut.weight.ready)
        ctx.set(dut.weight.valid, 0)

    async def window_tb(ctx):
        cycle = 0
        ctx.set(dut.result.ready, 1)
        pending = list(windows)
        while len(results) < len(expected):
            if pending:
                ctx.set(dut.window.payload, pending[0])
            ctx.set(dut.window.valid, int(bool(pending)))
            _, _, w_ok, r_valid, r_payload = await ctx.tick().sample(
                dut.window.valid & dut.window.ready, dut.result.valid, dut.result.payload)
            if w_ok:
                accepted.append(cycle)
                pending.pop(0)
            if r_valid:
                results.append((cycle, [r_payload[k] for k in range(2)]))
            cycle += 1

    simulate(dut, weight_tb, window_tb)
    # First set: lines 0 .. lines-1 accepted in cycles 0 .. lines-1, complete in cycle `lines`, when it swaps in;
    # the first window in cycle `lines + 1`, then one per cycle; after each group's last window one cycle for the
    # swap (the next set has loaded meanwhile). Each result comes `latency` cycles after its window.
    assert accepted == [lines + 1 + g * (lines + 1) + n for g in range(3) for n in range(lines)]
    assert [c for c, _ in results] == [c + dut.latency for c in accepted]
    assert [v for _, v in results] == [list(e) for e in expected]


def test_unit_stall_holds_result(rng):
    """With ``result`` stalled, exactly ``fifo_depth`` single-pass windows are accepted (non-final beats need no
    room), the offered result (the FIFO's head) stays unchanged, and all results then come out in order."""
    dut = DepthwiseUnit(lanes=2, taps=3, passes=2)
    assert dut.fifo_depth == dut.latency + 1 == 5
    groups = random_groups(rng, 2, 3, 2, 1)
    groups[0]["pixels"] = [[(rng.integers(-128, 128, (3, 2)), 7)] * int(rng.integers(1, 3)) for _ in range(12)]
    weights, windows = unit_streams(groups, 3)
    expected = unit_model(groups, 2, 3, 2)

    async def tb(ctx):
        for payload in weights:
            ctx.set(dut.weight.payload, payload)
            ctx.set(dut.weight.valid, 1)
            await ctx.tick().until(dut.weight.ready)
        ctx.set(dut.weight.valid, 0)
        pending = list(windows)
        finals = 0
        held = None
        for _ in range(40):                      # result.ready stays low
            ctx.set(dut.window.payload, pending[0])
            ctx.set(dut.window.valid, 1)
            _, _, fire, r_valid, r_payload = await ctx.tick().sample(
                dut.window.valid & dut.window.ready, dut.result.valid, dut.result.payload)
            if fire:
                finals += pending.pop(0)["final"]
            if held is not None:
                assert r_valid and r_payload.as_value().value == held
            elif r_valid:
                held = r_payload.as_value().value
        assert finals == dut.fifo_depth
        got = await collect(ctx, dut.result, dut.fifo_depth, rng, 0.0, lanes=2, max_cycles=20)
        assert got == [list(e) for e in expected[:dut.fifo_depth]]

    simulate(dut, tb)


# -- the window buffer ------------------------------------------------------------------------------------------------

def buffer_model(columns, kh, kw, lanes):
    """The windows (data, mask, last) a WindowBuffer emits for ``columns``."""
    cols = [np.zeros((kh, lanes), dtype=np.int64)] * kw
    masks = [0] * kw
    out = []
    for c in columns:
        masks = ([0] * (kw - 1) if c["start"] else masks[1:]) + [c["mask"]]
        cols = cols[1:] + [np.array(c["data"])]
        if c["emit"]:
            data = np.array([cols[j][i] for i in range(kh) for j in range(kw)])
            mask = sum(((masks[j] >> i) & 1) << (i * kw + j) for i in range(kh) for j in range(kw))
            out.append((data, mask, c["last"]))
    return out


@pytest.mark.parametrize("kh, kw, taps, traffic", [(3, 3, 9, "gaps"), (3, 3, 9, "backpressure"), (1, 3, 3, "gaps"),
                                                   (2, 1, 2, "smooth"), (3, 3, 5, "gaps"), (3, 3, 5, "backpressure"),
                                                   (3, 3, 3, "smooth"), (3, 3, 4, "gaps"), (1, 3, 1, "backpressure")])
def test_window_buffer_random(kh, kw, taps, traffic, rng):
    """Random columns (padding masks, row starts, windows emitted or not) under random gaps: the windows match the
    model; with ``taps < kh * kw`` each window comes as ``ceil(kh * kw / taps)`` beats, the last one final."""
    lanes = 2
    dut = WindowBuffer(lanes=lanes, kh=kh, kw=kw, taps=taps)
    passes = -(-kh * kw // taps)
    assert dut.passes == passes
    columns = [{"data": rng.integers(-128, 128, (kh, lanes)).tolist(), "mask": int(rng.integers(0, 1 << kh)),
                "start": int(rng.random() < 0.2), "emit": int(rng.random() < 0.6), "last": int(rng.random() < 0.3)}
               for _ in range(80)]
    windows = buffer_model(columns, kh, kw, lanes)
    expected = []
    for lines, mask, last in windows:
        lines = np.concatenate([lines, np.zeros((passes * taps - kh * kw, lanes), dtype=np.int64)])
        for q in range(passes):
            final = q == passes - 1
            expected.append((lines[q * taps:(q + 1) * taps], (mask >> (q * taps)) & ((1 << taps) - 1), final,
                             last if final else 0))
    got = []
    flow = TRAFFIC[traffic]

    async def column_tb(ctx):
        await drive(ctx, dut.column, columns, rng, flow["in_gap"])

    async def window_tb(ctx):
        got.extend(await collect(ctx, dut.window, len(expected), rng, flow["out_gap"], max_cycles=2000))

    simulate(dut, column_tb, window_tb)
    for n, (g, (lines, mask, final, last)) in enumerate(zip(got, expected, strict=True)):
        assert [[g.data[t][k] for k in range(lanes)] for t in range(taps)] == lines.tolist(), f"beat {n}"
        assert (g.mask, g.final, g.last) == (mask, final, last), f"beat {n}"


@pytest.mark.parametrize("h, w, k, s, same", [(5, 4, 3, 1, True), (5, 4, 3, 2, True), (48, 48, 3, 2, True),
                                              (25, 5, 3, 1, True), (7, 6, 3, 2, False), (3, 3, 3, 1, True),
                                              (1, 30, 3, 1, False), (6, 6, 3, 2, True), (9, 9, 5, 2, True),
                                              (6, 7, 2, 3, False)])
def test_column_schedule(h, w, k, s, same):
    """Replaying the schedule through the buffer model gives every window of the layer, in order, with padding
    masked; a line is read once per output row at stride <= kernel width."""
    oh, ow = ((-(-h // s), -(-w // s)) if same else ((h - k) // s + 1, (w - k) // s + 1))
    pad = (compute_padding(h, k, s, 1, oh), compute_padding(w, k, s, 1, ow)) if same else ((0, 0), (0, 0))
    image = np.arange(h * w).reshape(h, w)
    plan = column_schedule((h, w), (k, k), (s, s), pad, (oh, ow))
    assert [r for r, _ in plan] == list(range(oh))
    for r, columns in plan:
        beats = [{"data": [[image[ih, c.iw] if ih is not None and c.iw is not None else -1] for ih in c.rows],
                  "mask": sum(1 << i for i, ih in enumerate(c.rows) if ih is not None and c.iw is not None),
                  "start": c.start, "emit": c.emit, "last": 0} for c in columns]
        windows = buffer_model(beats, k, k, 1)
        assert [c.ow for c in columns if c.emit] == list(range(ow))
        assert len(windows) == ow
        for col, (lines, mask, _) in enumerate(windows):
            for i in range(k):
                for j in range(k):
                    ih, iw = r * s - pad[0][0] + i, col * s - pad[1][0] + j
                    inside = 0 <= ih < h and 0 <= iw < w
                    assert (mask >> (i * k + j)) & 1 == inside
                    if inside:
                        assert lines[i * k + j][0] == image[ih, iw]
        reads = sum(c.reads for c in columns)
        if s <= k:
            rows_in = sum(ih is not None for ih in columns[0].rows)
            assert reads <= rows_in * w


# -- whole layers against the golden model -----------------------------------------------------------------------------

def random_layer(rng, h, w, c, kernel, stride, same):
    kh, kw = kernel
    oh = -(-h // stride) if same else (h - kh) // stride + 1
    ow = -(-w // stride) if same else (w - kw) // stride + 1
    pad = ((compute_padding(h, kh, stride, 1, oh), compute_padding(w, kw, stride, 1, ow)) if same
           else ((0, 0), (0, 0)))
    zp_in, zp_out = zero_point(rng), zero_point(rng)
    mult, shift = zip(*(quantize_multiplier(float(m)) for m in rng.uniform(0.0005, 0.02, c)))
    act_min, act_max = (-128, 127) if rng.random() < 0.5 else (max(-128, zp_out), 127)
    p = DepthwiseParams(input_offset=-zp_in, output_offset=zp_out, output_multiplier=np.array(mult),
                        output_shift=np.array(shift), stride=(stride, stride), dilation=(1, 1), padding=pad,
                        output_size=(oh, ow), act_min=act_min, act_max=act_max, depth_multiplier=1)
    x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8)
    filters = rng.integers(-127, 128, (1, kh, kw, c)).astype(np.int8)
    if rng.random() < 0.3:
        x[0, 0, 0, :] = -128
        filters[0, 0, 0, :] = -127
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    return x, filters, bias, p, zp_in


def exact_acc(x, filters, zp_in, p):
    """int64 depthwise sums (no bias) by direct loops over the padded input."""
    _, h, w, c = x.shape
    _, kh, kw, _ = filters.shape
    (pt, _), (pl, _) = p.padding
    oh, ow = p.output_size
    acc = np.zeros((oh, ow, c), dtype=np.int64)
    for r in range(oh):
        for q in range(ow):
            for i in range(kh):
                for j in range(kw):
                    ih, iw = r * p.stride[0] - pt + i, q * p.stride[1] - pl + j
                    if 0 <= ih < h and 0 <= iw < w:
                        acc[r, q] += (x[0, ih, iw].astype(np.int64) - zp_in) * filters[0, i, j]
    return acc


def layer_weight_beats(filters, zp_in, lanes, groups):
    _, kh, kw, c = filters.shape
    beats = []
    for g in range(groups):
        for t in range(kh * kw):
            line = np.zeros(lanes, dtype=np.int64)
            chans = filters[0, t // kw, t % kw, g * lanes:(g + 1) * lanes]
            line[:len(chans)] = chans
            beats.append({"data": line.tolist(), "zero_point": zp_in, "last": int(t == kh * kw - 1)})
    return beats


def layer_column_beats(x, kernel, p, lanes, groups, rng):
    """What the sequencer sends to the WindowBuffer: for every channel group the schedule's columns, with the lines
    read from the input (channels beyond the tensor and padding lines are garbage: the mask must hide them)."""
    _, h, w, c = x.shape
    kh, kw = kernel
    plan = column_schedule((h, w), kernel, p.stride, p.padding, p.output_size)
    beats = []
    for g in range(groups):
        group_beats = []
        for _, columns in plan:
            for col in columns:
                data = rng.integers(-128, 128, (kh, lanes))
                mask = 0
                for i, ih in enumerate(col.rows):
                    if ih is not None and col.iw is not None:
                        chans = x[0, ih, col.iw, g * lanes:(g + 1) * lanes]
                        data[i, :len(chans)] = chans
                        mask |= 1 << i
                group_beats.append({"data": data.tolist(), "mask": mask, "start": int(col.start),
                                    "emit": int(col.emit), "last": 0})
        group_beats[-1]["last"] = 1
        beats += group_beats
    return beats


def layer_results(got, lanes, groups, p, c):
    """Result beats (group-major, then output pixels in raster order) as an [OH, OW, C] int64 array."""
    oh, ow = p.output_size
    arr = np.array(got, dtype=np.int64).reshape(groups, oh, ow, lanes)
    return arr.transpose(1, 2, 0, 3).reshape(oh, ow, groups * lanes)[:, :, :c]


def layer_testbenches(weight, column, result, weights, columns, count, lanes, rng, flow, got):
    """Testbenches that send a layer's ``weights`` and ``columns`` and collect ``count`` result beats into ``got``,
    with the gaps of ``flow`` (a :data:`TRAFFIC` entry)."""
    async def weight_tb(ctx):
        await drive(ctx, weight, weights, rng, flow["weight_gap"])

    async def column_tb(ctx):
        await drive(ctx, column, columns, rng, flow["in_gap"])

    async def result_tb(ctx):
        got.extend(await collect(ctx, result, count, rng, flow["out_gap"], lanes=lanes,
                                 max_cycles=40 * len(columns) + 200))

    return weight_tb, column_tb, result_tb


def check_layer(got, lanes, groups, c, x, filters, bias, p, zp_in):
    """The result beats equal numpy's exact sums and, requantised by the golden model, ``depthwise_conv_2d``."""
    acc = layer_results(got, lanes, groups, p, c)
    assert np.array_equal(acc, exact_acc(x, filters, zp_in, p))
    out = kernels.requantize(acc + bias, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max)
    assert np.array_equal(out, kernels.depthwise_conv_2d(x, filters, bias, p)[0])


@pytest.mark.parametrize("stride, same, traffic, taps", [(1, True, "gaps", 9), (2, True, "backpressure", 9),
                                                         (1, False, "smooth", 9), (2, False, "gaps", 9),
                                                         (1, True, "gaps", 5), (2, False, "backpressure", 5),
                                                         (1, True, "smooth", 3)])
def test_layer_vs_golden(stride, same, traffic, taps, rng):
    """A 5 x 4 x 6 layer, 3 x 3 kernel, through WindowBuffer -> DepthwiseUnit (lanes 4: two channel groups, the second
    half empty), a window in one beat of 9 taps or in passes of fewer: the int32 sums match numpy exactly, and
    requantised by the golden ``requantize`` (what the Requantizer computes) match ``kernels.depthwise_conv_2d``."""
    lanes, c = 4, 6
    groups = -(-c // lanes)
    x, filters, bias, p, zp_in = random_layer(rng, 5, 4, c, (3, 3), stride, same)
    top = Module()
    top.submodules.buf = buf = WindowBuffer(lanes=lanes, taps=taps)
    top.submodules.unit = unit = DepthwiseUnit(lanes=lanes, taps=taps, passes=buf.passes)
    wiring.connect(top, buf.window, unit.window)
    columns = layer_column_beats(x, (3, 3), p, lanes, groups, rng)
    weights = layer_weight_beats(filters, zp_in, lanes, groups)
    count = groups * p.output_size[0] * p.output_size[1]
    got = []
    simulate(top, *layer_testbenches(unit.weight, buf.column, unit.result, weights, columns, count, lanes, rng,
                                     TRAFFIC[traffic], got))
    check_layer(got, lanes, groups, c, x, filters, bias, p, zp_in)


def test_layer_through_requantizer(rng):
    """The unit's ``result`` connected to the PPU's Requantizer with ``wiring.connect``: the int8 output of a
    5 x 4 x 8 SAME stride-1 layer (two groups, new requantiser parameters per group) equals the golden model."""
    lanes, c = 4, 8
    groups = c // lanes
    x, filters, bias, p, zp_in = random_layer(rng, 5, 4, c, (3, 3), 1, True)
    top = Module()
    top.submodules.buf = buf = WindowBuffer(lanes=lanes)
    top.submodules.unit = unit = DepthwiseUnit(lanes=lanes)
    top.submodules.rq = rq = ppu.Requantizer(lanes)
    wiring.connect(top, buf.window, unit.window)
    # The requantiser's input is held off while a group's parameters go in (the datapath's sequencer loads them
    # before it starts the group).
    hold = Signal(init=1)
    top.d.comb += [
        rq.i.payload.eq(unit.result.payload),
        rq.i.valid.eq(unit.result.valid & ~hold),
        unit.result.ready.eq(rq.i.ready & ~hold),
    ]
    columns = layer_column_beats(x, (3, 3), p, lanes, groups, rng)
    weights = layer_weight_beats(filters, zp_in, lanes, groups)
    per_group = p.output_size[0] * p.output_size[1]
    params = [{"config": {"output_offset": p.output_offset, "act_min": p.act_min, "act_max": p.act_max,
                          "rounding": ppu.Rounding.DOUBLE},
               "lanes": [{"bias": int(bias[ch]), "multiplier": int(p.output_multiplier[ch]),
                          "shift": int(p.output_shift[ch])} for ch in range(g * lanes, (g + 1) * lanes)]}
              for g in range(groups)]
    got = []

    async def weight_tb(ctx):
        await drive(ctx, unit.weight, weights, rng, 0.3)

    async def column_tb(ctx):
        await drive(ctx, buf.column, columns, rng, 0.3)

    async def param_tb(ctx):
        # A group's parameters go in right after the previous group's last accumulator entered the requantiser,
        # with its input held off until they are accepted.
        for g in range(groups):
            ctx.set(hold, 1)
            ctx.set(rq.param.payload, params[g])
            ctx.set(rq.param.valid, 1)
            await ctx.tick().until(rq.param.ready)
            ctx.set(rq.param.valid, 0)
            ctx.set(hold, 0)
            taken = 0
            while taken < per_group:
                _, _, fire = await ctx.tick().sample(rq.i.valid & rq.i.ready)
                taken += fire

    async def out_tb(ctx):
        got.extend(await collect(ctx, rq.o, groups * per_group, rng, 0.3, lanes=lanes,
                                 max_cycles=40 * len(columns) + 200))

    simulate(top, weight_tb, column_tb, param_tb, out_tb)
    out = layer_results(got, lanes, groups, p, c)
    assert np.array_equal(out, kernels.depthwise_conv_2d(x, filters, bias, p)[0].astype(np.int64))


@pytest.mark.parametrize("k, same", [(5, False), (5, True), (3, False)])
def test_long_kernel_passes(k, same, rng):
    """sww01-style Kx1 kernels on a 3-tap unit: windows fed directly (no window buffer), ``ceil(K / 3)`` passes per
    output pixel accumulated in the unit, against ``kernels.depthwise_conv_2d``."""
    lanes, taps, c, h = 4, 3, 5, 11
    passes = -(-k // taps)
    groups = -(-c // lanes)
    x, filters, bias, p, zp_in = random_layer(rng, h, 1, c, (k, 1), 1, same)
    dut = DepthwiseUnit(lanes=lanes, taps=taps, passes=2)
    weights = layer_weight_beats(filters, zp_in, lanes, groups)
    (pt, _), _ = p.padding
    windows = []
    for g in range(groups):
        for r in range(p.output_size[0]):
            for q in range(passes):
                data = rng.integers(-128, 128, (taps, lanes))
                mask = 0
                for t in range(taps):
                    i = q * taps + t
                    ih = r - pt + i
                    if i < k and 0 <= ih < h:
                        chans = x[0, ih, 0, g * lanes:(g + 1) * lanes]
                        data[t, :len(chans)] = chans
                        mask |= 1 << t
                final = q == passes - 1
                windows.append({"data": data.tolist(), "mask": mask, "final": int(final),
                                "last": int(final and r == p.output_size[0] - 1)})
    count = groups * p.output_size[0]
    got = []

    async def weight_tb(ctx):
        await drive(ctx, dut.weight, weights, rng, 0.3)

    async def window_tb(ctx):
        await drive(ctx, dut.window, windows, rng, 0.3)

    async def result_tb(ctx):
        got.extend(await collect(ctx, dut.result, count, rng, 0.3, lanes=lanes, max_cycles=40 * len(windows) + 200))

    simulate(dut, weight_tb, window_tb, result_tb)
    acc = layer_results(got, lanes, groups, p, c)
    assert np.array_equal(acc, exact_acc(x, filters, zp_in, p))
    out = kernels.requantize(acc + bias, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max)
    assert np.array_equal(out, kernels.depthwise_conv_2d(x, filters, bias, p)[0])


# -- construction ------------------------------------------------------------------------------------------------------

def test_signatures_connect():
    """The unit's result is the Requantizer's input; the buffer's window is the unit's window (default sizes)."""
    unit, buf, rq = DepthwiseUnit(), WindowBuffer(), ppu.Requantizer(DatapathConfig().cols)
    assert unit.lanes == 16 and unit.taps == 9 and unit.passes == 2 and unit.weight_lines == 18
    assert unit.result.payload.shape() == rq.i.payload.shape() == data.ArrayLayout(signed(32), 16)
    assert buf.window.payload.shape() == unit.window.payload.shape()
    m = Module()
    wiring.connect(m, unit.result, rq.i)            # raises if the signatures do not match
    wiring.connect(m, buf.window, unit.window)


def test_validation():
    with pytest.raises(TypeError, match="Lane count must be a positive integer"):
        DepthwiseUnit(lanes=2.0)
    with pytest.raises(ValueError, match="Tap count must be a positive integer"):
        DepthwiseUnit(taps=0)
    with pytest.raises(TypeError, match="Pass count must be a positive integer"):
        DepthwiseUnit(passes=True)
    with pytest.raises(TypeError, match="Configuration must be a DatapathConfig"):
        DepthwiseUnit({"rows": 4})
    with pytest.raises(ValueError, match="Accumulator width 17 cannot hold"):
        DepthwiseUnit(DatapathConfig(rows=1, cols=1, acc_width=17), taps=9)
    with pytest.raises(ValueError, match="Multiplier must be one of 'lut', 'dsp', not 'booth'"):
        DepthwiseUnit(multiplier="booth")
    with pytest.raises(ValueError, match="Window width must be a positive integer"):
        WindowBuffer(kw=0)


def test_conversion():
    """The default 16-lane buffer and unit elaborate to RTLIL (the LUT-multiplier unit at 16 lanes is simulated in
    ``test_unit_shapes``); a small unit converts to Verilog with the usual port names."""
    for dut in (DepthwiseUnit(multiplier="dsp"), WindowBuffer()):
        assert "window__payload" in rtlil.convert(dut, name="top")
    text = verilog.convert(DepthwiseUnit(lanes=2, taps=3), name="top")
    for port in ("window__payload", "window__valid", "window__ready", "weight__payload", "result__payload",
                 "result__valid", "result__ready"):
        assert port in text
