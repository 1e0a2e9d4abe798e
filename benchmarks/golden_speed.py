"""Golden-model speed on the six MLPerf Tiny models (median wall time of a single-input inference).

Run: ./run bench   (or: python benchmarks/golden_speed.py [--repeat N])
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from haneul.firmware import tflite
from haneul.sim import golden

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("HANEUL_MODELS", ROOT / "models" / "mlperf_tiny"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"{'model':<8} {'ops':>4} {'MACs':>12} {'golden ms (median)':>20}")
    for path in sorted(MODELS.glob("*.tflite")):
        graph = tflite.load(path)
        x = np.random.default_rng(0).integers(-128, 128, graph.inputs[0].shape, dtype=np.int8)
        golden.run(graph, x)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            golden.run(graph, x)
            times.append(time.perf_counter() - t0)
        print(f"{path.name.split('_')[0]:<8} {len(graph.operators):>4} {graph.macs:>12,} "
              f"{1000 * statistics.median(times):>20.1f}")


if __name__ == "__main__":
    main()
