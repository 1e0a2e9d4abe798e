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
from .register_slice import RegisterSlice

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

    Write side (``wr``): ``always_ready``, one beat per cycle. A beat accepted in cycle ``t`` reads its line at the
    end of ``t + 3`` (only if ``accumulate``), adds in ``t + 6`` and writes the line at the end of ``t + 7``. The
    four beats behind a beat in the pipeline get its new value by forwarding, so any sequence of beats (the same
    address back to back, or every other cycle, with or without gaps) gives the same result as applying the beats
    one at a time in order.

    Read-out (``rd_cmd``, ``rd_data``): a command reads ``count`` lines from ``base`` and sends them on ``rd_data``
    in address order. A line requested in cycle ``t`` is on ``rd_data`` from ``t + read_latency`` (``t + 5``); with
    ``rd_data`` ready the read-out sends one line per cycle, also across commands: commands enter through a
    :class:`~haneul.rtl.register_slice.RegisterSlice` (``rd_cmd.ready`` is a flip-flop) and one starts at the
    earliest in the cycle after it was accepted, while the engine is idle or in the cycle it requests the last line
    of the command before. Lines wait in an output FIFO of ``fifo_depth`` entries while ``rd_data`` is stalled; a
    line is requested only while the FIFO has room for it (credits), so ``rd_data.ready`` reaches no further than
    the FIFO. ``rd_busy`` is high from the cycle after a command is accepted until its last line is accepted.

    Coherence: a line read out observes every write beat accepted in an earlier cycle than the read: the read-out
    waits while a beat for the same line is in the input register or in stages 0 to 3 of the pipeline. The write
    side has priority at a bank's read port: the read-out waits while an accumulating beat reads the same bank.
    With the two in different halves (the double-buffering protocol) they never wait for each other.

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
    early_ready : bool, optional
        The consumer of ``rd_data`` tells its ``ready`` a cycle ahead on ``rd_ready_next``, and its ``ready`` is
        that, registered (low after reset): the output FIFO then keeps copies of it beside each part of the
        512-bit queue (:class:`~haneul.rtl.credit.CreditFIFO` with ``early_ready``; ``rd_data.ready`` is not
        read). Default ``False``.
    registered : bool, optional
        ``rd_data`` from the output FIFO's output register (:class:`~haneul.rtl.credit.CreditFIFO` with
        ``registered``; with ``early_ready``, each 64-bit part of it loaded at copies of its own): a consumer across
        the die then reads flip-flops, not the FIFO's LUT RAM. One cycle more of read latency, one entry more of
        FIFO. Default ``False``.

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
    rd_ready_next : In(1)
        Only with ``early_ready``: ``rd_data.ready`` of the next cycle.

    Attributes
    ----------
    config : DatapathConfig
    cols, depth, banks : int
    addr_width : int
        Width of a line address, ``log2(depth)``.
    half_depth : int
        Lines per half, ``depth // 2``; the first line of half ``h`` is ``h * half_depth``.
    write_latency : int
        Cycles from an accepted write beat to the end of the cycle in which its line is written, 8.
    read_latency : int
        Cycles from a line request to the line on ``rd_data``, 5 (the two levels of a bank's address registers,
        the block RAM read, the bank's data register, the output FIFO); 6 ``registered``.
    fifo_depth : int
        Entries of the read-out FIFO, 6 (7 ``registered``): also the lines that may be requested and not yet
        taken, enough for one line per cycle.
    """

    write_latency = 8

    #: Elements per copy of the forwarding decision's registers, and columns per group register of the block RAM
    #: addresses.
    GROUP = 4

    def __init__(self, config=None, *, cols=None, depth=None, banks=None, early_ready=False, registered=False):
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

        self.early_ready = bool(early_ready)
        self.registered = bool(registered)
        self.read_latency = 5 + self.registered
        self.fifo_depth = 6 + self.registered
        ports = {
            "wr":      In(stream.Signature(AccumulatorWrite(config, cols, self.addr_width), always_ready=True)),
            "rd_cmd":  In(stream.Signature(ReadCommand(self.addr_width))),
            "rd_data": Out(stream.Signature(data.ArrayLayout(config.acc_shape, cols))),
            "rd_busy": Out(1),
        }
        if self.early_ready:
            ports["rd_ready_next"] = In(1)
        super().__init__(ports)

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
        # Each bank is one block RAM memory per column (32 of a DP16KD's 36 bits on ECP5). Its read and write
        # addresses come through two levels of registers: one per group of GROUP columns, then one per column
        # memory. A register driving the address pins of a whole line's block RAMs, spread along the die's block RAM
        # rows, took up to 14.9 ns of routing at 16 x 16; one copy per column still 13.4 ns from the multiplexer
        # (the copies are as far apart as the block RAMs), so each level now spans a part of the distance.
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

        def address_tree(value, name, **kwargs):
            """``value`` two cycles later at each column: a register per group of columns, then one per column."""
            groups = [register_copy(m, value, name=f"{name}_g{g}", platform=platform, **kwargs)
                      for g in range((cols + self.GROUP - 1) // self.GROUP)]
            return [register_copy(m, groups[k // self.GROUP], name=f"{name}_c{k}", platform=platform, **kwargs)
                    for k in range(cols)]

        # Every bank's read data go to a register and nothing else (block RAM read data are slow); both the
        # read-modify-write pipeline and the read-out select from the registered data, two cycles after their read.
        # The register has no reset (a data register needs none).
        bank_data = []
        for b, rd in enumerate(read_data):
            registered = Signal(line_shape, name=f"bank{b}_data", reset_less=True)
            m.d.sync += registered.eq(rd)
            bank_data.append(registered)

        # Read-modify-write pipeline -----------------------------------------------------------------------------
        # Input:  the accepted beat goes into registers (`si`), so that the bank's read port is arbitrated between
        #         it and the read-out from flip-flops (`wr` from the result writer through the read-out's issue
        #         decision into its counters' enables was 11.1 ns at 16 x 16).
        # Accept: the line's address goes into its bank's group address registers if accumulating (the address
        #         multiplexer drives only those).
        # Stage 0: the column address registers load from the group registers.
        # Stage 1: the bank reads the line.
        # Stage 2: the bank's read data go into its register.
        # Stage 3: old value, all but the newest source: the registered read data, or the value forwarded from a
        #          beat two to four ahead whose write the read did not see (stage 5, or the writes of the last two
        #          cycles), registered (`pre`).
        # Stage 4: old value = the sum of the beat just ahead (stage 5) if it wrote the same line, else `pre`; add.
        #          (The selection among five sources and the adder in one stage were 10.8 ns at 16 x 16.)
        # Stage 5: write.
        wr = self.wr
        si = SimpleNamespace(valid=Signal(name="si_valid"), acc=Signal(name="si_acc"),
                             addr=Signal(self.addr_width, name="si_addr"),
                             data=Signal(line_shape, name="si_data", reset_less=True))
        m.d.sync += [si.valid.eq(wr.valid), si.acc.eq(wr.payload.accumulate), si.addr.eq(wr.payload.addr),
                     si.data.eq(wr.payload.data)]
        in_read = Signal()
        m.d.comb += in_read.eq(si.valid & si.acc)
        in_bank, in_line = split(si.addr)

        def stage(name):
            return SimpleNamespace(valid=Signal(name=f"{name}_valid"), acc=Signal(name=f"{name}_acc"),
                                   addr=Signal(self.addr_width, name=f"{name}_addr"),
                                   bank=Signal(range(self.banks), name=f"{name}_bank"),
                                   data=Signal(line_shape, name=f"{name}_data", reset_less=True))

        s0, s1, s2, s3, s4 = (stage(f"s{i}") for i in range(5))
        m.d.sync += [
            s0.valid.eq(si.valid), s0.acc.eq(si.acc), s0.addr.eq(si.addr),
            s0.bank.eq(in_bank), s0.data.eq(si.data),
        ]
        for prev, nxt in ((s0, s1), (s1, s2), (s2, s3), (s3, s4)):
            m.d.sync += [nxt.valid.eq(prev.valid), nxt.acc.eq(prev.acc), nxt.addr.eq(prev.addr),
                         nxt.bank.eq(prev.bank), nxt.data.eq(prev.data)]

        # The sums of stage 5 (written this cycle) and of the writes of the last two cycles (w1, w2).
        s5_valid, w1_valid, w2_valid = Signal(name="s5_valid"), Signal(name="w1_valid"), Signal(name="w2_valid")
        s5_addr, w1_addr, w2_addr = (Signal(self.addr_width, name=f"{n}_addr") for n in ("s5", "w1", "w2"))
        s5_sum, w1_sum, w2_sum = (Signal(line_shape, name=f"{n}_sum") for n in ("s5", "w1", "w2"))

        # Where the old value comes from. The beat just ahead (now in stage 4 when this one is in stage 3) writes
        # its sum into stage 5's register as this one enters stage 4: stage 4 selects it (`newest`). The others
        # are selected in stage 3 into `pre`: one-hot over stage 5 (two beats ahead), w1, w2 (three and four
        # ahead), each bank's registered read data; all zero when not accumulating (and `newest` low).
        # The address comparisons are made on the beat in stage 0 against the beats that will be in stages 4, 5,
        # w1 and w2 when it is in stage 3 (now in stages 1 to 4), and registered beside the address registers;
        # then copied, in stage 2, into one copy per group of GROUP elements (with stage 2's `acc` and bank), each
        # group's decision is made from its own copies, and each element's selects are copies loaded from its
        # group's decision: every net of the decision stays within a group, and the nets that cross the line start
        # at flip-flops (the comparisons straight into the group copies took 4.5 ns of routing after their LUTs
        # at 16 x 16).
        compare = Signal(5 + len(s0.bank), name="fwd_compare")
        m.d.sync += compare.eq(Cat(s1.valid & (s1.addr == s0.addr), s2.valid & (s2.addr == s0.addr),
                                   s3.valid & (s3.addr == s0.addr), s4.valid & (s4.addr == s0.addr),
                                   s0.acc, s0.bank))
        candidates = [s5_sum, w1_sum, w2_sum, *bank_data]
        pre = Signal(line_shape, name="pre")
        old = Signal(line_shape)
        for k in range(cols):
            if k % self.GROUP == 0:
                group = register_copy(m, compare, name=f"fwd_g{k // self.GROUP}", platform=platform)
                f1, f2, f3, f4, acc, bank = group[0], group[1], group[2], group[3], group[4], group[5:]
                sources = Cat(acc & ~f1 & f2, acc & ~f1 & ~f2 & f3, acc & ~f1 & ~f2 & ~f3 & f4,
                              *(acc & ~f1 & ~f2 & ~f3 & ~f4 & (bank == b) for b in range(self.banks)))
                # `newest` a cycle later, for stage 4: a register per group, then one per element.
                newest_group = register_copy(m, acc & f1, name=f"fwd_newest_g{k // self.GROUP}",
                                             platform=platform)
            select = register_copy(m, sources, name=f"old_src{k}", platform=platform)
            value = 0
            for i, candidate in enumerate(candidates):
                value = value | Mux(select[i], candidate[k].as_unsigned(), 0)
            m.d.sync += pre[k].eq(value)
            newest = register_copy(m, newest_group, name=f"old_newest{k}", platform=platform)
            m.d.comb += old[k].eq(Mux(newest, s5_sum[k], pre[k]))

        total = Signal(line_shape)
        for k in range(cols):
            # Assignment to a signed(acc_width) element truncates the carry: two's complement wrap-around.
            m.d.comb += total[k].eq(old[k] + s4.data[k])
        m.d.sync += [
            s5_valid.eq(s4.valid), s5_addr.eq(s4.addr), s5_sum.eq(total),
            w1_valid.eq(s5_valid), w1_addr.eq(s5_addr), w1_sum.eq(s5_sum),
            w2_valid.eq(w1_valid), w2_addr.eq(w1_addr), w2_sum.eq(w1_sum),
        ]

        # Each column memory's write address and enable come through the same two levels of registers, loaded
        # from stage 3, so that they hold stage 5's in stage 5.
        s3_bank, s3_line = split(s3.addr)
        for b, ports in enumerate(wports):
            wens = address_tree(s3.valid & (s3_bank == b), f"bank{b}_wen", init=0)
            lines_ = address_tree(s3_line, f"bank{b}_waddr")
            for k, wp in enumerate(ports):
                m.d.comb += [
                    wp.en.eq(wens[k]),
                    wp.addr.eq(lines_[k]),
                    wp.data.eq(s5_sum[k]),
                ]

        # Read-out engine ----------------------------------------------------------------------------------------
        # A line may be requested while a credit is left (a CreditFIFO): `fifo_depth` lines requested and not yet
        # taken from the output FIFO at most, so that `rd_data.ready` reaches only the FIFO and the credit count.
        # Commands come through a register slice (the read-out takes one the cycle after it was accepted at the
        # earliest): the hazard test compares the command's base with the pipeline's addresses, and the sequencer's
        # command stage, across the die, was 6.9 ns of routing from that comparison at 16 x 16; `rd_cmd.ready` is
        # a flip-flop, so the read-out's decision does not go back to the sequencer either.
        out = self.rd_data
        m.submodules.cmd_slice = cmd_slice = RegisterSlice(self.rd_cmd.payload.shape())
        wiring.connect(m, wiring.flipped(self.rd_cmd), cmd_slice.i)
        cmd = cmd_slice.o
        active = Signal()
        rd_addr = Signal(self.addr_width)
        rd_next = Signal(self.addr_width)        # rd_addr + 1, a register of its own (the hazard test's operand)
        remaining = Signal(self.addr_width + 1)
        one_left = Signal()                      # remaining == 1, a flip-flop of its own (in `cmd.ready`)
        rd_bank, rd_line = split(rd_addr)
        m.submodules.out_fifo = fifo = CreditFIFO(line_shape, self.fifo_depth, early_ready=self.early_ready,
                                                     registered=self.registered)
        wiring.connect(m, fifo.o, wiring.flipped(out))
        if self.early_ready:
            m.d.comb += fifo.ready_next.eq(self.rd_ready_next)

        room = Signal()
        hazard = Signal()
        issue = Signal()
        cmd_take = Signal()
        # The hazard: the line to read (at the end of the cycle after next, from the column address registers) is
        # still to be written by a beat in the input register or in stage 0, 1, 2 or 3 (stage 3's write is at the
        # same clock edge as the read, whose result is undefined; stage 4's is a cycle before it; a beat accepted in
        # this cycle need not be seen). The comparisons are made a cycle earlier, against the beats that will then
        # be in those stages (the one being accepted, the input register, stages 0 to 2), for each address the
        # read-out may have next (the same, the next, a command's base), and registered; this cycle's handshakes of
        # the read-out, registered too, pick one.
        # The bank conflict (the accumulating beat in the input register reads the same bank) is tested the same
        # way, a cycle early, against the beat being accepted: `si_acc` through the conflict test into the
        # counters' enables was 12.7 ns at 16 x 16 (`si` sits with the line's data, across the die).
        def ahead(addr):
            same_bank = split(wr.payload.addr)[0] == split(addr)[0]
            return ((wr.valid & ((wr.payload.addr == addr) | (wr.payload.accumulate & same_bank)))
                    | (si.valid & (si.addr == addr))
                    | (s0.valid & (s0.addr == addr)) | (s1.valid & (s1.addr == addr))
                    | (s2.valid & (s2.addr == addr)))
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
            hazard.eq(Mux(took_cmd, hazard_base, Mux(took_issue, hazard_next, hazard_same))),
            issue.eq(active & room & ~hazard),
            cmd.ready.eq(~active | (issue & one_left)),
            cmd_take.eq(cmd.valid & cmd.ready),
        ]

        with m.If(issue):
            m.d.sync += [
                rd_addr.eq(rd_next),
                rd_next.eq(rd_next + 1),
                remaining.eq(remaining - 1),
                one_left.eq(remaining == 2),
            ]
            with m.If(one_left):
                m.d.sync += active.eq(0)
        with m.If(cmd_take):
            m.d.sync += [
                rd_addr.eq(cmd.payload.base),
                rd_next.eq(cmd.payload.base + 1),
                remaining.eq(cmd.payload.count),
                one_left.eq(cmd.payload.count == 1),
                active.eq(cmd.payload.count != 0),
            ]

        # Each bank's read address registers (group, then column): the accumulating beat's line has priority over
        # the read-out's. (The banks read every cycle: no clock enable on the read data or their register.)
        for b, addrs in enumerate(read_addrs):
            rmw = in_read & (in_bank == b)
            for read_addr, bank_addr in zip(addrs, address_tree(Mux(rmw, in_line, rd_line), f"bank{b}_addr")):
                m.d.comb += read_addr.eq(bank_addr)

        # Response: request (t) -> group address registers (t + 1) -> column address registers (t + 2) -> bank
        # read data (t + 3) -> bank register (t + 4), selected into the FIFO -> t + 5. The bank select of stage 4
        # comes through the same two levels of registers as the address (one register for all copies: 14.1 ns).
        r1_valid, r2_valid, r3_valid, r4_valid = Signal(), Signal(), Signal(), Signal()
        r1_bank, r2_bank = (Signal(range(self.banks), name=f"r{i}_bank") for i in (1, 2))
        m.d.sync += [
            r1_valid.eq(issue), r1_bank.eq(rd_bank),
            r2_valid.eq(r1_valid), r2_bank.eq(r1_bank),
            r3_valid.eq(r2_valid),
            r4_valid.eq(r3_valid),
        ]
        line = Signal(line_shape)
        for k, r4_bank in enumerate(address_tree(r2_bank, "r_bank")):
            value = bank_data[0][k]
            for b in range(1, self.banks):
                value = Mux(r4_bank == b, bank_data[b][k], value)
            m.d.comb += line[k].eq(value)
        m.d.comb += [
            fifo.reserve.eq(issue),
            fifo.w_en.eq(r4_valid),
            fifo.w_data.eq(line),
            self.rd_busy.eq(cmd_slice.busy | active | fifo.busy),
        ]

        return m
