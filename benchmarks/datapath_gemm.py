"""Datapath GEMM throughput: tiled GEMMs end to end through the 16 x 16 datapath in the Amaranth simulator.

Each GEMM (random int8 activations and weights, random per-channel bias and requantisation) is planned by
``plan_gemm``, its operands are loaded into the scratchpad first (this measures the datapath, not the DMA), then
its commands and parameter beats are sent without gaps and ``out`` is always ready. Every output is checked against
``kernels.requantize(A @ W + bias, ...)``: a mismatch fails the benchmark.

Columns: ``cycles`` from the cycle the first command is accepted to the cycle the last output line is accepted
(both included); ``bound`` = M*K*N / (rows*cols), the cycles of a perfectly busy array; ``util`` = bound / cycles;
``array span`` from the first to the last activation vector entering the array; ``busy``, ``active`` and ``macs``
the datapath's own counters (``busy_cycles``, ``active_cycles``, ``macs``) at the end of the run; ``clamped`` the
share of outputs at a clamp bound (saturated, or zero after the ReLU); ``sim s`` the simulation's wall time.

Run: python benchmarks/datapath_gemm.py [--shapes 64x64x64,125x64x64] [--seed N]
"""

import argparse
import time

import numpy as np

from haneul.firmware.gemm import plan_gemm
from haneul.rtl.commands import CommandFormat
from haneul.rtl.config import DatapathConfig
from haneul.sim.datapath_driver import DatapathDriver, DatapathJob
from haneul.sim.golden import kernels
from haneul.sim.golden.quant import quantize_multiplier

#: (name, M, K, N, single rounding, fused ReLU): a square GEMM, a wide one, a deep one and kws01's pointwise
#: convolution (25 x 5 pixels, 64 -> 64 channels; convolutions round twice, and kws01 fuses a ReLU).
SHAPES = [
    ("gemm", 64, 64, 64, False, False),
    ("gemm", 128, 64, 128, True, False),
    ("gemm", 32, 256, 32, True, False),
    ("kws01 1x1 conv", 125, 64, 64, False, True),
]


class BenchmarkFailure(RuntimeError):
    """The datapath's output or counters are not what they must be."""


def make_gemm(m, k, n, single_rounding, relu, rng):
    """Random operands and requantisation parameters that spread the outputs over the int8 range."""
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-(1 << 14), 1 << 14, n)
    # A @ W of uniform int8 values has a standard deviation of about 74^2 * sqrt(K); map ~3 sigma to 127.
    sigma = 74.0 ** 2 * np.sqrt(k)
    scales = rng.uniform(0.5, 2.0, n) * 40.0 / sigma
    multiplier, shift = (np.array(v, dtype=np.int64) for v in zip(*(quantize_multiplier(float(s)) for s in scales)))
    zero_point = int(rng.integers(-20, 20))
    act_min, act_max = (zero_point if relu else -128), 127
    acc = a.astype(np.int64) @ w.astype(np.int64) + bias
    expected = kernels.requantize(acc, multiplier, shift, zero_point, act_min, act_max,
                                  single_rounding=single_rounding)
    return a, w, (bias, multiplier, shift, zero_point, act_min, act_max, single_rounding), expected


def run_shape(cfg, m, k, n, single_rounding, relu, rng):
    plan = plan_gemm(m, k, n, cfg)
    a, w, requant, expected = make_gemm(m, k, n, single_rounding, relu, rng)
    fmt = CommandFormat(cfg)
    job = DatapathJob(writes=plan.activation_lines(a) + plan.weight_lines(w),
                      words=[fmt.encode(c) for c in plan.commands],
                      params=plan.param_beats(*requant),
                      out_lines=plan.out_lines)
    t0 = time.perf_counter()
    run = DatapathDriver(cfg, [job]).run()
    wall = time.perf_counter() - t0

    shape = f"{m}x{k}x{n}"
    got = plan.assemble(run.job_lines[0])
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)
        i, j = bad[0]
        raise BenchmarkFailure(f"{shape}: {len(bad)} of {got.size} outputs differ from the golden model "
                               f"(first at [{i}, {j}]: datapath {got[i, j]}, golden {expected[i, j]})")
    vectors = plan.array_vectors
    if run.error:
        raise BenchmarkFailure(f"{shape}: the datapath raised error {run.error_code}")
    if run.active_cycles != vectors or run.macs != vectors * cfg.rows * cfg.cols:
        raise BenchmarkFailure(f"{shape}: counters active_cycles={run.active_cycles}, macs={run.macs}; expected "
                               f"{vectors} and {vectors * cfg.rows * cfg.cols}")
    clamped = float(np.mean((expected == requant[4]) | (expected == requant[5])))
    return plan, run, wall, clamped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", help="comma-separated MxKxN (default: the built-in list)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shapes = SHAPES
    if args.shapes:
        shapes = [("gemm", *(int(v) for v in s.lower().split("x")), False, False) for s in args.shapes.split(",")]

    cfg = DatapathConfig()
    lanes = cfg.rows * cfg.cols
    rng = np.random.default_rng(args.seed)
    print(f"Datapath {cfg.rows}x{cfg.cols} (spad {cfg.spad_depth} lines, acc {cfg.acc_depth} lines), Amaranth "
          f"simulator, operands preloaded, no stream gaps; every output checked against kernels.requantize")
    header = (f"{'layer':<15} {'MxKxN':>11} {'tiles m/k/n':>11} {'MACs':>9} {'cycles':>7} {'bound':>6} "
              f"{'util':>6} {'array span':>10} {'busy':>6} {'active':>6} {'macs':>9} {'clamped':>7} {'sim s':>6}")
    print(header)
    print("-" * len(header))
    total_wall = time.perf_counter()
    for name, m, k, n, single, relu in shapes:
        plan, run, wall, clamped = run_shape(cfg, m, k, n, single, relu, rng)
        macs = m * k * n
        bound = macs / lanes
        print(f"{name:<15} {f'{m}x{k}x{n}':>11} {f'{plan.m_tiles}/{plan.k_tiles}/{plan.n_tiles}':>11} {macs:>9,} "
              f"{run.cycles:>7} {bound:>6.0f} {bound / run.cycles:>6.1%} {run.array_span:>10} "
              f"{run.busy_cycles:>6} {run.active_cycles:>6} {run.macs:>9,} {clamped:>7.1%} {wall:>6.1f}",
              flush=True)
    print(f"all outputs bit-exact; simulation wall time {time.perf_counter() - total_wall:.1f} s")


if __name__ == "__main__":
    main()
