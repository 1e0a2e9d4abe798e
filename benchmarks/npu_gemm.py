"""Whole-NPU throughput: a GEMM with its data in external memory, run by the NPU from a program, in RTL
simulation (Verilator, cocotb, a cocotbext-axi ``AxiRam`` as memory, registers through AXI4-Lite).

The program comes from :func:`haneul.firmware.npu_gemm.gemm_program`: ``A`` in blocks, weights per N tile,
parameters, the output tile by tile, loads of the next step overlapping the compute of this one. The output is
checked bit for bit against the golden model. Then ic01's first convolution on the chelsea photo, the same way.

Figures: ``cycles`` = the NPU's ``BUSY_CYCLES`` counter (from START to the end of the run, fetching the program
included); ``bound`` = M*K*N / (rows*cols), the cycles of a perfectly busy array; ``util`` = bound / cycles;
``DMA bytes`` read + written against the minimum (A, W and the output once); then every stall counter.

Run: python benchmarks/npu_gemm.py [--shape 256x256x256] [--rows 16 --cols 16] [--m-tile N]
(the first Verilator build of the 16 x 16 NPU takes a few minutes; later runs reuse it).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from haneul.rtl.axi import amba_ports  # noqa: E402
from haneul.rtl.config import DatapathConfig  # noqa: E402
from haneul.rtl.npu import NPU  # noqa: E402
from haneul.sim.cocotb.runner import run  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="256x256x256", help="MxKxN")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--m-tile", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    args = parser.parse_args(argv)
    m, k, n = (int(v) for v in args.shape.lower().split("x"))
    config = DatapathConfig(rows=args.rows, cols=args.cols)
    from amaranth.back import verilog
    npu = NPU(config)
    text = verilog.convert(npu, name="top", ports=amba_ports(npu))
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "figures.json"
        result_conv = Path(tmp) / "conv.json"
        params = dict(rows=args.rows, cols=args.cols, data_width=128, m=m, k=k, n=n, seed=args.seed,
                      result=str(result), result_conv=str(result_conv))
        if args.m_tile:
            params["m_tile"] = args.m_tile
        run(text, simulator=args.simulator, build_name=f"npu-bench-{args.rows}x{args.cols}",
            test_module="tests.rtl.cocotb_npu_bench", params=params,
            extra_env={"PYTHONPATH": str(ROOT), "COCOTB_LOG_LEVEL": "WARNING",
                       "PYTHONWARNINGS": "ignore::DeprecationWarning"})
        fig = json.loads(result.read_text())
        conv = json.loads(result_conv.read_text()) if result_conv.exists() else None
    c = fig["counters"]
    bound = m * k * n / (args.rows * args.cols)
    cycles = c["BUSY_CYCLES"]
    moved = c["DMA_RD_BYTES"] + c["DMA_WR_BYTES"]
    print(f"NPU {args.rows}x{args.cols}, 128-bit AXI4, GEMM {m}x{k}x{n} (M tile {fig['m_tile']}), "
          f"{fig['instructions']} instructions ({fig['program_bytes']} bytes)")
    print("  output                 bit-exact with the golden model")
    print(f"  cycles (BUSY_CYCLES)   {cycles:>10,}")
    print(f"  cycle model            {fig['model_cycles']:>10,}   (sim/cycle_model.py)")
    print(f"  compute bound          {bound:>10,.0f}")
    print(f"  utilisation            {100 * bound / cycles:>10.1f} %")
    print(f"  array active cycles    {c['ACTIVE_CYCLES']:>10,}   MACs {c['MACS']:,}")
    print(f"  DMA bytes read         {c['DMA_RD_BYTES']:>10,}")
    print(f"  DMA bytes written      {c['DMA_WR_BYTES']:>10,}")
    print(f"  DMA bytes / minimum    {moved / fig['bytes_min']:>10.2f}   (minimum {fig['bytes_min']:,}: A, W, "
          f"output once)")
    for name, value in c.items():
        if name.startswith("STALL_"):
            print(f"  {name:<22} {value:>10,}")
    if conv:
        c = conv["counters"]
        macs = conv["m"] * conv["k"] * conv["n"]
        print(f"\nic01 first CONV_2D (32x32x3 -> 32x32x16, 3x3 SAME) on the chelsea photo, im2col by the DMA, "
              f"{conv['instructions']} instructions")
        print("  output                 bit-exact with the golden model's intermediate tensor (16,384 values)")
        print(f"  cycles (BUSY_CYCLES)   {c['BUSY_CYCLES']:>10,}")
        print(f"  cycle model            {conv['model_cycles']:>10,}")
        print(f"  layer MACs / 256       {macs / (args.rows * args.cols):>10,.0f}   ({macs:,} MACs)")
        print(f"  array vectors          {c['ACTIVE_CYCLES']:>10,}   (3 K tiles of 16 per pixel: 9 of 16 rows used)")
        print(f"  DMA bytes read/written {c['DMA_RD_BYTES']:>10,} / {c['DMA_WR_BYTES']:,}   (minimum "
              f"{conv['bytes_min']:,})")
        for name, value in c.items():
            if name.startswith("STALL_") and value:
                print(f"  {name:<22} {value:>10,}")
    return fig


if __name__ == "__main__":
    main()
