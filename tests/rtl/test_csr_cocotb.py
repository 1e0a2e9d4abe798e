"""cocotb test of the CSR block's Verilog with cocotbext-axi's ``AxiLiteMaster`` (the testbench is
``cocotb_csr.py``), on Icarus and Verilator. The block is wrapped so that its AXI4-Lite port is ``s_axil`` and
converted with :func:`haneul.rtl.axi.amba_ports`: the ports are ``s_axil_awaddr`` ..., as on the NPU's top."""

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from haneul.rtl.axi import amba_ports
from haneul.rtl.csr import CSR
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_csr"
COCOTB_TESTS = 6  # test_registers x 3 traffic mixes, test_runs, test_unmapped, test_read_during_write


class CSRTop(wiring.Component):
    """A :class:`CSR` whose bus port is named ``s_axil``; its other ports keep their names."""

    def __init__(self, **kwargs):
        self.csr = CSR(**kwargs)
        members = dict(self.csr.signature.members)
        members["s_axil"] = members.pop("bus")
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = self.csr
        for name, member in self.signature.members.items():
            theirs = csr.bus if name == "s_axil" else getattr(csr, name)
            ours = getattr(self, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(ours), theirs)
            elif member.flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        return m


def csr_verilog():
    top = CSRTop()
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
