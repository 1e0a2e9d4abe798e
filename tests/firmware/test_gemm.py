"""GEMM planning (firmware/gemm.py) against the golden model, through a command-level model of the datapath.

The model executes the commands the way ``docs/datapath.md`` defines them, on a scratchpad and an accumulator held
in numpy arrays: fast enough to check many shapes, including ones far larger than the RTL simulations can afford.
"""

import numpy as np
import pytest

from haneul.firmware.gemm import GemmError, plan_gemm
from haneul.rtl.commands import CommandFormat, Matmul, Requant, weight_lines_per_row
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Rounding
from haneul.sim.golden import kernels
from haneul.sim.golden.quant import quantize_multiplier, wrap_int32


def execute(cfg, writes, commands, beats):
    """Run ``commands`` on a model of the datapath; return the lines sent on ``out``."""
    spad = np.zeros((cfg.spad_depth, cfg.rows), dtype=np.int64)
    for addr, line in writes:
        spad[addr] = line
    acc = np.zeros((cfg.acc_depth, cfg.cols), dtype=np.int64)
    beats = iter(beats)
    params = None
    lpr = weight_lines_per_row(cfg)
    fmt = CommandFormat(cfg)
    out = []
    for cmd in commands:
        fmt.check(cmd)
        if isinstance(cmd, Matmul):
            tile = spad[cmd.weight_addr:cmd.weight_addr + cfg.rows * lpr].reshape(cfg.rows, lpr * cfg.rows)
            w = tile[:, :cfg.cols]
            a = spad[cmd.act_addr:cmd.act_addr + cmd.count]
            lines = slice(cmd.acc_addr, cmd.acc_addr + cmd.count)
            acc[lines] = wrap_int32((acc[lines] if cmd.accumulate else 0) + a @ w)
        elif isinstance(cmd, Requant):
            if cmd.load_params:
                params = next(beats)
            lanes = params["lanes"]
            cfg_ = params["config"]
            bias = np.array([lane["bias"] for lane in lanes])
            mult = np.array([lane["multiplier"] for lane in lanes])
            shift = np.array([lane["shift"] for lane in lanes])
            out += list(kernels.requantize(acc[cmd.acc_addr:cmd.acc_addr + cmd.count] + bias, mult, shift,
                                           cfg_["output_offset"], cfg_["act_min"], cfg_["act_max"],
                                           single_rounding=cfg_["rounding"] is Rounding.SINGLE))
    assert next(beats, None) is None, "parameter beats left over"
    return out


def gemm_case(cfg, rng, m, k, n, **kwargs):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    multiplier, shift = zip(*(quantize_multiplier(s) for s in 2.0 ** rng.uniform(-20, 0, n)))
    single = bool(rng.integers(2))
    zp = int(rng.integers(-128, 128))
    plan = plan_gemm(m, k, n, cfg, **kwargs)
    beats = plan.param_beats(bias, multiplier, shift, zp, -128, 127, single)
    lines = execute(cfg, plan.activation_lines(a) + plan.weight_lines(w), plan.commands, beats)
    got = plan.assemble(lines)
    expected = kernels.requantize(a.astype(np.int64) @ w.astype(np.int64) + bias, np.array(multiplier),
                                  np.array(shift), zp, -128, 127, single_rounding=single)
    return plan, got, expected


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 2), (4, 8), (8, 4), (3, 5), (16, 16)])
def test_plans_compute_the_gemm(rows, cols, rng):
    cfg = DatapathConfig(rows=rows, cols=cols, spad_depth=4096, acc_depth=256)
    for _ in range(6):
        m, k, n = (int(v) for v in rng.integers(1, [300, 5 * rows + 3, 4 * cols + 3]))
        plan, got, expected = gemm_case(cfg, rng, m, k, n)
        assert np.array_equal(got, expected), (m, k, n)
        assert plan.k_tiles == -(-k // rows) and plan.n_tiles == -(-n // cols)
        assert plan.array_vectors == m * plan.k_tiles * plan.n_tiles


def test_tile_structure():
    cfg = DatapathConfig(rows=4, cols=4, spad_depth=256, acc_depth=32)
    plan = plan_gemm(20, 9, 6, cfg, m_tile=8)
    assert (plan.m_tiles, plan.k_tiles, plan.n_tiles) == (3, 3, 2)
    assert plan.acc_slots == 2
    kinds = "".join("M" if isinstance(c, Matmul) else "R" for c in plan.commands)
    assert kinds == "MMMR" * 6
    matmuls = [c for c in plan.commands if isinstance(c, Matmul)]
    # K tiles accumulate into the same lines; the first overwrites.
    assert [c.accumulate for c in matmuls[:3]] == [False, True, True]
    assert len({c.acc_addr for c in matmuls[:3]}) == 1
    # Output tiles alternate halves and rotate through the slots of each half.
    requants = [c for c in plan.commands if isinstance(c, Requant)]
    assert [r.acc_addr for r in requants] == [0, 16, 8, 24, 0, 16]
    assert [r.count for r in requants] == [8, 8, 8, 8, 4, 4]
    # Parameters are loaded whenever the N tile changes.
    assert [r.load_params for r in requants] == [True] * 6
    single_n = plan_gemm(20, 9, 3, cfg, m_tile=8)
    assert [r.load_params for r in single_n.readouts] == [True, False, False]
    # Weights start on a bank boundary after A (27 lines, banks of 64).
    assert plan.a_lines == 60 and plan.w_base == 64 and plan.w_lines == 2 * 3 * 4


def test_weight_layout_non_square():
    cfg = DatapathConfig(rows=2, cols=5, spad_depth=256, acc_depth=32)
    plan = plan_gemm(1, 3, 5, cfg, w_base=100)
    w = np.arange(15, dtype=np.int8).reshape(3, 5)
    lines = dict((addr, list(line)) for addr, line in plan.weight_lines(w))
    # Three lines per weight row (ceil(5 / 2)), the tail of the last one zero; K padded to 4 with zero rows.
    assert lines[100] == [0, 1] and lines[101] == [2, 3] and lines[102] == [4, 0]
    assert lines[103] == [5, 6]
    assert lines[109] == lines[110] == lines[111] == [0, 0] and len(lines) == 2 * 2 * 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=0, k=1, n=1), "M must be a positive integer, not 0"),
    (dict(m=1, k=1.5, n=1), "K must be a positive integer, not 1.5"),
    (dict(m=40, k=1, n=1, m_tile=17), "M tile 17 exceeds half the accumulator (16 lines)"),
    (dict(m=8, k=1, n=1, acc_base=12), "Accumulator offset 12 with M tile 8 does not fit"),
    (dict(m=300, k=1, n=1), "A needs scratchpad lines 0..299, past the end of the scratchpad (256 lines)"),
    (dict(m=10, k=1, n=1, w_base=5), "overlap"),
])
def test_plan_errors(kwargs, message):
    cfg = DatapathConfig(rows=4, cols=4, spad_depth=256, acc_depth=32)
    with pytest.raises(GemmError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        plan_gemm(config=cfg, **kwargs)


def test_data_checks():
    plan = plan_gemm(2, 3, 4, DatapathConfig(rows=2, cols=2, spad_depth=64, acc_depth=16))
    with pytest.raises(GemmError, match=r"A must have shape \(2, 3\), not \(3, 2\)"):
        plan.activation_lines(np.zeros((3, 2), dtype=np.int8))
    with pytest.raises(GemmError, match="W must be int8, not int32"):
        plan.weight_lines(np.zeros((3, 4), dtype=np.int32))
    with pytest.raises(GemmError, match="Expected 4 output lines, got 3"):
        plan.assemble([[0, 0]] * 3)
