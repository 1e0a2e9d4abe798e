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

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import block_ram
from .config import DatapathConfig
from .credit import CreditFIFO
from .pe import register_copy

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

    Write side (``wr``): ``always_ready``, one beat per cycle. A beat accepted in cycle ``t`` reads its
    line in cycle ``t`` (only if ``accumulate``), adds in ``t + 1`` and writes the line at the end of ``t + 2``.
    The three beats behind a beat in the pipeline get its new value by forwarding, so any sequence of beats (the same
    address back to back, or every other cycle, with or without gaps) gives the same result as applying the beats
    one at a time in order.

    Read-out (``rd_cmd``, ``rd_data``): a command reads ``count`` lines from ``base`` and sends them on ``rd_data``
    in address order. A line requested in cycle ``t`` is on ``rd_data`` from ``t + read_latency`` (``t + 3``); with
    ``rd_data`` ready the read-out sends one line per cycle, also across commands (``rd_cmd.ready`` is high while the
    engine is idle and in the cycle it requests the last line of a command). Lines wait in an output FIFO of
    ``fifo_depth`` entries while ``rd_data`` is stalled; a line is requested only while the FIFO has room for it
    (credits), so ``rd_data.ready`` reaches no further than the FIFO. ``rd_busy`` is high from the cycle after a
    command is accepted until its last line is accepted.

    Coherence: a line read out observes every write beat accepted in an earlier cycle than the read: the read-out
    waits while a beat for the same line is in the last three pipeline stages. The write side has priority at a bank's
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
    wr : In(stream.Signature(AccumulatorWrite(config, cols, addr_width), always_ready=True))
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
        Cycles from an accepted write beat to the end of the cycle in which its line is written, 5.
    read_latency : int
        Cycles from a line request to the line on ``rd_data``, 4 (the bank's address register, the block RAM read,
        the bank's data register, the output FIFO).
    fifo_depth : int
        Entries of the read-out FIFO, 5: also the lines that may be requested and not yet taken, enough for one
        line per cycle.
    """

    write_latency = 5
    read_latency = 4
    fifo_depth = 5

    #: Elements per copy of the forwarding decision's registers.
    GROUP = 4

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
            "wr":      In(stream.Signature(AccumulatorWrite(config, cols, self.addr_width), always_ready=True)),
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

        # The banks' read-during-write result is undefined (`bram.block_ram`): this design never uses it. A
        # read-modify-write read that meets the write of its line reads the old contents and is given the written
        # value by the forwarding below (it did not see that write); the read-out's hazard test keeps its reads
        # away from every line a beat ahead of it is still to write.
        # Each bank is one block RAM memory per column (32 of a DP16KD's 36 bits on ECP5), each with its own copies
        # of the read and write address registers: a register driving the address pins of a whole line's block
        # RAMs, spread along the die's block RAM rows, took up to 14.9 ns of routing at 16 x 16.
        read_addrs, read_data, wports = [], [], []
        for b in range(self.banks):
            addrs, ports, words = [], [], []
            for k in range(cols):
                write, addr, rd = block_ram(m, name=f"bank{b}_c{k}", shape=self.config.acc_shape,
                                            depth=self.depth // self.banks, platform=platform, collision="undefined")
                ports.append(write)
                addrs.append(addr)
                words.append(Value.cast(rd))
            wports.append(ports)
            read_addrs.append(addrs)
            read_data.append(line_shape(Cat(*words)))

        # Every bank's read data go to a register and nothing else (block RAM read data are slow); both the
        # read-modify-write pipeline and the read-out select from the registered data, two cycles after their read.
        # The register has no reset (a data register needs none).
        bank_data = []
        for b, rd in enumerate(read_data):
            registered = Signal(line_shape, name=f"bank{b}_data", reset_less=True)
            m.d.sync += registered.eq(rd)
            bank_data.append(registered)

        # Read-modify-write pipeline -----------------------------------------------------------------------------
        # Accept: the line's address goes into its bank's address registers if accumulating (the registers, one per
        #         column, not the address multiplexer, drive the block RAMs).
        # Stage 0: the bank reads the line.
        # Stage 1: the bank's read data go into its register.
        # Stage 2: old value = registered read data, or the value forwarded from a beat ahead whose write the read
        #          did not see (stage 3, or the writes of the last two cycles); add.
        # Stage 3: write.
        wr = self.wr
        in_read = Signal()
        m.d.comb += in_read.eq(wr.valid & wr.payload.accumulate)
        in_bank, in_line = split(wr.payload.addr)

        def stage(name):
            return SimpleNamespace(valid=Signal(name=f"{name}_valid"), acc=Signal(name=f"{name}_acc"),
                                   addr=Signal(self.addr_width, name=f"{name}_addr"),
                                   bank=Signal(range(self.banks), name=f"{name}_bank"),
                                   data=Signal(line_shape, name=f"{name}_data", reset_less=True))

        s0, s1, s2 = stage("s0"), stage("s1"), stage("s2")
        m.d.sync += [
            s0.valid.eq(wr.valid), s0.acc.eq(wr.payload.accumulate), s0.addr.eq(wr.payload.addr),
            s0.bank.eq(in_bank), s0.data.eq(wr.payload.data),
            s1.valid.eq(s0.valid), s1.acc.eq(s0.acc), s1.addr.eq(s0.addr), s1.bank.eq(s0.bank), s1.data.eq(s0.data),
            s2.valid.eq(s1.valid), s2.acc.eq(s1.acc), s2.addr.eq(s1.addr), s2.bank.eq(s1.bank), s2.data.eq(s1.data),
        ]

        # The sums of stage 3 (written this cycle) and of the writes of the last two cycles (w1, w2).
        s3_valid, w1_valid, w2_valid = Signal(name="s3_valid"), Signal(name="w1_valid"), Signal(name="w2_valid")
        s3_addr, w1_addr, w2_addr = (Signal(self.addr_width, name=f"{n}_addr") for n in ("s3", "w1", "w2"))
        s3_sum, w1_sum, w2_sum = (Signal(line_shape, name=f"{n}_sum") for n in ("s3", "w1", "w2"))

        # Where stage 2's old value comes from, decided in stage 1 (one cycle ahead, the beats ahead are one
        # stage earlier: the one that will be in stage 3 is in stage 2 now, and so on) and registered per element,
        # so that no address comparison and no single select register drives the whole line: one-hot over
        # stage 3, w1, w2, each bank's registered read data; all zero when not accumulating.
        # The address comparisons themselves are made a stage earlier still, on the beat in stage 0 against the
        # beats that will be in stage 2, stage 3 and w1 when it is in stage 1, and registered: the decision in
        # stage 1 is then a few LUTs from flip-flops in front of the copies' fan-out.
        # Those registers (the comparisons, and stage 1's `acc` and bank) come in one copy per group of
        # GROUP elements, each group's decision is made from its own copies, and each element's select is a copy
        # loaded from its group's decision: every net of the decision stays within a group.
        compare = Cat(s1.valid & (s1.addr == s0.addr), s2.valid & (s2.addr == s0.addr),
                      s3_valid & (s3_addr == s0.addr), s0.acc, s0.bank)
        candidates = [s3_sum, w1_sum, w2_sum, *bank_data]
        old = Signal(line_shape)
        for k in range(cols):
            if k % self.GROUP == 0:
                group = register_copy(m, compare, name=f"fwd_g{k // self.GROUP}", platform=platform)
                f3, f1, f2, acc, bank = group[0], group[1], group[2], group[3], group[4:]
                sources = Cat(acc & f3, acc & ~f3 & f1, acc & ~f3 & ~f1 & f2,
                              *(acc & ~f3 & ~f1 & ~f2 & (bank == b) for b in range(self.banks)))
            select = register_copy(m, sources, name=f"old_src{k}", platform=platform)
            value = 0
            for i, candidate in enumerate(candidates):
                value = value | Mux(select[i], candidate[k].as_unsigned(), 0)
            m.d.comb += old[k].eq(value)

        total = Signal(line_shape)
        for k in range(cols):
            # Assignment to a signed(acc_width) element truncates the carry: two's complement wrap-around.
            m.d.comb += total[k].eq(old[k] + s2.data[k])
        m.d.sync += [
            s3_valid.eq(s2.valid), s3_addr.eq(s2.addr), s3_sum.eq(total),
            w1_valid.eq(s3_valid), w1_addr.eq(s3_addr), w1_sum.eq(s3_sum),
            w2_valid.eq(w1_valid), w2_addr.eq(w1_addr), w2_sum.eq(w1_sum),
        ]

        # Each column memory's write address and enable come from registers of its own (copies of stage 3's,
        # loaded from stage 2): one address register for all banks drove some 45 block RAMs spread over the die (a
        # 16 x 16 worst path, 13.4 ns).
        s2_bank, s2_line = split(s2.addr)
        for b, ports in enumerate(wports):
            for k, wp in enumerate(ports):
                en = register_copy(m, s2.valid & (s2_bank == b), name=f"bank{b}_c{k}_wen", platform=platform, init=0)
                line = register_copy(m, s2_line, name=f"bank{b}_c{k}_waddr", platform=platform)
                m.d.comb += [
                    wp.en.eq(en),
                    wp.addr.eq(line),
                    wp.data.eq(s3_sum[k]),
                ]

        # Read-out engine ----------------------------------------------------------------------------------------
        # A line may be requested while a credit is left (a CreditFIFO): `fifo_depth` lines requested and not yet
        # taken from the output FIFO at most, so that `rd_data.ready` reaches only the FIFO and the credit count.
        cmd, out = self.rd_cmd, self.rd_data
        active = Signal()
        rd_addr = Signal(self.addr_width)
        rd_next = Signal(self.addr_width)        # rd_addr + 1, a register of its own (the hazard test's operand)
        remaining = Signal(self.addr_width + 1)
        rd_bank, rd_line = split(rd_addr)
        m.submodules.out_fifo = fifo = CreditFIFO(line_shape, self.fifo_depth)
        wiring.connect(m, fifo.o, wiring.flipped(out))

        room = Signal()
        conflict = Signal()
        hazard = Signal()
        issue = Signal()
        cmd_take = Signal()
        # The hazard: the line to read (from the bank's address register, in the next cycle) is still to be
        # written by a beat in stage 0, 1 or 2 (stage 3 writes it in this cycle; a beat accepted in this cycle
        # need not be seen). The comparisons are made a cycle earlier, against the beats that will then be in those
        # stages (the one being accepted, stages 0 and 1), for each address the read-out may have next (the same,
        # the next, a command's base), and registered; this cycle's handshakes of the read-out, registered too,
        # pick one.
        def ahead(addr):
            return ((wr.valid & (wr.payload.addr == addr)) | (s0.valid & (s0.addr == addr))
                    | (s1.valid & (s1.addr == addr)))
        hazard_same, hazard_next, hazard_base = (Signal(name=f"hazard_{n}") for n in ("same", "next", "base"))
        took_issue, took_cmd = Signal(), Signal()
        m.d.sync += [
            hazard_same.eq(ahead(rd_addr)),
            hazard_next.eq(ahead(rd_next)),
            hazard_base.eq(ahead(cmd.payload.base)),
            took_issue.eq(issue),
            took_cmd.eq(cmd_take),
        ]
        m.d.comb += [
            room.eq(fifo.credit),
            conflict.eq(in_read & (in_bank == rd_bank)),
            hazard.eq(Mux(took_cmd, hazard_base, Mux(took_issue, hazard_next, hazard_same))),
            issue.eq(active & room & ~conflict & ~hazard),
            cmd.ready.eq(~active | (issue & (remaining == 1))),
            cmd_take.eq(cmd.valid & cmd.ready),
        ]

        with m.If(issue):
            m.d.sync += [
                rd_addr.eq(rd_next),
                rd_next.eq(rd_next + 1),
                remaining.eq(remaining - 1),
            ]
            with m.If(remaining == 1):
                m.d.sync += active.eq(0)
        with m.If(cmd_take):
            m.d.sync += [
                rd_addr.eq(cmd.payload.base),
                rd_next.eq(cmd.payload.base + 1),
                remaining.eq(cmd.payload.count),
                active.eq(cmd.payload.count != 0),
            ]

        # Each bank's address registers, a copy per column memory: the accumulating beat's line has priority over
        # the read-out's. (The banks read every cycle: no clock enable on the read data or their register.)
        for b, addrs in enumerate(read_addrs):
            rmw = in_read & (in_bank == b)
            for k, read_addr in enumerate(addrs):
                bank_addr = register_copy(m, Mux(rmw, in_line, rd_line), name=f"bank{b}_c{k}_addr",
                                          platform=platform)
                m.d.comb += read_addr.eq(bank_addr)

        # Response: request (t) -> bank address register (t + 1) -> bank read data (t + 2) -> bank register (t + 3),
        # selected into the FIFO -> t + 4. The bank select of stage 3 is registered per element (copies), as the
        # read-modify-write sources are.
        r1_valid, r2_valid, r3_valid = Signal(), Signal(), Signal()
        r1_bank, r2_bank = Signal(range(self.banks)), Signal(range(self.banks))
        m.d.sync += [
            r1_valid.eq(issue), r1_bank.eq(rd_bank),
            r2_valid.eq(r1_valid), r2_bank.eq(r1_bank),
            r3_valid.eq(r2_valid),
        ]
        line = Signal(line_shape)
        for k in range(cols):
            r3_bank = register_copy(m, r2_bank, name=f"r3_bank{k}", platform=platform)
            value = bank_data[0][k]
            for b in range(1, self.banks):
                value = Mux(r3_bank == b, bank_data[b][k], value)
            m.d.comb += line[k].eq(value)
        m.d.comb += [
            fifo.reserve.eq(issue),
            fifo.w_en.eq(r3_valid),
            fifo.w_data.eq(line),
            self.rd_busy.eq(active | fifo.busy),
        ]

        return m
