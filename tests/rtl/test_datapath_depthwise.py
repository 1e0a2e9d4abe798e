# amaranth: UnusedElaboratable=no
# (the constructor tests create components that are never elaborated)
"""``DWCONV`` through the datapath top: the column reader, the window buffer, the depthwise unit and the shared
requantiser, against the golden model's ``depthwise_conv_2d``, bit for bit, under random stream gaps.

The jobs are planned by :func:`haneul.firmware.dwconv.plan_dwconv` (one ``DWCONV`` per channel group, padding
masked by the unit or written into the tile as the input zero point) and run by the datapath simulation driver
(:mod:`haneul.sim.datapath_driver`), also mixed with GEMMs, ``ADD`` and ``POOL``.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from haneul.firmware import tflite
from haneul.firmware.dwconv import plan_dwconv
from haneul.firmware.ir import OpType
from haneul.rtl.commands import CommandFormat, Dwconv, ErrorCode, Opcode
from haneul.rtl.config import DatapathConfig
from haneul.rtl.datapath import Datapath
from haneul.sim import golden
from haneul.sim.datapath_driver import DatapathDriver, DatapathJob
from haneul.sim.golden import kernels
from haneul.sim.golden.params import DepthwiseParams, compute_padding, prepare
from haneul.sim.golden.quant import quantize_multiplier

from .test_datapath import CLAMPS, CONFIGS, Harness, VectorJob, check, clamp_bounds, make_add_job, make_job, \
    make_pool_job, random_shape, raw_word

ROOT = Path(__file__).resolve().parents[2]
KWS01 = ROOT / "models" / "mlperf_tiny" / "kws01_dscnn_speechcommands_int8.tflite"


def random_dwconv(cfg, rng, *, half, clamp, stride=None, same=None, prepadded=None, size=None, channels=None):
    """A random 3 x 3 depthwise layer planned into scratchpad half ``half``, as a job with its golden lines."""
    stride = int(rng.integers(1, 3)) if stride is None else stride
    same = bool(rng.integers(2)) if same is None else same
    while True:
        h, w = size if size is not None else (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        if not same and (h < 3 or w < 3):
            h, w = max(h, 3), max(w, 3)
        c = int(rng.integers(1, 3 * cfg.rows + 2)) if channels is None else channels
        oh = -(-h // stride) if same else (h - 3) // stride + 1
        ow = -(-w // stride) if same else (w - 3) // stride + 1
        pad = ((compute_padding(h, 3, stride, 1, oh), compute_padding(w, 3, stride, 1, ow)) if same
               else ((0, 0), (0, 0)))
        prepad = bool(rng.integers(2)) if prepadded is None else prepadded
        try:
            plan = plan_dwconv(h, w, c, stride, pad, cfg, zero_point=0, a_base=half * cfg.spad_depth // 2,
                               prepadded=prepad)
        except ValueError:
            plan = None
        if plan is not None and plan.lines <= cfg.spad_depth // 2:
            break
        if size is not None:
            raise ValueError(f"a {h} x {w} x {c} layer does not fit in half the scratchpad")
    zp_in = int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))
    zp_out = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in 2.0 ** rng.uniform(-14, 0, c)))
    act_min, act_max = clamp_bounds(clamp, rng, zp_out)
    p = DepthwiseParams(input_offset=-zp_in, output_offset=zp_out, output_multiplier=np.array(mult),
                        output_shift=np.array(shift), stride=(stride, stride), dilation=(1, 1), padding=pad,
                        output_size=(oh, ow), act_min=act_min, act_max=act_max, depth_multiplier=1)
    x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8)
    filters = rng.integers(-128, 128, (1, 3, 3, c)).astype(np.int8)
    if rng.random() < 0.3:                      # extremes
        x[rng.random(x.shape) < 0.5] = int(rng.choice([-128, 127]))
        filters[rng.random(filters.shape) < 0.5] = -128
    bias = rng.integers(-(1 << 16), 1 << 16, c).astype(np.int32)
    return layer_job(cfg, x, filters, bias, p, half=half, prepadded=plan.prepadded)


def layer_job(cfg, x, filters, bias, p, *, half, prepadded=False, out_rows=None):
    """The job of a depthwise layer ``kernels.depthwise_conv_2d(x, filters, bias, p)`` (or of the band
    ``out_rows`` of it) in scratchpad half ``half``: writes, ``DWCONV`` words, parameter beats, golden lines."""
    _, h, w, c = x.shape
    plan = plan_dwconv(h, w, c, p.stride[0], p.padding, cfg, zero_point=-p.input_offset,
                       a_base=half * cfg.spad_depth // 2, out_rows=out_rows, prepadded=prepadded)
    assert plan.lines <= cfg.spad_depth // 2
    golden_out = kernels.depthwise_conv_2d(x, filters, bias, p)[0][plan.out_rows[0]:plan.out_rows[1]]
    fmt = CommandFormat(cfg)
    (pt, pb), (pl, pr) = p.padding
    what = (f"DWCONV {h}x{w}x{c} stride {p.stride[0]} pad {p.padding} {'prepadded' if prepadded else 'masked'} "
            f"zp {-p.input_offset} -> {p.output_offset} [{p.act_min}, {p.act_max}]")
    job = VectorJob(what=what, writes=plan.activation_lines(x) + plan.weight_lines(filters),
                    words=[fmt.encode(cmd) for cmd in plan.commands],
                    params=plan.param_beats(bias, p.output_multiplier, p.output_shift, p.output_offset, p.act_min,
                                            p.act_max),
                    expected=dwconv_lines(plan, golden_out), mask=dwconv_mask(plan))
    job.plan = plan
    return job


def dwconv_lines(plan, out):
    """The ``out`` lines of a plan from its golden output ``[out_h, out_w, C]`` (lanes past C: don't care)."""
    cols, rows = plan.config.cols, plan.config.rows
    lines = np.zeros((plan.groups, out.shape[0] * out.shape[1], cols), dtype=np.int64)
    flat = out.reshape(-1, out.shape[2]).astype(np.int64)
    for g in range(plan.groups):
        chans = flat[:, g * rows:(g + 1) * rows]
        lines[g, :, :chans.shape[1]] = chans
    return lines.reshape(-1, cols)


def dwconv_mask(plan):
    """The lanes of the plan's ``out`` lines that hold output channels."""
    cols, rows = plan.config.cols, plan.config.rows
    per_group = [np.arange(cols) < min(rows, plan.channels - g * rows) for g in range(plan.groups)]
    pixels = (plan.out_rows[1] - plan.out_rows[0]) * plan.out_w
    return np.repeat(np.array(per_group), pixels, axis=0)


# Random layers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, dw_taps, dw_mult", [("4x4", None, "lut"), ("4x8", None, "lut"), ("4x4", 9, "lut"),
                                                     ("4x4", 3, "lut"), ("4x4", None, "dsp")])
def test_random_dwconv(name, dw_taps, dw_mult, rng):
    """Random layers (1 to 7 pixels per side, channels not multiples of the lane count, SAME and VALID, stride 1 and
    2, masked or prepadded padding, zero points including -128 and 127, every clamp mode, random per-channel
    requantisation) with random gaps on every stream: every output line bit-exact; with the default depthwise unit
    (a window in two passes), with one pass (9 taps) or three (3 taps), and with DSP multipliers."""
    cfg = dataclasses.replace(CONFIGS[name], dw_mult=dw_mult)
    if dw_taps is not None:
        cfg = dataclasses.replace(cfg, dw_taps=dw_taps)
    jobs = [random_dwconv(cfg, rng, half=g % 2, clamp=CLAMPS[g % len(CLAMPS)], stride=1 + g % 2,
                          same=g % 4 < 2, prepadded=g % 3 == 0)
            for g in range(8)]
    h = Harness(cfg, jobs, rng).run()
    check(h)
    assert not h.trace[-1][2] and h.trace[-1][1] == 0        # no error; the array never ran


def test_dwconv_smooth_and_stalled(rng):
    """The same without any gaps, then with a mostly stalled output and slow parameters."""
    cfg = CONFIGS["4x4"]
    for gaps in (dict(cmd_gap=0, wr_gap=0, param_gap=0, out_gap=0),
                 dict(cmd_gap=0, wr_gap=0, param_gap=0.8, out_gap=0.85)):
        jobs = [random_dwconv(cfg, rng, half=g % 2, clamp=CLAMPS[(g + 1) % len(CLAMPS)], stride=1 + g % 2)
                for g in range(3)]
        check(Harness(cfg, jobs, rng, **gaps).run())


def test_dwconv_mixed(rng):
    """DWCONV jobs between GEMMs, ADD and POOL jobs, and DWCONV words in the middle of a GEMM's commands: the output
    keeps command order across every switch of the requantiser's input and of scratchpad ports 2 and 3."""
    cfg = CONFIGS["4x8"]
    jobs = [
        make_job(cfg, rng, *random_shape(cfg, rng), half=0, clamp="relu", single_rounding=False),
        random_dwconv(cfg, rng, half=1, clamp="range", stride=2),
        make_add_job(cfg, rng, half=0, pieces=[3, 5]),
        random_dwconv(cfg, rng, half=1, clamp="none", stride=1, same=True),
        make_pool_job(cfg, rng, half=0, pieces=[(6, 3), (5, 5)]),
        random_dwconv(cfg, rng, half=1, clamp="relu6"),
        make_job(cfg, rng, *random_shape(cfg, rng), half=0, clamp="none", single_rounding=True),
    ]
    check(Harness(cfg, jobs, rng).run())

    # A DWCONV between the MATMULs and the REQUANT of a GEMM (its parameter beat between the GEMM's).
    gemm = make_job(cfg, rng, 5, 6, 7, half=0, clamp="none", single_rounding=False)
    dw = random_dwconv(cfg, rng, half=1, clamp="relu", size=(4, 5), channels=3)
    split = len(gemm.words) - 1
    assert CommandFormat(cfg).decode(gemm.words[split]).opcode is Opcode.REQUANT
    mixed = DatapathJob(writes=gemm.writes + dw.writes, words=gemm.words[:split] + dw.words + gemm.words[split:],
                        params=dw.params + gemm.params, out_lines=dw.out_lines + gemm.out_lines)
    h = Harness(cfg, [mixed], rng).run()
    assert dw.mismatch(h.out[:dw.out_lines]) is None
    assert gemm.mismatch(h.out[dw.out_lines:]) is None


# A real layer ------------------------------------------------------------------------------------------------------

def test_kws01_layer(rng):
    """The first depthwise layer of kws01 (25 x 5 x 64, 3 x 3, SAME, stride 1) on the default 16 x 16 datapath:
    input, weights, bias and quantisation from the model, the input from the golden interpreter's intermediate
    tensors; the 4 channel groups' output equals the golden interpreter's tensor bit for bit. Also reports the
    cycles (first command to last output line)."""
    graph = tflite.load(KWS01)
    x_in = rng.integers(-128, 128, graph.inputs[0].shape).astype(np.int8)
    _, values = golden.run(graph, [x_in], intermediates=True)
    op = next(o for o in graph.operators if o.type is OpType.DEPTHWISE_CONV_2D)
    p = prepare(op)
    x = values[op.inputs[0].index]
    filters, bias = op.inputs[1].data, op.inputs[2].data
    assert filters.shape[1:3] == (3, 3) and p.depth_multiplier == 1
    cfg = DatapathConfig(rows=16, cols=16, spad_depth=2048, acc_depth=64)
    job = layer_job(cfg, x, filters, bias, p, half=0)
    assert np.array_equal(job.plan.assemble(dwconv_lines(job.plan, values[op.outputs[0].index][0])),
                          values[op.outputs[0].index][0])
    run = DatapathDriver(cfg, [job]).run()
    assert job.mismatch(run.lines) is None
    out = job.plan.assemble(run.lines)
    assert np.array_equal(out, values[op.outputs[0].index][0])
    pixels = job.out_lines
    print(f"kws01 depthwise 25x5x64: {run.cycles} cycles for {pixels} output lines "
          f"({run.cycles / pixels:.2f} cycles per line)")
    # One bank holds the whole tile, so ports 2 and 3 take turns: 3 cycles per column of 3 lines, 6 columns per
    # output row (5 and the right padding); the unit takes `dw_passes` cycles per window and the requantiser
    # `requant_fold` per output line (4 at 16 x 16: the bound since session 13); 4 groups of 25 rows, plus each
    # command's start and drain.
    per_row = max(6 * 3, 5 * cfg.dw_passes, 5 * cfg.requant_fold)
    assert run.cycles <= 4 * (25 * per_row + 60)


# Throughput ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride, per_pixel", [(1, 2), (2, 4)])
def test_dwconv_throughput(stride, per_pixel, rng):
    """Without gaps a DWCONV requests one column every 2 cycles (kernel rows 0 and 1 together on ports 2 and 3, row 2
    on port 2 next), so it needs at least 2 cycles per output pixel at stride 1 and 4 at stride 2. Lines of one
    scratchpad bank take turns on the two ports, so a column of 3 lines in one bank takes 3 cycles: the raster tile
    here spans two banks; the bound allows 3 cycles per column plus the start (weights, pipeline, drain)."""
    cfg = CONFIGS["4x4"]
    job = random_dwconv(cfg, rng, half=0, clamp="none", stride=stride, same=False, prepadded=False,
                        size=(8, 12), channels=4)
    run = DatapathDriver(cfg, [job]).run()
    assert job.mismatch(run.lines) is None
    cmd, = job.plan.commands
    oh, ow = cmd.output_size
    columns = oh * cmd.width                           # every column of every output row is pushed once
    bound = 3 * columns + 50
    assert run.cycles <= bound, f"{run.cycles} cycles, {columns} columns of 3 lines"
    assert run.cycles >= per_pixel * oh * ow


# Errors ------------------------------------------------------------------------------------------------------------

def dwconv_word(cfg, **fields):
    args = dict(act_addr=0, weight_addr=0, height=3, width=3, stride2=0, pad_top=0, pad_bottom=0, pad_left=0,
                pad_right=0, zero_point=0, load_params=0)
    args.update(fields)
    return raw_word(cfg, Opcode.DWCONV, "dwconv", **args)


ILLEGAL = {
    "zero height":         (dict(height=0), ErrorCode.BAD_COUNT),
    "zero width":          (dict(width=0, pad_left=1, pad_right=1), ErrorCode.BAD_COUNT),
    "narrower than 3":     (dict(width=2, pad_left=0, pad_right=0), ErrorCode.BAD_COUNT),
    "lower than 3":        (dict(height=1, pad_top=1), ErrorCode.BAD_COUNT),
    "tile past the end":   (dict(act_addr=200, height=8, width=8), ErrorCode.BAD_RANGE),
    "weights past the end": (dict(weight_addr=250), ErrorCode.BAD_RANGE),
}


@pytest.mark.parametrize("bad", list(ILLEGAL))
def test_dwconv_illegal(bad, rng):
    """An illegal DWCONV stops the datapath with its error code after the work before it; the commands after it
    are discarded (the next job's output never appears) and the datapath goes idle."""
    cfg = CONFIGS["4x4"]
    fields, code = ILLEGAL[bad]
    first = random_dwconv(cfg, rng, half=0, clamp="none")
    second = random_dwconv(cfg, rng, half=1, clamp="none")
    with pytest.raises(ValueError):
        CommandFormat(cfg).check(CommandFormat(cfg).decode(dwconv_word(cfg, **fields)))
    job = VectorJob(what=first.what, writes=first.writes + second.writes,
                    words=first.words + [dwconv_word(cfg, **fields)] + second.words, params=first.params,
                    expected=first.expected, mask=first.mask)
    h = Harness(cfg, [job], rng, param_gap=0).run()
    check(h)
    _, _, error, err_code = h.trace[-1]
    assert error and err_code == code


def test_dwconv_unsupported(rng):
    """A datapath built without the depthwise unit flags DWCONV as unsupported (and has no unit)."""
    cfg = CONFIGS["4x4"]
    dut = Datapath(cfg, depthwise=False)
    assert not dut.has_depthwise and dut.has_add and dut.has_pool
    job = make_job(cfg, rng, 3, 3, 3, half=0, clamp="none", single_rounding=False)
    job.words = job.words + [CommandFormat(cfg).encode(Dwconv(0, 100, 3, 3))]
    h = Harness(cfg, [job], rng, datapath=dut).run()
    check(h)
    assert h.trace[-1][2] and h.trace[-1][3] == ErrorCode.UNSUPPORTED


def test_depthwise_only(rng):
    """A datapath with the depthwise unit but no adder or pooling unit: DWCONV on ports 2 and 3 alone."""
    cfg = CONFIGS["4x4"]
    dut = Datapath(cfg, add=False, pool=False)
    assert dut.has_depthwise
    jobs = [random_dwconv(cfg, rng, half=g % 2, clamp="relu") for g in range(2)]
    check(Harness(cfg, jobs, rng, datapath=dut).run())


def test_option_checks():
    with pytest.raises(ValueError, match=r"The depthwise unit needs rows <= cols"):
        Datapath(DatapathConfig(rows=4, cols=2), depthwise=True)
    with pytest.raises(TypeError, match="Option depthwise must be a bool or None"):
        Datapath(DatapathConfig(rows=2, cols=2), depthwise=1)
    assert not Datapath(DatapathConfig(rows=4, cols=2)).has_depthwise
    assert Datapath(DatapathConfig(rows=2, cols=4)).has_depthwise
