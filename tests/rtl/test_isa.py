"""The NPU instruction set (rtl/isa.py): encoding, decoding, checks, and docs/isa.md."""

import random
from pathlib import Path

import pytest
from amaranth.lib import data

from haneul.rtl import commands, isa
from haneul.rtl.config import DatapathConfig

ROOT = Path(__file__).resolve().parents[2]


def random_instruction(rng, config):
    deps = {flag: rng.random() < 0.5 for flag in ("wait_prev", "wait_next", "signal_prev", "signal_next")}
    kind = rng.choice([isa.Load, isa.Param, isa.Compute, isa.Store, isa.End, isa.Nop])
    if kind is isa.Load:
        loops = []
        for _ in range(3):
            loops.append((rng.randint(1, 6), rng.randrange(1 << isa.EXT_STRIDE_WIDTH), rng.randint(0, 8)))
        pad = tuple((rng.randint(0, (c - 1) // 2), rng.randint(0, (c - 1) // 2)) for c, _, _ in loops[:2])
        offset = rng.randint(0, config.rows - 1)
        return isa.Load(ext_addr=rng.randrange(1 << 32), spad_addr=rng.randint(0, 100), offset=offset,
                        length=rng.randint(1, config.rows - offset), pad_value=rng.randint(-128, 127),
                        loops=tuple(loops), pad=pad, **deps)
    if kind is isa.Param:
        return isa.Param(rng.randrange(1 << 32), rng.choice(list(isa.ParamTarget)), rng.randint(1, 1000), **deps)
    if kind is isa.Compute:
        cmd = rng.choice([commands.Matmul(1, 2, 3, 4, True), commands.Requant(5, 6, True), commands.Fence(),
                          commands.Pool(7, 8, 2, commands.PoolMode.AVERAGE, -5, 100)])
        return isa.Compute(cmd, **deps)
    if kind is isa.Store:
        loops = tuple((rng.randint(1, 9), rng.randrange(1 << isa.EXT_STRIDE_WIDTH)) for _ in range(3))
        return isa.Store(rng.randrange(1 << 32), rng.randint(1, config.cols), loops, **deps)
    return kind(**deps)


@pytest.mark.parametrize("config", [DatapathConfig(), DatapathConfig(rows=4, cols=4), DatapathConfig(rows=8, cols=16)],
                         ids=["16x16", "4x4", "8x16"])
def test_roundtrip(config):
    rng = random.Random(1)
    fmt = isa.InstructionFormat(config)
    for _ in range(300):
        instr = random_instruction(rng, config)
        word = fmt.encode(instr)
        assert 0 <= word < 1 << isa.INSTR_WIDTH
        assert fmt.decode(word) == instr
        assert fmt.decode(fmt.encode_bytes(instr)) == instr
        assert word & 0xF == instr.opcode.value


def test_layout_sizes():
    assert data.Layout.cast(isa.Instruction()).size == isa.INSTR_WIDTH
    assert isa.INSTR_BYTES == 32
    assert isa.InstructionFormat().encode(isa.Nop()) == 0


def test_error_codes_mirror_the_datapath():
    for code in commands.ErrorCode:
        assert isa.ErrorCode[code.name].value == code.value


def test_program_appends_end():
    fmt = isa.InstructionFormat()
    prog = fmt.program([isa.Compute(commands.Fence())])
    assert len(prog) == 2 * isa.INSTR_BYTES
    assert fmt.decode(prog[isa.INSTR_BYTES:]) == isa.End()
    assert len(fmt.program([isa.End()])) == isa.INSTR_BYTES


@pytest.mark.parametrize("instr, message", [
    (isa.Load(0, 0, 0), "length must be at least 1"),
    (isa.Load(0, 0, 17), "does not fit in a scratchpad line"),
    (isa.Load(0, 0, 8, offset=9), "does not fit in a scratchpad line"),
    (isa.Load(0, 0, 16, loops=((0, 16, 1),)), "count must be at least 1"),
    (isa.Load(0, 0, 16, loops=((3, 16, 1),), pad=((1, 2),)), "leaves no line to read"),
    (isa.Load(0, 0, 16, loops=((3, 16, 1),), pad=((16, 0),)), "padding before 16 is not in the range"),
    (isa.Load(0, 2000, 16, loops=((49, 16, 1),)), "past the end of the scratchpad"),
    (isa.Load(1 << 32, 0, 16), "ext_addr 4294967296 is not in the range"),
    (isa.Load(0, 0, 16, loops=((2, 1 << 20, 1),)), "ext_stride 1048576 is not in the range"),
    (isa.Load(0, 0, 16, pad_value=128), "pad_value 128"),
    (isa.Param(0, isa.ParamTarget.REQUANT, 0), "PARAM count must be at least 1"),
    (isa.Store(0, 0), "STORE length must be in 1 .. 16"),
    (isa.Store(0, 17), "STORE length must be in 1 .. 16"),
    (isa.Store(0, 16, ((0, 16),)), "STORE loop 0 count must be at least 1"),
    (isa.Compute(commands.Matmul(0, 0, 0, 0)), "count must be at least 1"),
])
def test_illegal_instructions(instr, message):
    with pytest.raises(ValueError, match=message):
        isa.InstructionFormat().encode(instr)


def test_illegal_words():
    fmt = isa.InstructionFormat()
    with pytest.raises(isa.InstructionError, match="Illegal opcode 9"):
        fmt.decode(9)
    with pytest.raises(isa.InstructionError, match="is 32 bytes, not 3"):
        fmt.decode(b"abc")
    with pytest.raises(isa.InstructionError, match="Not a 256-bit"):
        fmt.decode(1 << 256)
    with pytest.raises(commands.CommandError, match="Illegal opcode 15"):
        fmt.encode(isa.Compute(15))
    with pytest.raises(TypeError, match="must be a ParamTarget"):
        fmt.encode(isa.Param(0, 1))
    with pytest.raises(TypeError, match="Instruction must be one of"):
        fmt.encode(commands.Fence())
    with pytest.raises(isa.InstructionError, match="At most 3 loops"):
        isa.Store(0, 1, ((1, 0),) * 4)


def test_docs_isa_table_is_current():
    text = (ROOT / "docs" / "isa.md").read_text()
    begin, end = "<!-- instruction-table: begin -->\n", "<!-- instruction-table: end -->"
    assert begin in text and end in text
    current = text[text.index(begin) + len(begin):text.index(end)]
    assert current == isa.instruction_table(), "docs/isa.md is stale: paste isa.instruction_table() between the markers"
