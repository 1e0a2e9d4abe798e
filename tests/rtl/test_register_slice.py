"""RegisterSlice (rtl/register_slice.py): random valid and ready gaps on both sides, checked every cycle.

The contract: every beat accepted on ``i`` leaves on ``o`` once and in order; ``i.ready`` is high exactly while the
slice holds fewer than two beats and ``o.ready`` was low for the one it shows (the skid register is empty);
``o.valid`` is high exactly while it holds a beat; with ``o.ready`` always high it passes a beat every cycle.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from haneul.rtl.register_slice import RegisterSlice


@pytest.mark.parametrize("ping_pong", [False, True])
@pytest.mark.parametrize("valid_gap, ready_gap, seed", [(0.0, 0.0, 1), (0.3, 0.5, 2), (0.0, 0.7, 3),
                                                        (0.6, 0.1, 4), (0.5, 0.5, 5)])
def test_register_slice_random(valid_gap, ready_gap, seed, ping_pong):
    """Both implementations against the same model, cycle for cycle; `o_valid_next` against the next cycle's
    `o.valid`."""
    rng = np.random.default_rng(seed)
    dut = RegisterSlice(16, ping_pong=ping_pong)
    cycles = 500
    offer = rng.random(cycles) >= valid_gap
    ready = rng.random(cycles) >= ready_gap
    got, errors = [], []

    async def tb(ctx):
        held = []               # the model: beats in the slice, oldest first
        skid = False            # the model's skid register is full
        sent = 0
        valid_next = None
        for cycle in range(cycles):
            i_ready, o_valid, busy = ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.busy)
            if i_ready != (not skid) or o_valid != bool(held) or busy != bool(held):
                errors.append((cycle, len(held), skid, i_ready, o_valid, busy))
            if valid_next is not None and valid_next != o_valid:
                errors.append((cycle, "o_valid_next", valid_next, o_valid))
            if o_valid and held and ctx.get(dut.o.payload) != held[0]:
                errors.append((cycle, "payload", ctx.get(dut.o.payload), held[0]))
            ctx.set(dut.i.valid, bool(offer[cycle]))
            ctx.set(dut.i.payload, sent & 0xFFFF)
            ctx.set(dut.o.ready, bool(ready[cycle]))
            valid_next = ctx.get(dut.o_valid_next)
            take = bool(offer[cycle] and i_ready)
            give = bool(o_valid and ready[cycle])
            if give:
                got.append(held.pop(0))
            if take:
                held.append(sent & 0xFFFF)
                sent += 1
            # The skid register fills when a beat enters while the output register holds one that stays.
            skid = len(held) == 2
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, f"first mismatches: {errors[:5]}"
    assert got == list(range(len(got)))
    if valid_gap == 0 and ready_gap == 0:
        assert len(got) == cycles - 1          # one beat per cycle after the first
    else:
        assert len(got) > cycles * min(1 - valid_gap, 1 - ready_gap) / 2
