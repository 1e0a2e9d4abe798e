"""Runs every benchmark with its default settings and prints its figures (the numbers in the README's results
table). Each benchmark takes its own options when run alone (``python benchmarks/<name>.py --help``)."""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["golden_speed.py", "datapath_gemm.py", "npu_gemm.py"]

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"== {name}")
        sys.argv = [name]
        runpy.run_path(str(HERE / name), run_name="__main__")
        print()
