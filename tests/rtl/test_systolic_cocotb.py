"""cocotb tests of the systolic array on Icarus and Verilator (the testbench is ``cocotb_systolic.py``).

By default 4x4 and 8x16 run on Icarus and 8x8 on Verilator; the other (simulator, size) pairs are marked ``slow``
and run with ``python -m pytest -m slow``. ``test_catches_faults`` checks that the testbench fails on broken arrays.
"""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from haneul.rtl.config import DatapathConfig
from haneul.rtl.systolic import SystolicArray
from haneul.sim.cocotb.runner import SIMULATORS, run, simulator_missing

TEST_MODULE = "tests.rtl.cocotb_systolic"
COCOTB_TESTS = 8  # test_random_gemm x 4 traffic mixes, back_to_back, extremes, short_tiles, long_stalls

SIZES = {"4x4": (4, 4), "8x8": (8, 8), "16x16": (16, 16), "8x16": (8, 16)}
DEFAULT = {("icarus", "4x4"), ("icarus", "8x16"), ("verilator", "8x8")}
# Amount of random traffic (the cocotb module's `scale`): Icarus slows down with the array's size, Verilator does not.
SCALE = {("icarus", "4x4"): 4, ("icarus", "8x8"): 2, ("icarus", "8x16"): 2, ("icarus", "16x16"): 1}
VERILATOR_SCALE = 8


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
def test_systolic_cocotb(request, simulator, size):
    _require(request, simulator)
    rows, cols = SIZES[size]
    scale = SCALE.get((simulator, size), VERILATOR_SCALE)
    run(SystolicArray(DatapathConfig(rows=rows, cols=cols)), simulator=simulator, build_name=f"systolic-{size}",
        test_module=TEST_MODULE, params={"rows": rows, "cols": cols, "scale": scale}, expect_tests=COCOTB_TESTS)


# The testbench must fail on a wrong DUT ---------------------------------------------------------------------------

class FaultyArray(wiring.Component):
    """A :class:`SystolicArray` with one fault injected on its result stream, at result beat ``at``.

    Faults: ``"data"`` flips bit 0 of one element, ``"last"`` inverts ``last``, ``"drop"`` swallows the beat,
    ``"duplicate"`` gives it twice (again in the next cycle, every later beat a cycle late).
    """

    FAULTS = ("data", "last", "drop", "duplicate")

    def __init__(self, config, fault, at=5):
        if fault not in self.FAULTS:
            raise ValueError(f"Fault must be one of {self.FAULTS}, not {fault!r}")
        self.array = SystolicArray(config)
        self.fault = fault
        self.at = at
        super().__init__(dict(self.array.signature.members))  # the same ports as the array

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        wiring.connect(m, wiring.flipped(self.act), array.act)
        wiring.connect(m, wiring.flipped(self.weight), array.weight)

        count = Signal(16)        # result beats given by the array so far
        hit = Signal()
        late = Signal()           # "duplicate": the beat at `at` was given, the beats now leave a cycle late
        held = Signal.like(array.result.payload)
        held_valid = Signal()
        m.d.comb += [
            hit.eq(array.result.valid & (count == self.at)),
            self.result.payload.eq(array.result.payload),
            self.result.valid.eq(array.result.valid),
        ]
        with m.If(hit):
            if self.fault == "data":
                m.d.comb += self.result.payload.data[0].eq(array.result.payload.data[0] ^ 1)
            elif self.fault == "last":
                m.d.comb += self.result.payload.last.eq(~array.result.payload.last)
            elif self.fault == "drop":
                m.d.comb += self.result.valid.eq(0)
        if self.fault == "duplicate":
            m.d.sync += [held.eq(array.result.payload), held_valid.eq(array.result.valid)]
            with m.If(hit):
                m.d.sync += late.eq(1)
            with m.If(late):
                m.d.comb += [self.result.valid.eq(held_valid), self.result.payload.eq(held)]
        with m.If(array.result.valid):
            m.d.sync += count.eq(count + 1)
        return m


@pytest.mark.parametrize("fault", FaultyArray.FAULTS)
def test_catches_faults(request, fault):
    """Each injected fault makes the random-GEMM cocotb test fail on Icarus (4x4)."""
    _require(request, "icarus")
    dut = FaultyArray(DatapathConfig(rows=4, cols=4), fault)
    results = run(dut, simulator="icarus", build_name=f"systolic-fault-{fault}", test_module=TEST_MODULE,
                  params={"rows": 4, "cols": 4}, testcase="test_random_gemm/mix=valid_gaps", check=False)
    assert len(results.tests) == 1, [test.name for test in results.tests]
    assert results.failed, f"fault {fault!r} went unnoticed"
