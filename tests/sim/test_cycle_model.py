"""The cycle model (sim/cycle_model.py): bounds and behaviour on the firmware's programs. (Its agreement with the
RTL is checked by the cocotb NPU testbench on ic01's first layer and a 64 x 64 x 64 GEMM, and printed by
benchmarks/npu_gemm.py.)"""

import dataclasses

import numpy as np
import pytest

from haneul.firmware.npu_gemm import gemm_program
from haneul.firmware.spad import bank_lines, bank_of
from haneul.rtl import commands, isa
from haneul.rtl.commands import weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.scratchpad import Scratchpad
from haneul.sim.cycle_model import array_run, estimate_cycles, load_words, tile_read


def program(m, k, n, **kwargs):
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    return gemm_program(a, w, 0, 1 << 30, -8, **kwargs)


def test_bounds():
    config = DatapathConfig()
    for m, k, n in [(16, 16, 16), (64, 64, 64), (256, 256, 256), (100, 37, 50)]:
        prog = program(m, k, n)
        est = estimate_cycles(prog.instructions, config)
        vectors = sum(i.command.count for i in prog.instructions
                      if isinstance(i, isa.Compute) and isinstance(i.command, commands.Matmul))
        assert est["array_busy"] == vectors
        assert est["cycles"] > vectors                     # the array cannot start before its data
        assert est["write_lines"] == sum(i.lines for i in prog.instructions if isinstance(i, isa.Store))


def test_overlap_makes_the_big_gemm_compute_bound():
    """With loads overlapped, 256^3 is within a few percent of the array's bound (the RTL measures 92.6 %)."""
    est = estimate_cycles(program(256, 256, 256).instructions)
    assert 65536 < est["cycles"] < 65536 / 0.85


def matmuls(instructions):
    return [i.command for i in instructions if isinstance(i, isa.Compute) and isinstance(i.command, commands.Matmul)]


def test_shared_bank_halves_the_array_rate():
    """64 x 64 x 64 in the packed layout (``separate_banks=False``, the plan before it knew the banks): the weights
    (lines 0-255) and the A block (256-511) are in the scratchpad's first bank, and the weight reader, waiting with
    the next tile, takes every other turn of it: a vector every other cycle (the RTL measures 2,826 cycles; the model
    without the bank sharing said 1,881). The default plan puts the A block in the next bank: about a vector per
    cycle (the RTL measures 2,034)."""
    config = DatapathConfig()
    shared = program(64, 64, 64, separate_banks=False)
    assert {bank_of(config, m.act_addr) for m in matmuls(shared.instructions)} == {0}
    assert {bank_of(config, m.weight_addr) for m in matmuls(shared.instructions)} == {0}
    vectors = sum(m.count for m in matmuls(shared.instructions))
    assert 2 * vectors < estimate_cycles(shared.instructions, config)["cycles"] < 3 * vectors
    # The same program with the activations one bank further on (where they are not loaded: timing only): the
    # readers no longer meet.
    moved = [dataclasses.replace(i, command=dataclasses.replace(i.command,
                                                                act_addr=i.command.act_addr + bank_lines(config)))
             if isinstance(i, isa.Compute) and isinstance(i.command, commands.Matmul) else i
             for i in shared.instructions]
    assert vectors < estimate_cycles(moved, config)["cycles"] < 2 * vectors
    separate = program(64, 64, 64)
    assert {bank_of(config, m.act_addr) for m in matmuls(separate.instructions)} == {1}
    assert vectors < estimate_cycles(separate.instructions, config)["cycles"] < 2 * vectors


def test_array_run():
    config = DatapathConfig()
    tile = weight_tile_lines(config)
    one_bank = commands.Matmul(act_addr=256, weight_addr=0, acc_addr=0, count=64)
    other_bank = commands.Matmul(act_addr=512, weight_addr=0, acc_addr=0, count=64)
    # Two MATMULs handed out: the next tile is read, then the weight reader waits with the one after.
    assert array_run(one_bank, 100, [(0, 16), (0, 32)], config) == (100 + 2 * 64, 100 + 2 * 64)
    assert array_run(other_bank, 100, [(0, 16), (0, 32)], config) == (100 + 64, 100 + 64)
    # One: only the next tile's lines take turns.
    assert array_run(one_bank, 100, [(0, 16)], config) == (100 + 64 + tile, 100 + 64 + tile)
    # None: a vector per cycle, and the next MATMUL reads its own tile.
    assert array_run(one_bank, 100, [], config) == (100 + 64, None)
    # A short MATMUL: the next tile is in after `tile` cycles.
    short = commands.Matmul(act_addr=512, weight_addr=0, acc_addr=0, count=8)
    assert array_run(short, 100, [(0, 16), (0, 32)], config) == (108, 100 + tile)
    # The first tile: the activation reader, without room for more lines, takes every other turn of a shared bank.
    assert tile_read(one_bank, config) == Scratchpad.latency + 2 * tile
    assert tile_read(other_bank, config) == Scratchpad.latency + tile


def test_missing_token_deadlocks():
    prog = [isa.Nop(wait_prev=True), isa.End()]
    with pytest.raises(ValueError, match="deadlocks"):
        estimate_cycles(prog)


def test_load_words():
    # 16 aligned lines of a bus word each.
    assert load_words(isa.Load(0x100, 0, 16, loops=((16, 16, 1),)), 16) == 16
    # 9-byte lines at 3-byte steps (the RGB layer): every line reuses the previous line's words (its last word, or
    # the same two words), so the read side keeps up with one line per cycle.
    assert load_words(isa.Load(0x100, 0, 9, loops=((30, 3, 1),)), 16) == 30
    # Lines straddling two words, each starting in the previous line's last word: 2 + 1 + 1 + 1.
    assert load_words(isa.Load(0x10F, 0, 2, loops=((4, 16, 1),)), 16) == 5
    # Padding lines cost a cycle each.
    assert load_words(isa.Load(0x100, 0, 4, loops=((3, 4, 1), (3, 64, 3)), pad=((0, 0), (1, 1))), 16) == 9
