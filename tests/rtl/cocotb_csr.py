"""cocotb testbench for ``haneul.rtl.csr.CSR`` (run by ``tests/rtl/test_csr_cocotb.py``).

The host side is cocotbext-axi's ``AxiLiteMaster`` on the ``s_axil_*`` ports, with pause generators on every
channel (idle cycles on AW, W and AR, backpressure on B and R), so AW and W arrive in every order. A ``Core`` model
drives the block's core side: it answers ``start`` by ending the run a few cycles later with ``done`` or ``error``,
and drives random per-cycle events while it runs, counting them as the reference for the counters. Every check
iterates the register map (``haneul.rtl.registers.register_map``).
"""

import logging
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from haneul.rtl import isa
from haneul.rtl.csr import Events
from haneul.rtl.registers import Access, register_map
from haneul.sim.cocotb import pauses
from haneul.sim.cocotb.payload import Codec

REGS = register_map()
EVENTS = Events()
TIMEOUT_MS = 20

#: Traffic mixes: TRAFFIC presets for (AW, W, AR) idles and (B, R) backpressure.
MIXES = {
    "smooth": ("smooth", "smooth"),
    "idle":   ("heavy", "smooth"),
    "stalls": ("light", "bursty"),
}


def field(register, name):
    return REGS[register].fields[name]


def bit(register, name):
    return 1 << field(register, name).offset


class Core:
    """The core side: ends each started run after ``length`` cycles with done or the queued error, and drives
    random events meanwhile (counting them)."""

    def __init__(self, dut, rng):
        self.dut, self.rng = dut, rng
        self.codec = Codec(EVENTS)
        self.next_error = None       # (code, addr) for the next run, or None for done
        self.length = 20
        self.totals = {}
        self.starts = 0
        for name in ("done", "error", "error_code", "error_addr", "events"):
            getattr(dut, name).value = 0
        cocotb.start_soon(self._run())

    def _event_values(self):
        rng = self.rng
        return {
            "active": rng.randrange(2), "macs": rng.randrange(257),
            "rd_bytes": rng.randrange(17), "wr_bytes": rng.randrange(17),
            "stall": {name: rng.randrange(2) for name in
                      ("fetch", "load_dep", "compute_dep", "store_dep", "dma_rd", "dma_wr", "out")},
        }

    def _count(self, values):
        for counter in REGS.counters:
            if counter.event in ("cycle", "running"):
                continue
            value = values
            for part in counter.event.split("."):
                value = value[part]
            self.totals[counter.name] = self.totals.get(counter.name, 0) + value

    async def _run(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            if not dut.start.value:
                continue
            self.starts += 1
            self.totals = {}
            for _ in range(self.length):
                values = self._event_values()
                dut.events.value = self.codec.pack(values)
                await RisingEdge(dut.clk)
                self._count(values)
            dut.events.value = 0
            if self.next_error is None:
                dut.done.value = 1
            else:
                dut.error.value = 1
                dut.error_code.value = self.next_error[0].value
                dut.error_addr.value = self.next_error[1]
            await RisingEdge(dut.clk)
            dut.done.value = 0
            dut.error.value = 0


class TB:
    def __init__(self, dut, mix="smooth"):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        self.rng = random.Random(cocotb.RANDOM_SEED)
        Clock(dut.clk, 10, unit="ns").start()
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.core = Core(dut, self.rng)
        idle, backpressure = (pauses.TRAFFIC[name] for name in MIXES[mix])
        for channel, preset in ((self.axil.write_if.aw_channel, idle), (self.axil.write_if.w_channel, idle),
                                (self.axil.read_if.ar_channel, idle),
                                (self.axil.write_if.b_channel, backpressure),
                                (self.axil.read_if.r_channel, backpressure)):
            generator = preset(random.Random(self.rng.random()))
            if generator is not None:
                channel.set_pause_generator(generator)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def read(self, name_or_addr, expect=AxiResp.OKAY):
        addr = REGS.offset(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        result = await self.axil.read(addr, 4)
        assert result.resp == expect, f"read {addr:#x}: {result.resp}"
        return int.from_bytes(result.data, "little")

    async def write(self, name_or_addr, value, expect=AxiResp.OKAY, byte=None):
        """Write a word, or with ``byte`` only that byte lane of it."""
        addr = REGS.offset(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        data = value.to_bytes(4, "little")
        if byte is not None:
            addr, data = addr + byte, data[byte:byte + 1]
        result = await self.axil.write(addr, data)
        assert result.resp == expect, f"write {addr:#x}: {result.resp}"

    async def counter(self, counter):
        if counter.width == 32:
            return await self.read(counter.name)
        lo = await self.read(counter.registers[0])
        return lo | await self.read(counter.registers[1]) << 32


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(mix=list(MIXES))
async def test_registers(dut, mix):
    """Reset values, then every field by its access type, with byte writes; all from the register map."""
    tb = TB(dut, mix)
    await tb.reset()
    timestamps = {name for c in REGS.counters if not c.clear_on_start for name in c.registers}
    for name, offset, register in REGS:
        if name not in timestamps:
            assert await tb.read(name) == register.init, name
    model = {}
    for _ in range(3):
        for name, offset, register in REGS:
            writable = sum(f.mask for f in register if f.access is Access.RW)
            if not writable:
                continue
            value = tb.rng.getrandbits(32)
            old = model.get(name, register.init)
            if tb.rng.random() < 0.5:
                await tb.write(name, value)
                model[name] = value & writable
            else:
                byte = tb.rng.randrange(4)
                await tb.write(name, value, byte=byte)
                lane = 0xFF << 8 * byte
                model[name] = (old & ~lane | value & lane) & writable
        for name in model:
            assert await tb.read(name) == model[name], name
    # Read-only registers ignore writes; CTRL reads zero.
    for name, offset, register in REGS:
        if all(f.access is Access.R for f in register) and name not in timestamps and register.init:
            await tb.write(name, ~register.init & 0xFFFF_FFFF)
            assert await tb.read(name) == register.init, name
    assert await tb.read("CTRL") == 0
    assert (int(dut.cmd_addr.value), int(dut.window_base.value), int(dut.window_size.value)) == \
        tuple(model[name] for name in ("CMD_ADDR", "WINDOW_BASE", "WINDOW_SIZE"))


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_runs(dut):
    """Runs that end with done and with errors: STATUS, ERROR_ADDR, IRQ_STATUS, irq, the counters."""
    tb = TB(dut, "stalls")
    await tb.reset()
    await tb.write("IRQ_ENABLE", bit("IRQ_ENABLE", "done") | bit("IRQ_ENABLE", "error"))
    code_shift = field("STATUS", "error_code").offset
    ends = [None, (isa.ErrorCode.BAD_RANGE, 0x8000_0120), None, (isa.ErrorCode.DEADLOCK, 0x40)]
    for run, end in enumerate(ends):
        tb.core.next_error = end
        tb.core.length = tb.rng.randrange(5, 40)
        await tb.write("CMD_ADDR", 0x8000_0000 + 0x100 * run)
        await tb.write("CTRL", bit("CTRL", "start"))
        await tb.write("CTRL", bit("CTRL", "start"))        # ignored: busy (or already ended)
        while not dut.irq.value:
            await RisingEdge(dut.clk)
        assert tb.core.starts == run + 1
        status = await tb.read("STATUS")
        if end is None:
            assert status == bit("STATUS", "done"), hex(status)
            assert await tb.read("IRQ_STATUS") == bit("IRQ_STATUS", "done")
            assert await tb.read("ERROR_ADDR") == 0
        else:
            assert status == bit("STATUS", "error") | end[0].value << code_shift, hex(status)
            assert await tb.read("IRQ_STATUS") == bit("IRQ_STATUS", "error")
            assert await tb.read("ERROR_ADDR") == end[1]
        for counter in REGS.counters:
            value = await tb.counter(counter)
            if counter.event == "running":
                assert value == tb.core.length + 2, (counter.name, value)   # start .. done
            elif counter.event != "cycle":
                assert value == tb.core.totals.get(counter.name, 0), counter.name
        await tb.write("IRQ_STATUS", 0xFFFF_FFFF)
        assert not dut.irq.value
    # Soft reset clears the status and the counters, and keeps the settings.
    await tb.write("CTRL", bit("CTRL", "soft_reset"))
    assert await tb.read("STATUS") == 0 and await tb.read("MACS_LO") == 0
    assert await tb.read("CMD_ADDR") == 0x8000_0300


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_unmapped(dut):
    """Addresses with no register answer SLVERR, under stalls; the next access is fine."""
    tb = TB(dut, "stalls")
    await tb.reset()
    mapped = {offset for _, offset, _ in REGS}
    holes = [a for a in range(0, 1 << 12, 4) if a not in mapped]
    for addr in tb.rng.sample(holes, 12) + [holes[0], holes[-1]]:
        assert await tb.read(addr, expect=AxiResp.SLVERR) == 0
        await tb.write(addr, 0xFFFF_FFFF, expect=AxiResp.SLVERR)
        assert await tb.read("ID") == REGS["ID"].init


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
async def test_read_during_write(dut):
    """Reads and writes issued concurrently (separate channels) all complete with the right data."""
    tb = TB(dut, "stalls")
    await tb.reset()
    names = ["CMD_ADDR", "WINDOW_BASE", "WINDOW_SIZE"]

    async def writer():
        for i in range(20):
            await tb.write(names[i % 3], 0x1000 * (i + 1))

    async def reader():
        for _ in range(20):
            assert await tb.read("ID") == REGS["ID"].init

    done = [cocotb.start_soon(writer()), cocotb.start_soon(reader())]
    for task in done:
        await task
    assert [await tb.read(name) for name in names] == [0x1000 * 19, 0x1000 * 20, 0x1000 * 18]
