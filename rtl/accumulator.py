"""Accumulator memory: int32 partial sums of the systolic array's output tiles, and their read-out.

The accumulator holds ``depth`` lines of ``cols`` int32 values (one line is one result vector of the array). Its
write side takes the array's result vectors, each with a line address and an ``accumulate`` flag:

* ``accumulate = 0`` writes the vector to the line (the first K tile of an output tile),
* ``accumulate = 1`` adds it to the line, element by element, with int32 wrap-around (the later K tiles).

The read-out side streams lines out, ``count`` lines from ``base`` in order, to the post-processing unit; its payload
is the :class:`~haneul.rtl.ppu.Requantizer` input layout, so the two connect with :func:`wiring.connect`.

Addressing is absolute and, as in the scratchpad, the *half* of a line is its top address bit. Double-buffering:
the array accumulates output tile ``j + 1`` into one half while tile ``j`` is read out of the other (see
``docs/memories.md``). Physically the memory is ``banks`` memories of ``depth/banks`` lines (top address bits select
the bank), each with one read and one write port; the read-modify-write pipeline and the read-out share a bank's
read port only when they address the same bank in the same cycle.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import DatapathConfig

__all__ = ["AccumulatorWrite", "ReadCommand", "Accumulator"]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_pow2(value):
    return _is_int(value) and value > 0 and value & (value - 1) == 0


class AccumulatorWrite(data.StructLayout):
    """Payload of the accumulator write stream: one result vector and where it goes.

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.acc_shape``).
    cols : int
        Elements per line.
    addr_width : int
        Width of a line address.

    Members
    -------
    data : ArrayLayout(signed(acc_width), cols)
        The result vector (``ResultBeat.data`` of the systolic array).
    addr : unsigned(addr_width)
        Line address (top bit: the half).
    accumulate : unsigned(1)
        0: the line becomes ``data``; 1: the line becomes ``line + data`` (wrapping).
    """

    def __init__(self, config, cols, addr_width):
        super().__init__({
            "data":       data.ArrayLayout(config.acc_shape, cols),
            "addr":       unsigned(addr_width),
            "accumulate": unsigned(1),
        })


class ReadCommand(data.StructLayout):
    """Payload of the accumulator read-out command stream.

    Parameters
    ----------
    addr_width : int
        Width of a line address.

    Members
    -------
    base : unsigned(addr_width)
        First line.
    count : unsigned(addr_width + 1)
        Lines to read, ``base``, ``base + 1``, ... (modulo ``depth``); 0 reads nothing.
    """

    def __init__(self, addr_width):
        super().__init__({
            "base":  unsigned(addr_width),
            "count": unsigned(addr_width + 1),
        })


class Accumulator(wiring.Component):
    """Double-buffered int32 accumulator memory with a read-modify-write write side and a streaming read-out.

    Write side (``wr``): ``wr.ready`` is always high, one beat per cycle. A beat accepted in cycle ``t`` reads its
    line in cycle ``t`` (only if ``accumulate``), adds in ``t + 1`` and writes the line at the end of ``t + 2``.
    The two beats behind a beat in the pipeline get its new value by forwarding, so any sequence of beats (the same
    address back to back, or every other cycle, with or without gaps) gives the same result as applying the beats
    one at a time in order.

    Read-out (``rd_cmd``, ``rd_data``): a command reads ``count`` lines from ``base`` and sends them on ``rd_data``
    in address order. A line requested in cycle ``t`` is on ``rd_data`` from ``t + 1``; with ``rd_data`` ready the
    read-out sends one line per cycle, also across commands (``rd_cmd.ready`` is high while the engine is idle and in
    the cycle it requests the last line of a command). A line read while ``rd_data`` is stalled waits in a hold
    register. ``rd_busy`` is high from the cycle after a command is accepted until its last line is accepted.

    Coherence: a line read out observes every write beat accepted in an earlier cycle than the read: the read-out
    waits while a beat for the same line is in the last two pipeline stages. The write side has priority at a bank's
    read port: the read-out waits while an accumulating beat reads the same bank. With the two in different halves
    (the double-buffering protocol) they never wait for each other.

    Parameters
    ----------
    config : DatapathConfig, optional
        Datapath parameters. Default: ``DatapathConfig()``.
    cols : int, optional
        Elements per line. Default: ``config.cols``.
    depth : int, optional
        Lines, a power of two, at least 2 (two halves). Default: ``config.acc_depth``.
    banks : int, optional
        Physical memories, a power of two dividing ``depth``. Default: ``config.acc_banks``.

    Members
    -------
    wr : In(stream.Signature(AccumulatorWrite(config, cols, addr_width)))
        Result vectors to write or accumulate.
    rd_cmd : In(stream.Signature(ReadCommand(addr_width)))
        Read-out commands.
    rd_data : Out(stream.Signature(data.ArrayLayout(signed(acc_width), cols)))
        Lines read out.
    rd_busy : Out(1)
        A read-out command is in progress.

    Attributes
    ----------
    config : DatapathConfig
    cols, depth, banks : int
    addr_width : int
        Width of a line address, ``log2(depth)``.
    half_depth : int
        Lines per half, ``depth // 2``; the first line of half ``h`` is ``h * half_depth``.
    write_latency : int
        Cycles from an accepted write beat to the end of the cycle in which its line is written, 3.
    read_latency : int
        Cycles from a line request to the line on ``rd_data``, 1.
    """

    write_latency = 3
    read_latency = 1

    def __init__(self, config=None, *, cols=None, depth=None, banks=None):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        if cols is None:
            cols = config.cols
        if depth is None:
            depth = config.acc_depth
        if banks is None:
            banks = config.acc_banks

        if not _is_int(cols) or cols <= 0:
            raise TypeError(f"Column count must be a positive integer, not {cols!r}")
        if not _is_pow2(depth) or depth < 2:
            raise ValueError(f"Depth must be a power of two of at least 2 (two halves), not {depth!r}")
        if not _is_pow2(banks):
            raise ValueError(f"Bank count must be a power of two, not {banks!r}")
        if banks > depth:
            raise ValueError(f"Bank count {banks} exceeds the depth {depth}")

        self.config = config
        self.cols = cols
        self.depth = depth
        self.banks = banks
        self.addr_width = (depth - 1).bit_length()
        self.half_depth = depth // 2

        super().__init__({
            "wr":      In(stream.Signature(AccumulatorWrite(config, cols, self.addr_width))),
            "rd_cmd":  In(stream.Signature(ReadCommand(self.addr_width))),
            "rd_data": Out(stream.Signature(data.ArrayLayout(config.acc_shape, cols))),
            "rd_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        cols = self.cols
        bank_bits = (self.banks - 1).bit_length()
        local_bits = self.addr_width - bank_bits
        line_shape = data.ArrayLayout(self.config.acc_shape, cols)

        def split(addr):
            """(bank, line in bank) of a line address."""
            bank = addr[local_bits:] if bank_bits else Const(0, 1)
            return bank, addr[:local_bits]

        rports, wports = [], []
        for b in range(self.banks):
            mem = Memory(shape=line_shape, depth=self.depth // self.banks, init=[])
            m.submodules[f"bank{b}"] = mem
            wports.append(mem.write_port())
            rports.append(mem.read_port())

        def read_data(bank):
            value = rports[0].data
            for b in range(1, self.banks):
                value = Mux(bank == b, rports[b].data, value)
            return value

        # Read-modify-write pipeline -----------------------------------------------------------------------------
        # Stage 0 (accept): read the line if accumulating.
        # Stage 1: old value = read data, or the value forwarded from stage 2 or from the write of the last cycle;
        #          add.
        # Stage 2: write.
        wr = self.wr
        m.d.comb += wr.ready.eq(1)
        s0_read = Signal()
        m.d.comb += s0_read.eq(wr.valid & wr.payload.accumulate)
        s0_bank, s0_line = split(wr.payload.addr)

        s1_valid = Signal()
        s1_acc = Signal()
        s1_addr = Signal(self.addr_width)
        s1_bank = Signal(range(self.banks))
        s1_data = Signal(line_shape)
        m.d.sync += [
            s1_valid.eq(wr.valid),
            s1_acc.eq(wr.payload.accumulate),
            s1_addr.eq(wr.payload.addr),
            s1_bank.eq(s0_bank),
            s1_data.eq(wr.payload.data),
        ]

        s2_valid = Signal()
        s2_addr = Signal(self.addr_width)
        s2_sum = Signal(line_shape)
        # The line written at the end of the last cycle (stage 2 of the beat two ahead of stage 1).
        w_valid = Signal()
        w_addr = Signal(self.addr_width)
        w_sum = Signal(line_shape)

        old = Signal(line_shape)
        with m.If(s2_valid & (s2_addr == s1_addr)):
            m.d.comb += old.eq(s2_sum)
        with m.Elif(w_valid & (w_addr == s1_addr)):
            m.d.comb += old.eq(w_sum)
        with m.Else():
            m.d.comb += old.eq(read_data(s1_bank))

        total = Signal(line_shape)
        for k in range(cols):
            # Assignment to a signed(acc_width) element truncates the carry: two's complement wrap-around.
            m.d.comb += total[k].eq(Mux(s1_acc, old[k], 0) + s1_data[k])
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_addr.eq(s1_addr),
            s2_sum.eq(total),
            w_valid.eq(s2_valid),
            w_addr.eq(s2_addr),
            w_sum.eq(s2_sum),
        ]

        s2_bank, s2_line = split(s2_addr)
        for b, wp in enumerate(wports):
            m.d.comb += [
                wp.en.eq(s2_valid & (s2_bank == b)),
                wp.addr.eq(s2_line),
                wp.data.eq(s2_sum),
            ]

        # Read-out engine ----------------------------------------------------------------------------------------
        cmd, out = self.rd_cmd, self.rd_data
        active = Signal()
        rd_addr = Signal(self.addr_width)
        remaining = Signal(self.addr_width + 1)
        rd_bank, rd_line = split(rd_addr)

        room = Signal()
        conflict = Signal()
        hazard = Signal()
        issue = Signal()
        m.d.comb += [
            room.eq(~out.valid | out.ready),
            conflict.eq(s0_read & (s0_bank == rd_bank)),
            hazard.eq((s1_valid & (s1_addr == rd_addr)) | (s2_valid & (s2_addr == rd_addr))),
            issue.eq(active & room & ~conflict & ~hazard),
            cmd.ready.eq(~active | (issue & (remaining == 1))),
        ]

        with m.If(issue):
            m.d.sync += [
                rd_addr.eq(rd_addr + 1),
                remaining.eq(remaining - 1),
            ]
            with m.If(remaining == 1):
                m.d.sync += active.eq(0)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [
                rd_addr.eq(cmd.payload.base),
                remaining.eq(cmd.payload.count),
                active.eq(cmd.payload.count != 0),
            ]

        for b, rp in enumerate(rports):
            rmw = s0_read & (s0_bank == b)
            m.d.comb += [
                rp.addr.eq(Mux(rmw, s0_line, rd_line)),
                rp.en.eq(rmw | (issue & (rd_bank == b))),
            ]

        # Response: one line in flight, on the bank's read data the cycle after its request, then in `hold`.
        pending = Signal()
        pend_bank = Signal(range(self.banks))
        held = Signal()
        hold = Signal(line_shape)
        line = Signal(line_shape)
        m.d.comb += [
            line.eq(read_data(pend_bank)),
            out.valid.eq(pending | held),
            out.payload.eq(Mux(held, hold, line)),
            self.rd_busy.eq(active | pending | held),
        ]
        m.d.sync += pending.eq(issue)
        with m.If(issue):
            m.d.sync += pend_bank.eq(rd_bank)
        with m.If(pending & ~out.ready):
            m.d.sync += [
                held.eq(1),
                hold.eq(line),
            ]
        with m.Elif(held & out.ready):
            m.d.sync += held.eq(0)

        return m
