"""cocotb tests of the whole NPU on Icarus and Verilator (the testbench is ``cocotb_npu.py``).

By default 4x4 runs on Icarus and the default 16x16 NPU on Verilator; the other (simulator, size) pairs are marked
``slow``. The ic01 layer (``test_ic01_conv1``) needs an array of at least 9 rows: it runs in the 16x16
configurations, so the default suite runs one real layer of a real model end to end on the RTL. The cycle model's
check on a small GEMM (``test_gemm_cycles``) runs with it.
"""

import pytest

from haneul.rtl.axi import amba_ports
from haneul.rtl.config import DatapathConfig
from haneul.rtl.npu import NPU
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_npu"

SIZES = {
    "4x4":   dict(rows=4, cols=4, spad_depth=256, spad_banks=4, acc_depth=64, acc_banks=2),
    "8x8":   dict(rows=8, cols=8, spad_depth=512, spad_banks=4, acc_depth=128, acc_banks=2),
    "16x16": dict(rows=16, cols=16),
}
DEFAULT = {("icarus", "4x4"), ("verilator", "16x16")}   # the 16x16 run includes the real ic01 layer
GEMMS = {"icarus": 3, "verilator": 5}


def _cases():
    for simulator in SIMULATORS:
        for size in SIZES:
            marks = [] if (simulator, size) in DEFAULT else [pytest.mark.slow]
            yield pytest.param(simulator, size, marks=marks, id=f"{simulator}-{size}")


def npu_verilog(config, data_width=128):
    from amaranth.back import verilog
    npu = NPU(config, data_width=data_width)
    return verilog.convert(npu, name="top", ports=amba_ports(npu))


@pytest.mark.parametrize("simulator,size", list(_cases()))
def test_npu_cocotb(request, simulator, size):
    missing = simulator_missing(simulator)
    if missing:
        pytest.skip(missing)
    config = DatapathConfig(**SIZES[size])
    run(npu_verilog(config), simulator=simulator, build_name=f"npu-{size}", test_module=TEST_MODULE,
        params=dict(SIZES[size], data_width=128, gemms=GEMMS[simulator]),
        expect_tests=5 if config.rows >= 9 else 3)   # test_ic01_conv1 and test_gemm_cycles need 9 rows
