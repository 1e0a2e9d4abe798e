"""Runs every benchmark and prints its figures (the numbers in the README's results table)."""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["golden_speed.py", "datapath_gemm.py", "npu_gemm.py"]

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"== {name}")
        sys.argv = [name] + sys.argv[1:]
        runpy.run_path(str(HERE / name), run_name="__main__")
        print()
