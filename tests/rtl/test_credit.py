"""CreditFIFO (rtl/credit.py) against a cycle model: random reservations, writes and consumer stalls.

The units that use it (requantiser, adder, pooling unit, scratchpad, accumulator) test it through their own
streams; here its contract is checked directly in every cycle: ``credit`` is high exactly while fewer than
``depth`` beats are reserved and unsent, ``busy`` while any is, and the results leave in order, each once, whatever
``w_data`` holds in the cycles without a write (the storage is written every cycle).
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from haneul.rtl.credit import CreditFIFO


@pytest.mark.parametrize("depth, latency, ready_gap, seed, registered, early, width",
                         [(1, 0, 0.3, 1, False, False, 16), (3, 2, 0.5, 2, False, False, 16),
                          (4, 3, 0.0, 3, False, False, 16), (5, 1, 0.8, 4, False, False, 16),
                          (13, 12, 0.4, 5, False, False, 16),
                          (1, 0, 0.3, 6, True, False, 16), (3, 0, 0.0, 7, True, False, 16),
                          (4, 2, 0.5, 8, True, False, 16), (7, 4, 0.0, 9, True, False, 16),
                          (7, 5, 0.7, 10, True, False, 16),
                          # ready told a cycle early, in one storage chunk and in three (each with its copies)
                          (3, 2, 0.5, 11, False, True, 16), (6, 4, 0.0, 12, False, True, 150),
                          (6, 5, 0.6, 13, False, True, 150), (1, 0, 0.3, 14, False, True, 150),
                          # both: the output register's chunks loaded at their own copies
                          (2, 0, 0.3, 15, True, True, 16), (7, 4, 0.0, 16, True, True, 150),
                          (7, 5, 0.6, 17, True, True, 150), (1, 0, 0.5, 18, True, True, 150),
                          (4, 2, 0.2, 19, True, True, 200)])
def test_credit_fifo_random(depth, latency, ready_gap, seed, registered, early, width):
    """A producer that reserves whenever it has a credit and a beat to send (with random gaps) and writes each
    result ``latency`` cycles later; a consumer with random ``ready`` gaps (with ``early``, told on
    ``ready_next`` a cycle ahead, and low in the first cycle)."""
    rng = np.random.default_rng(seed)
    dut = CreditFIFO(width, depth, registered=registered, early_ready=early)
    cycles = 600
    offer = rng.random(cycles) > 0.3
    ready = rng.random(cycles + 1) >= ready_gap
    if early:
        ready[0] = False
    got, errors = [], []

    async def tb(ctx):
        owed = 0
        sent = 0
        pending = []            # (cycle to write, value)
        for cycle in range(cycles):
            credit, busy, valid = ctx.get(dut.credit), ctx.get(dut.busy), ctx.get(dut.o.valid)
            if credit != (owed != depth) or busy != (owed != 0):
                errors.append((cycle, owed, credit, busy))
            reserve = bool(credit and offer[cycle])
            ctx.set(dut.reserve, reserve)
            if reserve:
                pending.append((cycle + latency, sent))
                sent += 1
            write = pending and pending[0][0] == cycle
            ctx.set(dut.w_en, bool(write))
            # Without a write, w_data carries garbage: the queue writes its spare entry every cycle.
            ctx.set(dut.w_data, pending.pop(0)[1] if write else int(rng.integers(0x8000, 0x10000)) << (width - 16))
            ctx.set(dut.o.ready, bool(ready[cycle]))
            if early:
                ctx.set(dut.ready_next, bool(ready[cycle + 1]))
            give = bool(valid and ready[cycle])
            if give:
                got.append(ctx.get(dut.o.payload))
            owed += int(reserve) - int(give)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, f"credit/busy wrong (cycle, owed, credit, busy): {errors[:5]}"
    assert got == list(range(len(got)))
    # A credit comes back `latency + dut.latency + 1` cycles after it was taken (with `o.ready` high): below that
    # many credits the rate is limited by the depth.
    rate = min(1, depth / (latency + dut.latency + 1))
    assert len(got) > cycles * rate * (1 - ready_gap) / 2
