"""DMA engine: the NPU's AXI4 manager, moving lines between external memory and the NPU.

The engine has a read channel and a write channel that run concurrently and independently:

* **read**: a :class:`ReadCommand` (an :class:`~haneul.rtl.isa.LoadArgs` descriptor and a :class:`ReadDest` tag)
  becomes ``loops[0].count * loops[1].count * loops[2].count`` lines on ``rd_data``, in loop order, each with its
  scratchpad line address. Padding lines (convolution borders) are made on the fly and are never read; bytes of a
  line outside ``offset .. offset + length - 1`` are ``pad_value``. ``ext_addr`` and the strides may have any byte
  alignment: a line that straddles two bus words is read as both and realigned with a byte shifter.
* **write**: an :class:`~haneul.rtl.isa.StoreArgs` descriptor takes lines from ``wr_data`` (the datapath's output
  lines) and writes the first ``length`` bytes of each at its external address, with ``wstrb`` for any alignment.
  ``wr_done`` pulses when the write response of the descriptor's last burst has arrived.

Inside each channel (see ``docs/dma.md`` for the diagram)::

    cmd -> walker (3 nested loops, 1 line/cycle) -> planner (bus words of each line, window check)
             -> burst builder (merges consecutive words into INCR bursts, <= max_burst beats, no 4 KiB crossing)
             -> AR / AW

    read:  R -> word FIFO (credit for every beat requested) -> realigner (line info FIFO) -> rd_data
    write: wr_data -> packer (line info FIFO; bytes of consecutive lines in one word merged) -> W FIFO -> W
           an AW is issued only once all the beats of its burst are in the W FIFO, so W never waits for the datapath.

Consecutive lines that touch the same bus word share it: the read side requests it once, the write side writes it
once with the merged strobes. So contiguous lines (``ext_stride == length``) run at one line per cycle whatever their
alignment, in bursts.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import AXI4Signature, Burst, Resp
from .config import DatapathConfig

__all__ = ["ReadDest", "ReadCommand", "ReadLine", "Dma"]


class ReadDest(enum.Enum, shape=2):
    """Where the lines of a read go; the DMA engine only passes it through to ``rd_data``.

    Members
    -------
    SPAD
        Scratchpad lines (``LOAD``).
    PARAM
        Parameter beats (``PARAM``).
    FETCH
        Instruction words (the command processor's fetcher).
    """
    SPAD  = 0
    PARAM = 1
    FETCH = 2


class ReadCommand(data.Struct):
    """Payload of ``rd_cmd``: one read descriptor.

    Members
    -------
    args : isa.LoadArgs
        The transfer (see :class:`haneul.rtl.isa.LoadArgs`). ``offset + length`` must not exceed the bus width in
        bytes; for ``PARAM`` and ``FETCH`` the command processor makes a one-loop descriptor with ``length`` and
        ``loops[0].ext_stride`` the bus width in bytes.
    dest : ReadDest
        Tag given back with every line.
    """
    args: isa.LoadArgs
    dest: ReadDest


class ReadLine(data.StructLayout):
    """Payload of ``rd_data``: one line.

    Parameters
    ----------
    config : DatapathConfig
    data_width : int
        Bus width in bits.

    Members
    -------
    addr : unsigned(config.spad_addr_width)
        Scratchpad line address of the line (``spad_addr`` and the ``spad_stride`` s, modulo the scratchpad size).
    data : ArrayLayout(signed(8), data_width // 8)
        The line: byte ``offset + k`` is external byte ``A + k`` for ``k < length``, every other byte ``pad_value``
        (all of them in a padding line). A scratchpad write takes the first ``config.rows`` bytes.
    dest : ReadDest
        The command's tag.
    last : 1
        Last line of the command.
    """

    def __init__(self, config, data_width=128):
        super().__init__({
            "addr": unsigned(config.spad_addr_width),
            "data": data.ArrayLayout(signed(8), data_width // 8),
            "dest": ReadDest,
            "last": unsigned(1),
        })


def _log2(value):
    return value.bit_length() - 1


def _is_pow2(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and value & (value - 1) == 0


class _Walker:
    """The three nested loops of a descriptor: one line (external address, scratchpad address, padding, last) per
    cycle. Builds its logic into a module; ``start`` with the args view loads it, ``advance`` moves to the next line.
    """

    def __init__(self, m, name, *, addr_width, spad_width, args, start, advance, halt, padded):
        self.active = Signal(name=f"{name}_active")
        self.ext = Signal(addr_width, name=f"{name}_ext")
        self.spad = Signal(spad_width, name=f"{name}_spad")
        self.pad = Signal(name=f"{name}_pad")
        self.last = Signal(name=f"{name}_last")

        n = len(args.loops)
        idx = [Signal(isa.LOOP_COUNT_WIDTH, name=f"{name}_i{k}") for k in range(n)]
        top = [Signal(isa.LOOP_COUNT_WIDTH, name=f"{name}_top{k}") for k in range(n)]       # count - 1
        ext_stride = [Signal(isa.EXT_STRIDE_WIDTH, name=f"{name}_es{k}") for k in range(n)]
        ext = [Signal(addr_width, name=f"{name}_ext{k}") for k in range(n)]   # address at the first real i_k
        spad = [Signal(spad_width, name=f"{name}_sp{k}") for k in range(n)] if spad_width else []
        spad_stride = [Signal(spad_width, name=f"{name}_ss{k}") for k in range(n)] if spad_width else []
        npad = isa.PADDED_LOOPS if padded else 0
        before = [Signal(isa.PAD_WIDTH, name=f"{name}_before{k}") for k in range(npad)]
        after_start = [Signal(isa.LOOP_COUNT_WIDTH, name=f"{name}_after{k}") for k in range(npad)]  # count - after

        at_top = [idx[k] == top[k] for k in range(n)]
        m.d.comb += [
            self.ext.eq(ext[0]),
            self.last.eq(Cat(*at_top).all()),
        ]
        if spad_width:
            m.d.comb += self.spad.eq(spad[0])
        pads = []
        for k in range(npad):
            pads += [idx[k] < before[k], idx[k] >= after_start[k]]
        m.d.comb += self.pad.eq(Cat(*pads).any() if pads else 0)

        with m.If(halt):
            m.d.sync += self.active.eq(0)
        with m.Elif(start):
            m.d.sync += self.active.eq(1)
            for k in range(n):
                loop = args.loops[k]
                m.d.sync += [
                    idx[k].eq(0),
                    top[k].eq(loop.count - 1),
                    ext_stride[k].eq(loop.ext_stride),
                    ext[k].eq(args.ext_addr),
                ]
                if spad_width:
                    m.d.sync += [spad[k].eq(args.spad_addr), spad_stride[k].eq(loop.spad_stride)]
            for k in range(npad):
                m.d.sync += [before[k].eq(args.pad[k].before),
                             after_start[k].eq(args.loops[k].count - args.pad[k].after)]
        with m.Elif(advance):
            # Loop k steps (all inner loops wrap to 0). The address of loop j < k's first real iteration is the
            # new address of loop j + 1: ext[j] of the iterations before the first real one is never used.
            for k in range(n):
                cond = Cat(*at_top[:k]).all() if k else Const(1)
                with m.If(cond & ~at_top[k]):
                    new_idx = idx[k] + 1
                    m.d.sync += idx[k].eq(new_idx)
                    for j in range(k):
                        m.d.sync += idx[j].eq(0)
                    # External address of loop k.
                    if k < npad:
                        ext_k = Mux(new_idx <= before[k], ext[k + 1] if k + 1 < n else ext[k],
                                    ext[k] + ext_stride[k])
                    else:
                        ext_k = ext[k] + ext_stride[k]
                    ext_new = Signal(addr_width, name=f"{name}_ext{k}_next")
                    m.d.comb += ext_new.eq(ext_k)
                    for j in range(k + 1):
                        m.d.sync += ext[j].eq(ext_new)
                    if spad_width:
                        spad_new = Signal(spad_width, name=f"{name}_sp{k}_next")
                        m.d.comb += spad_new.eq(spad[k] + spad_stride[k])
                        for j in range(k + 1):
                            m.d.sync += spad[j].eq(spad_new)
            with m.If(self.last):
                m.d.sync += self.active.eq(0)


class _BurstBuilder:
    """Merges a stream of bus word indices into INCR bursts.

    A word extends the pending burst if it is the next word, the burst is shorter than ``max_burst``, the word does
    not start a 4 KiB page, and neither the word (``brk``) nor the burst (``end``) forbids it. The pending burst is
    offered (``out_valid``) in every cycle in which no word extends it, so it never waits for a word that cannot
    come. ``out_ready`` takes it.
    """

    def __init__(self, m, name, *, word_width, page_bits, max_burst, word_valid, word, brk, end, out_ready, halt):
        self.p_valid = Signal(name=f"{name}_p_valid")
        self.p_start = Signal(word_width, name=f"{name}_p_start")
        self.p_len = Signal(range(max_burst + 1), name=f"{name}_p_len")
        self.p_end = Signal(name=f"{name}_p_end")
        self.word_ready = Signal(name=f"{name}_word_ready")
        self.out_valid = Signal(name=f"{name}_out_valid")

        extend = Signal(name=f"{name}_extend")
        m.d.comb += extend.eq(self.p_valid & ~brk & ~self.p_end & (word == self.p_start + self.p_len)
                              & (self.p_len < max_burst) & (word[:page_bits] != 0))
        flush = Signal(name=f"{name}_flush")
        m.d.comb += [
            self.out_valid.eq(self.p_valid & ~(word_valid & extend) & ~halt),
            flush.eq(self.out_valid & out_ready),
            self.word_ready.eq(~halt & (extend | ~self.p_valid | flush)),
        ]
        with m.If(halt):
            m.d.sync += self.p_valid.eq(0)
        with m.Elif(word_valid & self.word_ready):
            with m.If(extend):
                m.d.sync += [self.p_len.eq(self.p_len + 1), self.p_end.eq(end)]
            with m.Else():
                m.d.sync += [self.p_valid.eq(1), self.p_start.eq(word), self.p_len.eq(1), self.p_end.eq(end)]
        with m.Elif(flush):
            m.d.sync += self.p_valid.eq(0)


class Dma(wiring.Component):
    """The DMA engine (AXI4 manager) of the NPU.

    Parameters
    ----------
    config : DatapathConfig
        ``rows`` (scratchpad line) and ``cols`` (output line) must not exceed the bus width in bytes.
    addr_width : int
        Width of the bus addresses (default 32).
    data_width : int
        Bus width in bits: 32, 64, 128 (default), 256, 512 or 1024.
    id_width : int
        Width of the AXI IDs; the engine uses ID 0 for everything (responses in order).
    max_burst : int
        Longest burst in beats, 1 .. 256 (default 16).
    read_buffer : int
        Bus words of read data the engine can hold: every AR is issued only with room for all its beats, so ``R`` is
        never stalled and ``read_buffer`` words can be outstanding. Power of two, at least ``max_burst`` (default
        64).
    write_buffer : int
        Bus words of write data buffered before their AW is issued. Power of two, at least ``max_burst`` (default 32).
    max_writes : int
        Write bursts outstanding (AW issued, B not yet received). Power of two (default 8).

    Members
    -------
    bus : Out(AXI4Signature(addr_width=, data_width=, id_width=))
        The AXI4 manager port. INCR bursts of full bus words (``AxSIZE`` = bus width), ``AxCACHE`` = 0b0011,
        ``AxPROT`` = 0, IDs 0.
    rd_cmd : In(stream.Signature(ReadCommand))
        Read descriptors, taken when the read channel has finished walking the previous one (its lines may still be
        in flight).
    rd_data : Out(stream.Signature(ReadLine(config, data_width)))
        The lines of the read descriptors, in order (``last`` on the last line of each).
    wr_cmd : In(stream.Signature(isa.StoreArgs))
        Write descriptors.
    wr_data : In(stream.Signature(ArrayLayout(signed(8), config.cols)))
        The lines the write descriptors store (the datapath's ``out``), one per iteration, in order.
    wr_done : Out(1)
        Pulses for one cycle per write descriptor, when the write response of its last burst arrived.
    window_base, window_size : In(addr_width)
        Every byte that a descriptor reads or writes must lie in ``[window_base, window_base + window_size)``
        (checked per line before it is requested); otherwise nothing more is issued and the error is
        ``ADDR_WINDOW``. Bytes a read brings in only to fill its bus words are not checked.
    abort : In(1)
        Stop: no new burst is issued, outstanding bursts are completed on the bus (their R beats and B responses
        accepted and dropped, the W beats of issued AWs sent — they are always buffered), every queued line and
        descriptor inside the engine is dropped. ``rd_cmd``, ``wr_cmd`` and ``wr_data`` are not consumed while
        stopping, and ``rd_data.valid`` falls (the consumer is being reset too). A pulse is enough; while ``abort``
        stays high the engine stays stopped.
    busy : Out(1)
        Any work in either channel: a descriptor being walked, lines or beats queued, bursts outstanding, stopping.
    error : Out(1)
        Sticky until ``error_clear``. An error stops the engine as ``abort`` does, and it stays stopped (consumes
        nothing) until ``error_clear``.
    error_code : Out(isa.ErrorCode)
        ``ADDR_WINDOW``, ``BUS_SLVERR`` or ``BUS_DECERR`` (the first error; ``NONE`` without one).
    error_clear : In(1)
        Clears ``error`` and ``error_code``.
    counter_clear : In(1)
        Zeroes the counters.
    bytes_read : Out(32)
        Bytes of ``rd_data`` lines that came from memory (``length`` per delivered line that is not padding).
    bytes_written : Out(32)
        Bytes of ``wr_data`` lines written (``length`` per line taken).
    rd_beats, wr_beats : Out(32)
        R and W beats on the bus.
    rd_stall_cycles : Out(32)
        Cycles with ``rd_data.valid`` high and ``ready`` low.
    ar_stall_cycles, aw_stall_cycles, w_stall_cycles : Out(32)
        Cycles with ``arvalid`` (``awvalid``, ``wvalid``) high and its ``ready`` low.
    r_wait_cycles : Out(32)
        Cycles in which the read realigner waits for an R beat (memory latency or bandwidth).
    wr_starve_cycles : Out(32)
        Cycles in which the write packer waits for a ``wr_data`` line.
    """

    def __init__(self, config, *, addr_width=32, data_width=128, id_width=1, max_burst=16, read_buffer=64,
                 write_buffer=32, max_writes=8):
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        bus = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        nbytes = data_width // 8
        if config.rows > nbytes or config.cols > nbytes:
            raise ValueError(f"A {data_width}-bit bus carries {nbytes} bytes per beat, fewer than a line of the "
                             f"{config.rows}x{config.cols} array: use a bus of at least "
                             f"{8 * max(config.rows, config.cols)} bits")
        if config.input_width != 8:
            raise ValueError(f"The DMA engine moves int8 lines, not {config.input_width}-bit elements")
        if not isinstance(max_burst, int) or isinstance(max_burst, bool) or not 1 <= max_burst <= 256:
            raise ValueError(f"Maximum burst must be an integer in 1 .. 256, not {max_burst!r}")
        if max_burst * nbytes > 4096:
            raise ValueError(f"Bursts of {max_burst} beats of {nbytes} bytes exceed 4 KiB")
        for name, value, minimum in (("Read buffer", read_buffer, max_burst), ("Write buffer", write_buffer,
                                     max_burst), ("Outstanding write count", max_writes, 1)):
            if not _is_pow2(value) or value < minimum:
                raise ValueError(f"{name} must be a power of two of at least {minimum}, not {value!r}")
        if addr_width > isa.EXT_ADDR_WIDTH:
            raise ValueError(f"Address width must be at most {isa.EXT_ADDR_WIDTH} (the descriptors' addresses), "
                             f"not {addr_width}")
        self.config = config
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        self.nbytes = nbytes
        self.max_burst = max_burst
        self.read_buffer = read_buffer
        self.write_buffer = write_buffer
        self.max_writes = max_writes
        super().__init__({
            "bus":              Out(bus),
            "rd_cmd":           In(stream.Signature(ReadCommand)),
            "rd_data":          Out(stream.Signature(ReadLine(config, data_width))),
            "wr_cmd":           In(stream.Signature(isa.StoreArgs)),
            "wr_data":          In(stream.Signature(data.ArrayLayout(signed(8), config.cols))),
            "wr_done":          Out(1),
            "window_base":      In(addr_width),
            "window_size":      In(addr_width),
            "abort":            In(1),
            "busy":             Out(1),
            "error":            Out(1),
            "error_code":       Out(isa.ErrorCode),
            "error_clear":      In(1),
            "counter_clear":    In(1),
            "bytes_read":       Out(32),
            "bytes_written":    Out(32),
            "rd_beats":         Out(32),
            "wr_beats":         Out(32),
            "rd_stall_cycles":  Out(32),
            "ar_stall_cycles":  Out(32),
            "aw_stall_cycles":  Out(32),
            "w_stall_cycles":   Out(32),
            "r_wait_cycles":    Out(32),
            "wr_starve_cycles": Out(32),
        })

    # Helpers ------------------------------------------------------------------------------------------------------

    def _in_window(self, m, name, addr, length):
        """Whether bytes ``addr .. addr + length - 1`` lie in the window."""
        ok = Signal(name=name)
        w = self.addr_width + 1
        end = Signal(w + 1, name=f"{name}_end")
        limit = Signal(w + 1, name=f"{name}_limit")
        m.d.comb += [
            end.eq(addr + length),
            limit.eq(self.window_base + self.window_size),
            ok.eq((addr >= self.window_base) & (end <= limit)),
        ]
        return ok

    def _planner(self, m, name, *, walker, length, halt, line_ready, brk_first, pairs=False):
        """Bus words of the walker's current line: ``w0`` (its first byte) and ``w1`` (its last byte).

        Consecutive lines of one descriptor share a word when the line's ``w0`` is the previous line's ``w1``
        (``reuse``): that word is not requested again. With ``pairs`` (the read side, whose realigner keeps both
        words of the previous line), a two-word line on the same two words as the previous two-word line needs no
        word at all (``both``). Lines of different descriptors never share one. A line with two new words hands the first to the burst
        builder in one cycle and the second in the next (``second``).
        """
        lb = _log2(self.nbytes)
        ww = self.addr_width - lb
        p = type("Plan", (), {})()
        p.w0 = Signal(ww, name=f"{name}_w0")
        p.w1 = Signal(ww, name=f"{name}_w1")
        p.two = Signal(name=f"{name}_two")
        p.reuse = Signal(name=f"{name}_reuse")
        p.both = Signal(name=f"{name}_both")
        last_first = Signal(ww, name=f"{name}_last_first")
        last_two = Signal(name=f"{name}_last_two")
        p.have_last = Signal(name=f"{name}_have_last")
        p.last_word = Signal(ww, name=f"{name}_last_word")
        p.second = Signal(name=f"{name}_second")
        p.word_valid = Signal(name=f"{name}_word_valid")
        p.word = Signal(ww, name=f"{name}_word")
        p.word_end = Signal(name=f"{name}_word_end")
        p.brk = Signal(name=f"{name}_brk")
        p.accept = Signal(name=f"{name}_accept")          # the line goes to the line FIFO and the walker advances
        p.window_error = Signal(name=f"{name}_window_error")
        p.word_ready = Signal(name=f"{name}_word_ready")  # from the burst builder

        end_addr = Signal(self.addr_width, name=f"{name}_end_addr")
        m.d.comb += [
            end_addr.eq(walker.ext + length - 1),
            p.w0.eq(walker.ext[lb:]),
            p.w1.eq(end_addr[lb:]),
            p.two.eq(p.w1 != p.w0),
        ]
        ok = self._in_window(m, f"{name}_in_window", walker.ext, length)
        data_line = walker.active & ~walker.pad & ~halt
        m.d.comb += p.window_error.eq(data_line & ~ok)
        if pairs:
            m.d.comb += p.both.eq(p.have_last & last_two & p.two & (p.w0 == last_first) & (p.w1 == p.last_word))
        first_of_two = ~p.reuse & p.two & ~p.second & ~p.both
        needs_word = ~p.both & (first_of_two | ~p.reuse | p.two)
        m.d.comb += [
            p.word_valid.eq(data_line & ok & needs_word & (first_of_two | line_ready)),
            p.word.eq(Mux(first_of_two | ~p.two, p.w0, p.w1)),
            p.word_end.eq(walker.last & ~first_of_two),
            p.brk.eq(brk_first & ~p.have_last & ~p.second),
        ]
        with m.If(walker.active & ~halt):
            with m.If(walker.pad):
                m.d.comb += p.accept.eq(line_ready)
            with m.Elif(ok):
                with m.If(first_of_two):
                    with m.If(p.word_ready):
                        m.d.sync += p.second.eq(1)
                with m.Else():
                    m.d.comb += p.accept.eq(line_ready & (~needs_word | p.word_ready))
        # A word is shared only between lines of one descriptor: the write side flushes the word of a descriptor's
        # last line (its burst ends the descriptor), so the next descriptor must not merge into it.
        with m.If(halt):
            m.d.sync += [p.second.eq(0), p.have_last.eq(0)]
        with m.Elif(p.accept & ~walker.pad):
            m.d.sync += [p.second.eq(0), p.have_last.eq(~walker.last), p.last_word.eq(p.w1),
                         last_first.eq(p.w0), last_two.eq(p.two)]
        with m.Elif(p.accept & walker.last):
            m.d.sync += p.have_last.eq(0)
        return p

    def _fifo(self, m, name, shape, depth, reset=None):
        """A FIFO of ``shape`` (a layout or a plain shape), emptied while ``reset``; returns it and its head."""
        is_layout = isinstance(shape, data.Layout)
        width = shape.size if is_layout else Shape.cast(shape).width
        fifo = SyncFIFOBuffered(width=width, depth=depth)
        m.submodules[name] = fifo if reset is None else ResetInserter(reset)(fifo)
        return fifo, (shape(fifo.r_data) if is_layout else fifo.r_data)

    # Elaboration --------------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        nb = self.nbytes
        lb = _log2(nb)
        ww = self.addr_width - lb
        page_bits = 12 - lb
        bus = self.bus
        spad_width = cfg.spad_addr_width

        # Errors and stopping --------------------------------------------------------------------------------------
        error = Signal()
        error_code = Signal(isa.ErrorCode)
        m.d.comb += [self.error.eq(error), self.error_code.eq(error_code)]
        rd_drain = Signal()
        wr_drain = Signal()
        stop = Signal()
        rd_halt = Signal()
        wr_halt = Signal()
        m.d.comb += [
            stop.eq(self.abort | error),
            rd_halt.eq(stop | rd_drain),
            wr_halt.eq(stop | wr_drain),
        ]

        for ch in ("aw", "ar"):
            m.d.comb += [
                getattr(bus, f"{ch}id").eq(0),
                getattr(bus, f"{ch}size").eq(lb),
                getattr(bus, f"{ch}burst").eq(Burst.INCR),
                getattr(bus, f"{ch}lock").eq(0),
                getattr(bus, f"{ch}cache").eq(0b0011),
                getattr(bus, f"{ch}prot").eq(0),
            ]

        # ===== Read channel ==========================================================================================
        rd_args = self.rd_cmd.payload.args
        rd_start = Signal()
        rd_walker_advance = Signal()
        rd_walk = _Walker(m, "rd", addr_width=self.addr_width, spad_width=spad_width, args=rd_args,
                          start=rd_start, advance=rd_walker_advance, halt=rd_halt, padded=True)
        m.d.comb += [
            self.rd_cmd.ready.eq(~rd_walk.active & ~rd_halt),
            rd_start.eq(self.rd_cmd.valid & self.rd_cmd.ready),
        ]
        # Per-command constants.
        rd_offset = Signal(8)
        rd_length = Signal(8)
        rd_pad_value = Signal(8)
        rd_dest = Signal(ReadDest)
        rd_mask = Signal(nb)
        with m.If(rd_start):
            m.d.sync += [
                rd_offset.eq(rd_args.offset),
                rd_length.eq(rd_args.length),
                rd_pad_value.eq(rd_args.pad_value),
                rd_dest.eq(self.rd_cmd.payload.dest),
                rd_mask.eq(Cat(*[(j >= rd_args.offset) & (j < rd_args.offset + rd_args.length)
                                 for j in range(nb)])),
            ]

        # Line information FIFO (planner -> realigner).
        rd_info_layout = data.StructLayout({
            "addr": unsigned(spad_width), "pad": 1, "reuse": 1, "both": 1, "two": 1, "shift": range(2 * nb),
            "mask": nb, "pad_value": 8, "length": 8, "dest": ReadDest, "last": 1,
        })
        rd_flush = Signal()
        m.d.comb += rd_flush.eq(rd_halt)
        rd_info, rd_info_head = self._fifo(m, "rd_info", rd_info_layout, self.read_buffer, rd_flush)
        rd_plan = self._planner(m, "rd_plan", walker=rd_walk, length=rd_length, halt=rd_halt,
                                line_ready=rd_info.w_rdy, brk_first=Const(0), pairs=True)
        m.d.comb += rd_walker_advance.eq(rd_plan.accept)
        info_in = rd_info_layout(rd_info.w_data)
        m.d.comb += [
            info_in.addr.eq(rd_walk.spad),
            info_in.pad.eq(rd_walk.pad),
            info_in.reuse.eq(rd_plan.reuse),
            info_in.both.eq(rd_plan.both),
            info_in.two.eq(rd_plan.two),
            info_in.shift.eq(nb + rd_walk.ext[:lb] - rd_offset),
            info_in.mask.eq(rd_mask),
            info_in.pad_value.eq(rd_pad_value),
            info_in.length.eq(rd_length),
            info_in.dest.eq(rd_dest),
            info_in.last.eq(rd_walk.last),
            rd_info.w_en.eq(rd_plan.accept),
            rd_plan.reuse.eq(rd_plan.have_last & (rd_plan.w0 == rd_plan.last_word)),
        ]

        # Burst builder and AR.
        rd_reserved = Signal(range(self.read_buffer + 1))      # words of read data that have a place
        rd_outstanding = Signal(range(self.read_buffer + 1))   # R beats still to come
        ar_ready_slot = Signal()
        rd_out_ready = Signal()
        rd_build = _BurstBuilder(m, "rd_burst", word_width=ww, page_bits=page_bits, max_burst=self.max_burst,
                                 word_valid=rd_plan.word_valid, word=rd_plan.word, brk=rd_plan.brk,
                                 end=Const(0), out_ready=rd_out_ready, halt=rd_halt)
        m.d.comb += rd_plan.word_ready.eq(rd_build.word_ready)
        ar_valid = Signal()
        ar_addr = Signal(self.addr_width)
        ar_len = Signal(8)
        m.d.comb += [
            bus.arvalid.eq(ar_valid),
            bus.araddr.eq(ar_addr),
            bus.arlen.eq(ar_len),
            ar_ready_slot.eq(~ar_valid | bus.arready),
            rd_out_ready.eq(ar_ready_slot & (rd_reserved + rd_build.p_len <= self.read_buffer)),
        ]
        rd_load = Signal()
        m.d.comb += rd_load.eq(rd_build.out_valid & rd_out_ready)
        with m.If(rd_load):
            m.d.sync += [
                ar_valid.eq(1),
                ar_addr.eq(Cat(Const(0, lb), rd_build.p_start)),
                ar_len.eq(rd_build.p_len - 1),
            ]
        with m.Elif(bus.arready):
            m.d.sync += ar_valid.eq(0)

        # R -> word FIFO.
        rd_words, rd_word_head = self._fifo(m, "rd_words", unsigned(self.data_width), self.read_buffer, rd_flush)
        r_take = Signal()
        r_error = Signal()
        m.d.comb += [
            bus.rready.eq(rd_words.w_rdy | rd_halt),
            r_take.eq(bus.rvalid & bus.rready),
            r_error.eq(r_take & (bus.rresp != Resp.OKAY) & (bus.rresp != Resp.EXOKAY)),
            rd_words.w_data.eq(bus.rdata),
            rd_words.w_en.eq(r_take & ~r_error & ~rd_halt),
        ]
        rd_pop = Signal()
        rd_pop_count = Signal()
        m.d.comb += rd_pop_count.eq(rd_pop & rd_words.r_rdy)
        m.d.comb += rd_words.r_en.eq(rd_pop)
        with m.If(rd_halt):
            m.d.sync += rd_reserved.eq(0)
        with m.Else():
            m.d.sync += rd_reserved.eq(rd_reserved + Mux(rd_load, rd_build.p_len, 0) - rd_pop_count)
        m.d.sync += rd_outstanding.eq(rd_outstanding + Mux(rd_load, rd_build.p_len, 0) - r_take)

        # Realigner: line info + words -> rd_data. `prev` is the last word of the previous line, `prev_lo` its first.
        prev = Signal(self.data_width)
        prev_lo = Signal(self.data_width)
        have_lo = Signal()
        out_valid = Signal()
        out = Signal(ReadLine(cfg, self.data_width))
        m.d.comb += [self.rd_data.valid.eq(out_valid), self.rd_data.payload.eq(out)]
        out_free = Signal()
        m.d.comb += out_free.eq(~out_valid | self.rd_data.ready)
        head = rd_info_head
        eff_reuse = Signal()
        m.d.comb += eff_reuse.eq(head.reuse | have_lo)
        lo = Signal(self.data_width)
        hi = Signal(self.data_width)
        m.d.comb += [
            lo.eq(Mux(head.both, prev_lo, Mux(eff_reuse, prev, rd_word_head))),
            hi.eq(Mux(head.both, prev, rd_word_head)),
        ]
        needs_head = Signal()
        m.d.comb += needs_head.eq(~head.pad & ~head.both & (head.two | ~eff_reuse))
        shifted = Signal(self.data_width)
        m.d.comb += shifted.eq(Cat(Const(0, self.data_width), lo, hi) >> Cat(Const(0, 3), head.shift))
        line_bytes = []
        for j in range(nb):
            byte = shifted[8 * j:8 * j + 8]
            line_bytes.append(Mux(head.mask[j] & ~head.pad, byte, head.pad_value))
        emit = Signal()
        r_wait = Signal()
        with m.If(rd_info.r_rdy & ~rd_halt):
            with m.If(needs_head & ~rd_words.r_rdy):
                m.d.comb += r_wait.eq(1)
            with m.Elif(~head.pad & ~head.both & ~eff_reuse & head.two):
                # The first of two new words: keep it, take the second next cycle.
                m.d.comb += rd_pop.eq(1)
                m.d.sync += [prev.eq(rd_word_head), have_lo.eq(1)]
            with m.Elif(out_free):
                m.d.comb += [emit.eq(1), rd_pop.eq(needs_head), rd_info.r_en.eq(1)]
                m.d.sync += have_lo.eq(0)
                with m.If(needs_head):
                    m.d.sync += prev.eq(rd_word_head)
                with m.If(~head.pad):
                    m.d.sync += prev_lo.eq(lo)
        with m.If(rd_halt):
            m.d.sync += [out_valid.eq(0), have_lo.eq(0)]
        with m.Elif(emit):
            m.d.sync += [
                out_valid.eq(1),
                out.addr.eq(head.addr),
                out.data.eq(Cat(*line_bytes)),
                out.dest.eq(head.dest),
                out.last.eq(head.last),
            ]
        with m.Elif(self.rd_data.ready):
            m.d.sync += out_valid.eq(0)

        # Read drain: once stopped, wait for every outstanding R beat.
        with m.If(stop):
            m.d.sync += rd_drain.eq(1)
        with m.Elif(rd_drain & ~ar_valid & (rd_outstanding == 0)):
            m.d.sync += rd_drain.eq(0)

        # ===== Write channel =========================================================================================
        wr_args = self.wr_cmd.payload
        wr_start = Signal()
        wr_walker_advance = Signal()
        wr_walk = _Walker(m, "wr", addr_width=self.addr_width, spad_width=0, args=wr_args, start=wr_start,
                          advance=wr_walker_advance, halt=wr_halt, padded=False)
        m.d.comb += [
            self.wr_cmd.ready.eq(~wr_walk.active & ~wr_halt),
            wr_start.eq(self.wr_cmd.valid & self.wr_cmd.ready),
        ]
        wr_length = Signal(8)
        with m.If(wr_start):
            m.d.sync += wr_length.eq(wr_args.length)

        wr_info_layout = data.StructLayout({"shift": range(nb), "length": 8, "reuse": 1, "two": 1, "last": 1})
        wr_info, wr_info_head = self._fifo(m, "wr_info", wr_info_layout, self.write_buffer, wr_halt)
        wr_plan = self._planner(m, "wr_plan", walker=wr_walk, length=wr_length, halt=wr_halt,
                                line_ready=wr_info.w_rdy, brk_first=Const(1))
        m.d.comb += wr_walker_advance.eq(wr_plan.accept)
        winfo_in = wr_info_layout(wr_info.w_data)
        m.d.comb += [
            winfo_in.shift.eq(wr_walk.ext[:lb]),
            winfo_in.length.eq(wr_length),
            winfo_in.reuse.eq(wr_plan.reuse),
            winfo_in.two.eq(wr_plan.two),
            winfo_in.last.eq(wr_walk.last),
            wr_info.w_en.eq(wr_plan.accept),
            # The last line of a descriptor always hands a word to the burst builder, so that the burst with the
            # descriptor's last byte is marked (``end``) and its write response completes the descriptor.
            wr_plan.reuse.eq(wr_plan.have_last & (wr_plan.w0 == wr_plan.last_word) & ~wr_walk.last),
        ]

        aw_queue_layout = data.StructLayout({"start": unsigned(ww), "len": range(self.max_burst + 1), "end": 1})
        aw_queue, aw_head = self._fifo(m, "aw_queue", aw_queue_layout, 4, wr_halt)
        wr_build = _BurstBuilder(m, "wr_burst", word_width=ww, page_bits=page_bits, max_burst=self.max_burst,
                                 word_valid=wr_plan.word_valid, word=wr_plan.word, brk=wr_plan.brk,
                                 end=wr_plan.word_end, out_ready=aw_queue.w_rdy, halt=wr_halt)
        m.d.comb += wr_plan.word_ready.eq(wr_build.word_ready)
        aw_in = aw_queue_layout(aw_queue.w_data)
        m.d.comb += [
            aw_in.start.eq(wr_build.p_start),
            aw_in.len.eq(wr_build.p_len),
            aw_in.end.eq(wr_build.p_end),
            aw_queue.w_en.eq(wr_build.out_valid),
        ]

        # W FIFO, and the AW issue once a burst's beats are all buffered.
        w_layout = data.StructLayout({"data": unsigned(self.data_width), "strb": unsigned(nb)})
        w_flush = Signal()
        w_fifo, w_head = self._fifo(m, "w_fifo", w_layout, self.write_buffer, w_flush)
        w_buffered = Signal(range(self.write_buffer + 1))      # beats in the W FIFO not claimed by an AW
        wr_bursts = Signal(range(self.max_writes + 1))         # AWs loaded whose B has not arrived
        wlen, wlen_head = self._fifo(m, "wlen", range(self.max_burst + 1), self.max_writes)
        bend, bend_head = self._fifo(m, "bend", unsigned(1), self.max_writes)
        aw_valid = Signal()
        aw_addr = Signal(self.addr_width)
        aw_len = Signal(8)
        m.d.comb += [bus.awvalid.eq(aw_valid), bus.awaddr.eq(aw_addr), bus.awlen.eq(aw_len)]
        aw_load = Signal()
        m.d.comb += aw_load.eq(aw_queue.r_rdy & (~aw_valid | bus.awready) & (w_buffered >= aw_head.len)
                               & (wr_bursts < self.max_writes) & wlen.w_rdy & bend.w_rdy & ~wr_halt)
        m.d.comb += [
            aw_queue.r_en.eq(aw_load),
            wlen.w_data.eq(aw_head.len),
            wlen.w_en.eq(aw_load),
            bend.w_data.eq(aw_head.end),
            bend.w_en.eq(aw_load),
        ]
        with m.If(aw_load):
            m.d.sync += [
                aw_valid.eq(1),
                aw_addr.eq(Cat(Const(0, lb), aw_head.start)),
                aw_len.eq(aw_head.len - 1),
            ]
        with m.Elif(bus.awready):
            m.d.sync += aw_valid.eq(0)

        # W sender.
        w_beat = Signal(range(self.max_burst))
        w_take = Signal()
        m.d.comb += [
            bus.wvalid.eq(w_fifo.r_rdy & wlen.r_rdy),
            bus.wdata.eq(w_head.data),
            bus.wstrb.eq(w_head.strb),
            bus.wlast.eq(w_beat == wlen_head - 1),
            w_take.eq(bus.wvalid & bus.wready),
            w_fifo.r_en.eq(w_take),
            wlen.r_en.eq(w_take & bus.wlast),
        ]
        with m.If(w_take):
            m.d.sync += w_beat.eq(Mux(bus.wlast, 0, w_beat + 1))

        # B.
        b_take = Signal()
        b_error = Signal()
        m.d.comb += [
            bus.bready.eq(1),
            b_take.eq(bus.bvalid & bus.bready),
            b_error.eq(b_take & (bus.bresp != Resp.OKAY) & (bus.bresp != Resp.EXOKAY)),
            bend.r_en.eq(b_take),
            self.wr_done.eq(b_take & bend_head & ~wr_halt & ~b_error),
        ]
        m.d.sync += wr_bursts.eq(wr_bursts + aw_load - b_take)

        # Packer: wr_data lines -> bus words with strobes.
        cur_valid = Signal()
        cur_data = Signal(self.data_width)
        cur_strb = Signal(nb)
        phase = Signal()            # 1: the second word of a two-word line
        end_flush = Signal()        # the descriptor's last word is still in `cur`
        winfo = wr_info_head
        line_bits = Cat(self.wr_data.payload.as_value(), Const(0, 2 * self.data_width - 8 * cfg.cols))
        placed = Signal(2 * self.data_width)
        m.d.comb += placed.eq(line_bits << Cat(Const(0, 3), winfo.shift))
        placed_mask = Signal(2 * nb)
        m.d.comb += placed_mask.eq(Cat(*[(j >= winfo.shift) & (j < winfo.shift + winfo.length)
                                         for j in range(2 * nb)]))
        dw = self.data_width
        lo_data, hi_data = placed[:dw], placed[dw:]
        lo_strb, hi_strb = placed_mask[:nb], placed_mask[nb:]
        merged_data = Signal(dw)        # `cur` with the line's first word written over it
        m.d.comb += merged_data.eq(Cat(*[Mux(lo_strb[j], lo_data[8 * j:8 * j + 8], cur_data[8 * j:8 * j + 8])
                                         for j in range(nb)]))
        w_push = Signal()
        push_merged = Signal()
        wr_starve = Signal()
        line_taken = Signal()
        m.d.comb += [
            w_fifo.w_data.eq(Mux(push_merged, Cat(merged_data, cur_strb | lo_strb), Cat(cur_data, cur_strb))),
            w_fifo.w_en.eq(w_push),
        ]
        with m.If(wr_halt):
            m.d.sync += [cur_valid.eq(0), phase.eq(0), end_flush.eq(0)]
        with m.Elif(end_flush):
            with m.If(w_fifo.w_rdy):
                m.d.comb += w_push.eq(1)
                m.d.sync += [cur_valid.eq(0), end_flush.eq(0)]
        with m.Elif(wr_info.r_rdy):
            with m.If(~self.wr_data.valid):
                m.d.comb += wr_starve.eq(1)
            with m.Elif(phase):
                # The second word of a two-word line whose first word was new.
                with m.If(w_fifo.w_rdy):
                    m.d.comb += [w_push.eq(1), line_taken.eq(1)]
                    m.d.sync += [cur_data.eq(hi_data), cur_strb.eq(hi_strb)]
            with m.Elif(winfo.reuse):
                # The line's first word is the one in `cur`: merge into it (and send it on if the line goes on
                # into the next word).
                with m.If(~winfo.two):
                    m.d.comb += line_taken.eq(1)
                    m.d.sync += [cur_data.eq(merged_data), cur_strb.eq(cur_strb | lo_strb)]
                with m.Elif(w_fifo.w_rdy):
                    m.d.comb += [w_push.eq(1), push_merged.eq(1), line_taken.eq(1)]
                    m.d.sync += [cur_data.eq(hi_data), cur_strb.eq(hi_strb)]
            with m.Elif(~cur_valid | w_fifo.w_rdy):
                m.d.comb += w_push.eq(cur_valid)
                m.d.sync += [cur_valid.eq(1), cur_data.eq(lo_data), cur_strb.eq(lo_strb)]
                with m.If(winfo.two):
                    m.d.sync += phase.eq(1)
                with m.Else():
                    m.d.comb += line_taken.eq(1)
            with m.If(line_taken):
                m.d.sync += [phase.eq(0), end_flush.eq(winfo.last)]
        m.d.comb += [
            self.wr_data.ready.eq(line_taken),
            wr_info.r_en.eq(line_taken),
        ]
        with m.If(wr_halt):
            m.d.sync += w_buffered.eq(0)
        with m.Else():
            m.d.sync += w_buffered.eq(w_buffered + w_push - Mux(aw_load, aw_head.len, 0))

        # Write drain: once stopped, wait for the W beats and B responses of every issued AW.
        wr_quiet = Signal()
        m.d.comb += [
            wr_quiet.eq(wr_bursts == 0),
            w_flush.eq(wr_halt & wr_quiet),
        ]
        with m.If(stop):
            m.d.sync += wr_drain.eq(1)
        with m.Elif(wr_drain & wr_quiet):
            m.d.sync += wr_drain.eq(0)

        # ===== Errors, status, counters ==============================================================================
        err_now = Signal()
        err_code_now = Signal(isa.ErrorCode)

        def resp_code(resp):
            return Mux(resp == Resp.DECERR, isa.ErrorCode.BUS_DECERR, isa.ErrorCode.BUS_SLVERR)

        with m.If(r_error):
            m.d.comb += [err_now.eq(1), err_code_now.eq(resp_code(bus.rresp))]
        with m.Elif(b_error):
            m.d.comb += [err_now.eq(1), err_code_now.eq(resp_code(bus.bresp))]
        with m.Elif(rd_plan.window_error | wr_plan.window_error):
            m.d.comb += [err_now.eq(1), err_code_now.eq(isa.ErrorCode.ADDR_WINDOW)]
        with m.If(self.error_clear):
            m.d.sync += [error.eq(0), error_code.eq(isa.ErrorCode.NONE)]
        with m.Elif(err_now & ~error):
            m.d.sync += [error.eq(1), error_code.eq(err_code_now)]

        m.d.comb += self.busy.eq(
            rd_walk.active | rd_build.p_valid | ar_valid | (rd_outstanding != 0) | rd_info.r_rdy | out_valid
            | wr_walk.active | wr_build.p_valid | aw_queue.r_rdy | aw_valid | (wr_bursts != 0)
            | wr_info.r_rdy | cur_valid | w_fifo.r_rdy)

        delivered = self.rd_data.valid & self.rd_data.ready
        rd_line_bytes = Signal(8)
        with m.If(emit):
            m.d.sync += rd_line_bytes.eq(Mux(head.pad, 0, head.length))
        counters = [
            (self.bytes_read, Mux(delivered, rd_line_bytes, 0)),
            (self.bytes_written, Mux(line_taken, winfo.length, 0)),
            (self.rd_beats, r_take),
            (self.wr_beats, w_take),
            (self.rd_stall_cycles, self.rd_data.valid & ~self.rd_data.ready),
            (self.ar_stall_cycles, bus.arvalid & ~bus.arready),
            (self.aw_stall_cycles, bus.awvalid & ~bus.awready),
            (self.w_stall_cycles, bus.wvalid & ~bus.wready),
            (self.r_wait_cycles, r_wait),
            (self.wr_starve_cycles, wr_starve),
        ]
        for counter, increment in counters:
            with m.If(self.counter_clear):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + increment)
        return m
