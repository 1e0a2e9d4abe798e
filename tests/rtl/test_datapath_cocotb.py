"""cocotb tests of the datapath top on Icarus and Verilator (the testbench is ``cocotb_datapath.py``).

By default 4x4 runs on Icarus and on Verilator; the other (simulator, size) pairs are marked ``slow`` and run with
``python -m pytest -m slow``. ``test_catches_faults`` checks that the testbench fails on broken datapaths.
"""

import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring

from haneul.rtl.axi import pass_through
from haneul.rtl.commands import ErrorCode
from haneul.rtl.config import DatapathConfig
from haneul.rtl.datapath import Datapath
from haneul.rtl.ppu import Rounding
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_datapath"
COCOTB_TESTS = 9  # test_random_gemm x 4 traffic mixes, requant_corners, vector_ops, illegal_command x 3

# Memories just large enough for the testbench's GEMMs (M up to 3 rows + 5, K up to 3 rows, N up to 2 cols + 1) in
# half the scratchpad, with A and W in different banks; 32-line accumulator halves, so that long GEMMs have several
# M tiles.
SIZES = {
    "4x4":   dict(rows=4,  cols=4,  spad_depth=256,  spad_banks=4, acc_depth=64, acc_banks=2),
    "8x8":   dict(rows=8,  cols=8,  spad_depth=512,  spad_banks=4, acc_depth=64, acc_banks=2),
    "16x16": dict(rows=16, cols=16, spad_depth=1024, spad_banks=4, acc_depth=64, acc_banks=2),
    "8x16":  dict(rows=8,  cols=16, spad_depth=1024, spad_banks=4, acc_depth=64, acc_banks=2),
}
DEFAULT = {("icarus", "4x4"), ("verilator", "4x4")}

# Icarus in its default SystemVerilog mode (cocotb passes -g2012) runs the initialisers of Yosys's `reg x = 0;`
# declarations before any process starts, so no event reaches the `always @*` blocks at time 0: a combinational
# block whose inputs never change (the scratchpad's bank grants while nothing reads) keeps X forever, and the X
# spreads through registers and survives reset. Verilog-2005 mode makes the initialisers time-0 events, which is
# what Yosys's `$auto$verilog_backend` trigger register relies on.
# Amount of random work (the cocotb module's `scale`): Icarus slows down with the size, Verilator much less.
SCALE = {("icarus", "4x4"): 3, ("verilator", "4x4"): 8}
DEFAULT_SCALE = {"icarus": 1, "verilator": 4}


def _cases():
    for simulator in SIMULATORS:
        for size in SIZES:
            marks = [] if (simulator, size) in DEFAULT else [pytest.mark.slow]
            yield pytest.param(simulator, size, marks=marks, id=f"{simulator}-{size}")


def _require(request, simulator):
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow configuration: run with -m slow")
    missing = simulator_missing(simulator)
    if missing:
        pytest.skip(missing)


@pytest.mark.parametrize("simulator,size", list(_cases()))
def test_datapath_cocotb(request, simulator, size):
    _require(request, simulator)
    params = dict(SIZES[size], scale=SCALE.get((simulator, size), DEFAULT_SCALE[simulator]))
    run(Datapath(DatapathConfig(**SIZES[size])), simulator=simulator, build_name=f"datapath-{size}",
        test_module=TEST_MODULE, params=params, expect_tests=COCOTB_TESTS)


# The testbench must fail on a wrong DUT ---------------------------------------------------------------------------

class FaultyDatapath(wiring.Component):
    """A :class:`Datapath` with one fault injected at its ports.

    Faults on ``out`` act on output beat ``at``: ``"data"`` flips bit 0 of the last lane (a padding lane of a
    partial N tile is as wrong as any other), ``"drop"`` swallows the beat, ``"duplicate"`` offers it twice.
    ``"error"`` hides the error (``error`` stays low, ``error_code`` reads ``NONE``). On ``ppu_param``: ``"shift"``
    flips bit 0 of lane 0's shift in every beat (that channel's scale doubles or halves), ``"rounding"`` swaps double
    and single rounding (results differ by one where the two roundings disagree, and by much more with positive
    shifts, where double rounding wraps the left-shifted accumulator and single rounding does not).
    """

    FAULTS = ("data", "drop", "duplicate", "error", "shift", "rounding")

    def __init__(self, config, fault, at=5):
        if fault not in self.FAULTS:
            raise ValueError(f"Fault must be one of {self.FAULTS}, not {fault!r}")
        self.datapath = Datapath(config)
        self.fault = fault
        self.at = at
        super().__init__(dict(self.datapath.signature.members))  # the same ports as the datapath

    def elaborate(self, platform):
        m = Module()
        m.submodules.datapath = dp = self.datapath
        pass_through(m, dp, self, skip=("out", "ppu_param"))

        # ppu_param, with the parameter faults.
        param = self.ppu_param.payload
        m.d.comb += [
            dp.ppu_param.payload.eq(param),
            dp.ppu_param.valid.eq(self.ppu_param.valid),
            self.ppu_param.ready.eq(dp.ppu_param.ready),
        ]
        if self.fault == "shift":
            m.d.comb += dp.ppu_param.payload.lanes[0].shift.eq(param.lanes[0].shift ^ 1)
        elif self.fault == "rounding":
            m.d.comb += dp.ppu_param.payload.config.rounding.eq(
                Mux(param.config.rounding == Rounding.DOUBLE, Rounding.SINGLE, Rounding.DOUBLE))

        # out, with the beat faults.
        count = Signal(16)        # beats accepted from the datapath so far
        repeat = Signal()         # "duplicate": the beat at `at` was already given once
        m.d.comb += [
            self.out.payload.eq(dp.out.payload),
            self.out.valid.eq(dp.out.valid),
            dp.out.ready.eq(self.out.ready),
        ]
        with m.If(count == self.at):
            if self.fault == "data":
                lane = len(self.out.payload) - 1
                m.d.comb += self.out.payload[lane].eq(dp.out.payload[lane] ^ 1)
            elif self.fault == "drop":
                m.d.comb += [self.out.valid.eq(0), dp.out.ready.eq(1)]
            elif self.fault == "duplicate":
                m.d.comb += dp.out.ready.eq(self.out.ready & repeat)
                with m.If(self.out.valid & self.out.ready):
                    m.d.sync += repeat.eq(~repeat)
        with m.If(dp.out.valid & dp.out.ready):
            m.d.sync += count.eq(count + 1)

        if self.fault == "error":
            m.d.comb += [self.error.eq(0), self.error_code.eq(ErrorCode.NONE)]
        return m


#: The cocotb test each fault must make fail.
FAULT_TESTS = {
    "data":      "test_random_gemm/mix=smooth",
    "drop":      "test_random_gemm/mix=smooth",
    "duplicate": "test_random_gemm/mix=ready_gaps",
    "error":     "test_illegal_command/bad=opcode",
    "shift":     "test_random_gemm/mix=smooth",
    "rounding":  "test_requant_corners",
}


#: Faults checked by default (one per kind of check: output data, error output, parameter path); the others are slow.
DEFAULT_FAULTS = ("data", "error", "rounding")


@pytest.mark.parametrize("fault", [pytest.param(fault, marks=[] if fault in DEFAULT_FAULTS else [pytest.mark.slow])
                                   for fault in FaultyDatapath.FAULTS])
def test_catches_faults(request, fault):
    """Each injected fault makes a cocotb test fail on Icarus (4x4)."""
    _require(request, "icarus")
    dut = FaultyDatapath(DatapathConfig(**SIZES["4x4"]), fault)
    results = run(dut, simulator="icarus", build_name=f"datapath-fault-{fault}", test_module=TEST_MODULE,
                  params=dict(SIZES["4x4"], scale=1), testcase=FAULT_TESTS[fault],
                  check=False)
    assert len(results.tests) == 1, [test.name for test in results.tests]
    assert results.failed, f"fault {fault!r} went unnoticed"
