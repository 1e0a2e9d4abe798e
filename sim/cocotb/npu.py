"""The host and the memory of a Haneul NPU in a cocotb testbench (the generated top with AMBA port names).

:class:`NpuTB` plays the system around the NPU: a cocotbext-axi ``AxiRam`` as external memory on ``m_axi_*``, an
``AxiLiteMaster`` on ``s_axil_*`` for the registers, the clock and the reset. It knows the register map
(:func:`haneul.rtl.registers.register_map`) and does what a driver does: load a program and its data, open the
address window, start, wait for the interrupt, read ``STATUS`` and the performance counters, clear the interrupt.

Pause generators (:mod:`haneul.sim.cocotb.pauses`) can be set on every AXI channel of the memory and of the
register port (:meth:`NpuTB.set_memory_pauses`).
"""

import dataclasses

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster

from haneul.rtl import isa
from haneul.rtl.registers import register_map

from .memory import FaultyRam

__all__ = ["RunResult", "NpuTB"]

CLOCK_NS = 10


@dataclasses.dataclass
class RunResult:
    """The end of a run as the host sees it.

    Attributes
    ----------
    done, error : bool
        ``STATUS.DONE`` / ``STATUS.ERROR``.
    error_code : isa.ErrorCode
    error_addr : int
    cycles : int
        Clock cycles from the write of ``CTRL.START`` to the interrupt.
    counters : dict of str to int
        Every performance counter (64-bit ones whole).
    """
    done: bool
    error: bool
    error_code: isa.ErrorCode
    error_addr: int
    cycles: int
    counters: dict


class NpuTB:
    """Testbench of the NPU top.

    Parameters
    ----------
    dut : the cocotb handle of the top
    config : DatapathConfig
    data_width : int
        Width of ``m_axi`` (for the register map's ``CONFIG0``).
    mem_size : int
        Bytes of external memory (from address 0).
    errors : list of (start, end, AxiResp)
        Address ranges the memory answers with ``SLVERR`` or ``DECERR`` (:class:`~.memory.FaultyRam`).
    """

    def __init__(self, dut, config, *, data_width=128, mem_size=1 << 20, errors=(), **units):
        self.dut = dut
        self.config = config
        self.regs = register_map(config, bus_data_width=data_width, **units)
        self.mem_size = mem_size
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.ram = FaultyRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, reset_active_level=True,
                             size=mem_size, errors=errors)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst, reset_active_level=True)
        for log in (self.ram.write_if.log, self.ram.read_if.log, self.axil.write_if.log, self.axil.read_if.log):
            log.setLevel("WARNING")

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    def set_memory_pauses(self, make):
        """Set a pause generator on every AXI channel, of the memory and of the register port: ``make()`` returns a
        new one each call (or ``None`` to remove them)."""
        channels = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                    self.ram.read_if.ar_channel, self.ram.read_if.r_channel,
                    self.axil.write_if.aw_channel, self.axil.write_if.w_channel, self.axil.write_if.b_channel,
                    self.axil.read_if.ar_channel, self.axil.read_if.r_channel]
        for channel in channels:
            gen = make() if make is not None else None
            if gen is None:
                channel.clear_pause_generator()
                # cocotbext-axi stops the generator but keeps its last value: a channel removed mid-pause would
                # stay paused for ever.
                channel.pause = False
            else:
                channel.set_pause_generator(gen)

    # Registers ------------------------------------------------------------------------------------------------

    def field(self, register, name, value=1):
        """``value`` placed in field ``name`` of ``register``."""
        return self.regs.pack(register, **{name: value})

    def get_field(self, register, name, word):
        return self.regs.unpack(register, name, word)

    async def write(self, register, value):
        await self.axil.write_dword(self.regs.offset(register), value)

    async def read(self, register):
        return await self.axil.read_dword(self.regs.offset(register))

    async def counters(self):
        values = {}
        for counter in self.regs.counters:
            if counter.width == 64:
                lo = await self.read(f"{counter.name}_LO")
                hi = await self.read(f"{counter.name}_HI")
                values[counter.name] = hi << 32 | lo
            else:
                values[counter.name] = await self.read(counter.name)
        return values

    # Memory ---------------------------------------------------------------------------------------------------

    def load(self, segments):
        """Write ``(address, bytes)`` segments to the external memory."""
        for addr, data in segments:
            self.ram.write(addr, bytes(data))

    def read_memory(self, addr, length):
        return bytes(self.ram.read(addr, length))

    # Runs -----------------------------------------------------------------------------------------------------

    async def start(self, cmd_addr, *, window=None, irq_enable=0b11):
        """Program the registers and write ``CTRL.START`` (does not wait)."""
        base, size = window if window is not None else (0, self.mem_size)
        await self.write("CMD_ADDR", cmd_addr)
        await self.write("WINDOW_BASE", base)
        await self.write("WINDOW_SIZE", size)
        await self.write("IRQ_ENABLE", irq_enable)
        await self.write("CTRL", self.field("CTRL", "start"))

    async def wait_irq(self, timeout_cycles):
        """Wait for ``irq`` (at most ``timeout_cycles``); returns the cycles waited. Fails on a timeout: the
        NPU must never hang."""
        cycles = 0
        while not int(self.dut.irq.value):
            await RisingEdge(self.dut.clk)
            cycles += 1
            assert cycles <= timeout_cycles, f"no interrupt after {timeout_cycles} cycles: the NPU hangs"
        return cycles

    async def finish(self, cycles):
        """Read the outcome of a run after its interrupt, then clear the interrupt."""
        status = await self.read("STATUS")
        result = RunResult(
            done=bool(self.get_field("STATUS", "done", status)),
            error=bool(self.get_field("STATUS", "error", status)),
            error_code=isa.ErrorCode(self.get_field("STATUS", "error_code", status)),
            error_addr=await self.read("ERROR_ADDR"),
            cycles=cycles,
            counters=await self.counters())
        await self.write("IRQ_STATUS", self.field("IRQ_STATUS", "done") | self.field("IRQ_STATUS", "error"))
        await ClockCycles(self.dut.clk, 2)
        assert not int(self.dut.irq.value), "IRQ_STATUS write did not clear the interrupt"
        assert not self.get_field("STATUS", "busy", await self.read("STATUS")), "STATUS.BUSY after the interrupt"
        return result

    async def run(self, cmd_addr, *, window=None, timeout_cycles=1_000_000):
        """Start the program at ``cmd_addr`` and wait for its end; returns a :class:`RunResult`."""
        await self.start(cmd_addr, window=window)
        cycles = await self.wait_irq(timeout_cycles)
        return await self.finish(cycles)
