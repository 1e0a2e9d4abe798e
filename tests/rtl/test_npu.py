"""The whole NPU in the Amaranth simulator: programs from an AXI memory model, registers over AXI4-Lite.

A 4 x 4 NPU runs GEMM programs built by :func:`haneul.firmware.npu_gemm.gemm_program` from
:class:`haneul.sim.axi_memory.AxiMemory` (random stalls on every channel, random latency), checked bit for bit
against the golden model; every error ends the run with its code, ``ERROR_ADDR`` and the interrupt, and the next
run works without a reset. The cocotb testbench (``test_npu_cocotb.py``) covers the same on Icarus and Verilator.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from haneul.firmware.npu_gemm import gemm_program
from haneul.rtl import commands, isa
from haneul.rtl.axi import Resp
from haneul.rtl.config import DatapathConfig
from haneul.rtl.npu import NPU
from haneul.sim.axi_memory import AxiMemory
from haneul.sim.golden import kernels
from haneul.sim.golden.quant import quantize_multiplier
from haneul.sim.stimulus import random_conv
from haneul.sim.axil_manager import axi_read, axi_write

CONFIG = DatapathConfig(rows=4, cols=4, spad_depth=256, spad_banks=4, acc_depth=64, acc_banks=2)
MEM = 1 << 16


class Host:
    """The driver's view: registers by name, runs to the interrupt."""

    def __init__(self, npu, mem):
        self.npu = npu
        self.mem = mem
        self.regs = npu.regs

    def field(self, register, name, value=1):
        return self.regs.pack(register, **{name: value})

    def get(self, register, name, word):
        return self.regs.unpack(register, name, word)

    async def write(self, ctx, register, value):
        assert await axi_write(ctx, self.npu.s_axil, self.regs.offset(register), value) == Resp.OKAY

    async def read(self, ctx, register):
        data, resp = await axi_read(ctx, self.npu.s_axil, self.regs.offset(register))
        assert resp == Resp.OKAY
        return data

    async def start(self, ctx, cmd_addr, window=(0, MEM)):
        await self.write(ctx, "CMD_ADDR", cmd_addr)
        await self.write(ctx, "WINDOW_BASE", window[0])
        await self.write(ctx, "WINDOW_SIZE", window[1])
        await self.write(ctx, "IRQ_ENABLE", 0b11)
        await self.write(ctx, "CTRL", self.field("CTRL", "start"))

    async def wait(self, ctx, timeout=20_000):
        for cycle in range(timeout):
            if ctx.get(self.npu.irq):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"no interrupt after {timeout} cycles: the NPU hangs")
        status = await self.read(ctx, "STATUS")
        result = {
            "done": self.get("STATUS", "done", status), "error": self.get("STATUS", "error", status),
            "code": isa.ErrorCode(self.get("STATUS", "error_code", status)),
            "addr": await self.read(ctx, "ERROR_ADDR"), "cycles": cycle,
            "active": await self.read(ctx, "ACTIVE_CYCLES"), "wr_bytes": await self.read(ctx, "DMA_WR_BYTES"),
        }
        await self.write(ctx, "IRQ_STATUS", 0b11)
        await ctx.tick()
        assert not ctx.get(self.npu.irq)
        return result


def simulate(testbench, *, gaps=0.0, errors=(), seed=1):
    npu = NPU(CONFIG, depthwise=False, watchdog=400)
    mem = AxiMemory(npu.m_axi, size=MEM, rng=random.Random(seed), gaps=gaps, latency=(1, 6), errors=errors)
    host = Host(npu, mem)
    sim = Simulator(npu)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.serve, background=True)

    async def tb(ctx):
        await testbench(ctx, host)

    sim.add_testbench(tb)
    sim.run()
    mem.check()


def make_gemm(rng, m, k, n, base=0x400, **kwargs):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-3000, 3000, n)
    mult, shift = (np.array(v) for v in zip(*(quantize_multiplier(s) for s in rng.uniform(0.001, 0.01, n))))
    zp = int(rng.integers(-128, 128))
    golden = kernels.requantize(a.astype(np.int64) @ w.astype(np.int64) + bias, mult, shift, zp, -128, 127)
    prog = gemm_program(a, w, bias, mult, shift, output_offset=zp, config=CONFIG, base=base, **kwargs)
    return prog, golden


async def run_gemm(ctx, host, prog, golden):
    for addr, data in prog.segments:
        host.mem.write(addr, data)
    host.mem.write(prog.out_addr, bytes(prog.out_bytes))
    await host.start(ctx, prog.cmd_addr)
    result = await host.wait(ctx)
    assert result["done"] and not result["error"], result
    out = prog.output(host.mem.read)
    assert (out == golden).all(), f"{int((out != golden).sum())} wrong outputs of {out.size}"
    return result


@pytest.mark.parametrize("gaps", [0.0, 0.3])
def test_gemm(gaps):
    rng = np.random.default_rng(3)

    async def tb(ctx, host):
        for m, k, n, m_tile in [(9, 10, 6, None), (6, 4, 4, 2), (13, 7, 9, 5)]:
            prog, golden = make_gemm(rng, m, k, n, m_tile=m_tile)
            result = await run_gemm(ctx, host, prog, golden)
            vectors = sum(i.command.count for i in prog.instructions
                          if isinstance(i, isa.Compute) and isinstance(i.command, commands.Matmul))
            assert result["active"] == vectors
            assert result["wr_bytes"] == m * n

    simulate(tb, gaps=gaps)


FMT = isa.InstructionFormat(CONFIG)


def _raw(opcode, member=None, **args):
    init = {"opcode": opcode}
    if member:
        init["args"] = {member: args}
    return FMT.layout.const(init).as_value().value.to_bytes(isa.INSTR_BYTES, "little")


NOP, END = FMT.encode_bytes(isa.Nop()), FMT.encode_bytes(isa.End())
ERROR_CASES = {
    "illegal opcode": (NOP + NOP + (9).to_bytes(32, "little") + END, isa.ErrorCode.ILLEGAL_OPCODE, 0x140, None),
    "illegal datapath opcode": (_raw(isa.Opcode.COMPUTE, "compute", command=15) + END,
                                isa.ErrorCode.ILLEGAL_OPCODE, 0x100, None),
    "load segment": (NOP + _raw(isa.Opcode.LOAD, "load", length=4, offset=1, loops=[{"count": 1}] * 3) + END,
                     isa.ErrorCode.BAD_RANGE, 0x120, None),
    "load count": (_raw(isa.Opcode.LOAD, "load", length=4, loops=[{"count": 1}, {"count": 0}, {"count": 1}]) + END,
                   isa.ErrorCode.BAD_COUNT, 0x100, None),
    "load past the scratchpad": (NOP + _raw(isa.Opcode.LOAD, "load", length=4, spad_addr=250,
                                 loops=[{"count": 3, "spad_stride": 3}, {"count": 1}, {"count": 1}]) + END,
                                 isa.ErrorCode.BAD_RANGE, 0x120, None),
    "store count": (_raw(isa.Opcode.STORE, "store", length=4, loops=[{"count": 1}, {"count": 0}, {"count": 1}])
                    + END, isa.ErrorCode.BAD_COUNT, 0x100, None),
    "param count": (FMT.program([isa.Param(0, isa.ParamTarget.REQUANT, 3)]), isa.ErrorCode.BAD_COUNT, 0x100, None),
    "matmul range": (_raw(isa.Opcode.COMPUTE, "compute", command=commands.CommandFormat(CONFIG).layout.const(
        {"opcode": commands.Opcode.MATMUL, "args": {"matmul": {"act_addr": 255, "count": 2}}}).as_value().value)
        + END, isa.ErrorCode.BAD_RANGE, 0x100, None),
    "program leaves the window": (NOP * 4, isa.ErrorCode.ADDR_WINDOW, None, (0x100, 0x80)),
    "load outside the window": (FMT.program([isa.Nop(), isa.Load(MEM - 8, 0, 4)]), isa.ErrorCode.ADDR_WINDOW, 0x120,
                                (0, MEM - 16)),
    "store outside the window": (FMT.program([isa.Param(0x1000, isa.ParamTarget.REQUANT),
                                              isa.Compute(commands.Requant(0, 2, load_params=True)),
                                              isa.Store(MEM - 4, 4, ((2, 4),))]),
                                 isa.ErrorCode.ADDR_WINDOW, 0x140, (0, MEM - 4)),
    "decerr": (FMT.program([isa.Load(MEM + 64, 0, 4)]), isa.ErrorCode.BUS_DECERR, 0x100, (0, 2 * MEM)),
    "slverr read": (FMT.program([isa.Load(0x3000, 0, 4)]), isa.ErrorCode.BUS_SLVERR, 0x100, None),
    "slverr write": (FMT.program([isa.Param(0x1000, isa.ParamTarget.REQUANT),
                                  isa.Compute(commands.Requant(0, 2, load_params=True)),
                                  isa.Store(0x3000, 4, ((2, 4),))]), isa.ErrorCode.BUS_SLVERR, 0x140, None),
    "deadlock": (FMT.program([isa.Nop(wait_prev=True)]), isa.ErrorCode.DEADLOCK, None, None),
    "output never stored": (FMT.program([isa.Param(0x1000, isa.ParamTarget.REQUANT),
                                         isa.Compute(commands.Requant(0, 3, load_params=True)),
                                         isa.Store(0x2000, 4, ((1, 4),))]), isa.ErrorCode.DEADLOCK, None, None),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors(case):
    program, code, error_addr, window = ERROR_CASES[case]
    rng = np.random.default_rng(7)

    async def tb(ctx, host):
        host.mem.write(0x100, program)
        await host.start(ctx, 0x100, window=window or (0, MEM))
        result = await host.wait(ctx)
        assert result["error"] and not result["done"], result
        assert result["code"] == code, result
        if error_addr is not None:
            assert result["addr"] == error_addr, f"ERROR_ADDR {result['addr']:#x} instead of {error_addr:#x}"
        # The next run works, without a reset.
        await run_gemm(ctx, host, *make_gemm(rng, 5, 6, 5, base=0x4000))

    simulate(tb, errors=[(0x3000, 0x3040, Resp.SLVERR)])


def test_abort():
    rng = np.random.default_rng(8)

    async def tb(ctx, host):
        prog, golden = make_gemm(rng, 12, 12, 8, base=0x4000)
        for addr, data in prog.segments:
            host.mem.write(addr, data)
        await host.start(ctx, prog.cmd_addr)
        await ctx.tick().repeat(60)
        await host.write(ctx, "CTRL", host.field("CTRL", "abort"))
        result = await host.wait(ctx)
        assert result["error"] and result["code"] == isa.ErrorCode.ABORTED, result
        await run_gemm(ctx, host, prog, golden)

    simulate(tb, gaps=0.2)


@pytest.mark.parametrize("shape", [
    dict(h=6, w=5, c=1, oc=4, k=(3, 3), stride=1, same=True),
    dict(h=7, w=6, c=2, oc=6, k=(2, 2), stride=2, same=True),
    dict(h=5, w=7, c=1, oc=3, k=(3, 4), stride=1, same=False),
    dict(h=4, w=9, c=5, oc=6, k=(2, 3), stride=2, same=False),
    dict(h=5, w=4, c=6, oc=5, k=(2, 2), stride=1, same=True),
], ids=["3x3-same", "2x2-s2-same", "3x4-valid", "channel-major-s2-valid", "channel-major-2x2-same"])
def test_conv(shape):
    """Convolutions with the im2col done by the DMA (row-packed and channel-major layouts), padding from the input
    zero point."""
    from haneul.firmware.npu_conv import conv_program
    rng = np.random.default_rng(11)

    async def tb(ctx, host):
        x, f, bias, p = random_conv(rng, **shape)
        golden = kernels.conv_2d(x, f, bias, p)[0]
        prog = conv_program(x, f, bias, p, config=CONFIG, base=0x400, rows_per_block=2 if shape["c"] <= 2 else 1)
        for addr, data in prog.segments:
            host.mem.write(addr, data)
        await host.start(ctx, prog.cmd_addr)
        result = await host.wait(ctx)
        assert result["done"] and not result["error"], result
        out = prog.output(host.mem.read).reshape(golden.shape)
        assert (out == golden).all(), f"{int((out != golden).sum())} wrong outputs of {out.size}"

    simulate(tb, gaps=0.2)
