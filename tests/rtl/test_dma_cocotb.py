"""cocotb tests of the DMA engine on Icarus and Verilator against cocotbext-axi's AxiRam (the testbench is
``cocotb_dma.py``).

The engine is wrapped in a thin top whose AXI port is ``m_axi`` and whose Verilog port names come from
:func:`haneul.rtl.axi.amba_ports` (``m_axi_awaddr`` ...), as an integrator sees them. By default the 16-row
configuration on a 128-bit bus runs on Icarus and a 4x4 one on a 32-bit bus on Verilator; the other pairs are
``slow``.
"""

import pytest
from haneul.rtl.axi import Renamed, amba_ports
from haneul.rtl.config import DatapathConfig
from haneul.rtl.dma import Dma
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_dma"
COCOTB_TESTS = 12  # test_random x 3 mixes, test_error x 6, test_abort x 3

SIZES = {
    "16x16-128": dict(rows=16, cols=16, spad_depth=2048, data_width=128),
    "4x4-32":    dict(rows=4, cols=4, spad_depth=256, data_width=32),
}
DEFAULT = {("icarus", "16x16-128"), ("verilator", "4x4-32")}
SCALE = {"icarus": 3, "verilator": 8}


def dma_top(config, **kwargs):
    """:class:`Dma` with its AXI port named ``m_axi`` (for :func:`amba_ports`)."""
    return Renamed(Dma(config, **kwargs), {"bus": "m_axi"}, name="dma")


def verilog(size):
    from amaranth.back import verilog as amaranth_verilog
    params = SIZES[size]
    config = DatapathConfig(rows=params["rows"], cols=params["cols"], spad_depth=params["spad_depth"])
    top = dma_top(config, data_width=params["data_width"])
    return amaranth_verilog.convert(top, name="top", ports=amba_ports(top))


def _cases():
    for simulator in SIMULATORS:
        for size in SIZES:
            marks = [] if (simulator, size) in DEFAULT else [pytest.mark.slow]
            yield pytest.param(simulator, size, marks=marks, id=f"{simulator}-{size}")


@pytest.mark.parametrize("simulator,size", list(_cases()))
def test_dma_cocotb(request, simulator, size):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow configuration: run with -m slow")
    missing = simulator_missing(simulator)
    if missing:
        pytest.skip(missing)
    run(verilog(size), simulator=simulator, build_name=f"dma-{size}", test_module=TEST_MODULE,
        params=dict(SIZES[size], scale=SCALE[simulator]), expect_tests=COCOTB_TESTS)


def test_top_port_names():
    top = dma_top(DatapathConfig())
    names = set(amba_ports(top))
    # Only the names are looked at: the components are not elaborated.
    top._MustUse__silence = top.inner._MustUse__silence = True
    assert {"m_axi_awaddr", "m_axi_rdata", "m_axi_wstrb", "rd_cmd__payload", "rd_data__ready", "wr_done"} <= names
