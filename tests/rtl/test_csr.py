# amaranth: UnusedElaboratable=no
"""Tests of the register map (``rtl/registers.py``), the register bank and the NPU's CSR block (``rtl/csr.py``) in
the Amaranth simulator. The access tests iterate the register map: a register added there is tested here."""

import random
from pathlib import Path

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from haneul.rtl import isa
from haneul.rtl.axi import Resp
from haneul.rtl.config import DatapathConfig
from haneul.rtl.csr import CSR, Events, RegisterBank
from haneul.rtl.registers import (MAGIC, Access, CounterWord, Field, Register, RegisterMap, register_map,
                                  register_table)
from haneul.sim.axil_manager import axi_read, axi_write

ROOT = Path(__file__).resolve().parents[2]
REGS = register_map()


def reg(name):
    return REGS.offset(name)


def field(register, name):
    return REGS[register].fields[name]


async def read_ok(ctx, bus, addr, **kwargs):
    data, resp = await axi_read(ctx, bus, addr, **kwargs)
    assert resp == Resp.OKAY, f"read {addr:#x}: {resp}"
    return data


async def write_ok(ctx, bus, addr, value, **kwargs):
    resp = await axi_write(ctx, bus, addr, value, **kwargs)
    assert resp == Resp.OKAY, f"write {addr:#x}: {resp}"


def simulate(dut, *testbenches, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    for process in processes:
        sim.add_process(process)
    sim.run()


# The register map -------------------------------------------------------------------------------------------------

def test_map_layout():
    offsets = [offset for _, offset, _ in REGS]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert REGS["ID"].init == MAGIC == 0x55454E48
    assert MAGIC.to_bytes(4, "little") == b"HNEU"
    for name, offset, register in REGS:
        masks = [f.mask for f in register]
        assert sum(masks) < 1 << 32 and all(a & b == 0 for i, a in enumerate(masks) for b in masks[i + 1:]), name
        assert REGS.at(offset) == name
    for counter in REGS.counters:
        assert all(name in REGS for name in counter.registers)
        if counter.width == 64:
            assert REGS.offset(counter.registers[1]) == REGS.offset(counter.registers[0]) + 4
    status = REGS["STATUS"].fields["error_code"]
    assert status.enum is isa.ErrorCode and status.width == 4


def test_map_follows_configuration():
    regs = register_map(DatapathConfig(rows=8, cols=4, spad_depth=256, spad_banks=2, acc_depth=64),
                        bus_data_width=64, has_depthwise=True)
    config0 = regs["CONFIG0"].fields
    assert (config0["rows"].init, config0["cols"].init, config0["bus_bytes"].init) == (8, 4, 8)
    assert regs["CONFIG1"].init == 256 and regs["CONFIG2"].init == 64
    assert {name: f.init for name, f in regs["CONFIG3"].fields.items()} == {"add": 0, "pool": 0, "depthwise": 1}
    assert REGS["CONFIG3"].init == 0b011


def test_map_errors():
    with pytest.raises(TypeError, match="Configuration must be a DatapathConfig"):
        register_map("16x16")
    with pytest.raises(ValueError, match="Bus data width"):
        register_map(bus_data_width=100)
    with pytest.raises(TypeError, match="has_add must be a bool"):
        register_map(has_add=1)
    with pytest.raises(ValueError, match="does not fit in CONFIG0"):
        register_map(DatapathConfig(rows=256, cols=256, acc_width=32))
    with pytest.raises(TypeError, match="Field shape"):
        Field(33)
    with pytest.raises(ValueError, match="reset value must fit"):
        Field(2, init=4)
    with pytest.raises(TypeError, match="no access type"):
        class NoAccess(Register):
            x = Field(1)
    with pytest.raises(ValueError, match="overlaps"):
        class Overlap(Register, access="r"):
            a = Field(4)
            b = Field(4, offset=2)
    with pytest.raises(ValueError, match="more than 32"):
        class Wide(Register, access="r"):
            a = Field(20)
            b = Field(20)
    with pytest.raises(TypeError, match="has no field"):
        CounterWord(bogus=1)
    regs = RegisterMap()
    regs.add("A", CounterWord(), offset=0)
    with pytest.raises(ValueError, match="already in the map"):
        regs.add("A", CounterWord(), offset=4)
    with pytest.raises(ValueError, match="is taken by A"):
        regs.add("B", CounterWord(), offset=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        regs.add("C", CounterWord(), offset=2)
    with pytest.raises(ValueError, match="upper-case identifier"):
        regs.add("d", CounterWord(), offset=8)


def test_docs_table_is_current():
    """docs/registers.md holds register_table() between its markers."""
    doc = (ROOT / "docs" / "registers.md").read_text()
    begin, end = "<!-- register-table: begin -->\n", "<!-- register-table: end -->"
    assert begin in doc and end in doc
    table = doc.split(begin, 1)[1].split(end, 1)[0]
    assert table.strip() == register_table().strip(), (
        "docs/registers.md is out of date: replace the table with haneul.rtl.registers.register_table()")
    for name, offset, register in REGS:
        assert f"| `0x{offset:03X}` | `{name}` |" in table


# The register bank: every field of the map, by its access type ----------------------------------------------------

def test_bank_reset_values_and_access():
    dut = RegisterBank(REGS)
    bus = dut.bus
    seen_pulses = []

    async def watch_pulses(ctx):
        pulses = [(f, getattr(getattr(dut, name.lower()), f.name).w_pulse)
                  for name, _, r in REGS for f in r if f.access is Access.W]
        async for _, _, *values in ctx.tick().sample(*(signal for _, signal in pulses)):
            for (f, _), value in zip(pulses, values):
                if value:
                    seen_pulses.append((f.name, value))

    async def tb(ctx):
        # Reset values: undriven r fields read their reset value, storage starts at it.
        for name, offset, register in REGS:
            assert await read_ok(ctx, bus, offset) == register.init, name
        for name, offset, register in REGS:
            port = getattr(dut, name.lower())
            for f in register:
                element = getattr(port, f.name)
                ones = f.mask
                if f.access is Access.R:
                    await write_ok(ctx, bus, offset, 0xFFFF_FFFF)
                    assert await read_ok(ctx, bus, offset) & f.mask == f.init << f.offset, (name, f.name)
                elif f.access is Access.RW:
                    await write_ok(ctx, bus, offset, ones)
                    assert await read_ok(ctx, bus, offset) & f.mask == ones, (name, f.name)
                    assert ctx.get(element.data) == (1 << f.width) - 1
                    await write_ok(ctx, bus, offset, 0)
                    assert await read_ok(ctx, bus, offset) & f.mask == 0, (name, f.name)
                elif f.access is Access.W:
                    seen_pulses.clear()
                    await write_ok(ctx, bus, offset, ones)
                    await write_ok(ctx, bus, offset, 0)         # a zero gives no pulse
                    assert seen_pulses == [(f.name, (1 << f.width) - 1)], (name, f.name)
                    assert await read_ok(ctx, bus, offset) & f.mask == 0, (name, f.name)
                else:  # W1C
                    assert ctx.get(element.data) == 0
                    await write_ok(ctx, bus, offset, ones)      # clearing a clear bit
                    assert ctx.get(element.data) == 0
                    ctx.set(element.set, 1)
                    await ctx.tick()
                    ctx.set(element.set, 0)
                    assert await read_ok(ctx, bus, offset) & f.mask == 1 << f.offset, (name, f.name)
                    await write_ok(ctx, bus, offset, ~ones & 0xFFFF_FFFF)   # zeros leave it
                    assert ctx.get(element.data) == 1
                    await write_ok(ctx, bus, offset, ones)
                    assert await read_ok(ctx, bus, offset) & f.mask == 0, (name, f.name)
                    ctx.set(element.set, 1)                     # hardware clear wins over set
                    ctx.set(element.clear, 1)
                    await ctx.tick()
                    ctx.set(element.set, 0)
                    ctx.set(element.clear, 0)
                    assert ctx.get(element.data) == 0

    simulate(dut, tb, processes=[watch_pulses])


def test_bank_w1c_set_wins_over_host_clear():
    dut = RegisterBank(REGS)
    done = dut.irq_status.done

    async def tb(ctx):
        ctx.set(done.set, 1)
        await ctx.tick()
        assert ctx.get(done.data) == 1
        # set held high across the write that clears: the bit stays set.
        await write_ok(ctx, dut.bus, reg("IRQ_STATUS"), 1)
        assert ctx.get(done.data) == 1
        ctx.set(done.set, 0)
        await write_ok(ctx, dut.bus, reg("IRQ_STATUS"), 1)
        assert ctx.get(done.data) == 0

    simulate(dut, tb)


def test_bank_byte_strobes():
    dut = RegisterBank(REGS)
    bus = dut.bus

    async def tb(ctx):
        addr = reg("CMD_ADDR")
        await write_ok(ctx, bus, addr, 0x1122_3344)
        await write_ok(ctx, bus, addr, 0xAABB_CCDD, strb=0b0101)
        assert await read_ok(ctx, bus, addr) == 0x11BB_33DD
        await write_ok(ctx, bus, addr, 0xFFFF_FFFF, strb=0)
        assert await read_ok(ctx, bus, addr) == 0x11BB_33DD
        # A w field in a lane that is not written gives no pulse (CTRL bits are all in lane 0).
        await write_ok(ctx, bus, reg("CTRL"), 0xFF, strb=0b1110)
        assert ctx.get(dut.ctrl.start.w_pulse) == 0

    async def no_pulse(ctx):
        async for _, _, start in ctx.tick().sample(dut.ctrl.start.w_pulse):
            assert not start

    simulate(dut, tb, processes=[no_pulse])


@pytest.mark.parametrize("order", ["together", "aw_first", "w_first"])
def test_bank_channel_order_and_stalls(order):
    """AW and W in either order with gaps, B and R held under backpressure, SLVERR for unmapped addresses."""
    dut = RegisterBank(REGS)
    bus = dut.bus
    rng = random.Random(order)

    async def tb(ctx):
        addrs = [reg("CMD_ADDR"), reg("WINDOW_BASE"), reg("WINDOW_SIZE"), reg("IRQ_ENABLE")]
        model = {addr: REGS[REGS.at(addr)].init for addr in addrs}
        for _ in range(24):
            addr = rng.choice(addrs)
            value = rng.getrandbits(32)
            await write_ok(ctx, bus, addr, value, order=order, gap=rng.randrange(4), b_stall=rng.randrange(4))
            model[addr] = value & sum(f.mask for f in REGS[REGS.at(addr)])
            addr = rng.choice(addrs)
            assert await read_ok(ctx, bus, addr, r_stall=rng.randrange(4)) == model[addr]
        # Unmapped: SLVERR, nothing written, reads zero; the low address bits are ignored.
        for addr in (0x01C, 0x0FC, 0x200, 0xFFC):
            assert REGS.at(addr) is None
            assert await axi_write(ctx, bus, addr, 0xFFFF_FFFF, order=order, b_stall=2) == Resp.SLVERR
            assert await axi_read(ctx, bus, addr, r_stall=2) == (0, Resp.SLVERR)
        assert await read_ok(ctx, bus, reg("ID") + 3) == MAGIC
        for addr in addrs:
            assert await read_ok(ctx, bus, addr) == model[addr]

    simulate(dut, tb)


def test_bank_second_write_waits_for_b():
    """With B stalled, one more AW and W are taken, but the write is done only after B is taken."""
    dut = RegisterBank(REGS)
    bus = dut.bus

    async def tb(ctx):
        addr = reg("CMD_ADDR")
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, 1)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        await ctx.tick().until(bus.awready & bus.wready)
        ctx.set(bus.wdata, 2)                # the second write, offered at once
        await ctx.tick().until(bus.awready & bus.wready)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        for _ in range(5):                   # B of the first write held; the second waits
            await ctx.tick()
            assert ctx.get(bus.bvalid) and ctx.get(dut.cmd_addr.value.data) == 1
            assert not ctx.get(bus.awready) and not ctx.get(bus.wready)
        ctx.set(bus.bready, 1)
        await ctx.tick().until(bus.bvalid)   # first B
        await ctx.tick().until(bus.bvalid)   # second B
        ctx.set(bus.bready, 0)
        assert ctx.get(dut.cmd_addr.value.data) == 2

    simulate(dut, tb)


def test_bank_read_and_write_together():
    """A read and a write in flight at once, to the same register: the read returns the old or the new value."""
    dut = RegisterBank(REGS)
    bus = dut.bus

    async def tb(ctx):
        addr = reg("WINDOW_BASE")
        await write_ok(ctx, bus, addr, 0x1234)
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.rready, 1)
        writing = axi_write(ctx, bus, addr, 0x5678)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        data, = await ctx.tick().sample(bus.rdata).until(bus.rvalid)
        ctx.set(bus.rready, 0)
        assert data == 0x1234
        assert await writing == Resp.OKAY
        assert await read_ok(ctx, bus, addr) == 0x5678

    simulate(dut, tb)


# The CSR block ----------------------------------------------------------------------------------------------------

class Core:
    """Drives the core side of a CSR: ``done`` / ``error`` pulses and events."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    async def pulse(self, signal, **values):
        for name, value in values.items():
            self.ctx.set(getattr(self.dut, name), value)
        self.ctx.set(signal, 1)
        await self.ctx.tick()
        self.ctx.set(signal, 0)


def _status(busy=0, done=0, error=0, code=isa.ErrorCode.NONE):
    s = REGS["STATUS"].fields
    return (busy << s["busy"].offset | done << s["done"].offset | error << s["error"].offset
            | code.value << s["error_code"].offset)


CTRL = {name: 1 << f.offset for name, f in REGS["CTRL"].fields.items()}
IRQ = {name: 1 << f.offset for name, f in REGS["IRQ_STATUS"].fields.items()}


def test_csr_reset_values():
    dut = CSR()
    counted_from_reset = {name for c in dut.regs.counters if not c.clear_on_start for name in c.registers}

    async def tb(ctx):
        for name, offset, register in dut.regs:
            value = await read_ok(ctx, dut.bus, offset)
            if name not in counted_from_reset:
                assert value == register.init, name
        for port in ("start", "abort", "soft_reset", "busy", "irq", "cmd_addr", "window_base", "window_size"):
            assert ctx.get(getattr(dut, port)) == 0, port

    simulate(dut, tb)


def test_csr_run_done_and_interrupt():
    dut = CSR()
    bus = dut.bus
    starts = []

    async def count_starts(ctx):
        async for _, _, start in ctx.tick().sample(dut.start):
            if start:
                starts.append(1)

    async def tb(ctx):
        core = Core(ctx, dut)
        await write_ok(ctx, bus, reg("CMD_ADDR"), 0x8000_0040)
        await write_ok(ctx, bus, reg("WINDOW_BASE"), 0x8000_0000)
        await write_ok(ctx, bus, reg("WINDOW_SIZE"), 0x0010_0000)
        assert (ctx.get(dut.cmd_addr), ctx.get(dut.window_base), ctx.get(dut.window_size)) == \
            (0x8000_0040, 0x8000_0000, 0x0010_0000)
        await write_ok(ctx, bus, reg("IRQ_ENABLE"), IRQ["done"] | IRQ["error"])
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        assert ctx.get(dut.busy) and starts == [1]
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(busy=1)
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])       # ignored while busy
        assert starts == [1]
        await ctx.tick().repeat(3)
        await core.pulse(dut.done)
        assert not ctx.get(dut.busy) and ctx.get(dut.irq)
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(done=1)
        assert await read_ok(ctx, bus, reg("IRQ_STATUS")) == IRQ["done"]
        await write_ok(ctx, bus, reg("IRQ_STATUS"), IRQ["done"])
        assert not ctx.get(dut.irq)
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(done=1)   # STATUS stays until START
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        assert starts == [1, 1]
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(busy=1)

    simulate(dut, tb, processes=[count_starts])


def test_csr_error_abort_and_soft_reset():
    dut = CSR()
    bus = dut.bus
    pulses = {"start": 0, "abort": 0, "soft_reset": 0}

    async def count_pulses(ctx):
        names = list(pulses)
        async for _, _, *values in ctx.tick().sample(*(getattr(dut, n) for n in names)):
            for name, value in zip(names, values):
                pulses[name] += value

    async def tb(ctx):
        core = Core(ctx, dut)
        await write_ok(ctx, bus, reg("CMD_ADDR"), 0x1000)
        await write_ok(ctx, bus, reg("CTRL"), CTRL["abort"])       # idle: ignored
        assert pulses["abort"] == 0
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        await write_ok(ctx, bus, reg("CTRL"), CTRL["abort"])
        assert pulses == {"start": 1, "abort": 1, "soft_reset": 0}
        await core.pulse(dut.error, error_code=isa.ErrorCode.ABORTED, error_addr=0x1060)
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(error=1, code=isa.ErrorCode.ABORTED)
        assert await read_ok(ctx, bus, reg("ERROR_ADDR")) == 0x1060
        assert await read_ok(ctx, bus, reg("IRQ_STATUS")) == IRQ["error"]
        assert not ctx.get(dut.irq)                                 # not enabled
        await write_ok(ctx, bus, reg("IRQ_ENABLE"), IRQ["error"])
        assert ctx.get(dut.irq)
        # START clears STATUS and ERROR_ADDR (not IRQ_STATUS); error wins over done in one cycle.
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        assert await read_ok(ctx, bus, reg("ERROR_ADDR")) == 0
        assert await read_ok(ctx, bus, reg("IRQ_STATUS")) == IRQ["error"]
        ctx.set(dut.done, 1)
        await core.pulse(dut.error, error_code=isa.ErrorCode.BAD_RANGE, error_addr=0x1020)
        ctx.set(dut.done, 0)
        assert await read_ok(ctx, bus, reg("STATUS")) == _status(error=1, code=isa.ErrorCode.BAD_RANGE)
        # Soft reset during a run: state, interrupts and counters cleared; settings kept; no interrupt.
        await write_ok(ctx, bus, reg("IRQ_ENABLE"), 3)
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        assert pulses["start"] == 3
        await write_ok(ctx, bus, reg("CTRL"), CTRL["soft_reset"] | CTRL["start"])  # soft reset wins
        assert pulses == {"start": 3, "abort": 1, "soft_reset": 1}
        assert not ctx.get(dut.busy) and not ctx.get(dut.irq)
        assert await read_ok(ctx, bus, reg("STATUS")) == 0
        assert await read_ok(ctx, bus, reg("IRQ_STATUS")) == 0
        assert await read_ok(ctx, bus, reg("ERROR_ADDR")) == 0
        assert await read_ok(ctx, bus, reg("CMD_ADDR")) == 0x1000
        assert await read_ok(ctx, bus, reg("IRQ_ENABLE")) == 3
        cycles = await read_ok(ctx, bus, reg("CYCLES_LO"))
        assert 0 < cycles < 20

    simulate(dut, tb, processes=[count_pulses])


def test_csr_soft_reset_ignores_core_reports():
    """done and error in the cycle soft_reset is high (the core not yet reset) are dropped."""
    dut = CSR()

    async def tb(ctx):
        await write_ok(ctx, dut.bus, reg("CTRL"), CTRL["start"])
        ctx.set(dut.bus.awaddr, reg("CTRL"))
        ctx.set(dut.bus.wdata, CTRL["soft_reset"])
        ctx.set(dut.bus.wstrb, 0xF)
        ctx.set(dut.bus.awvalid, 1)
        ctx.set(dut.bus.wvalid, 1)
        ctx.set(dut.bus.bready, 1)
        await ctx.tick().until(dut.bus.awready)
        ctx.set(dut.bus.awvalid, 0)
        ctx.set(dut.bus.wvalid, 0)
        ctx.set(dut.error, 1)
        ctx.set(dut.error_code, isa.ErrorCode.DEADLOCK)
        ctx.set(dut.events.stall.fetch, 1)
        await ctx.tick().until(dut.soft_reset)
        ctx.set(dut.error, 0)
        ctx.set(dut.events.stall.fetch, 0)
        ctx.set(dut.bus.bready, 0)
        await ctx.tick()
        assert await read_ok(ctx, dut.bus, reg("STATUS")) == 0
        assert await read_ok(ctx, dut.bus, reg("IRQ_STATUS")) == 0
        assert await read_ok(ctx, dut.bus, reg("STALL_FETCH")) == 0

    simulate(dut, tb)


@pytest.mark.parametrize("enable", range(4))
def test_csr_irq_is_status_and_enable(enable):
    """irq == |(IRQ_STATUS & IRQ_ENABLE) after every done/error event and every clear, for each enable."""
    dut = CSR()
    bus = dut.bus
    state = {"status": 0}

    async def tb(ctx):
        core = Core(ctx, dut)
        await write_ok(ctx, bus, reg("IRQ_ENABLE"), enable)
        for event in ("done", "error", "done", "clear_done", "error", "clear_error", "clear_done"):
            if event.startswith("clear"):
                bit = IRQ[event[6:]]
                await write_ok(ctx, bus, reg("IRQ_STATUS"), bit)
                state["status"] &= ~bit
            else:
                await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
                await core.pulse(getattr(dut, event), error_code=isa.ErrorCode.BAD_COUNT)
                state["status"] |= IRQ[event]
            assert await read_ok(ctx, bus, reg("IRQ_STATUS")) == state["status"]
            assert ctx.get(dut.irq) == bool(state["status"] & enable)

    simulate(dut, tb)


def _event_values(rng, layout):
    return {
        "active": rng.randrange(2),
        "macs": rng.randrange(1 << layout["macs"].width),
        "rd_bytes": rng.randrange(1 << layout["rd_bytes"].width),
        "wr_bytes": rng.randrange(1 << layout["wr_bytes"].width),
        "stall": {name: rng.randrange(2) for name, _ in data.Layout.cast(layout["stall"].shape)},
    }


def _event(values, path):
    for part in path.split("."):
        values = values[part]
    return values


def test_csr_counters():
    """Every counter counts its event (random per-cycle values), START clears all but CYCLES."""
    dut = CSR()
    bus = dut.bus
    layout = Events()
    rng = random.Random(1)
    model = {}

    async def tb(ctx):
        core = Core(ctx, dut)
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        for c in dut.regs.counters:
            model[c.name] = ctx.get(dut.counters[c.name])
        # Cleared at the START; since then only BUSY_CYCLES has counted (the cycles of the B handshake).
        assert all(model[c.name] == 0 for c in dut.regs.counters if c.clear_on_start and c.event != "running")
        assert 0 < model["BUSY_CYCLES"] < 4
        for _ in range(50):
            values = _event_values(rng, layout)
            ctx.set(dut.events, layout.const(values))
            await ctx.tick()
            for c in dut.regs.counters:
                inc = {"cycle": 1, "running": 1}.get(c.event)
                model[c.name] += _event(values, c.event) if inc is None else inc
        ctx.set(dut.events, Events().const({}))
        await core.pulse(dut.done)
        for c in dut.regs.counters:
            model[c.name] += 1 if c.event in ("cycle", "running") else 0
        for c in dut.regs.counters:
            if c.event == "cycle":
                continue
            if c.width == 32:
                got = await read_ok(ctx, bus, reg(c.name))
            else:
                got = await read_ok(ctx, bus, reg(c.registers[0]))
                got |= await read_ok(ctx, bus, reg(c.registers[1])) << 32
            assert got == model[c.name], c.name
        cycles = ctx.get(dut.counters["CYCLES"])
        await write_ok(ctx, bus, reg("CTRL"), CTRL["start"])
        for c in dut.regs.counters:
            value = ctx.get(dut.counters[c.name])
            if c.clear_on_start:
                assert value <= 1, c.name    # BUSY_CYCLES counts on from the START
            else:
                assert value > cycles, c.name

    simulate(dut, tb)


def test_csr_64bit_snapshot():
    """Reading _LO latches the upper half for _HI: a carry between the two reads does not tear the value."""
    dut = CSR()
    bus = dut.bus

    async def tb(ctx):
        for c in dut.regs.counters:
            if c.width != 64:
                continue
            lo_addr, hi_addr = (reg(name) for name in c.registers)
            # Start just below a carry into the upper half, and keep it counting.
            ctx.set(dut.counters[c.name], (5 << 32) | 0xFFFF_FFF0)
            if c.event != "cycle":
                ctx.set(dut.events, Events().const({"active": 1, "macs": 256}))
            lo = await read_ok(ctx, bus, lo_addr)
            await ctx.tick().repeat(40)          # the counter carries before HI is read
            hi = await read_ok(ctx, bus, hi_addr)
            assert hi == 5 and lo >= 0xFFFF_FFF0, (c.name, hi, lo)
            assert ctx.get(dut.counters[c.name]) >> 32 == 6
            lo = await read_ok(ctx, bus, lo_addr)
            hi = await read_ok(ctx, bus, hi_addr)
            assert hi == 6 and lo < 0x1_0000, (c.name, hi, lo)
            ctx.set(dut.events, Events().const({}))

    simulate(dut, tb)


def test_csr_errors():
    with pytest.raises(TypeError, match="Configuration must be a DatapathConfig"):
        CSR(config=16)
    with pytest.raises(TypeError, match="Register map must be a RegisterMap"):
        RegisterBank({})


def test_pack_unpack():
    word = REGS.pack("CTRL", start=1, abort=1)
    assert word == field("CTRL", "start").mask | field("CTRL", "abort").mask
    status = REGS.pack("STATUS", done=1, error_code=isa.ErrorCode.BUS_DECERR.value)
    assert REGS.unpack("STATUS", "error_code", status) == isa.ErrorCode.BUS_DECERR.value
    assert REGS.unpack("STATUS", "done", status) == 1 and REGS.unpack("STATUS", "busy", status) == 0
