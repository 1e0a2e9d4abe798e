"""The CSR block of the Haneul NPU: the registers of :mod:`haneul.rtl.registers` on an AXI4-Lite subordinate port.

Two components:

:class:`RegisterBank`
    Generic: decodes any :class:`~haneul.rtl.registers.RegisterMap` on an AXI4-Lite port and gives every field
    its hardware side (amaranth-soc's ``csr.Register`` field actions, in small): ``r`` fields read ``r_data``,
    ``rw`` fields are storage (``data``), ``w`` fields give ``w_pulse``, ``w1c`` fields are storage that the
    hardware sets (``set``) and the host clears by writing one; every register also tells when it is read
    (``r_stb``).
:class:`CSR`
    The NPU's block: a bank of :func:`~haneul.rtl.registers.register_map` with the run state (START / ABORT / soft
    reset, STATUS, interrupts) and the performance counters, and the ports the command processor connects to.

AXI4-Lite behaviour (both): one write and one read can be in progress at a time, each independent of the other.
``AW`` and ``W`` are taken in either order (or together) and held; the write is done in the cycle after both are
there, and ``B`` follows in the next cycle and is held until ``bready``. A read is answered in the cycle after
``AR``, ``R`` held until ``rready``. The low two address bits are ignored (registers are 32-bit words, byte lanes
come from ``wstrb``). An address with no register answers ``SLVERR`` (reads return zero, writes do nothing);
writes to read-only registers are ignored and answer ``OKAY``. ``awprot`` / ``arprot`` are ignored.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from . import isa
from .axi import AXI4LiteSignature, Resp
from .config import DatapathConfig
from .registers import ADDR_WIDTH, DATA_WIDTH, DEFAULT_BUS_DATA_WIDTH, Access, RegisterMap, register_map

__all__ = ["Stalls", "Events", "RegisterBank", "CSR"]


class Stalls(data.Struct):
    """Stall causes, one bit each: high in every cycle the cause holds (each counts in its ``STALL_*`` counter).

    Members
    -------
    fetch
        Every queue is empty and the fetcher waits for instructions (``STALL_FETCH``).
    load_dep, compute_dep, store_dep
        The queue's next instruction waits for a dependency token (``STALL_LOAD_DEP`` ...).
    dma_rd
        A DMA read waits for the bus: ``arvalid`` without ``arready``, or data outstanding without ``rvalid``.
    dma_wr
        A DMA write waits for the bus: ``awvalid``/``wvalid`` not accepted, or a response outstanding.
    out
        The datapath offers an output line (``out.valid``) that the store queue does not take.
    """
    fetch:       1
    load_dep:    1
    compute_dep: 1
    store_dep:   1
    dma_rd:      1
    dma_wr:      1
    out:         1


class Events(data.StructLayout):
    """What the core reports each cycle for the performance counters (the ``events`` port of :class:`CSR`).

    Parameters
    ----------
    config : DatapathConfig
        ``macs`` is wide enough for ``rows * cols``.
    bus_data_width : int
        ``rd_bytes`` and ``wr_bytes`` are wide enough for a bus word's bytes.

    Members
    -------
    active : unsigned(1)
        The systolic array takes an activation vector (``ACTIVE_CYCLES``).
    macs : unsigned
        Multiply-accumulates issued this cycle (``rows * cols`` when ``active``) (``MACS``).
    rd_bytes : unsigned
        Bytes of read data the DMA engine accepted this cycle (``DMA_RD_BYTES``).
    wr_bytes : unsigned
        Bytes of write data the DMA engine handed over this cycle, by ``wstrb`` (``DMA_WR_BYTES``).
    stall : Stalls
    """

    def __init__(self, config=None, bus_data_width=DEFAULT_BUS_DATA_WIDTH):
        if config is None:
            config = DatapathConfig()
        bus_bytes = bus_data_width // 8
        super().__init__({
            "active":   unsigned(1),
            "macs":     unsigned(bits_for(config.macs_per_cycle)),
            "rd_bytes": unsigned(bits_for(bus_bytes)),
            "wr_bytes": unsigned(bits_for(bus_bytes)),
            "stall":    Stalls,
        })


def _field_shape(field):
    return field.enum if field.enum is not None else unsigned(field.width)


def _field_signature(field):
    shape = _field_shape(field)
    if field.access is Access.R:
        return wiring.Signature({"r_data": In(shape, init=field.init)})
    if field.access is Access.RW:
        return wiring.Signature({"data": Out(shape, init=field.init)})
    if field.access is Access.W:
        return wiring.Signature({"w_pulse": Out(shape)})
    return wiring.Signature({"data": Out(shape, init=field.init), "set": In(shape), "clear": In(shape)})


def _register_signature(register):
    members = {"r_stb": Out(1)}
    for field in register:
        members[field.name] = Out(_field_signature(field))
    return wiring.Signature(members)


class RegisterBank(wiring.Component):
    """The registers of a map on an AXI4-Lite subordinate port.

    Parameters
    ----------
    regs : RegisterMap

    Members
    -------
    bus : In(AXI4LiteSignature(addr_width=12, data_width=32))
    <register> : Out(...)
        One member per register, named in lower case (``status``, ``cycles_lo``), holding ``r_stb`` (high in the
        cycle the register is read, i.e. of the ``AR`` handshake) and one member per field:

        * ``r``: ``r_data`` (in), the value read; undriven it stays at the field's reset value (the constants).
        * ``rw``: ``data`` (out), the storage, reset to the field's reset value.
        * ``w``: ``w_pulse`` (out), for one cycle the bits written as one (the byte lanes of ``wstrb``), else zero.
        * ``w1c``: ``data`` (out), the storage; ``set`` (in), bits to set this cycle; ``clear`` (in), bits to
          clear this cycle (wins over ``set``). A host write of one clears a bit unless ``set`` sets it again.
    """

    def __init__(self, regs):
        if not isinstance(regs, RegisterMap):
            raise TypeError(f"Register map must be a RegisterMap, not {regs!r}")
        self.regs = regs
        members = {"bus": In(AXI4LiteSignature(addr_width=ADDR_WIDTH, data_width=DATA_WIDTH))}
        for name, _, register in regs:
            members[name.lower()] = Out(_register_signature(register))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        lanes = DATA_WIDTH // 8

        # Write channel: AW and W held until both are there.
        aw_addr = Signal(ADDR_WIDTH)
        aw_full = Signal()
        w_data = Signal(DATA_WIDTH)
        w_strb = Signal(lanes)
        w_full = Signal()
        b_valid = Signal()
        b_resp = Signal(Resp)
        m.d.comb += [
            bus.awready.eq(~aw_full),
            bus.wready.eq(~w_full),
            bus.bvalid.eq(b_valid),
            bus.bresp.eq(b_resp),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_addr.eq(bus.awaddr), aw_full.eq(1)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_data.eq(bus.wdata), w_strb.eq(bus.wstrb), w_full.eq(1)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += b_valid.eq(0)
        write = Signal()
        m.d.comb += write.eq(aw_full & w_full & ~b_valid)
        with m.If(write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), b_valid.eq(1), b_resp.eq(Resp.SLVERR)]
        # The written bits with their byte lane enabled, and the lane mask as bits.
        bit_enable = Signal(DATA_WIDTH)
        m.d.comb += bit_enable.eq(Cat(*(w_strb[i // 8] for i in range(DATA_WIDTH))))
        ones = Signal(DATA_WIDTH)
        m.d.comb += ones.eq(w_data & bit_enable)

        # Read channel.
        r_valid = Signal()
        m.d.comb += [bus.arready.eq(~r_valid), bus.rvalid.eq(r_valid)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += r_valid.eq(0)
        read = Signal()
        m.d.comb += read.eq(bus.arvalid & bus.arready)
        with m.If(read):
            m.d.sync += [r_valid.eq(1), bus.rdata.eq(0), bus.rresp.eq(Resp.SLVERR)]

        for name, offset, register in self.regs:
            port = getattr(self, name.lower())
            word = Signal(DATA_WIDTH, name=f"{name.lower()}_word")
            selected_w = Signal(name=f"{name.lower()}_w_sel")
            m.d.comb += selected_w.eq(write & (aw_addr[2:] == offset >> 2))
            with m.If(selected_w):
                m.d.sync += b_resp.eq(Resp.OKAY)
            selected_r = Signal(name=f"{name.lower()}_r_sel")
            m.d.comb += [
                selected_r.eq(read & (bus.araddr[2:] == offset >> 2)),
                port.r_stb.eq(selected_r),
            ]
            with m.If(selected_r):
                m.d.sync += [bus.rdata.eq(word), bus.rresp.eq(Resp.OKAY)]

            for field in register:
                element = getattr(port, field.name)
                bits = slice(field.offset, field.offset + field.width)
                if field.access is Access.R:
                    m.d.comb += word[bits].eq(element.r_data)
                elif field.access is Access.RW:
                    m.d.comb += word[bits].eq(element.data)
                    with m.If(selected_w):
                        m.d.sync += element.data.eq((w_data[bits] & bit_enable[bits])
                                                    | (element.data & ~bit_enable[bits]))
                elif field.access is Access.W:
                    m.d.comb += element.w_pulse.eq(Mux(selected_w, ones[bits], 0))
                else:  # W1C
                    m.d.comb += word[bits].eq(element.data)
                    host_clear = Mux(selected_w, ones[bits], 0)
                    m.d.sync += element.data.eq(((element.data & ~host_clear) | element.set) & ~element.clear)
        return m


class CSR(wiring.Component):
    """The NPU's control and status registers: ``register_map(config, ...)`` on an AXI4-Lite port, the run state,
    the interrupt and the performance counters.

    The block owns the run state. ``CTRL.START`` on an idle NPU starts a run: ``start`` pulses, ``busy`` (and
    ``STATUS.BUSY``) goes high, ``STATUS`` and ``ERROR_ADDR`` are cleared, and so are the counters except
    ``CYCLES``. START while busy is ignored. The run ends when the core pulses ``done`` (ok) or ``error`` (with
    ``error_code`` and ``error_addr``); the core must end every started run with exactly one of them, including
    an aborted one (``error`` with ``ABORTED``). ``error`` wins if both come in one cycle. The end sets
    ``STATUS.DONE`` or ``STATUS.ERROR`` / ``ERROR_CODE`` and the matching ``IRQ_STATUS`` bit. ``CTRL.ABORT`` pulses
    ``abort`` only while busy. ``CTRL.SOFT_RESET`` pulses ``soft_reset`` (the core resets itself with it) and
    clears the run state, ``STATUS``, ``IRQ_STATUS``, ``ERROR_ADDR``, every counter and ``_HI`` shadow; ``done``,
    ``error`` and ``events`` are ignored in the cycle of the write and while ``soft_reset`` is high.

    ``start``, ``abort`` and ``soft_reset`` are registered: high for the one cycle after the write to ``CTRL``
    (``busy`` rises with ``start``). ``irq`` is ``|(IRQ_STATUS & IRQ_ENABLE)``, from registers.

    Parameters
    ----------
    config : DatapathConfig, optional
        Default ``DatapathConfig()``: the ``CONFIG`` registers, the width of ``events.macs``.
    bus_data_width : int
        Width of the NPU's AXI4 memory port: ``CONFIG0.BUS_BYTES``, the width of ``events.rd_bytes``/``wr_bytes``.
    has_add, has_pool, has_depthwise : bool, optional
        The units built (``CONFIG3``); see :func:`haneul.rtl.registers.register_map`.

    Members
    -------
    bus : In(AXI4LiteSignature(addr_width=12, data_width=32))
        The host's port.
    start, abort, soft_reset : Out(1)
        One-cycle pulses (see above).
    busy : Out(1)
        A run is in progress (``STATUS.BUSY``): from ``start`` until ``done``/``error``/soft reset.
    cmd_addr, window_base, window_size : Out(32)
        ``CMD_ADDR``, ``WINDOW_BASE``, ``WINDOW_SIZE``.
    irq : Out(1)
        The interrupt, active high, level.
    done : In(1)
        Pulse: the run ended without error.
    error : In(1)
        Pulse: the run ended with ``error_code``.
    error_code : In(isa.ErrorCode)
        Valid with ``error``.
    error_addr : In(32)
        Valid with ``error``: the external address of the instruction at fault (``ERROR_ADDR``).
    events : In(Events(config, bus_data_width))
        Per-cycle counter increments.

    Attributes
    ----------
    regs : RegisterMap
        The register map of this build (what the C header and the documents describe).
    counters : dict of str to Signal
        The performance counters by name (``"MACS"``), full width. Internal state; a simulation may preset them
        (``ctx.set``), e.g. to test the 64-bit snapshot near a carry into the upper half.
    """

    def __init__(self, config=None, *, bus_data_width=DEFAULT_BUS_DATA_WIDTH, has_add=None, has_pool=None,
                 has_depthwise=False):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        self.config = config
        self.regs = register_map(config, bus_data_width=bus_data_width, has_add=has_add, has_pool=has_pool,
                                 has_depthwise=has_depthwise)
        super().__init__({
            "bus":         In(AXI4LiteSignature(addr_width=ADDR_WIDTH, data_width=DATA_WIDTH)),
            "start":       Out(1),
            "abort":       Out(1),
            "soft_reset":  Out(1),
            "busy":        Out(1),
            "cmd_addr":    Out(32),
            "window_base": Out(32),
            "window_size": Out(32),
            "irq":         Out(1),
            "done":        In(1),
            "error":       In(1),
            "error_code":  In(isa.ErrorCode),
            "error_addr":  In(32),
            "events":      In(Events(config, bus_data_width)),
        })
        self.counters = {counter.name: Signal(counter.width, name=counter.name.lower())
                         for counter in self.regs.counters}

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = bank = RegisterBank(self.regs)
        wiring.connect(m, wiring.flipped(self.bus), bank.bus)

        m.d.comb += [
            self.cmd_addr.eq(bank.cmd_addr.value.data),
            self.window_base.eq(bank.window_base.value.data),
            self.window_size.eq(bank.window_size.value.data),
            self.irq.eq((Cat(bank.irq_status.done.data, bank.irq_status.error.data)
                         & Cat(bank.irq_enable.done.data, bank.irq_enable.error.data)).any()),
        ]

        # Control.
        soft = bank.ctrl.soft_reset.w_pulse
        quiet = Signal()          # the core's reports are ignored: soft reset in progress
        m.d.comb += quiet.eq(soft | self.soft_reset)
        accept = Signal()         # START accepted
        m.d.comb += accept.eq(bank.ctrl.start.w_pulse & ~self.busy & ~soft)
        m.d.sync += [
            self.start.eq(accept),
            self.abort.eq(bank.ctrl.abort.w_pulse & self.busy & ~soft),
            self.soft_reset.eq(soft),
        ]

        # Run state and status.
        done = Signal()
        error = Signal()
        error_code = Signal(isa.ErrorCode)
        error_addr = Signal(32)
        m.d.comb += [
            bank.status.busy.r_data.eq(self.busy),
            bank.status.done.r_data.eq(done),
            bank.status.error.r_data.eq(error),
            bank.status.error_code.r_data.eq(error_code),
            bank.error_addr.value.r_data.eq(error_addr),
        ]
        with m.If(soft):
            m.d.sync += [self.busy.eq(0), done.eq(0), error.eq(0), error_code.eq(isa.ErrorCode.NONE),
                         error_addr.eq(0)]
            m.d.comb += [bank.irq_status.done.clear.eq(1), bank.irq_status.error.clear.eq(1)]
        with m.Elif(accept):
            m.d.sync += [self.busy.eq(1), done.eq(0), error.eq(0), error_code.eq(isa.ErrorCode.NONE),
                         error_addr.eq(0)]
        with m.Elif(~quiet & self.error):
            m.d.sync += [self.busy.eq(0), done.eq(0), error.eq(1), error_code.eq(self.error_code),
                         error_addr.eq(self.error_addr)]
            m.d.comb += bank.irq_status.error.set.eq(1)
        with m.Elif(~quiet & self.done):
            m.d.sync += [self.busy.eq(0), done.eq(1)]
            m.d.comb += bank.irq_status.done.set.eq(1)

        # Performance counters.
        for counter in self.regs.counters:
            value = self.counters[counter.name]
            if counter.event == "cycle":
                increment = 1
            elif counter.event == "running":
                increment = self.busy
            else:
                increment = self.events
                for part in counter.event.split("."):
                    increment = increment[part]
                increment = Mux(quiet, 0, increment)
            with m.If(soft | (accept if counter.clear_on_start else 0)):
                m.d.sync += value.eq(0)
            with m.Else():
                m.d.sync += value.eq(value + increment)
            if counter.width == 32:
                m.d.comb += getattr(bank, counter.name.lower()).count.r_data.eq(value)
            else:
                lo, hi = (getattr(bank, name.lower()) for name in counter.registers)
                shadow = Signal(32, name=f"{counter.name.lower()}_hi_shadow")
                m.d.comb += [lo.count.r_data.eq(value[:32]), hi.count.r_data.eq(shadow)]
                with m.If(soft):
                    m.d.sync += shadow.eq(0)
                with m.Elif(lo.r_stb):
                    m.d.sync += shadow.eq(value[32:])
        return m
