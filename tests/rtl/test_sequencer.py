"""The sequencer's line reader alone: random runs (with and without windows) under random valid and ready gaps.

The datapath tests exercise the whole sequencer; these check the address generator's contract directly: every run
becomes its lines in order with ``last`` at the end of the run (and of every window), and with ``req.ready`` always
high consecutive runs (of two lines or more) follow each other without an idle cycle.
"""

import random

import pytest
from amaranth.sim import Simulator

from haneul.rtl.sequencer import LineReader


def expected_requests(runs, addr_width):
    out = []
    for run in runs:
        window = run.get("window", 0)
        for i in range(run["count"]):
            end_of_window = window != 0 and (i + 1) % window == 0
            out.append(((run["addr"] + i) % (1 << addr_width), int(i == run["count"] - 1 or end_of_window)))
    return out


def simulate(dut, runs, rng, run_gap, req_gap):
    got = []
    cycles = []

    async def driver(ctx):
        for run in runs:
            while rng.random() < run_gap:
                await ctx.tick()
            ctx.set(dut.run.payload, run)
            ctx.set(dut.run.valid, 1)
            await ctx.tick().until(dut.run.ready)
            ctx.set(dut.run.valid, 0)

    async def monitor(ctx):
        want = sum(run["count"] for run in runs)
        cycle = 0
        while len(got) < want:
            ctx.set(dut.req.ready, int(rng.random() >= req_gap))
            *_, valid, ready, addr, last = await ctx.tick().sample(
                dut.req.valid, dut.req.ready, dut.req.payload.addr, dut.req.payload.last)
            if valid and ready:
                got.append((addr, last))
                cycles.append(cycle)
            cycle += 1
        for _ in range(4):
            assert not ctx.get(dut.req.valid), "a request beyond the runs"
            await ctx.tick()
        assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    return got, cycles


@pytest.mark.parametrize("windows", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_random_runs(windows, seed):
    rng = random.Random(seed * 2 + windows)
    dut = LineReader(6, count_width=8, window_width=4 if windows else 0)
    runs = []
    for _ in range(30):
        run = {"addr": rng.randrange(64), "count": rng.choice([0, 1, 1, 2, 3, rng.randrange(1, 40)])}
        if windows:
            run["window"] = rng.randrange(16)
        runs.append(run)
    got, _ = simulate(dut, runs, rng, run_gap=0.3, req_gap=0.3)
    assert got == expected_requests(runs, 6)


def test_back_to_back_runs():
    """Runs queued ahead and ``req.ready`` always high: one request per cycle across run boundaries (runs of at
    least two lines: the reader takes a run every other cycle at most)."""
    rng = random.Random(1)
    dut = LineReader(8)
    runs = [{"addr": rng.randrange(256), "count": count} for count in (2, 2, 5, 3, 2, 3, 17, 2)]
    got, cycles = simulate(dut, runs, rng, run_gap=0, req_gap=0)
    assert got == expected_requests(runs, 8)
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), "a gap between runs"
