"""Scratchpad: the double-buffered on-chip SRAM that holds int8 activations and weights.

The scratchpad is ``depth`` lines of ``width`` int8 elements (one line is one activation vector or one weight-tile
row of the systolic array). It has one write side, for the load side (DMA, or the post-processing unit writing a
layer's output back), and ``read_ports`` independent read sides for the compute side (by default two: one feeding the
array's activation stream and one its weight stream).

Addressing is absolute and the *half* of a line is its top address bit::

    addr = | half | bank-in-half | line-in-bank |
             1 bit  log2(banks)-1   log2(depth/banks)

Lines ``0 .. depth/2 - 1`` are half 0 and ``depth/2 .. depth - 1`` half 1. Double-buffering is a convention between
the load side and the compute side (see ``docs/memories.md``): while the compute side reads tile ``i`` from one half,
the load side writes tile ``i + 1`` into the other, and the controller *swaps* the halves (flips the top address bit
it uses on each side) once both are done. No hardware state needs to be kept in step with the controller.

Physically the scratchpad is ``banks`` memories of ``depth/banks`` lines (the top address bits select the bank), each
with one write port and one read port, so that a write and reads to different banks, or to the same bank, proceed
in the same cycle. Read ports contend only when they address the same bank in the same cycle; the bank then serves
one of them (round robin) and the others wait.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import block_ram
from .config import DatapathConfig
from .credit import CreditFIFO
from .pe import register_copy

__all__ = ["WriteRequest", "ReadRequest", "ReadResponse", "Scratchpad"]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_pow2(value):
    return _is_int(value) and value > 0 and value & (value - 1) == 0


class WriteRequest(data.StructLayout):
    """Payload of the scratchpad write stream: one line write.

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.input_shape``).
    width : int
        Elements per line.
    addr_width : int
        Width of a line address.
    byte_mask : bool
        Whether the request has a ``mask`` member.

    Members
    -------
    addr : unsigned(addr_width)
        Line address (top bit: the half).
    data : ArrayLayout(signed(input_width), width)
        The line.
    mask : unsigned(width)
        Only with ``byte_mask``: element ``k`` is written when bit ``k`` is set; the others keep their value.
    """

    def __init__(self, config, width, addr_width, byte_mask=False):
        members = {
            "addr": unsigned(addr_width),
            "data": data.ArrayLayout(config.input_shape, width),
        }
        if byte_mask:
            members["mask"] = unsigned(width)
        super().__init__(members)


class ReadRequest(data.StructLayout):
    """Payload of a scratchpad read-request stream.

    Parameters
    ----------
    addr_width : int
        Width of a line address.

    Members
    -------
    addr : unsigned(addr_width)
        Line address (top bit: the half).
    last : unsigned(1)
        A tag returned unchanged with the line (typically: last vector of a tile), so that a response can be handed
        straight to the systolic array's activation stream.
    """

    def __init__(self, addr_width):
        super().__init__({
            "addr": unsigned(addr_width),
            "last": unsigned(1),
        })


class ReadResponse(data.StructLayout):
    """Payload of a scratchpad read-response stream: one line and the tag of its request.

    With ``width == config.rows`` this layout is the systolic array's ``ActivationBeat``, so a read port connects to
    the array's activation stream with :func:`wiring.connect`; its ``data`` member is a ``WeightBeat`` when
    ``width == config.cols``.

    Parameters
    ----------
    config : DatapathConfig
        Element shape (``config.input_shape``).
    width : int
        Elements per line.

    Members
    -------
    data : ArrayLayout(signed(input_width), width)
        The line.
    last : unsigned(1)
        ``last`` of the request.
    """

    def __init__(self, config, width):
        super().__init__({
            "data": data.ArrayLayout(config.input_shape, width),
            "last": unsigned(1),
        })


class Scratchpad(wiring.Component):
    """Double-buffered, banked int8 scratchpad with one write stream and ``read_ports`` read streams.

    Write side: a beat on ``wr`` writes ``wr.payload.data`` to line ``wr.payload.addr`` (only the elements selected
    by ``mask`` with ``byte_mask``); the write reaches the block RAM from a register, one cycle after the beat is
    accepted, as the reads reach it one cycle after their grant (so the order below holds). ``wr.ready`` is always
    high.

    Read side: read port ``p`` is a pair of streams. A request accepted on ``rd_req[p]`` enters the port's
    two-entry request queue (``rd_req[p].ready`` is high while it has room: a flip-flop); the queue's oldest request
    is *granted* (``rd_grant[p]``) when the port has a credit and wins its bank, at the earliest in the cycle after
    its acceptance. A request accepted in cycle ``t`` and granted in ``t + 1`` returns its line on ``rd_resp[p]`` from
    cycle ``t + latency`` (``t + 5``; ``rd_resp[p].valid`` is high then, if the lines before it have been taken;
    each cycle the grant waits adds one), with the request's ``last``. Responses come back in request order through a
    response FIFO of ``fifo_depth`` lines per port; a port may have that many lines granted and not yet taken
    (credits). A port sustains one line per cycle while its consumer is ready and it wins its bank; a stalled consumer
    never loses or repeats data, and its ``ready`` reaches only its FIFO and credit count, never the arbitration, which
    works on flip-flops only (the queues' heads and the credits), not on the requesters' logic (a timing path).

    Ordering: a read observes every write accepted in a cycle before its grant; a write accepted in the cycle of the
    grant is not observed (the read returns the line before the write). Without a bank conflict the grant is the
    cycle after the acceptance, so a read accepted in cycle ``t`` sees the writes of cycles up to ``t``.

    Bank conflicts: each bank serves one read per cycle. When several ports' queue heads address the same bank, it
    goes to one of them round robin, starting after the port it served last (a port without a credit then loses its
    turn); the others wait in their queues. Writes never conflict with reads.

    Parameters
    ----------
    config : DatapathConfig, optional
        Datapath parameters. Default: ``DatapathConfig()``.
    width : int, optional
        Elements per line. Default: ``config.rows``.
    depth : int, optional
        Lines, a power of two, at least 2 (two halves). Default: ``config.spad_depth``.
    banks : int, optional
        Physical memories, a power of two dividing ``depth``. Default: ``config.spad_banks``.
    read_ports : int, optional
        Independent read ports. Default 2 (activations and weights).
    byte_mask : bool, optional
        Give write requests a per-element ``mask``. Default ``False`` (whole-line writes).

    Members
    -------
    wr : In(stream.Signature(WriteRequest(config, width, addr_width, byte_mask)))
        Line writes.
    rd_req : In(stream.Signature(ReadRequest(addr_width))).array(read_ports)
        Read requests, per read port.
    rd_resp : Out(stream.Signature(ReadResponse(config, width))).array(read_ports)
        Read responses, per read port.
    rd_busy : Out(read_ports)
        Bit ``p``: port ``p`` has lines requested and not yet taken from ``rd_resp[p]`` (in its request queue, the
        read pipeline or its response FIFO).
    rd_grant : Out(read_ports)
        Bit ``p``: port ``p``'s oldest queued request is granted in this cycle (its bank reads it in the next).

    Attributes
    ----------
    config : DatapathConfig
    width, depth, banks, read_ports : int
    addr_width : int
        Width of a line address, ``log2(depth)``.
    half_depth : int
        Lines per half, ``depth // 2``; the first line of half ``h`` is ``h * half_depth``.
    byte_mask : bool
    latency : int
        Cycles from an accepted read request to its response without a bank conflict, 5: the request queue (the
        grant is decided on its head, a flip-flop), the bank's address register (the arbitration ends in a
        flip-flop, not in the block RAM's address pins, which are far apart on the die), the block RAM's read, a
        register behind each bank (block RAM read data go to a flip-flop and nothing else), the port's response
        FIFO.
    fifo_depth : int
        Entries of each port's response FIFO, 5: also the lines a port may have granted and not yet taken (four
        cycles from a grant to its response, plus one), so that a port sustains one line per cycle.
    """

    latency = 5
    fifo_depth = 5

    def __init__(self, config=None, *, width=None, depth=None, banks=None, read_ports=2, byte_mask=False):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        if width is None:
            width = config.rows
        if depth is None:
            depth = config.spad_depth
        if banks is None:
            banks = config.spad_banks

        if not _is_int(width) or width <= 0:
            raise TypeError(f"Line width must be a positive integer, not {width!r}")
        if not _is_pow2(depth) or depth < 2:
            raise ValueError(f"Depth must be a power of two of at least 2 (two halves), not {depth!r}")
        if not _is_pow2(banks):
            raise ValueError(f"Bank count must be a power of two, not {banks!r}")
        if banks > depth:
            raise ValueError(f"Bank count {banks} exceeds the depth {depth}")
        if not _is_int(read_ports) or read_ports <= 0:
            raise TypeError(f"Read port count must be a positive integer, not {read_ports!r}")
        if not isinstance(byte_mask, bool):
            raise TypeError(f"Byte mask must be a bool, not {byte_mask!r}")

        self.config = config
        self.width = width
        self.depth = depth
        self.banks = banks
        self.read_ports = read_ports
        self.byte_mask = byte_mask
        self.addr_width = (depth - 1).bit_length()
        self.half_depth = depth // 2

        super().__init__({
            "wr":      In(stream.Signature(WriteRequest(config, width, self.addr_width, byte_mask))),
            "rd_req":  In(stream.Signature(ReadRequest(self.addr_width))).array(read_ports),
            "rd_resp": Out(stream.Signature(ReadResponse(config, width))).array(read_ports),
            "rd_busy": Out(read_ports),
            "rd_grant": Out(read_ports),
        })

    @staticmethod
    def _request_queue(m, req, name, decode):
        """A two-entry queue of ``req``'s beats, all registers: ``req.ready`` (room for a beat) is a flip-flop, and
        the returned head (``valid``, ``payload``, and ``ready`` to set: the head leaves) is one too. It passes a
        beat per cycle while the head leaves every cycle.

        The head also has ``want``, a register holding ``decode(payload)`` of a valid head and 0 otherwise
        (``decode`` gives a bit vector of a payload: the one-hot bank of the request), loaded beside the head from
        a register of the second entry's or from the new beat: the arbitration starts at it, one LUT level
        earlier than at a compare of the head's address."""
        shape = req.payload.shape()
        width = len(decode(req.payload))
        head = SimpleNamespace(valid=Signal(name=f"{name}_valid"), ready=Signal(name=f"{name}_taken"),
                               payload=Signal(shape, name=f"{name}_head"), want=Signal(width, name=f"{name}_want"))
        second = Signal(shape, name=f"{name}_second")
        second_want = Signal(width, name=f"{name}_second_want")
        second_valid = Signal(name=f"{name}_second_valid")
        room = Signal(name=f"{name}_room", init=1)      # ~second_valid
        push = req.valid & req.ready
        pop = head.valid & head.ready
        m.d.comb += req.ready.eq(room)
        # The second entry loads whatever is offered while it is empty (its enable the flip-flop `room`, not the
        # handshakes: `req.valid` comes from a requester far away, 11 endpoints up to 10.2 ns at 16 x 16); only
        # `second_valid` says whether it holds a beat.
        with m.If(room):
            m.d.sync += [second.eq(req.payload), second_want.eq(decode(req.payload))]
        with m.If(~head.valid | pop):
            # The head is free or leaving: the second entry moves up, else the new beat comes straight in.
            m.d.sync += [
                head.valid.eq(second_valid | push),
                head.payload.eq(Mux(second_valid, second, req.payload)),
                head.want.eq(Mux(second_valid, second_want, Mux(push, decode(req.payload), 0))),
            ]
            m.d.sync += [second_valid.eq(0), room.eq(1)]     # (no beat enters while the second entry is full)
        with m.Elif(push):
            m.d.sync += [second_valid.eq(1), room.eq(0)]
        return head

    def elaborate(self, platform):
        m = Module()

        bank_bits = (self.banks - 1).bit_length()
        local_bits = self.addr_width - bank_bits
        line_shape = data.ArrayLayout(self.config.input_shape, self.width)

        def split(addr):
            """(bank, line in bank) of a line address."""
            bank = addr[local_bits:] if bank_bits else Const(0, 1)
            return bank, addr[:local_bits]

        # A read may meet the write of its line at the same clock edge and must then see the old contents (the
        # double-buffering rule lets the load side overwrite a line from the cycle its last read is granted), so
        # the banks keep that read-during-write result (`bram.block_ram`; Yosys emulates it on ECP5).
        read_addrs, read_data, wports = [], [], []
        for b in range(self.banks):
            write, addr, rd = block_ram(m, name=f"bank{b}", shape=line_shape, depth=self.depth // self.banks,
                                        platform=platform, collision="old",
                                        granularity=1 if self.byte_mask else None)
            wports.append(write)
            read_addrs.append(addr)
            read_data.append(rd)

        # Write side: through a register, one cycle late like the reads ------------------------------------------
        # Each bank has its own register of the write's select, line and mask (the block RAM's emulated
        # read-during-write compares them with its read address: one shared request register was 9.1 ns of routing
        # away from bank 3 at 16 x 16); the data register is shared.
        m.d.comb += self.wr.ready.eq(1)
        wr_data = Signal.like(self.wr.payload.data, name="wr_data")
        m.d.sync += wr_data.eq(self.wr.payload.data)
        wr_bank, wr_line = split(self.wr.payload.addr)
        for b, wp in enumerate(wports):
            sel = Signal(name=f"wr_sel{b}")
            m.d.sync += sel.eq(self.wr.valid & (wr_bank == b))
            # (copies of one value: `register_copy`, which synthesis does not merge)
            line = register_copy(m, wr_line, name=f"wr_line{b}", platform=platform)
            if self.byte_mask:
                en = Mux(sel, register_copy(m, self.wr.payload.mask, name=f"wr_mask{b}", platform=platform), 0)
            else:
                en = sel
            m.d.comb += [wp.addr.eq(line), wp.data.eq(wr_data), wp.en.eq(en)]

        # Read side: per-port request queues and credits ---------------------------------------------------------
        # A request enters a two-entry queue of its port (`rd_req.ready` is a flip-flop: the queue has room), and
        # the arbitration grants the queues' heads, from flip-flops too: neither a requester's logic nor its
        # `ready` is part of the arbitration's path. A granted request needs a credit of its port's response FIFO
        # (a CreditFIFO), a register compare, so a consumer's `ready` never reaches the arbitration either.
        ports = self.read_ports
        room = []
        req_bank = []
        fifos = []
        heads = []
        for p in range(ports):
            fifo = CreditFIFO(ReadResponse(self.config, self.width), self.fifo_depth)
            m.submodules[f"resp_fifo{p}"] = fifo
            wiring.connect(m, fifo.o, wiring.flipped(self.rd_resp[p]))
            fifos.append(fifo)
            room.append(fifo.credit)
            head = self._request_queue(m, self.rd_req[p], f"req{p}",
                                       lambda payload: Cat(split(payload.addr)[0] == b for b in range(self.banks)))
            m.d.comb += self.rd_busy[p].eq(fifo.busy | head.valid)
            heads.append(head)
            req_bank.append(split(head.payload.addr)[0])

        # Per-bank round-robin arbitration -----------------------------------------------------------------------
        # A bank goes to a queue head that addresses it, whether or not its port has a credit (the credit is
        # checked after the grant, below): the arbitration then depends on the queues' registers only. A port
        # granted without a credit wastes the bank for that cycle, and the round robin moves on past it.
        grant = [[Signal(name=f"grant_b{b}_p{p}") for p in range(ports)] for b in range(self.banks)]
        for b in range(self.banks):
            want = [Signal(name=f"want_b{b}_p{p}") for p in range(ports)]
            for p in range(ports):
                m.d.comb += want[p].eq(heads[p].want[b])
            if ports == 1:
                m.d.comb += grant[b][0].eq(want[0])
                continue
            prio = Signal(range(ports), name=f"prio_b{b}")  # port with the highest priority at this bank
            with m.Switch(prio):
                for first in range(ports):
                    with m.Case(first):
                        order = [(first + i) % ports for i in range(ports)]
                        for i, p in enumerate(order):
                            blocked = Const(0, 1)
                            for q in order[:i]:
                                blocked = blocked | want[q]
                            m.d.comb += grant[b][p].eq(want[p] & ~blocked)
            for p in range(ports):
                with m.If(grant[b][p]):
                    m.d.sync += prio.eq((p + 1) % ports)

        # Bank read ports: the granted address goes into a register, then into the block RAM; the read data
        # drive nothing but a flip-flop ------------------------------------------------------------------------
        bank_data = []
        # (The banks read every cycle: no clock enable on the read data or their register.)
        for b, (read_addr, rd) in enumerate(zip(read_addrs, read_data)):
            addr = 0
            for p in range(ports):      # (the grants of a bank are one-hot: an OR of ANDs, not a chain of muxes)
                addr = addr | Mux(grant[b][p], split(heads[p].payload.addr)[1], 0)
            bank_addr = Signal(local_bits, name=f"bank{b}_addr")
            m.d.sync += bank_addr.eq(addr)
            m.d.comb += read_addr.eq(bank_addr)
            registered = Signal(line_shape, name=f"bank{b}_data", reset_less=True)   # data: no reset
            m.d.sync += registered.eq(rd)
            bank_data.append(registered)

        # Response side: grant (t) -> bank address register (t + 1) -> bank read data (t + 2) -> bank register
        # (t + 3), selected into the port's response FIFO -> response (t + 4) -------------------------------------
        for p in range(ports):
            head = heads[p]
            accept = Signal(name=f"accept{p}")
            m.d.comb += [
                accept.eq(room[p] & Cat(grant[b][p] for b in range(self.banks)).any()),
                head.ready.eq(accept),
                self.rd_grant[p].eq(accept),
            ]
            valid, bank, last = accept, req_bank[p], head.payload.last
            for i in range(1, 3):
                s_valid, s_bank, s_last = (Signal(name=f"s{i}_valid{p}"), Signal(range(self.banks),
                                           name=f"s{i}_bank{p}"), Signal(name=f"s{i}_last{p}"))
                m.d.sync += [s_valid.eq(valid), s_bank.eq(bank), s_last.eq(last)]
                valid, bank, last = s_valid, s_bank, s_last
            s3_valid, s3_last = Signal(name=f"s3_valid{p}"), Signal(name=f"s3_last{p}")
            m.d.sync += [s3_valid.eq(valid), s3_last.eq(last)]
            # Stage 3's bank select, one copy per 4 elements of the line: no single register drives the whole
            # line's multiplexers.
            selected = []
            for k in range(0, self.width, 4):
                copy = register_copy(m, bank, name=f"s3_bank{p}_{k // 4}", platform=platform)
                elements = []
                for e in range(k, min(k + 4, self.width)):
                    value = bank_data[0][e]
                    for b in range(1, self.banks):
                        value = Mux(copy == b, bank_data[b][e], value)
                    elements.append(value)
                selected += elements
            line = Cat(*selected)
            valid, last = s3_valid, s3_last

            fifo = fifos[p]
            m.d.comb += [
                fifo.reserve.eq(accept),
                fifo.w_en.eq(valid),
                fifo.w_data.data.eq(line),
                fifo.w_data.last.eq(last),
            ]

        return m
