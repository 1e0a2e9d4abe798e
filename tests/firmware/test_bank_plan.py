"""Bank-aware scratchpad plans: a MATMUL's activation lines and the weight tiles are never in the same scratchpad bank
when the scratchpad allows it (firmware/spad.py, ``plan_blocks`` in firmware/npu_gemm.py, ``plan_gemm``).

The scratchpad serves one read per bank and cycle, round robin between the array's activation reader and its weight
reader, and the weight reader, holding the next tile for the array's shadow registers, takes every other turn of its
bank: activations in that bank come every other cycle (``docs/memories.md``; 64 x 64 x 64 took 2,826 cycles instead of
about 1,900 with both in bank 0).
"""

import numpy as np
import pytest

from haneul.firmware.gemm import GemmError, plan_gemm
from haneul.firmware.npu_conv import conv_program
from haneul.firmware.npu_gemm import gemm_program
from haneul.firmware.spad import bank_boundary, bank_lines, bank_of, banks_of, separate
from haneul.rtl import commands, isa
from haneul.rtl.commands import weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.sim.stimulus import random_conv

DEFAULT = DatapathConfig()
SMALL = DatapathConfig(rows=4, cols=4, spad_depth=256, spad_banks=4, acc_depth=64, acc_banks=2)


def gemm(m, k, n, config=DEFAULT, **kwargs):
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    return gemm_program(a, w, 0, 1 << 30, -8, config=config, **kwargs)


def matmuls(prog):
    return [i.command for i in prog.instructions
            if isinstance(i, isa.Compute) and isinstance(i.command, commands.Matmul)]


def operand_banks(prog):
    """Per MATMUL: (banks of its activation lines, banks of its weight tile)."""
    tile = weight_tile_lines(prog.config)
    return [(banks_of(prog.config, mm.act_addr, mm.count), banks_of(prog.config, mm.weight_addr, tile))
            for mm in matmuls(prog)]


def assert_separate(prog):
    pairs = operand_banks(prog)
    shared = [i for i, (act, weight) in enumerate(pairs) if act & weight]
    assert not shared, f"MATMULs {shared} read activations and weights from one bank"
    # The weight reader fetches the next MATMULs' tiles while this one streams: no activation bank is a weight bank.
    act_banks = frozenset().union(*(act for act, _ in pairs))
    weight_banks = frozenset().union(*(weight for _, weight in pairs))
    assert not act_banks & weight_banks
    assert prog.separate_banks


def test_geometry():
    assert bank_lines(DEFAULT) == DEFAULT.spad_depth // DEFAULT.spad_banks
    assert bank_lines(SMALL) == 64
    assert [bank_of(SMALL, line) for line in (0, 63, 64, 255)] == [0, 0, 1, 3]
    assert banks_of(SMALL, 60, 10) == {0, 1} and banks_of(SMALL, 64, 64) == {1} and banks_of(SMALL, 5, 0) == set()
    assert [bank_boundary(SMALL, line) for line in (0, 1, 64, 65, 250)] == [0, 64, 64, 128, 256]
    assert separate(SMALL, (0, 64), (64, 10)) and not separate(SMALL, (0, 65), (64, 10))


@pytest.mark.parametrize("shape", [(64, 64, 64), (16, 16, 16), (100, 37, 50), (256, 64, 64), (16, 160, 256),
                                   (256, 256, 256)])
def test_gemm_operands_in_different_banks(shape):
    prog = gemm(*shape)
    assert_separate(prog)


def test_the_64_gemm():
    """The README's small GEMM: weights resident in bank 0, the A block from the next bank boundary."""
    prog = gemm(64, 64, 64)
    size = bank_lines(DEFAULT)
    assert {mm.weight_addr // size for mm in matmuls(prog)} == {0}
    assert {mm.act_addr // size for mm in matmuls(prog)} == {1}
    assert prog.a_spad == size and prog.m_tile == 64
    # The packed layout, as before the plan knew the banks: the A block right behind the weights, in bank 0 too.
    packed = gemm(64, 64, 64, separate_banks=False)
    assert packed.a_spad == 4 * 4 * weight_tile_lines(DEFAULT)         # 4 N tiles x 4 K tiles
    assert {mm.act_addr // size for mm in matmuls(packed)} == {0} and not packed.separate_banks


def test_the_256_gemm_is_unchanged():
    """Weights in two buffers filling bank 0, blocks from bank 1: already separate, the same program."""
    prog = gemm(256, 256, 256)
    assert prog.a_spad == bank_lines(DEFAULT) and prog.m_tile == 48
    assert prog.instructions == gemm(256, 256, 256, separate_banks=False).instructions


@pytest.mark.parametrize("config", [SMALL, DatapathConfig(rows=8, cols=8, spad_depth=512, acc_depth=128)])
def test_small_configurations(config, rng):
    """The cocotb testbench's random GEMMs (4 banks of 64 and of 128 lines)."""
    separated = 0
    for _ in range(20):
        m, k, n = (int(v) for v in rng.integers(1, [3 * config.rows + 6, 3 * config.rows + 3, 2 * config.cols + 2]))
        prog = gemm(m, k, n, config)
        if prog.separate_banks:
            assert_separate(prog)
            separated += 1
        else:
            # Not separable here: the packed layout, exactly as before.
            assert prog.instructions == gemm(m, k, n, config, separate_banks=False).instructions
    assert separated >= 15


def test_conv_operands_in_different_banks():
    """ic01's first layer (32 x 32 x 3 -> 16, 3 x 3 SAME, row-packed im2col) and a channel-major layer."""
    rng = np.random.default_rng(1)
    for shape in (dict(h=32, w=32, c=3, oc=16, k=(3, 3), stride=1, same=True),
                  dict(h=8, w=7, c=32, oc=16, k=(3, 3), stride=1, same=True),
                  dict(h=10, w=9, c=1, oc=20, k=(5, 5), stride=2, same=True)):
        x, f, bias, p = random_conv(rng, **shape)
        for rows_per_block in (None, 1):
            prog = conv_program(x, f, bias, p, config=DEFAULT, rows_per_block=rows_per_block)
            assert_separate(prog)
    # ic01's layer keeps its blocks of 8 output rows (256 pixels, half the accumulator).
    x, f, bias, p = random_conv(rng, h=32, w=32, c=3, oc=16, k=(3, 3), stride=1, same=True)
    assert conv_program(x, f, bias, p, config=DEFAULT).m_tile == 256


def test_fallback_one_bank():
    """One bank: nothing to separate, the packed layout."""
    config = DatapathConfig(spad_banks=1)
    prog = gemm(64, 64, 64, config)
    assert not prog.separate_banks and prog.a_spad == 256
    assert prog.instructions == gemm(64, 64, 64, config, separate_banks=False).instructions


def test_fallback_no_room_behind_the_weights():
    """Weights in two buffers of 800 lines: the bank boundary behind them is the end of the scratchpad."""
    prog = gemm(64, 800, 32)
    assert not prog.separate_banks and prog.a_spad == 1600
    assert prog.instructions == gemm(64, 800, 32, separate_banks=False).instructions


def test_fallback_would_reload_the_weights_more_often():
    """Weights in two buffers (reloaded for every block): the blocks go behind their bank only if that does not take
    more blocks. 128 x 400 x 128: 24 rows per block packed, 20 behind the bank boundary (7 blocks instead of 6)."""
    prog = gemm(128, 400, 128)
    assert not prog.separate_banks and prog.m_tile == 24
    # Resident weights are loaded once: separate even with smaller blocks (224 -> 192 rows at 256 x 64 x 64).
    prog = gemm(256, 64, 64)
    assert prog.separate_banks and prog.m_tile == 192
    assert gemm(256, 64, 64, separate_banks=False).m_tile == 224


def test_explicit_m_tile():
    # Fits behind the bank boundary: separate.
    assert_separate(gemm(64, 64, 64, m_tile=32))
    # 1 K tile, resident weights of 4 N tiles (64 lines): blocks of up to (2048 - 512) / 2 = 768 rows fit behind
    # bank 0; half the accumulator (256) is the limit.
    assert_separate(gemm(300, 16, 64, m_tile=256))
    # Too big for behind the boundary (at most 192 rows there), fits packed: the packed layout.
    prog = gemm(256, 64, 64, m_tile=200)
    assert not prog.separate_banks and prog.m_tile == 200 and prog.a_spad == 256
    with pytest.raises(GemmError, match="does not fit"):
        gemm(256, 64, 64, m_tile=250)


def test_plan_gemm_weights_before_a():
    """plan_gemm: W behind A's last bank, else before A's first bank, else right behind A."""
    plan = plan_gemm(20, 9, 6, SMALL, m_tile=8)                      # A: 60 lines in bank 0
    assert plan.w_base == 64
    plan = plan_gemm(10, 9, 6, SMALL, a_base=200, m_tile=8)          # A: 30 lines in bank 3, W (24) in bank 2
    assert plan.w_base == 192 - plan.w_lines and separate(SMALL, (plan.a_base, plan.a_lines),
                                                           (plan.w_base, plan.w_lines))
    one_bank = DatapathConfig(rows=4, cols=4, spad_depth=256, spad_banks=1, acc_depth=64)
    assert plan_gemm(10, 9, 6, one_bank, a_base=200, m_tile=8).w_base == 230
