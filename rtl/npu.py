"""The Haneul NPU top: CSRs, command processor, DMA engine and datapath, with AMBA ports.

::

                 s_axil ──> CSR ── start, abort, soft reset, CMD_ADDR, WINDOW ──┐        ┌──> irq
                             ^  <── done / error, error code, events ──────────┐ │        │
                             │                                                 │ v        │
    m_axi <══ DMA engine <══ rd_cmd / rd_data / wr_cmd / wr_done ══> command processor ─ flush
                  ^                                                   │  cmd, spad_wr, ppu_param, add_param
                  └────────────── wr_data <── out ── datapath <──────┘

The host writes a program (:mod:`haneul.rtl.isa`) and its data to memory, sets ``CMD_ADDR``, the address window
and ``IRQ_ENABLE`` and writes ``CTRL.START`` (``docs/registers.md``); the NPU runs the program on its own and
raises ``irq`` at the end. :func:`haneul.rtl.axi.amba_ports` names the ports of the generated Verilog
``m_axi_*``, ``s_axil_*``, ``irq`` (plus ``clk`` and ``rst``, active high).
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import AXI4LiteSignature, AXI4Signature
from .cmdproc import WATCHDOG_CYCLES, CommandProcessor
from .config import DatapathConfig
from .csr import CSR
from .datapath import Datapath
from .dma import Dma
from .registers import ADDR_WIDTH, DATA_WIDTH

__all__ = ["NPU"]


class NPU(wiring.Component):
    """The whole NPU.

    Parameters
    ----------
    config : DatapathConfig, optional
        Default ``DatapathConfig()`` (16 x 16).
    data_width : int
        Width of the AXI4 memory port, default 128; at least ``8 * max(rows, cols)``.
    addr_width : int
        Width of its addresses, default 32.
    id_width : int
        Width of its transaction IDs, default 1.
    add, pool, depthwise : bool, optional
        Build the datapath's adder, pooling unit, depthwise unit (:class:`~haneul.rtl.datapath.Datapath`).
    watchdog : int
        Cycles without progress after which a run ends with ``DEADLOCK``
        (:data:`haneul.rtl.cmdproc.WATCHDOG_CYCLES` by default).

    Members
    -------
    m_axi : Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width))
        Memory port of the DMA engine (programs, tensors, parameters).
    s_axil : In(AXI4LiteSignature(addr_width=12, data_width=32))
        The registers (:mod:`haneul.rtl.registers`).
    irq : Out(1)
        Interrupt, active high, level: ``IRQ_STATUS & IRQ_ENABLE`` is not zero.
    """

    def __init__(self, config=None, *, data_width=128, addr_width=32, id_width=1, add=None, pool=None,
                 depthwise=None, watchdog=WATCHDOG_CYCLES):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        if 8 * max(config.rows, config.cols) > data_width:
            raise ValueError(f"A {config.rows} x {config.cols} array needs a memory port of at least "
                             f"{8 * max(config.rows, config.cols)} bits, not {data_width}")
        self.config = config
        self.data_width = data_width
        self.addr_width = addr_width
        self.id_width = id_width
        self.datapath = Datapath(config, add=add, pool=pool, depthwise=depthwise)
        self.csr = CSR(config, bus_data_width=data_width, has_add=self.datapath.has_add,
                       has_pool=self.datapath.has_pool, has_depthwise=self.datapath.has_depthwise)
        self.dma = Dma(config, addr_width=addr_width, data_width=data_width, id_width=id_width)
        self.cmdproc = CommandProcessor(config, data_width=data_width, addr_width=addr_width,
                                        has_add=self.datapath.has_add, watchdog=watchdog)
        super().__init__({
            "m_axi":  Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "s_axil": In(AXI4LiteSignature(addr_width=ADDR_WIDTH, data_width=DATA_WIDTH)),
            "irq":    Out(1),
        })

    @property
    def regs(self):
        """The register map of this build."""
        return self.csr.regs

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        flush = Signal()
        m.submodules.csr = csr = self.csr
        m.submodules.cmdproc = cp = self.cmdproc
        m.submodules.dma = dma = self.dma
        m.submodules.datapath = dp = ResetInserter(flush)(self.datapath)

        wiring.connect(m, wiring.flipped(self.s_axil), csr.bus)
        wiring.connect(m, dma.bus, wiring.flipped(self.m_axi))
        m.d.comb += self.irq.eq(csr.irq)

        # Run control. A START that arrives while the command processor still cleans up after an abort waits.
        start_pending = Signal()
        soft_abort = Signal()   # the run being cleaned up was ended by a soft reset: its end is not reported
        with m.If(cp.busy & csr.start):
            m.d.sync += start_pending.eq(1)
        with m.Elif(~cp.busy):
            m.d.sync += start_pending.eq(0)
        with m.If(csr.soft_reset & cp.busy):
            m.d.sync += soft_abort.eq(1)
        with m.Elif(cp.done):
            m.d.sync += soft_abort.eq(0)
        m.d.comb += [
            cp.start.eq(csr.start | start_pending),
            cp.abort.eq(csr.abort | csr.soft_reset),
            cp.cmd_addr.eq(csr.cmd_addr),
            cp.window_base.eq(csr.window_base),
            cp.window_size.eq(csr.window_size),
            csr.done.eq(cp.done & (cp.error_code == isa.ErrorCode.NONE) & ~soft_abort),
            csr.error.eq(cp.done & (cp.error_code != isa.ErrorCode.NONE) & ~soft_abort),
            csr.error_code.eq(cp.error_code),
            csr.error_addr.eq(cp.error_addr),
            flush.eq(cp.flush | (csr.soft_reset & ~cp.busy)),
        ]

        # Command processor <-> DMA engine.
        wiring.connect(m, cp.rd_cmd, dma.rd_cmd)
        wiring.connect(m, dma.rd_data, cp.rd_data)
        wiring.connect(m, cp.wr_cmd, dma.wr_cmd)
        m.d.comb += [
            cp.wr_done.eq(dma.wr_done),
            dma.window_base.eq(csr.window_base),
            dma.window_size.eq(csr.window_size),
            dma.abort.eq(cp.dma_abort),
            dma.error_clear.eq(cp.flush),
            cp.dma_busy.eq(dma.busy),
            cp.dma_error.eq(dma.error),
            cp.dma_error_code.eq(dma.error_code),
        ]

        # Command processor -> datapath; the datapath's output lines go straight to the DMA's write channel.
        wiring.connect(m, cp.dp_cmd, dp.cmd)
        wiring.connect(m, cp.spad_wr, dp.spad_wr)
        wiring.connect(m, cp.ppu_param, dp.ppu_param)
        if self.datapath.has_add:
            wiring.connect(m, cp.add_param, dp.add_param)
        wiring.connect(m, dp.out, dma.wr_data)
        m.d.comb += [
            cp.dp_busy.eq(dp.busy),
            cp.dp_vectors.eq(dp.active_cycles),
            cp.dp_error.eq(dp.error),
            cp.dp_error_code.eq(dp.error_code),
            dp.error_clear.eq(0),
        ]

        # Performance events. The datapath and the DMA keep running counts; an event is a count that moved.
        def moved(count, name):
            last = Signal.like(count, name=f"{name}_last")
            m.d.sync += last.eq(count)
            return count != last

        bus = self.m_axi
        strobes = Signal(range(self.data_width // 8 + 1))
        m.d.comb += strobes.eq(sum(bus.wstrb[i] for i in range(self.data_width // 8)))
        active = moved(dp.active_cycles, "active")
        handshakes = [bus.arvalid & bus.arready, bus.rvalid & bus.rready, bus.awvalid & bus.awready,
                      bus.wvalid & bus.wready, bus.bvalid & bus.bready, dp.cmd.valid & dp.cmd.ready,
                      dp.out.valid & dp.out.ready, dp.spad_wr.valid & dp.spad_wr.ready, active]
        m.d.comb += cp.progress.eq(Cat(*handshakes).any())
        ev = csr.events
        m.d.comb += [
            ev.active.eq(active),
            ev.macs.eq(active * cfg.macs_per_cycle),
            ev.rd_bytes.eq((bus.rvalid & bus.rready) * (self.data_width // 8)),
            ev.wr_bytes.eq(Mux(bus.wvalid & bus.wready, strobes, 0)),
            ev.stall.fetch.eq(cp.events.fetch_wait),
            ev.stall.load_dep.eq(cp.events.load_dep),
            ev.stall.compute_dep.eq(cp.events.compute_dep),
            ev.stall.store_dep.eq(cp.events.store_dep),
            ev.stall.dma_rd.eq(moved(dma.ar_stall_cycles, "ar_stall") | moved(dma.r_wait_cycles, "r_wait")),
            ev.stall.dma_wr.eq(moved(dma.aw_stall_cycles, "aw_stall") | moved(dma.w_stall_cycles, "w_stall")),
            ev.stall.out.eq(dp.out.valid & ~dp.out.ready),
        ]
        return m
