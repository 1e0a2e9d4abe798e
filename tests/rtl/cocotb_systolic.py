"""cocotb testbench for ``haneul.rtl.systolic.SystolicArray`` (run by ``tests/rtl/test_systolic_cocotb.py``).

The array's Verilog (``top``) is driven through its three streams: ``act`` and ``weight`` by
:class:`~haneul.sim.cocotb.streams.StreamDriver` s with idle inserters, ``result`` (which has no backpressure) read
by a :class:`~haneul.sim.cocotb.streams.StreamMonitor`. Every result vector is checked by a
:class:`~haneul.sim.cocotb.scoreboard.Scoreboard` against an int64 numpy matmul of the tile, and the number of
results must equal the number of activation vectors sent.

Parameters (from :func:`haneul.sim.cocotb.tb_params`): ``rows``, ``cols`` (the array size) and ``scale`` (a
multiplier for the amount of random traffic, default 1).
"""

import logging
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from haneul.rtl.config import DatapathConfig
from haneul.rtl.systolic import SystolicArray
from haneul.sim.cocotb import pauses, tb_params
from haneul.sim.cocotb.payload import payload_shape
from haneul.sim.cocotb.scoreboard import Scoreboard
from haneul.sim.cocotb.streams import StreamDriver, StreamMonitor

PARAMS = tb_params()
CONFIG = DatapathConfig(rows=PARAMS.get("rows", 4), cols=PARAMS.get("cols", 4))
SCALE = PARAMS.get("scale", 1)

INT8_MIN, INT8_MAX = -128, 127

#: Traffic mixes: a TRAFFIC preset (see ``haneul.sim.cocotb.pauses``) for (act, weight). The result stream has
#: no ``ready``: the array never stalls and its consumer takes every result.
MIXES = {
    "smooth":       ("smooth", "smooth"),   # full rate: one vector per cycle
    "valid_gaps":   ("heavy",  "light"),    # random valid gaps on both inputs (idle inserters)
    "slow_wgts":    ("smooth", "heavy"),    # the weights hold up the tiles (names up to 10 characters)
    "random":       ("light",  "bursty"),   # everything at once, with long stalls
}


def reference_gemm(act, weight):
    """The golden model: ``act (M x rows) @ weight (rows x cols)`` in int64."""
    return act.astype(np.int64) @ weight.astype(np.int64)


class TB:
    """Clock, reset, stream drivers, result monitor and scoreboard around the systolic array's Verilog."""

    def __init__(self, dut, config=CONFIG, mix="smooth"):
        self.dut = dut
        self.config = config
        self.rows, self.cols, self.latency = config.rows, config.cols, config.latency
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        seed = cocotb.RANDOM_SEED
        self.rng = np.random.default_rng(seed)
        self.prng = random.Random(seed)

        model = SystolicArray(config)  # not elaborated: only its port layouts are used
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1

        self.cycle = 0
        self.act_cycles, self.weight_cycles, self.result_cycles = [], [], []
        self.scoreboard = Scoreboard("result")
        self.act = StreamDriver(dut, "act", dut.clk, payload_shape(model, "act"), reset=dut.rst, rng=self.prng,
                                callback=lambda _: self.act_cycles.append(self.cycle))
        self.weight = StreamDriver(dut, "weight", dut.clk, payload_shape(model, "weight"), reset=dut.rst,
                                   rng=self.prng, callback=lambda _: self.weight_cycles.append(self.cycle))
        self.result = StreamMonitor(dut, "result", dut.clk, payload_shape(model, "result"), reset=dut.rst,
                                    always_ready=True, callback=self._on_result)
        self.set_traffic(mix)
        cocotb.start_soon(self._count_cycles())

        self.tiles = 0
        self.vectors = 0

    def set_traffic(self, mix):
        """Install the pause generators of one of :data:`MIXES`."""
        act, weight = MIXES[mix]
        self.act.pause = pauses.TRAFFIC[act](self.prng)
        self.weight.pause = pauses.TRAFFIC[weight](self.prng)
        self.log.info("traffic %s: act %s, weight %s", mix, act, weight)

    async def _count_cycles(self):
        edge = RisingEdge(self.dut.clk)
        while True:
            await edge
            self.cycle += 1

    def _on_result(self, beat):
        self.result_cycles.append(self.cycle)
        self.scoreboard.observe(beat)

    async def reset(self, cycles=3):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    # Stimulus ----------------------------------------------------------------------------------------------------

    def random_tile(self, m, kind="uniform"):
        """A random ``m x rows`` activation tile and ``rows x cols`` weight tile of the given kind."""
        rows, cols, rng = self.rows, self.cols, self.rng
        if kind == "uniform":
            act = rng.integers(INT8_MIN, INT8_MAX + 1, (m, rows))
            weight = rng.integers(INT8_MIN, INT8_MAX + 1, (rows, cols))
        elif kind == "sparse":
            act = rng.integers(INT8_MIN, INT8_MAX + 1, (m, rows)) * (rng.random((m, rows)) < 0.3)
            weight = rng.integers(INT8_MIN, INT8_MAX + 1, (rows, cols)) * (rng.random((rows, cols)) < 0.3)
        elif kind == "partial_k":  # a reduction shorter than rows, zero-padded as the caller must
            k = int(rng.integers(1, rows + 1))
            act = rng.integers(INT8_MIN, INT8_MAX + 1, (m, rows))
            weight = rng.integers(INT8_MIN, INT8_MAX + 1, (rows, cols))
            weight[k:] = 0
        elif kind == "extreme":
            act = rng.choice([INT8_MIN, INT8_MAX], (m, rows))
            weight = rng.choice([INT8_MIN, INT8_MAX], (rows, cols))
        else:
            raise ValueError(kind)
        return act, weight

    def send_tile(self, act, weight):
        """Queue one tile (weights and activations) and expect its results."""
        act, weight = np.asarray(act), np.asarray(weight)
        m = act.shape[0]
        assert act.shape == (m, self.rows) and weight.shape == (self.rows, self.cols)
        expected = reference_gemm(act, weight)
        assert np.abs(expected).max(initial=0) < 2**31, "reference exceeds int32: bad stimulus"
        self.weight.send_many(row.tolist() for row in weight)
        for i in range(m):
            last = int(i == m - 1)
            self.act.send_nowait({"data": act[i].tolist(), "last": last})
            self.scoreboard.expect({"data": expected[i], "last": last})
        self.tiles += 1
        self.vectors += m

    def odd_m(self):
        """A tile height that is not a multiple of anything in the array: 1, 2, rows +- 1, primes, 2 rows + 3."""
        choices = {1, 2, 3, 5, 7, 11, 13, self.rows - 1, self.rows + 1, 2 * self.rows + 3}
        return self.prng.choice(sorted(m for m in choices if m >= 1))

    # Checking ----------------------------------------------------------------------------------------------------

    async def finish(self):
        """Wait for every expected result, then check the scoreboard and the beat counts."""
        budget = 60 * (self.vectors + self.tiles * self.rows) + 20 * self.latency + 200
        await self.scoreboard.wait_done(self.dut.clk, budget, stall_cycles=20 * self.latency + 400)
        await ClockCycles(self.dut.clk, self.latency + 4)  # anything extra would show up here
        self.scoreboard.check(count=self.vectors)
        assert self.result.received == self.vectors
        assert self.act.sent == self.vectors and self.act.pending == 0
        assert self.weight.sent == self.tiles * self.rows and self.weight.pending == 0
        self.log.info("%d tiles, %d vectors checked in %d cycles", self.tiles, self.vectors, self.cycle)


# Tests ---------------------------------------------------------------------------------------------------------------

TIMEOUT_MS = 100  # simulated; a hang guard well beyond any test's length


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(mix=list(MIXES))
async def test_random_gemm(dut, mix):
    """Constrained-random tiles of odd heights and mixed value distributions, back to back, under each traffic mix."""
    tb = TB(dut, mix=mix)
    await tb.reset()
    kinds = ["uniform", "sparse", "partial_k", "extreme"]
    for i in range(8 * SCALE):
        tb.send_tile(*tb.random_tile(tb.odd_m(), kinds[i % len(kinds)]))
    await tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_back_to_back(dut):
    """Tiles of at least rows + 1 vectors stream at one vector per cycle, weight swaps included, with no drain.

    Checks the exact timing of docs/systolic.md: the first vector enters ``rows`` cycles after the first weight row,
    every result leaves exactly ``latency`` cycles after its vector, results are contiguous across tile boundaries,
    and the whole run takes ``rows + latency + sum(M)`` cycles.
    """
    tb = TB(dut, mix="smooth")
    await tb.reset()
    for _ in range(5):
        m = tb.prng.choice([tb.rows + 1, tb.rows + 2, tb.rows + 5, 2 * tb.rows + 3])
        tb.send_tile(*tb.random_tile(m))
    await tb.finish()

    assert tb.act_cycles[0] == tb.weight_cycles[0] + tb.rows, "first vector did not enter right after its weights"
    latencies = {r - a for a, r in zip(tb.act_cycles, tb.result_cycles)}
    assert latencies == {tb.latency}, f"latencies {sorted(latencies)}, expected {tb.latency}"
    gaps = [later - earlier for earlier, later in zip(tb.result_cycles, tb.result_cycles[1:])]
    assert set(gaps) <= {1}, f"bubbles in the result stream at results {[i for i, g in enumerate(gaps) if g != 1]}"
    total = tb.result_cycles[-1] - tb.weight_cycles[0] + 1
    assert total == tb.rows + tb.latency + tb.vectors, f"{total} cycles, expected rows + latency + sum(M)"


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_extremes(dut):
    """All -128/127 corners: the largest positive and negative sums a column can reach, under random traffic."""
    tb = TB(dut, mix="random")
    await tb.reset()
    rows, cols = tb.rows, tb.cols
    for a, w in ((INT8_MIN, INT8_MIN), (INT8_MIN, INT8_MAX), (INT8_MAX, INT8_MIN), (INT8_MAX, INT8_MAX)):
        tb.send_tile(np.full((3, rows), a), np.full((rows, cols), w))
    # Columns of alternating sign: each result vector holds both extremes at once.
    signs = np.where(np.arange(cols) % 2 == 0, INT8_MIN, INT8_MAX)
    tb.send_tile(np.full((2, rows), INT8_MIN), np.tile(signs, (rows, 1)))
    for _ in range(3 * SCALE):
        tb.send_tile(*tb.random_tile(tb.odd_m(), "extreme"))
    assert tb.scoreboard._expected[0]["data"][0] == rows * 16384           # -128 * -128 summed over K
    assert tb.scoreboard._expected[3]["data"][0] == rows * -16256          # -128 * 127 summed over K
    await tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_short_tiles(dut):
    """Tiles shorter than rows + 1 vectors (down to one) wait for their weights and are still correct."""
    tb = TB(dut, mix="valid_gaps")
    await tb.reset()
    for _ in range(10 * SCALE):
        tb.send_tile(*tb.random_tile(tb.prng.choice([1, 1, 2, 3])))
    await tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_long_stalls(dut):
    """Long stretches without activations between bursts: every result still leaves exactly ``latency`` cycles
    after its vector (the delay lines of the deskew run on whatever the array holds)."""
    tb = TB(dut, mix="smooth")
    tb.act.pause = pauses.bursts(3, 25, tb.prng)
    await tb.reset()
    for _ in range(3 * SCALE):
        tb.send_tile(*tb.random_tile(tb.odd_m()))
    await tb.finish()
    latencies = {r - a for a, r in zip(tb.act_cycles, tb.result_cycles)}
    assert latencies == {tb.latency}, f"latencies {sorted(latencies)}, expected {tb.latency}"
