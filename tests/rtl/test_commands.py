# amaranth: UnusedElaboratable=no
"""The command set: encoder and decoder against the layouts, field checks, the hardware's checks, the docs table."""

import random
import re
from pathlib import Path

import pytest
from amaranth.hdl import Shape
from amaranth.lib import enum
from amaranth.sim import Simulator

from haneul.errors import HaneulError
from haneul.rtl import commands, eltwise, pool
from haneul.rtl.commands import (COUNT_WIDTH, DWCONV_SIZE_WIDTH, POOL_MAX_WINDOW, Add, CommandError, CommandFormat,
                                 CommandWord, Dwconv, ErrorCode, Fence, Matmul, Nop, Opcode, Pool, PoolMode, Requant,
                                 command_table, decode, encode, weight_lines_per_row, weight_tile_lines, word_width)
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Params
from haneul.rtl.sequencer import Sequencer

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = [
    DatapathConfig(),
    DatapathConfig(rows=2, cols=2, spad_depth=128, acc_depth=32),
    DatapathConfig(rows=4, cols=8, spad_depth=256, acc_depth=32),
    DatapathConfig(rows=8, cols=4, spad_depth=65536, acc_depth=8192, spad_banks=8),
]


def random_command(cfg, rng):
    kind = rng.integers(7)
    if kind == 6:
        height, width = (int(v) for v in rng.integers(3, 1 << DWCONV_SIZE_WIDTH, 2))
        while height * width > cfg.spad_depth:
            height, width = (max(3, height // 2), width) if height >= width else (height, max(3, width // 2))
        pads = [int(v) for v in rng.integers(0, 2, 4)]
        return Dwconv(act_addr=int(rng.integers(0, cfg.spad_depth - height * width + 1)),
                      weight_addr=int(rng.integers(0, cfg.spad_depth - 9 + 1)), height=height, width=width,
                      stride2=bool(rng.integers(2)), pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2],
                      pad_right=pads[3], zero_point=int(rng.integers(-128, 128)), load_params=bool(rng.integers(2)))
    if kind == 4:
        count = int(rng.integers(1, cfg.spad_depth + 1))
        return Add(a_addr=int(rng.integers(0, cfg.spad_depth - count + 1)),
                   b_addr=int(rng.integers(0, cfg.spad_depth - count + 1)), count=count,
                   load_params=bool(rng.integers(2)))
    if kind == 5:
        count = int(rng.integers(1, min(cfg.spad_depth, 1 << COUNT_WIDTH - 1) + 1))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        return Pool(addr=int(rng.integers(0, cfg.spad_depth - count + 1)), count=count,
                    window=int(rng.integers(1, POOL_MAX_WINDOW + 1)), mode=PoolMode(int(rng.integers(2))),
                    act_min=lo, act_max=hi)
    if kind == 0:
        return Nop()
    if kind == 1:
        return Fence()
    if kind == 2:
        count = int(rng.integers(1, min(cfg.spad_depth, cfg.acc_depth) + 1))
        return Matmul(act_addr=int(rng.integers(0, cfg.spad_depth - count + 1)),
                      weight_addr=int(rng.integers(0, cfg.spad_depth - weight_tile_lines(cfg) + 1)),
                      acc_addr=int(rng.integers(0, cfg.acc_depth - count + 1)),
                      count=count, accumulate=bool(rng.integers(2)))
    count = int(rng.integers(1, cfg.acc_depth + 1))
    return Requant(acc_addr=int(rng.integers(0, cfg.acc_depth - count + 1)), count=count,
                   load_params=bool(rng.integers(2)))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.rows}x{c.cols}-{c.spad_depth}-{c.acc_depth}")
def test_round_trip(cfg, rng):
    fmt = CommandFormat(cfg)
    assert fmt.width == word_width(cfg) == CommandWord(cfg).size
    assert fmt.width % 32 == 0
    for _ in range(300):
        cmd = random_command(cfg, rng)
        word = fmt.encode(cmd)
        assert 0 <= word < 1 << fmt.width
        assert fmt.decode(word) == cmd
        # The word, read through the hardware's layout.
        view = fmt.layout.from_bits(word)
        assert view.opcode == cmd.opcode
        if cmd.member:
            args = view.args[cmd.member]
            for name, _ in fmt.layout["args"].shape[cmd.member].shape:
                assert args[name] == getattr(cmd, name)
        else:
            assert word == cmd.opcode.value


def test_word_widths():
    assert word_width(DatapathConfig()) == 64
    # 16-bit addresses: 4 + 16 + 16 + 16 + 16 + 1 = 69 bits -> 96.
    assert word_width(DatapathConfig(rows=2, cols=2, spad_depth=65536, acc_depth=65536)) == 96
    assert Opcode.as_shape().width == commands.OPCODE_WIDTH
    assert encode(Nop()) == 0 and decode(0) == Nop()


def test_known_encoding():
    """The bit positions of the default configuration (what docs/datapath.md shows)."""
    word = encode(Matmul(act_addr=1, weight_addr=2, acc_addr=3, count=4, accumulate=True))
    assert word == 1 | 1 << 4 | 2 << 15 | 3 << 26 | 4 << 35 | 1 << 51
    assert encode(Requant(acc_addr=5, count=6, load_params=True)) == 2 | 5 << 4 | 6 << 13 | 1 << 29
    assert encode(Fence()) == 3
    assert encode(Add(a_addr=1, b_addr=2, count=3, load_params=True)) == 4 | 1 << 4 | 2 << 15 | 3 << 26 | 1 << 42
    assert (encode(Pool(addr=5, count=12, window=4, mode=PoolMode.AVERAGE, act_min=-5, act_max=100))
            == 5 | 5 << 4 | 12 << 15 | 4 << 31 | 1 << 40 | (256 - 5) << 41 | 100 << 49)


def test_weight_lines():
    assert weight_lines_per_row(DatapathConfig(rows=4, cols=8)) == 2
    assert weight_lines_per_row(DatapathConfig(rows=4, cols=9)) == 3
    assert weight_lines_per_row(DatapathConfig(rows=8, cols=4)) == 1
    assert weight_tile_lines(DatapathConfig(rows=4, cols=8)) == 8
    assert weight_tile_lines(DatapathConfig()) == 16


@pytest.mark.parametrize("cmd, error, message", [
    (Matmul(0, 0, 0, 70000), CommandError, "MATMUL count 70000 does not fit in 16 bits"),
    (Matmul(4096, 0, 0, 1), CommandError, "MATMUL act_addr 4096 does not fit in 11 bits"),
    (Matmul(0, 0, 512, 1), CommandError, "MATMUL acc_addr 512 does not fit in 9 bits"),
    (Matmul(-1, 0, 0, 1), CommandError, "MATMUL act_addr must not be negative, not -1"),
    (Matmul(0, 0, 0, 0), CommandError, "MATMUL count must be at least 1, not 0"),
    (Matmul(2040, 0, 0, 20), CommandError,
     "MATMUL activations would use lines 2040..2059, past the end of the scratchpad (2048 lines)"),
    (Matmul(0, 2040, 0, 1), CommandError,
     "MATMUL weight tile would use lines 2040..2055, past the end of the scratchpad (2048 lines)"),
    (Matmul(0, 0, 500, 20), CommandError,
     "MATMUL results would use lines 500..519, past the end of the accumulator (512 lines)"),
    (Requant(510, 5), CommandError,
     "REQUANT read-out would use lines 510..514, past the end of the accumulator (512 lines)"),
    (Requant(0, 1 << COUNT_WIDTH), CommandError, "REQUANT count 65536 does not fit in 16 bits"),
    (Matmul(0, 0, 0, "3"), TypeError, "MATMUL count must be an integer, not '3'"),
    (Matmul(0, 0, 0, True), TypeError, "MATMUL count must be an integer, not True"),
    (Matmul(0, 0, 0, 1, accumulate=2), TypeError, "MATMUL accumulate must be a bool, not 2"),
    ("MATMUL", TypeError, "Command must be one of Nop, Matmul, Requant, Fence, Add, Pool, Dwconv, not 'MATMUL'"),
    (Add(0, 2045, 4), CommandError,
     "ADD second operand would use lines 2045..2048, past the end of the scratchpad (2048 lines)"),
    (Add(0, 0, 0), CommandError, "ADD count must be at least 1, not 0"),
    (Pool(0, 4, 0), CommandError, "POOL window must be in 1 .. 256, not 0"),
    (Dwconv(0, 0, 0, 4), CommandError, "DWCONV height must be at least 1, not 0"),
    (Dwconv(0, 0, 4, 2, pad_left=0), CommandError, "DWCONV width 2 with padding 0 must be at least 3 (the kernel)"),
    (Dwconv(0, 0, 256, 4), CommandError, "DWCONV height 256 does not fit in 8 bits"),
    (Dwconv(0, 0, 4, 4, pad_top=2), CommandError, "DWCONV pad_top 2 does not fit in 1 bits"),
    (Dwconv(2000, 0, 8, 8), CommandError,
     "DWCONV input tile would use lines 2000..2063, past the end of the scratchpad (2048 lines)"),
    (Dwconv(0, 2040, 8, 8), CommandError,
     "DWCONV weights would use lines 2040..2048, past the end of the scratchpad (2048 lines)"),
    (Dwconv(0, 0, 4, 4, stride2=2), TypeError, "DWCONV stride2 must be a bool, not 2"),
    (Pool(0, 4, 257), CommandError, "POOL window must be in 1 .. 256, not 257"),
    (Pool(0, 4, 512), CommandError, "POOL window 512 does not fit in 9 bits"),
    (Pool(2000, 100, 4), CommandError,
     "POOL input would use lines 2000..2099, past the end of the scratchpad (2048 lines)"),
    (Pool(0, 4, 2, act_max=128), CommandError, "POOL act_max 128 is not in the range -128 .. 127"),
    (Pool(0, 4, 2, mode=1), TypeError, "POOL mode must be a Mode, not 1"),
])
def test_encode_errors(cmd, error, message):
    with pytest.raises(error, match=re.escape(message)):
        encode(cmd)


def test_command_error_is_a_haneul_error():
    assert issubclass(CommandError, HaneulError) and issubclass(CommandError, ValueError)


def test_decode_errors():
    with pytest.raises(CommandError, match=re.escape("Illegal opcode 15 in command word 0x1f")):
        decode(0x1F)
    with pytest.raises(CommandError, match="does not fit in 64 bits"):
        decode(1 << 64)
    with pytest.raises(TypeError, match="Command word must be an integer"):
        decode("0")
    # Argument bits of commands without arguments are ignored.
    assert decode(0xFFFF_0003) == Fence()


def test_docs_table_is_current():
    """docs/datapath.md holds command_table() of the default configuration between its markers."""
    doc = (ROOT / "docs" / "datapath.md").read_text()
    begin, end = "<!-- command-table: begin -->\n", "<!-- command-table: end -->"
    assert begin in doc and end in doc
    table = doc.split(begin, 1)[1].split(end, 1)[0]
    assert table.strip() == command_table().strip(), (
        "docs/datapath.md is out of date: replace the table with haneul.rtl.commands.command_table()")


def test_every_field_documented():
    table = command_table(DatapathConfig(rows=4, cols=8))
    fmt = CommandFormat(DatapathConfig(rows=4, cols=8))
    for opcode, name, lsb, width in fmt.fields():
        if name != "opcode":
            assert f"| `{opcode.name}` | `{name}` |" in table
    for opcode in Opcode:
        assert f"| `{opcode.name}` | {opcode.value} |" in table


# The hardware's checks agree with CommandFormat.check ------------------------------------------------------------

def hardware_verdicts(cfg, words, units=True):
    """Feed the words one by one to a Sequencer whose engines accept everything at once; return the error code after
    each (and clear it)."""
    dut = Sequencer(cfg, Params(cfg.cols), add_param_shape=eltwise.Params if units else None,
                    pool_param_shape=pool.Config if units else None, depthwise=units)
    verdicts = []

    async def engines(ctx):
        # Every result run is a tile whose last result is written two cycles later.
        done = []
        async for _, _, valid, ready in ctx.tick().sample(dut.result_run.valid, dut.result_run.ready):
            done.append(valid and ready)
            ctx.set(dut.tile_done, len(done) > 2 and done[-3])

    async def tb(ctx):
        streams = [dut.weight_run, dut.act_run, dut.result_run, dut.acc_cmd]
        if units:
            streams += [dut.vec_run_a, dut.vec_run_b, dut.pool_param, dut.dw_run]
        for run in streams:
            ctx.set(run.ready, 1)
        ctx.set(dut.drained, 1)
        ctx.set(dut.param_in.valid, 1)                   # parameters whenever a command asks for them
        ctx.set(dut.param_out.ready, 1)
        if units:
            ctx.set(dut.add_param_in.valid, 1)
            ctx.set(dut.add_param_out.ready, 1)
        for word in words:
            ctx.set(dut.cmd.payload.as_value(), word)
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            await ctx.tick().repeat(3)
            verdicts.append(ErrorCode(ctx.get(dut.error_code)))
            ctx.set(dut.error_clear, 1)
            await ctx.tick()
            ctx.set(dut.error_clear, 0)
            await ctx.tick().until(~dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(engines, background=True)
    sim.add_testbench(tb)
    sim.run()
    return verdicts


def test_hardware_checks_match_encoder(rng):
    cfg = DatapathConfig(rows=4, cols=8, spad_depth=64, acc_depth=16)
    fmt = CommandFormat(cfg)
    layout = fmt.layout
    words = [0x5, 0xF]                                      # illegal opcodes
    opcodes = {"matmul": Opcode.MATMUL, "requant": Opcode.REQUANT, "add": Opcode.ADD, "pool": Opcode.POOL,
               "dwconv": Opcode.DWCONV}
    for _ in range(40):
        member = list(opcodes)[int(rng.integers(len(opcodes)))]
        args = {}
        for name, field in layout["args"].shape[member].shape:
            if name == "count":
                args[name] = int(rng.integers(0, 24))
            elif name == "window":
                args[name] = int(rng.choice([0, 1, 5, 256, 257, 511]))
            elif name in ("height", "width"):
                args[name] = int(rng.choice([0, 1, 2, 3, 5, 9]))
            elif isinstance(field.shape, type) and issubclass(field.shape, enum.Enum):
                args[name] = list(field.shape)[int(rng.integers(len(field.shape)))]
            elif Shape.cast(field.shape).signed:
                args[name] = int(rng.integers(-(1 << field.width - 1), 1 << field.width - 1))
            else:
                args[name] = int(rng.integers(0, 1 << field.width))
        words.append(layout.const({"opcode": opcodes[member], "args": {member: args}}).as_value().value)
    words += [fmt.encode(Matmul(56, 56, 0, 8)), fmt.encode(Requant(15, 1)), fmt.encode(Nop()), fmt.encode(Fence())]
    words += [layout.const({"opcode": Opcode.REQUANT, "args": {"requant": {"acc_addr": 3, "count": 0}}})
              .as_value().value]

    expected = []
    for word in words:
        try:
            fmt.check(fmt.decode(word))
            expected.append(ErrorCode.NONE)
        except CommandError as e:
            text = str(e)
            expected.append(ErrorCode.ILLEGAL_OPCODE if "Illegal opcode" in text else
                            ErrorCode.BAD_COUNT if "at least 1" in text or "window" in text or "the kernel" in text else
                            ErrorCode.BAD_RANGE)
    assert set(expected) == set(ErrorCode) - {ErrorCode.UNSUPPORTED}
    assert hardware_verdicts(cfg, words) == expected


def test_hardware_unsupported():
    cfg = DatapathConfig(rows=4, cols=8, spad_depth=64, acc_depth=16)
    fmt = CommandFormat(cfg)
    words = [fmt.encode(Add(0, 8, 4)), fmt.encode(Pool(0, 8, 4)), fmt.encode(Dwconv(0, 40, 3, 3)),
             fmt.encode(Requant(0, 4))]
    assert hardware_verdicts(cfg, words, units=False) == [ErrorCode.UNSUPPORTED, ErrorCode.UNSUPPORTED,
                                                          ErrorCode.UNSUPPORTED, ErrorCode.NONE]


def test_result_run_before_act_run():
    """A MATMUL's result run is accepted no later than its activation run, whatever the queues' ``ready`` do: the
    result writer cannot hold up the array's results, so it must have a tile's run before the tile's first result."""
    cfg = DatapathConfig(rows=4, cols=8, spad_depth=64, acc_depth=16)
    fmt = CommandFormat(cfg)
    dut = Sequencer(cfg, Params(cfg.cols))
    words = [fmt.encode(Matmul(4 * i % 48, 8, i % 8, 1 + i % 5, accumulate=i % 2)) for i in range(24)]
    fires = {"act": [], "result": []}
    rnd = random.Random(5)

    async def queues(ctx):
        # A tile is done two cycles after the last of its three runs is accepted.
        counts = [0, 0, 0]
        done = []
        while True:
            for run in (dut.weight_run, dut.act_run, dut.result_run):
                ctx.set(run.ready, rnd.random() < 0.4)
            _, _, weight, act, result = await ctx.tick().sample(dut.weight_run.valid & dut.weight_run.ready,
                                                                  dut.act_run.valid & dut.act_run.ready,
                                                                  dut.result_run.valid & dut.result_run.ready)
            fires["act"].append(bool(act))
            fires["result"].append(bool(result))
            before = min(counts)
            counts = [c + bool(f) for c, f in zip(counts, (weight, act, result))]
            done.append(min(counts) > before)
            ctx.set(dut.tile_done, len(done) > 2 and done[-3])

    async def tb(ctx):
        ctx.set(dut.drained, 1)
        for word in words:
            ctx.set(dut.cmd.payload.as_value(), word)
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        await ctx.tick().until(~dut.busy)
        assert ctx.get(dut.error_code) == ErrorCode.NONE

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(queues, background=True)
    sim.add_testbench(tb)
    sim.run()
    assert sum(fires["act"]) == sum(fires["result"]) == len(words)
    acts = results = 0
    for act, result in zip(fires["act"], fires["result"]):
        acts, results = acts + act, results + result
        assert acts <= results, "an activation run went out before its result run"
    # The activation run leaves its stage once the result run's stage is empty: as early as the next cycle.
    assert any(a and r for a, r in zip(fires["act"][1:], fires["result"])), "never the cycle after: a cycle lost?"
