"""cocotb test of the CSR block's Verilog with cocotbext-axi's ``AxiLiteMaster`` (the testbench is
``cocotb_csr.py``), on Icarus and Verilator. The block is wrapped so that its AXI4-Lite port is ``s_axil`` and
converted with :func:`haneul.rtl.axi.amba_ports`: the ports are ``s_axil_awaddr`` ..., as on the NPU's top."""

import pytest
from amaranth.back import verilog

from haneul.rtl.axi import Renamed, amba_ports
from haneul.rtl.csr import CSR
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_csr"
COCOTB_TESTS = 6  # test_registers x 3 traffic mixes, test_runs, test_unmapped, test_read_during_write


def csr_verilog():
    top = Renamed(CSR(), {"bus": "s_axil"}, name="csr")
    return verilog.convert(top, name="top", ports=amba_ports(top))


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_csr_cocotb(simulator):
    missing = simulator_missing(simulator)
    if missing:
        pytest.skip(missing)
    run(csr_verilog(), simulator=simulator, build_name="csr", test_module=TEST_MODULE, expect_tests=COCOTB_TESTS)


def test_axi_port_names():
    text = csr_verilog()
    for name in ("s_axil_awaddr", "s_axil_wstrb", "s_axil_bresp", "s_axil_rdata", "irq", "start", "events"):
        assert f" {name}" in text, name
