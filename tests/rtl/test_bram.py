"""block_ram (rtl/bram.py): both read-during-write results against a model, random traffic with collisions, and
what each elaborates to (the ``no_rw_check`` attribute and the register Yosys merges, the poisoning only off ECP5).
"""

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from haneul.rtl.bram import block_ram

DEPTH = 8


class Harness(Elaboratable):
    def __init__(self, collision, platform_family=None):
        self.collision = collision
        self.platform = SimpleNamespace(family=platform_family) if platform_family else None
        self.w_en, self.w_addr, self.w_data = Signal(), Signal(range(DEPTH)), Signal(16)
        self.r_addr, self.r_data = Signal(range(DEPTH)), Signal(16)

    def elaborate(self, platform):
        m = Module()
        write, addr, data = block_ram(m, name="mem", shape=16, depth=DEPTH, platform=self.platform,
                                      collision=self.collision)
        m.d.comb += [write.en.eq(self.w_en), write.addr.eq(self.w_addr), write.data.eq(self.w_data),
                     addr.eq(self.r_addr), self.r_data.eq(data)]
        return m


@pytest.mark.parametrize("collision", ["old", "undefined"])
def test_random_traffic(collision):
    """Reads and writes at random addresses of a small memory, so that about one read in eight meets a write of its
    element: the read data is the old contents (``"old"``), or the inverted old contents (``"undefined"``, the
    poisoning of the generic elaboration); every other read gives the contents."""
    rng = np.random.default_rng(3)
    dut = Harness(collision)
    cycles = 400
    model = [0] * DEPTH
    errors, collisions = [], 0

    async def tb(ctx):
        nonlocal collisions
        expected = None
        for cycle in range(cycles):
            if expected is not None and ctx.get(dut.r_data) != expected:
                errors.append((cycle, ctx.get(dut.r_data), expected))
            w_en, w_addr, w_data = bool(rng.random() < 0.7), int(rng.integers(DEPTH)), int(rng.integers(1 << 16))
            r_addr = int(rng.integers(DEPTH))
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, w_data)
            ctx.set(dut.r_addr, r_addr)
            expected = model[r_addr]
            if w_en and w_addr == r_addr:
                collisions += 1
                if collision == "undefined":
                    expected ^= 0xFFFF
            if w_en:
                model[w_addr] = w_data
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, f"read data wrong (cycle, got, expected): {errors[:5]}"
    assert collisions > cycles // 20


def test_elaboration():
    """``"undefined"``: the memory carries ``no_rw_check`` and is read asynchronously into a register (which Yosys
    merges into the block RAM), without the poisoning on ECP5; ``"old"``: a synchronous read port, no attribute."""
    ecp5 = rtlil.convert(Harness("undefined", "ecp5"), ports=[])
    generic = rtlil.convert(Harness("undefined"), ports=[])
    old = rtlil.convert(Harness("old"), ports=[])
    assert "no_rw_check" in ecp5 and "no_rw_check" in generic and "no_rw_check" not in old
    assert "mem_collided" in generic and "mem_collided" not in ecp5
    assert "mem_rd" in ecp5


def test_bad_collision():
    with pytest.raises(ValueError, match=r"^Collision result must be one of 'old', 'undefined', not 'new'$"):
        block_ram(None, name="mem", shape=8, depth=4, platform=None, collision="new")   # checked before use
