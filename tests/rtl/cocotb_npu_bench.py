"""cocotb module of ``benchmarks/npu_gemm.py``: one GEMM (``bench_gemm``) and ic01's first convolution on the chelsea
photo (``bench_ic01_conv1``) on the whole NPU, data starting in external memory.

Parameters (:func:`haneul.sim.cocotb.tb_params`): the ``DatapathConfig`` fields, ``data_width``, ``m``, ``k``, ``n``,
``m_tile`` (optional), ``seed``, ``latency`` (extra cycles the memory waits before answering each read burst, 0
by default), ``result`` and ``result_conv`` (JSON files for the figures). Outputs are checked bit for bit against the
golden model.
"""

import json

import cocotb
import numpy as np

from haneul.firmware.npu_gemm import gemm_program
from haneul.rtl.config import DatapathConfig
from haneul.sim.cocotb import tb_params
from haneul.sim.cocotb.npu import NpuTB
from haneul.sim.cycle_model import estimate_cycles
from haneul.sim.golden import kernels
from haneul.sim.golden.quant import quantize_multiplier

PARAMS = tb_params()
CONFIG = DatapathConfig(**{key: PARAMS[key] for key in ("rows", "cols", "spad_depth", "spad_banks", "acc_depth",
                                                        "acc_banks") if key in PARAMS})
DATA_WIDTH = PARAMS.get("data_width", 128)


@cocotb.test()
async def bench_gemm(dut):
    m, k, n = PARAMS["m"], PARAMS["k"], PARAMS["n"]
    rng = np.random.default_rng(PARAMS.get("seed", 1))
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-(1 << 14), 1 << 14, n)
    scales = rng.uniform(0.5, 2.0, n) * 40.0 / (74.0 ** 2 * np.sqrt(k))
    multiplier, shift = (np.array(v, dtype=np.int64) for v in zip(*(quantize_multiplier(s) for s in scales)))
    golden = kernels.requantize(a.astype(np.int64) @ w.astype(np.int64) + bias, multiplier, shift, -3, -128, 127)
    prog = gemm_program(a, w, bias, multiplier, shift, output_offset=-3, config=CONFIG, bus_bytes=DATA_WIDTH // 8,
                        m_tile=PARAMS.get("m_tile"))
    mem = 1 << max(20, (prog.end - 1).bit_length())
    tb = NpuTB(dut, CONFIG, data_width=DATA_WIDTH, mem_size=mem)
    await tb.reset()
    tb.load(prog.segments)
    result = await tb.run(prog.cmd_addr, timeout_cycles=50 * m * k * n // (CONFIG.rows * CONFIG.cols) + 100_000)
    assert result.done and not result.error, result
    out = prog.output(tb.read_memory)
    assert (out == golden).all(), f"{int((out != golden).sum())} wrong outputs"
    figures = {
        "m": m, "k": k, "n": n, "m_tile": prog.m_tile, "rows": CONFIG.rows, "cols": CONFIG.cols,
        "data_width": DATA_WIDTH, "instructions": len(prog.instructions), "program_bytes": len(prog.program),
        "irq_cycles": result.cycles, "bytes_min": prog.bytes_moved_min, "counters": result.counters,
        "model_cycles": estimate_cycles(prog.instructions, CONFIG, bus_bytes=DATA_WIDTH // 8)["cycles"],
    }
    with open(PARAMS["result"], "w") as f:
        json.dump(figures, f)


@cocotb.test(skip=CONFIG.rows < 9)
async def bench_ic01_conv1(dut):
    from haneul.firmware.npu_conv import conv_program
    from tests.rtl.cocotb_npu import ic01_conv1
    x, filters, bias, p, golden = ic01_conv1()
    prog = conv_program(x, filters, bias, p, config=CONFIG, bus_bytes=DATA_WIDTH // 8)
    tb = NpuTB(dut, CONFIG, data_width=DATA_WIDTH, mem_size=1 << 20)
    await tb.reset()
    tb.load(prog.segments)
    result = await tb.run(prog.cmd_addr, timeout_cycles=500_000)
    assert result.done and not result.error, result
    out = prog.output(tb.read_memory).reshape(golden.shape)
    assert (out == golden).all(), f"{int((out != golden).sum())} wrong outputs"
    figures = {"m": prog.m, "k": prog.k, "n": prog.n, "m_tile": prog.m_tile, "instructions": len(prog.instructions),
               "program_bytes": len(prog.program), "bytes_min": prog.bytes_moved_min, "counters": result.counters,
               "model_cycles": estimate_cycles(prog.instructions, CONFIG, bus_bytes=DATA_WIDTH // 8)["cycles"]}
    with open(PARAMS["result_conv"], "w") as f:
        json.dump(figures, f)
