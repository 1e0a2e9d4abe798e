"""The instruction-level simulator (sim/isa_sim.py): programs of the firmware builders against the golden model
under random interleavings of the queues, races and deadlocks, errors."""

import dataclasses

import numpy as np
import pytest

from haneul.firmware.npu_conv import conv_program
from haneul.firmware.npu_gemm import gemm_program
from haneul.rtl import commands, isa
from haneul.rtl.config import DatapathConfig
from haneul.sim.golden import kernels
from haneul.sim.golden.quant import quantize_multiplier
from haneul.sim.isa_sim import IsaError, IsaSim
from haneul.sim.stimulus import random_conv

CONFIGS = {"4x4": DatapathConfig(rows=4, cols=4, spad_depth=256, acc_depth=64),
           "16x16": DatapathConfig()}


def gemm(rng, config, m, k, n, **kwargs):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-5000, 5000, n)
    # A @ W of uniform int8 values spreads by about 74^2 * sqrt(K): scale ~3 sigma to the int8 range.
    scales = rng.uniform(0.5, 2.0, n) * 40.0 / (74.0 ** 2 * np.sqrt(k))
    mult, shift = (np.array(v) for v in zip(*(quantize_multiplier(s) for s in scales)))
    zp = int(rng.integers(-20, 20))
    golden = kernels.requantize(a.astype(np.int64) @ w.astype(np.int64) + bias, mult, shift, zp, -128, 127)
    assert np.unique(golden).size > min(golden.size // 2, 32), "test data saturates"
    return gemm_program(a, w, bias, mult, shift, output_offset=zp, config=config, **kwargs), golden


def run(prog, config, seed=0, **kwargs):
    sim = IsaSim(config, mem_size=1 << 20, seed=seed)
    for addr, data in prog.segments:
        sim.write(addr, data)
    stats = sim.run(prog.cmd_addr, **kwargs)
    return prog.output(sim.read), stats


@pytest.mark.parametrize("size", list(CONFIGS))
def test_gemm_programs(size):
    config = CONFIGS[size]
    rng = np.random.default_rng(1)
    for m, k, n in [(1, 1, 1), (17, 33, 9), (70, 40, 37), (5, 3 * config.rows, 2 * config.cols)]:
        prog, golden = gemm(rng, config, m, k, n)
        for seed in range(4):
            out, stats = run(prog, config, seed)
            assert (out == golden).all(), (m, k, n, seed)
        assert stats["wr_bytes"] == m * n


def test_gemm_256_streams_weights():
    """256 x 256 x 256 on 16 x 16: the weights do not fit, so they stream per N tile through two buffers."""
    config = CONFIGS["16x16"]
    prog, golden = gemm(np.random.default_rng(2), config, 256, 256, 256)
    out, stats = run(prog, config)
    assert (out == golden).all()
    assert stats["vectors"] == 256 * 16 * 16


@pytest.mark.parametrize("shape", [
    dict(h=9, w=8, c=3, oc=16, k=(3, 3), stride=1, same=True),
    dict(h=10, w=9, c=1, oc=20, k=(5, 5), stride=2, same=True),
    dict(h=6, w=11, c=2, oc=5, k=(3, 2), stride=1, same=False),
    # channel-major layout: C > rows / KW, partial channel blocks, taps entirely in the padding for one-row blocks
    dict(h=7, w=6, c=20, oc=9, k=(3, 3), stride=2, same=True),
    dict(h=8, w=7, c=32, oc=16, k=(3, 3), stride=1, same=True),
    dict(h=5, w=5, c=17, oc=33, k=(1, 1), stride=1, same=False),
])
def test_conv_programs(shape):
    config = CONFIGS["16x16"]
    rng = np.random.default_rng(3)
    x, f, bias, p = random_conv(rng, **shape, scales=(0.001, 0.02), clamp=(-100, 120))
    golden = kernels.conv_2d(x, f, bias, p)[0]
    for rows_per_block in (None, 1, 2):
        prog = conv_program(x, f, bias, p, config=config, rows_per_block=rows_per_block)
        for seed in range(3):
            out, _ = run(prog, config, seed)
            assert (out.reshape(golden.shape) == golden).all(), (rows_per_block, seed)


def test_a_missing_token_is_a_race():
    """Without the token from the loads, the compute queue may run before its data is there: some interleaving
    gives a wrong result (the simulator exposes races in programs)."""
    config = CONFIGS["4x4"]
    prog, golden = gemm(np.random.default_rng(4), config, 12, 8, 4, m_tile=4)
    broken = [dataclasses.replace(i, wait_prev=False) if isinstance(i, isa.Compute) else i
              for i in prog.instructions]
    broken = [dataclasses.replace(i, signal_next=False) if isinstance(i, isa.Load) else i for i in broken]
    prog = dataclasses.replace(prog, program=isa.InstructionFormat(config).program(broken),
                               segments=((prog.cmd_addr, isa.InstructionFormat(config).program(broken)),)
                               + prog.segments[1:])
    outcomes = {bool((run(prog, config, seed)[0] == golden).all()) for seed in range(20)}
    assert False in outcomes


def _program(config, instrs):
    sim = IsaSim(config, mem_size=1 << 16)
    sim.write(0x100, isa.InstructionFormat(config).program(instrs))
    return sim


@pytest.mark.parametrize("instrs, code", [
    ([isa.Nop(wait_prev=True)], isa.ErrorCode.DEADLOCK),
    ([isa.Param(0x1000, isa.ParamTarget.REQUANT), isa.Compute(commands.Requant(0, 2, load_params=True))],
     isa.ErrorCode.DEADLOCK),
    ([isa.Load(0xFFF8, 0, 4)], isa.ErrorCode.ADDR_WINDOW),
    ([isa.Compute(commands.Pool(0, 4, 2))], isa.ErrorCode.UNSUPPORTED),
])
def test_errors(instrs, code):
    config = CONFIGS["4x4"]
    sim = _program(config, instrs)
    with pytest.raises(IsaError) as info:
        sim.run(0x100, window=(0, 0xFFF0))
    assert info.value.code == code


def test_illegal_opcode():
    sim = IsaSim(CONFIGS["4x4"], mem_size=1 << 16)
    sim.write(0x100, (9).to_bytes(32, "little"))
    with pytest.raises(IsaError, match="ILLEGAL_OPCODE"):
        sim.run(0x100)
