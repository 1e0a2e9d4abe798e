"""The control side of the datapath: the command sequencer and the address generators it drives.

:class:`Sequencer` executes the command stream of :mod:`haneul.rtl.commands`. It does not move data itself: it hands
*runs* to small engines that do, and keeps the order that the commands imply.

* A ``MATMUL`` becomes three runs, handed out together: a weight run (``weight_tile_lines`` scratchpad lines) to the
  weight :class:`LineReader`, an activation run (``count`` lines) to the activation :class:`LineReader`, and a result
  run (first accumulator line, accumulate flag) to the :class:`ResultWriter`, through small queues. The engines run
  ahead of each other as far as the systolic array lets them: the weights of the next tile stream into the array's
  shadow registers while the current tile's activations stream through it.
* A ``REQUANT`` goes into the output queue. It starts once every earlier ``MATMUL`` has written its last result
  (a per-entry count of the tiles still outstanding when it was queued) and the accumulator's read-out is idle;
  if ``load_params`` is set it first passes one beat of the parameter stream to the requantiser.
* An ``ADD`` or a ``POOL`` goes into the same queue, so that the output stream keeps command order; it starts once
  the output side has drained, and hands line runs to the vector line readers (two operands for ``ADD``, one run
  with windows for ``POOL``), after its parameters (an adder parameter beat, or the ``POOL`` mode and clamp
  bounds). ``out_sel`` tells the datapath which unit feeds the output stream.
* A ``DWCONV`` goes into the same queue too. It starts once the output side has drained, after its requantiser
  parameters (``load_params``, as for ``REQUANT``), and hands its arguments to the depthwise column reader
  (``dw_run``); ``out_sel`` then routes the depthwise unit's sums through the requantiser to the output stream.
* A ``MATMUL`` whose accumulator lines overlap a queued or running read-out waits until that read-out is over
  (write-after-read). Read-after-write (a ``REQUANT`` after the ``MATMUL`` s that compute its lines) is the tile
  count above; write-after-write between ``MATMUL`` s is kept by the accumulator, which applies its write beats in
  order. So the datapath computes what executing the commands one at a time would compute.
* A ``FENCE`` waits until nothing is in flight.
* An illegal command (:class:`~haneul.rtl.commands.ErrorCode`) sets ``error`` and ``error_code``; from then on every
  command is consumed and discarded until ``error_clear``. Commands already handed out complete normally, so the
  datapath always returns to idle.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .accumulator import AccumulatorWrite, ReadCommand
from .commands import (COUNT_WIDTH, DWCONV_KERNEL, POOL_MAX_WINDOW, Arguments, CommandWord, DwconvArgs, ErrorCode,
                       Opcode, weight_lines_per_row, weight_tile_lines)
from .config import DatapathConfig
from .pe import register_copy
from .scratchpad import ReadRequest, ReadResponse
from .systolic import ResultBeat, WeightBeat

#: The units that ``out_sel`` may select, as the fields of ``out_is``.
OUT_UNITS = ("requant", "add", "pool", "dwconv")

__all__ = ["WINDOW_WIDTH", "LineRun", "ResultRun", "LineReader", "WeightPacker", "ResultWriter", "Queue", "Sequencer"]

#: Width of the ``window`` of the runs of the vector-unit line reader (``POOL`` windows).
WINDOW_WIDTH = POOL_MAX_WINDOW.bit_length()


class LineRun(data.StructLayout):
    """A run of consecutive memory lines: the work unit of a :class:`LineReader`.

    Parameters
    ----------
    addr_width : int
        Width of a line address.
    count_width : int
        Width of the line count. Default :data:`~haneul.rtl.commands.COUNT_WIDTH`.
    window_width : int
        Width of the ``window`` member; 0 (default): no ``window`` member.

    Members
    -------
    addr : unsigned(addr_width)
        First line.
    count : unsigned(count_width)
        Number of lines; 0 reads nothing.
    window : unsigned(window_width)
        Only with ``window_width``: ``last`` marks every ``window``-th line too (0: only the last line of the run).
    """

    def __init__(self, addr_width, count_width=COUNT_WIDTH, window_width=0):
        members = {
            "addr":  unsigned(addr_width),
            "count": unsigned(count_width),
        }
        if window_width:
            members["window"] = unsigned(window_width)
        super().__init__(members)


class ResultRun(data.StructLayout):
    """Where the results of one ``MATMUL`` tile go: the work unit of a :class:`ResultWriter`.

    Parameters
    ----------
    addr_width : int
        Width of an accumulator line address.

    Members
    -------
    addr : unsigned(addr_width)
        Accumulator line of the first result vector of the tile.
    accumulate : unsigned(1)
        Add the results to the lines instead of overwriting them.
    """

    def __init__(self, addr_width):
        super().__init__({
            "addr":       unsigned(addr_width),
            "accumulate": unsigned(1),
        })


class LineReader(wiring.Component):
    """Address generator: turns each run on ``run`` into read requests for its lines, in order.

    A run ``{addr, count}`` becomes the requests ``addr, addr + 1, ..., addr + count - 1`` (modulo the address
    width), the last one with ``last`` set (and, with windows, every ``window``-th one). One request per cycle while
    ``req.ready`` is high, also across runs: a run waits in a one-entry ``next`` register (``run.ready`` is high
    while that is empty) and starts in the cycle after the last request of the current run is accepted, or in the
    cycle after it arrives when the reader is idle. So runs of two lines or more follow each other without a gap; the
    reader takes at most one run every other cycle.

    Parameters
    ----------
    addr_width : int
        Width of a line address.
    count_width : int
        Width of the line count. Default :data:`~haneul.rtl.commands.COUNT_WIDTH`.
    window_width : int
        Width of the run's ``window``; 0 (default): runs have no windows.

    Members
    -------
    run : In(stream.Signature(LineRun(addr_width, count_width, window_width)))
        Runs to read.
    req : Out(stream.Signature(ReadRequest(addr_width)))
        Read requests (the scratchpad's ``rd_req`` payload).
    busy : Out(1)
        A run is in progress or waiting (requests remain to be sent).
    """

    def __init__(self, addr_width, count_width=COUNT_WIDTH, window_width=0):
        self.addr_width = addr_width
        self.count_width = count_width
        self.window_width = window_width
        super().__init__({
            "run":  In(stream.Signature(LineRun(addr_width, count_width, window_width))),
            "req":  Out(stream.Signature(ReadRequest(addr_width))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # A run is taken into the `next` register while that is empty (so `run.ready` is a flip-flop's output), and
        # moves on into the current run when that ends; the requests of consecutive runs follow each other without
        # a gap, and the scratchpad's `ready` reaches no further than this reader's own registers.
        next_ = Signal(self.run.payload.shape())
        next_valid = Signal()
        active = Signal()
        addr = Signal(self.addr_width)
        remaining = Signal(self.count_width)
        issue = Signal()
        final = Signal()
        boundary = Signal()
        advance = Signal()
        m.d.comb += [
            final.eq(remaining == 1),
            self.busy.eq(active | next_valid),
            self.req.valid.eq(active),
            self.req.payload.addr.eq(addr),
            self.req.payload.last.eq(final | boundary),
            issue.eq(self.req.valid & self.req.ready),
            advance.eq(next_valid & (~active | (issue & final))),
            self.run.ready.eq(~next_valid),
        ]
        with m.If(self.run.valid & self.run.ready):
            m.d.sync += [next_.eq(self.run.payload), next_valid.eq(1)]
        with m.Elif(advance):
            m.d.sync += next_valid.eq(0)
        # The registers' next values if a request is issued this cycle and if not are both computed from
        # registers; `issue` (the scratchpad's arbitration) only chooses between them.
        take_next = Signal()            # the waiting run starts if a request is issued
        m.d.comb += take_next.eq(next_valid & final)
        with m.If(issue):
            m.d.sync += [
                addr.eq(Mux(take_next, next_.addr, addr + 1)),
                remaining.eq(Mux(take_next, next_.count, remaining - 1)),
                active.eq(Mux(take_next, next_.count != 0, ~final)),
            ]
        if self.window_width:
            window = Signal(self.window_width)
            position = Signal(self.window_width)        # lines of the current window requested so far
            m.d.comb += boundary.eq((window != 0) & (position == window - 1))
            with m.If(issue):
                m.d.sync += position.eq(Mux(boundary, 0, position + 1))
            with m.If(advance):
                m.d.sync += [
                    window.eq(next_.window),
                    position.eq(0),
                ]
        with m.If(next_valid & ~active):
            m.d.sync += [
                addr.eq(next_.addr),
                remaining.eq(next_.count),
                active.eq(next_.count != 0),
            ]
        return m


class WeightPacker(wiring.Component):
    """Packs scratchpad lines of ``rows`` elements into weight rows of ``cols`` elements.

    A weight row is :func:`~haneul.rtl.commands.weight_lines_per_row` consecutive lines (``ceil(cols / rows)``);
    element ``n`` of the row is element ``n % rows`` of line ``n // rows``, and the elements past ``cols`` in the last
    line are dropped. With ``cols <= rows`` every line is one row (its first ``cols`` elements) and the packer is
    wires only. Otherwise the first lines of a row wait in registers and the row leaves with its last line, so the
    packer adds no latency.

    Parameters
    ----------
    config : DatapathConfig

    Members
    -------
    i : In(stream.Signature(ReadResponse(config, config.rows)))
        Scratchpad lines (``last`` is ignored).
    o : Out(stream.Signature(WeightBeat(config)))
        Weight rows, to the systolic array's ``weight`` stream.
    """

    def __init__(self, config):
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        self.config = config
        super().__init__({
            "i": In(stream.Signature(ReadResponse(config, config.rows))),
            "o": Out(stream.Signature(WeightBeat(config))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        parts = weight_lines_per_row(cfg)
        line = self.i.payload.data
        if parts == 1:
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            for n in range(cfg.cols):
                m.d.comb += self.o.payload[n].eq(line[n])
            return m

        part = Signal(range(parts))
        held = [Signal(data.ArrayLayout(cfg.input_shape, cfg.rows), name=f"part{p}") for p in range(parts - 1)]
        closing = Signal()
        m.d.comb += [
            closing.eq(part == parts - 1),
            self.o.valid.eq(self.i.valid & closing),
            self.i.ready.eq(~closing | self.o.ready),
        ]
        for n in range(cfg.cols):
            p, k = divmod(n, cfg.rows)
            m.d.comb += self.o.payload[n].eq(line[k] if p == parts - 1 else held[p][k])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += part.eq(part + 1)
            with m.If(closing):
                m.d.sync += part.eq(0)
            for p in range(parts - 1):
                with m.If(part == p):
                    m.d.sync += held[p].eq(line)
        return m


class ResultWriter(wiring.Component):
    """Tags the systolic array's result vectors with their accumulator line and ``accumulate`` flag.

    The results of a tile (a run of vectors ending with ``last``) go to consecutive lines from the ``addr`` of its
    run; a run is taken from ``run`` into a register while none is held or as the previous tile's last vector
    arrives (so a tile's first result may arrive the cycle after its run). A tagged beat leaves ``wr`` from a
    register, the cycle after its result; ``done`` pulses with the tile's last beat on ``wr``.

    Neither stream has backpressure (the array cannot stall and the accumulator takes a beat every cycle), so a
    tile's run must be on ``run`` before its first result arrives: the sequencer hands a tile's result run out no
    later than its activation run, and the array returns no result of a tile before it has taken the tile's first
    activation vector. (A result that arrives without a run would be written nowhere.)

    Parameters
    ----------
    config : DatapathConfig
    addr_width : int
        Width of an accumulator line address.

    Members
    -------
    run : In(stream.Signature(ResultRun(addr_width)))
        One run per tile, in tile order.
    result : In(stream.Signature(ResultBeat(config), always_ready=True))
        The systolic array's results.
    wr : Out(stream.Signature(AccumulatorWrite(config, config.cols, addr_width), always_ready=True))
        The accumulator's write stream.
    done : Out(1)
        The last result vector of a tile is on ``wr`` in this cycle.
    """

    def __init__(self, config, addr_width):
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        self.config = config
        self.addr_width = addr_width
        super().__init__({
            "run":    In(stream.Signature(ResultRun(addr_width))),
            "result": In(stream.Signature(ResultBeat(config), always_ready=True)),
            "wr":     Out(stream.Signature(AccumulatorWrite(config, config.cols, addr_width), always_ready=True)),
            "done":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # The tagged beat leaves through a register (the line address is a sum of the run's address and a count:
        # registered, it does not run on into the accumulator's block RAM address). The head run is held in a
        # register of its own, loaded from `run` when empty or as the tile ends.
        index = Signal(self.addr_width)
        take = self.result.valid
        last = Signal()
        cur = Signal(self.run.payload.shape())
        cur_valid = Signal()
        m.d.comb += [
            self.run.ready.eq(~cur_valid | (take & self.result.payload.last)),
            self.done.eq(self.wr.valid & last),
        ]
        with m.If(self.run.ready):
            m.d.sync += [cur_valid.eq(self.run.valid), cur.eq(self.run.payload)]
        # The line's data (a whole result vector) loads every cycle, beat or not: no clock enable and, without a
        # reset, no LUT in front of it.
        line = Signal.like(self.wr.payload.data, name="line", reset_less=True)
        m.d.comb += self.wr.payload.data.eq(line)
        m.d.sync += [
            self.wr.valid.eq(take),
            line.eq(self.result.payload.data),
        ]
        with m.If(take):
            m.d.sync += [
                self.wr.payload.addr.eq(cur.addr + index),
                self.wr.payload.accumulate.eq(cur.accumulate),
                last.eq(self.result.payload.last),
                index.eq(Mux(self.result.payload.last, 0, index + 1)),
            ]
        return m


class Queue(wiring.Component):
    """A first-in first-out queue of stream beats (a :class:`~amaranth.lib.fifo.SyncFIFO` with stream ports).

    A beat accepted on ``i`` is available on ``o`` from the next cycle, or with ``buffered`` from the cycle after
    (a :class:`~amaranth.lib.fifo.SyncFIFOBuffered`: ``o.payload`` and ``o.valid`` then come from registers, not
    from the LUT RAM's read and a level compare, for a consumer that decides on the payload).

    Parameters
    ----------
    shape : shape-castable
        Payload shape.
    depth : int
        Entries.
    buffered : bool
        Output from registers (default ``False``).

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape, depth, *, buffered=False):
        self.shape = shape
        self.depth = depth
        self.buffered = buffered
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        fifo_type = SyncFIFOBuffered if self.buffered else SyncFIFO
        m.submodules.fifo = fifo = fifo_type(width=Shape.cast(self.shape).width, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        return m


class _OutputEntry(data.StructLayout):
    """A queued output command (``REQUANT``, ``ADD``, ``POOL``, ``DWCONV``): its opcode and arguments, for a
    ``REQUANT`` the end of its read-out (``acc_addr + count``) and the number of earlier ``MATMUL`` tiles it still
    waits for."""

    def __init__(self, config, pending_shape):
        super().__init__({
            "opcode":  Opcode,
            "args":    Arguments(config),
            "end":     unsigned(COUNT_WIDTH + 1),
            "pending": pending_shape,
        })


def _stage(m, port, name, hold=None):
    """A one-entry register stage in front of the output stream ``port``; with ``hold``, it offers its beat only
    while ``hold`` is low.

    Returns the stream the sequencer's logic drives (an object with ``valid``, ``ready`` and ``payload``) and the
    stage's ``full`` flag. Its ``ready`` is ``empty`` (``~full``), a flip-flop: the consumer's ``ready`` (a line
    reader's, which depends on the scratchpad's arbitration) stops at the stage instead of running through the start
    decision. A beat takes at least two cycles to pass, which hand-outs (one per command) never notice.

    The payload register loads whenever the stage is empty, not on the handshake: its clock enable is then the
    output of a flip-flop (``empty``), not the sequencer's start decision; the beat that enters is the one loaded in
    the cycle of its handshake. (Parameter beats, over 1 100 bits, pass through :func:`_offer` instead, without a
    payload register.)
    """
    inner = SimpleNamespace(valid=Signal(name=f"{name}_valid"), ready=Signal(name=f"{name}_ready"),
                            payload=Signal(port.payload.shape(), name=f"{name}_payload"))
    full = Signal(name=f"{name}_full")
    empty = Signal(name=f"{name}_empty", init=1)
    m.d.comb += [
        inner.ready.eq(empty),
        port.valid.eq(full if hold is None else full & ~hold),
    ]
    with m.If(port.valid & port.ready):
        m.d.sync += [full.eq(0), empty.eq(1)]
    with m.If(inner.valid & inner.ready):
        m.d.sync += [full.eq(1), empty.eq(0)]
    with m.If(empty):
        m.d.sync += port.payload.eq(inner.payload)
    return inner, full


def _offer(m, port, source, name):
    """A one-entry stage for a beat passed on from the input stream ``source`` (a parameter beat), without a
    payload register: ``source`` holds its payload until it is accepted, so ``port`` offers ``source``'s payload
    while ``full`` (a flip-flop, set by the sequencer's hand-out) and ``source`` is accepted when ``port`` takes
    the beat. The hand-out's decision then reaches one flip-flop, not the load enable of a wide payload register
    (a requantiser parameter beat is over 1 100 bits, and copies of that enable beside the consumer put a long net
    after the decision: a 16 x 16 worst path, 13.2 ns). Returns the stream the sequencer drives (``valid``,
    ``ready``; its payload is ``source``'s) and ``full``.
    """
    inner = SimpleNamespace(valid=Signal(name=f"{name}_valid"), ready=Signal(name=f"{name}_ready"),
                            payload=source.payload)
    full = Signal(name=f"{name}_full")
    m.d.comb += [
        inner.ready.eq(~full),
        port.valid.eq(full),
        port.payload.eq(source.payload),
        source.ready.eq(port.valid & port.ready),
    ]
    with m.If(port.valid & port.ready):
        m.d.sync += full.eq(0)
    with m.If(inner.valid & inner.ready):
        m.d.sync += full.eq(1)
    return inner, full


def _hand_out(m, go, streams, name, after=None):
    """Offer one beat on each of ``streams`` while ``go`` is high, each until it is accepted (a fork).

    ``streams`` are objects with ``valid`` and ``ready``. Returns ``(done, fired, committed)``: ``done`` is high
    in the cycle in which the last of them is accepted, ``fired`` in every cycle in which any is, ``committed``
    while some but not all have been accepted. ``go`` must stay high until ``done``. ``after`` maps the index of a
    stream to the index of one that must be accepted first or in the same cycle.
    """
    sent = [Signal(name=f"{name}_sent{i}") for i in range(len(streams))]
    done = Signal(name=f"{name}_done")
    fired = Signal(name=f"{name}_fired")
    after = after or {}
    for index, (stream_, was_sent) in enumerate(zip(streams, sent)):
        allowed = 1
        if index in after:
            first = after[index]
            allowed = sent[first] | streams[first].ready
        m.d.comb += stream_.valid.eq(go & ~was_sent & allowed)
    m.d.comb += [
        done.eq(go & Cat(*(s | (r.valid & r.ready) for s, r in zip(sent, streams))).all()),
        fired.eq(Cat(*(r.valid & r.ready for r in streams)).any()),
    ]
    with m.If(done):
        m.d.sync += [s.eq(0) for s in sent]
    with m.Else():
        for stream_, was_sent in zip(streams, sent):
            with m.If(stream_.valid & stream_.ready):
                m.d.sync += was_sent.eq(1)
    return done, fired, Cat(sent).any()


class Sequencer(wiring.Component):
    """Command sequencer of the datapath: decodes commands, checks them, orders them and hands out the work.

    See the module documentation for what each command does and the ordering rules. A command word is accepted on
    ``cmd`` into a one-entry command register while the register is empty (at most one every other cycle) and leaves it
    once it is handed out: a ``MATMUL`` when its three runs are accepted, a ``REQUANT``, ``ADD`` or ``POOL`` when it
    enters the output queue, a ``NOP`` at once, a ``FENCE`` when nothing is in flight, an illegal command at once
    (with the error).

    The output queue executes in order, one unit at a time on the output stream (``out_sel``): consecutive
    ``REQUANT`` s follow each other as soon as the accumulator read-out is free; a command for another unit than the
    one feeding ``out``, and every ``ADD`` and ``POOL``, waits until the output side is drained.

    Parameters
    ----------
    config : DatapathConfig
    param_shape : shape-castable
        Payload of the requantiser's parameter stream.
    add_param_shape : shape-castable, optional
        Payload of the adder's parameter stream; ``None`` (default): no adder (``ADD`` is unsupported).
    pool_param_shape : shape-castable, optional
        Payload of the pooling unit's parameter stream; ``None`` (default): no pooling unit.
    depthwise : bool
        The datapath has the depthwise unit (``DWCONV``; otherwise it is unsupported). Default ``False``.
    max_tiles : int
        ``MATMUL`` tiles that may be handed out and not yet written (the depth of the result-run queue). Default 8.
    output_depth : int
        Entries of the output queue. Default 2.

    Members
    -------
    cmd : In(stream.Signature(CommandWord(config)))
        Command words.
    weight_run, act_run : Out(stream.Signature(LineRun(config.spad_addr_width)))
        Weight-tile and activation runs, to the two scratchpad :class:`LineReader` s of the array.
    result_run : Out(stream.Signature(ResultRun(config.acc_addr_width)))
        Result runs, to the :class:`ResultWriter` (through a queue of ``max_tiles`` entries).
    tile_done : In(1)
        The :class:`ResultWriter` accepted the last result of a tile.
    acc_cmd : Out(stream.Signature(ReadCommand(config.acc_addr_width)))
        Read-out commands, to the accumulator.
    acc_busy : In(1)
        The accumulator's ``rd_busy``.
    param_in : In(stream.Signature(param_shape))
        Requantiser parameters from outside; a beat is passed on only for a ``REQUANT`` with ``load_params``.
    param_out : Out(stream.Signature(param_shape))
        To the requantiser's parameter stream.
    vec_run_a : Out(stream.Signature(LineRun(config.spad_addr_width, window_width=...)))
        Only with an adder or a pooling unit: the first operand of ``ADD`` (no windows), or the input of ``POOL``.
    vec_run_b : Out(stream.Signature(LineRun(config.spad_addr_width)))
        Only with an adder: the second operand of ``ADD``.
    add_param_in, add_param_out : In/Out(stream.Signature(add_param_shape))
        Only with an adder: its parameters, passed on for an ``ADD`` with ``load_params``.
    pool_param : Out(stream.Signature(pool_param_shape))
        Only with a pooling unit: the mode and clamp bounds of each ``POOL``.
    dw_run : Out(stream.Signature(DwconvArgs(config)))
        Only with the depthwise unit: the arguments of each ``DWCONV``, to its column reader.
    out_sel : Out(Opcode)
        The unit feeding the output stream: ``REQUANT`` (after reset), ``ADD``, ``POOL`` or ``DWCONV`` (the
        depthwise unit through the requantiser).
    out_is : Out(data.StructLayout({"requant": 1, "add": 1, "pool": 1, "dwconv": 1}))
        ``out_sel`` one-hot, each bit a flip-flop of its own.
    drained : In(1)
        No line is in flight on the output side: in the requantiser, the adder, the pooling unit, the depthwise
        unit, their line readers and the output stream (the accumulator read-out is ``acc_busy``).
    busy : Out(1)
        A command is in the command register or work is in flight.
    error : Out(1)
        Sticky: an illegal command was seen. Further commands are discarded while it is set.
    error_code : Out(ErrorCode)
        What the first illegal command since the last clear was (:attr:`ErrorCode.NONE` without error).
    error_clear : In(1)
        Clear ``error`` and ``error_code`` and resume executing commands.
    """

    def __init__(self, config, param_shape, *, add_param_shape=None, pool_param_shape=None, depthwise=False,
                 max_tiles=8, output_depth=2):
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        for name, value in (("Tile limit", max_tiles), ("Output queue depth", output_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        self.config = config
        self.max_tiles = max_tiles
        self.output_depth = output_depth
        self.has_add = add_param_shape is not None
        self.has_pool = pool_param_shape is not None
        if not isinstance(depthwise, bool):
            raise TypeError(f"Option depthwise must be a bool, not {depthwise!r}")
        self.has_depthwise = depthwise
        spad_aw, acc_aw = config.spad_addr_width, config.acc_addr_width
        ports = {
            "cmd":         In(stream.Signature(CommandWord(config))),
            "weight_run":  Out(stream.Signature(LineRun(spad_aw))),
            "act_run":     Out(stream.Signature(LineRun(spad_aw))),
            "result_run":  Out(stream.Signature(ResultRun(acc_aw))),
            "tile_done":   In(1),
            "acc_cmd":     Out(stream.Signature(ReadCommand(acc_aw))),
            "acc_busy":    In(1),
            "param_in":    In(stream.Signature(param_shape)),
            "param_out":   Out(stream.Signature(param_shape)),
        }
        if self.has_add or self.has_pool:
            ports["vec_run_a"] = Out(stream.Signature(LineRun(spad_aw, window_width=WINDOW_WIDTH)))
        if self.has_add:
            ports["vec_run_b"] = Out(stream.Signature(LineRun(spad_aw)))
            ports["add_param_in"] = In(stream.Signature(add_param_shape))
            ports["add_param_out"] = Out(stream.Signature(add_param_shape))
        if self.has_pool:
            ports["pool_param"] = Out(stream.Signature(pool_param_shape))
        if self.has_depthwise:
            ports["dw_run"] = Out(stream.Signature(DwconvArgs(config)))
        ports.update({
            "out_sel":     Out(Opcode, init=Opcode.REQUANT),
            "out_is":      Out(data.StructLayout({name: 1 for name in OUT_UNITS}), init={"requant": 1}),
            "drained":     In(1),
            "busy":        Out(1),
            "error":       Out(1),
            "error_code":  Out(ErrorCode),
            "error_clear": In(1),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config

        # Output stages: every hand-out of the output side leaves through a one-entry register, so that the start
        # decision below sees no consumer's `ready` (a line reader's depends on the scratchpad's arbitration).
        stages = {}

        def stage(name):
            inner, full = _stage(m, getattr(self, name), f"{name}_stage")
            stages[name] = full
            return inner

        def offer(name, source):
            inner, full = _offer(m, getattr(self, name), source, f"{name}_stage")
            stages[name] = full
            return inner

        acc_cmd = stage("acc_cmd")
        param_out = offer("param_out", self.param_in)
        if self.has_add or self.has_pool:
            vec_run_a = stage("vec_run_a")
        if self.has_add:
            vec_run_b = stage("vec_run_b")
            add_param_out = offer("add_param_out", self.add_param_in)
        if self.has_pool:
            pool_param = stage("pool_param")
        if self.has_depthwise:
            dw_run = stage("dw_run")

        # The state of the units, as seen by the sequencer: registered, one cycle old. A started command is seen by
        # them (or still sits in its stage) from the cycle after it started, and its queue entry stays until the end
        # of that cycle (`taken` below), so the old view never lets two commands overlap that must not.
        tile_done = Signal()
        acc_busy = Signal()
        drained = Signal(init=1)
        m.d.sync += [
            tile_done.eq(self.tile_done),
            acc_busy.eq(self.acc_busy | stages["acc_cmd"]),
            drained.eq(self.drained & ~Cat(*stages.values()).any()),
        ]

        # Tiles handed out whose last result has not been seen written yet.
        outstanding = Signal(range(self.max_tiles + 1))

        # Output queue (entry 0 is the head; valid entries form a prefix) and the read-out in the accumulator.
        entry_layout = _OutputEntry(cfg, outstanding.shape())
        depth = self.output_depth
        q_valid = [Signal(name=f"oq{i}_valid") for i in range(depth)]
        q = [Signal(entry_layout, name=f"oq{i}") for i in range(depth)]
        active_addr = Signal(cfg.acc_addr_width)
        active_end = Signal(COUNT_WIDTH + 1)
        taken = Signal()                                   # the head started last cycle: pop it now

        work = Signal()
        m.d.comb += work.eq((outstanding != 0) | Cat(q_valid).any() | acc_busy | ~drained)

        # Command registers ----------------------------------------------------------------------------------------
        # Two stages. The check stage (`chk`) takes a command word and sums the ends of its line ranges on the way
        # in; while it holds the command, its legality is computed from those registers. The command moves on into
        # the command register (`cur`), with the verdict, when that is empty; `cur` hands it out. Each stage's load
        # enable (a net to every bit of it) comes from flip-flops, never from the hand-out of the command ahead,
        # and `cur` takes a command every other cycle (a MATMUL's weight tile alone takes `rows` cycles). A command
        # spends at least two cycles in the check stage (`chk_fresh`: loaded in the last cycle), so that its range
        # comparisons are registered there, and only their priority selection goes into the command register's
        # verdict (the two in one cycle: 10.3-12.8 ns at 16 x 16), and its write-after-read test too.
        chk = Signal(CommandWord(cfg))
        chk_valid = Signal()
        chk_fresh = Signal()
        cur = Signal(CommandWord(cfg))
        cur_valid = Signal()
        cur_done = Signal()
        move = Signal()
        m.d.comb += [
            move.eq(chk_valid & ~chk_fresh & ~cur_valid),
            self.cmd.ready.eq(~chk_valid | move),
            self.busy.eq(chk_valid | cur_valid | work),
        ]
        # The end (first line past) of each line range, and the lines of a DWCONV tile.
        new_args = self.cmd.payload.args
        ends = {
            "act":    new_args.matmul.act_addr + new_args.matmul.count,
            "weight": new_args.matmul.weight_addr + weight_tile_lines(cfg),
            "acc":    new_args.matmul.acc_addr + new_args.matmul.count,
            "rq":     new_args.requant.acc_addr + new_args.requant.count,
            "add_a":  new_args.add.a_addr + new_args.add.count,
            "add_b":  new_args.add.b_addr + new_args.add.count,
            "pool":   new_args.pool.addr + new_args.pool.count,
            "dw_w":   new_args.dwconv.weight_addr + DWCONV_KERNEL ** 2,
        }
        chk_end = {name: Signal(value.shape(), name=f"chk_{name}_end") for name, value in ends.items()}
        dw_tile = Signal(2 * len(new_args.dwconv.height))
        # The check stage loads whatever is offered whenever it may take a command (its enable `cmd.ready`, from
        # flip-flops; `cmd.valid` only sets `chk_valid`): with the handshake in it, the enable of its 200-odd bits
        # came from the command source's `valid`, 10.3-10.6 ns at 16 x 16.
        m.d.sync += chk_fresh.eq(self.cmd.valid & self.cmd.ready)
        with m.If(self.cmd.ready):
            m.d.sync += [
                chk.eq(self.cmd.payload),
                chk_valid.eq(self.cmd.valid),
                dw_tile.eq(new_args.dwconv.height * new_args.dwconv.width),
            ]
            m.d.sync += [chk_end[name].eq(value) for name, value in ends.items()]

        # Legality (the same checks as CommandFormat.check), as (condition, error) in priority order per opcode.
        cm, crq, cadd, cpool, cdw = (chk.args.matmul, chk.args.requant, chk.args.add, chk.args.pool,
                                     chk.args.dwconv)
        spad, acc = cfg.spad_depth, cfg.acc_depth
        checks = {
            Opcode.MATMUL: [
                (cm.count == 0, ErrorCode.BAD_COUNT),
                ((chk_end["act"] > spad) | (chk_end["weight"] > spad) | (chk_end["acc"] > acc), ErrorCode.BAD_RANGE),
            ],
            Opcode.REQUANT: [
                (crq.count == 0, ErrorCode.BAD_COUNT),
                (chk_end["rq"] > acc, ErrorCode.BAD_RANGE),
            ],
            Opcode.ADD: [
                (Const(int(not self.has_add), 1), ErrorCode.UNSUPPORTED),
                (cadd.count == 0, ErrorCode.BAD_COUNT),
                ((chk_end["add_a"] > spad) | (chk_end["add_b"] > spad), ErrorCode.BAD_RANGE),
            ],
            Opcode.POOL: [
                (Const(int(not self.has_pool), 1), ErrorCode.UNSUPPORTED),
                ((cpool.count == 0) | (cpool.window == 0) | (cpool.window > POOL_MAX_WINDOW), ErrorCode.BAD_COUNT),
                (chk_end["pool"] > spad, ErrorCode.BAD_RANGE),
            ],
            Opcode.DWCONV: [
                (Const(int(not self.has_depthwise), 1), ErrorCode.UNSUPPORTED),
                ((cdw.height == 0) | (cdw.width == 0) | (cdw.height + cdw.pad_top + cdw.pad_bottom < DWCONV_KERNEL)
                 | (cdw.width + cdw.pad_left + cdw.pad_right < DWCONV_KERNEL), ErrorCode.BAD_COUNT),
                ((cdw.act_addr + dw_tile > spad) | (chk_end["dw_w"] > spad), ErrorCode.BAD_RANGE),
            ],
        }
        # The comparisons, registered (the check stage's command is the same in the next cycle unless it moves on).
        for opcode, rules in checks.items():
            for i, (condition, code) in enumerate(rules):
                if not isinstance(condition, Const):
                    registered = Signal(name=f"check_{opcode.name.lower()}_{i}")
                    m.d.sync += registered.eq(condition)
                    rules[i] = (registered, code)
        check_fault = Signal()
        check_code = Signal(ErrorCode)
        with m.Switch(chk.opcode):
            with m.Case(Opcode.NOP, Opcode.FENCE):
                pass
            for opcode, rules in checks.items():
                with m.Case(opcode):
                    for i, (condition, code) in enumerate(rules):
                        with (m.Elif(condition) if i else m.If(condition)):
                            m.d.comb += [check_fault.eq(1), check_code.eq(code)]
            with m.Default():
                m.d.comb += [check_fault.eq(1), check_code.eq(ErrorCode.ILLEGAL_OPCODE)]

        # The command register: the command, its verdict, and the ends the hand-out needs.
        verdict_fault = Signal()
        verdict_code = Signal(ErrorCode)
        end = {name: Signal(chk_end[name].shape(), name=f"cur_{name}_end") for name in ("acc", "rq")}
        with m.If(move):
            m.d.sync += [
                cur.eq(chk),
                cur_valid.eq(1),
                verdict_fault.eq(check_fault),
                verdict_code.eq(check_code),
            ]
            m.d.sync += [end[name].eq(chk_end[name]) for name in end]
        with m.Elif(cur_done):
            m.d.sync += cur_valid.eq(0)

        mm = cur.args.matmul

        # Write-after-read: the MATMUL's result lines overlap a read-out that is queued or running. Registered, for
        # the command in the command register (`war_cur`, used a cycle later) and, a cycle earlier still, for the
        # one in the check stage (`war_chk`, used two cycles later: for the command that moves on, the cycle after
        # it moved). Old results are conservative: a read-out is covered from the cycle its REQUANT is pushed into
        # the queue (from the command register; `war_chk` counts a REQUANT being pushed in the cycle it is
        # computed, and none is pushed in the cycle a command moves on, since the command register is then empty)
        # until it has ended (its entry until `taken` pops it, then `acc_busy`), and ranges are never added
        # otherwise. The range comparisons are then the only logic in front of either register.
        def war_test(war_addr, war_end, extra=()):
            def overlaps(addr, end_):
                return (war_addr < end_) & (addr < war_end)
            return Cat(*(v & (e.opcode == Opcode.REQUANT) & overlaps(e.args.requant.acc_addr, e.end)
                         for v, e in zip(q_valid, q)),
                       acc_busy & overlaps(active_addr, active_end),
                       *(valid & overlaps(addr, end_) for valid, addr, end_ in extra)).any()

        war_chk = Signal()
        war = Signal()
        pushing = cur_valid & (cur.opcode == Opcode.REQUANT)
        m.d.sync += [
            war_chk.eq(war_test(chk.args.matmul.acc_addr, chk_end["acc"],
                                [(pushing, cur.args.requant.acc_addr, end["rq"])])),
            war.eq(Mux(move, war_chk, war_test(mm.acc_addr, end["acc"]))),
        ]

        # Hand-out of a MATMUL: three runs, each accepted on its own (valid stays high until it is); the result run
        # no later than the activation run, so that the result writer, which cannot hold up the array's results,
        # has the tile's run before the first of them. Each run leaves through a one-entry stage (`_stage`), as the
        # output side's hand-outs do: the decision, and the command register's move that follows it, then read
        # flip-flops only, not the `ready` of the run slices beside the line readers across the die (a 16 x 16
        # worst path, 11.3 ns). The activation run leaves its stage only while the result run's is empty, so the
        # result run still reaches its queue first (in an earlier cycle).
        mm_go = Signal()
        weight_run, _ = _stage(m, self.weight_run, "weight_run_stage")
        result_run, result_full = _stage(m, self.result_run, "result_run_stage")
        act_run, _ = _stage(m, self.act_run, "act_run_stage", hold=result_full)
        m.d.comb += [
            weight_run.payload.addr.eq(mm.weight_addr),
            weight_run.payload.count.eq(weight_tile_lines(cfg)),
            act_run.payload.addr.eq(mm.act_addr),
            act_run.payload.count.eq(mm.count),
            result_run.payload.addr.eq(mm.acc_addr),
            result_run.payload.accumulate.eq(mm.accumulate),
        ]
        mm_done, _, _ = _hand_out(m, mm_go, [weight_run, act_run, result_run], "mm", after={1: 2})

        oq_push = Signal()
        fault = Signal()
        fault_code = Signal(ErrorCode)
        error = Signal()
        error_code = Signal(ErrorCode)
        m.d.comb += [
            self.error.eq(error),
            self.error_code.eq(error_code),
        ]

        with m.If(cur_valid & error):
            m.d.comb += cur_done.eq(1)                     # discard while stopped
        with m.Elif(cur_valid & verdict_fault):
            m.d.comb += [fault.eq(1), fault_code.eq(verdict_code)]
        with m.Elif(cur_valid):
            with m.Switch(cur.opcode):
                with m.Case(Opcode.NOP):
                    m.d.comb += cur_done.eq(1)
                with m.Case(Opcode.FENCE):
                    m.d.comb += cur_done.eq(~work)
                with m.Case(Opcode.MATMUL):
                    m.d.comb += [
                        mm_go.eq(~war & (outstanding < self.max_tiles)),
                        cur_done.eq(mm_done),
                    ]
                with m.Default():
                    m.d.comb += [
                        oq_push.eq(~q_valid[-1]),
                        cur_done.eq(oq_push),
                    ]
        with m.If(fault):
            m.d.comb += cur_done.eq(1)
            m.d.sync += [
                error.eq(1),
                error_code.eq(fault_code),
            ]
        with m.If(self.error_clear):
            m.d.sync += [
                error.eq(0),
                error_code.eq(ErrorCode.NONE),
            ]

        with m.If(mm_done & ~tile_done):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~mm_done & tile_done):
            m.d.sync += outstanding.eq(outstanding - 1)

        # Output queue head ----------------------------------------------------------------------------------------
        # A REQUANT after a REQUANT may start once the accumulator read-out is free (the requantiser keeps the old
        # parameters for the lines still in its pipeline); anything else waits until the output side is drained.
        # The decision reads registers only: the queue, the registered unit state and the stages' `full` flags.
        head = q[0]
        kind = head.opcode
        # `out_sel` and the one-hot `out_is` load from its next value, so that each bit of `out_is` is a flip-flop
        # (the datapath's copies of "the output belongs to X" load from it; its compare on `out_sel` was 3 LUT levels
        # and 7.5 ns of routing to them at 16 x 16).
        out_sel_next = Signal(Opcode)
        m.d.comb += out_sel_next.eq(self.out_sel)
        m.d.sync += self.out_sel.eq(out_sel_next)
        for name in OUT_UNITS:
            m.d.sync += self.out_is[name].eq(out_sel_next == Opcode[name.upper()])
        hrq, hadd, hpool, hdw = head.args.requant, head.args.add, head.args.pool, head.args.dwconv
        may_start = Signal()
        params_loaded = Signal()
        need_params = Signal()
        start = Signal()
        m.d.comb += [
            may_start.eq(q_valid[0] & ~taken & ~acc_busy
                         & (drained | ((kind == Opcode.REQUANT) & (self.out_sel == Opcode.REQUANT)))),
            need_params.eq(~params_loaded & (((kind == Opcode.REQUANT) & hrq.load_params)
                                             | ((kind == Opcode.ADD) & hadd.load_params)
                                             | ((kind == Opcode.DWCONV) & hdw.load_params))),
        ]

        # REQUANT: parameters, then the read-out once its tiles are written. (DWCONV: parameters, then the run.)
        requantised = (kind == Opcode.REQUANT) | (kind == Opcode.DWCONV)
        m.d.comb += [
            param_out.valid.eq(may_start & requantised & need_params & self.param_in.valid),
            acc_cmd.valid.eq(may_start & (kind == Opcode.REQUANT) & (head.pending == 0) & ~need_params),
            acc_cmd.payload.base.eq(hrq.acc_addr),
            acc_cmd.payload.count.eq(hrq.count),
        ]
        with m.If(param_out.valid & param_out.ready):
            m.d.sync += params_loaded.eq(1)
        # The running read-out's lines (for `war`, which reads them only while `acc_busy`) load from the head
        # whenever no read-out is running, so the one that starts leaves them set: their enable is `~acc_busy`, not
        # the start decision (which reached their 30 enables through 12.4 ns at 16 x 16).
        with m.If(~acc_busy):
            m.d.sync += [
                active_addr.eq(hrq.acc_addr),
                active_end.eq(head.end),
            ]
        with m.If(acc_cmd.valid & acc_cmd.ready):
            m.d.comb += start.eq(1)
            m.d.comb += out_sel_next.eq(Opcode.REQUANT)

        # ADD: parameters, then both operand runs. POOL: its configuration and its input run. Once the first beat
        # is handed out the output side is no longer drained, so `committed` keeps the hand-out going.
        # vec_run_a is shared by ADD and POOL (only one of them is ever being handed out): each hand-out drives a
        # proxy of its valid.
        run_a_users = []

        def run_a_proxy(name):
            proxy = SimpleNamespace(valid=Signal(name=f"{name}_run_a_valid"), ready=vec_run_a.ready)
            run_a_users.append(proxy)
            return proxy

        if self.has_add:
            m.d.comb += [
                add_param_out.valid.eq(may_start & (kind == Opcode.ADD) & need_params & self.add_param_in.valid),
            ]
            with m.If(add_param_out.valid & add_param_out.ready):
                m.d.sync += params_loaded.eq(1)
            add_go = Signal()
            add_committed = Signal()
            m.d.comb += add_go.eq(q_valid[0] & (kind == Opcode.ADD) & ~need_params & (may_start | add_committed))
            add_done, add_fired, add_committed_ = _hand_out(m, add_go, [run_a_proxy("add"), vec_run_b], "add")
            m.d.comb += [
                add_committed.eq(add_committed_),
                vec_run_b.payload.addr.eq(hadd.b_addr),
                vec_run_b.payload.count.eq(hadd.count),
            ]
            with m.If(add_done):
                m.d.comb += start.eq(1)
            with m.If(add_fired):
                m.d.comb += out_sel_next.eq(Opcode.ADD)
        if self.has_pool:
            pool_go = Signal()
            pool_committed = Signal()
            m.d.comb += pool_go.eq(q_valid[0] & (kind == Opcode.POOL) & (may_start | pool_committed))
            pool_done, pool_fired, pool_committed_ = _hand_out(m, pool_go, [run_a_proxy("pool"), pool_param],
                                                                "pool")
            m.d.comb += [
                pool_committed.eq(pool_committed_),
                pool_param.payload.mode.eq(hpool.mode),
                pool_param.payload.act_min.eq(hpool.act_min),
                pool_param.payload.act_max.eq(hpool.act_max),
            ]
            with m.If(pool_done):
                m.d.comb += start.eq(1)
            with m.If(pool_fired):
                m.d.comb += out_sel_next.eq(Opcode.POOL)
        if self.has_depthwise:
            # DWCONV: one beat, to the idle column reader (the output side has drained).
            m.d.comb += [
                dw_run.payload.eq(hdw),
                dw_run.valid.eq(may_start & (kind == Opcode.DWCONV) & ~need_params),
            ]
            with m.If(dw_run.valid & dw_run.ready):
                m.d.comb += start.eq(1)
                m.d.comb += out_sel_next.eq(Opcode.DWCONV)
        if self.has_add or self.has_pool:
            # vec_run_a is shared: its valid is the OR of both hand-outs (only one is ever active).
            m.d.comb += vec_run_a.valid.eq(Cat(*(proxy.valid for proxy in run_a_users)).any())
            with m.If(kind == Opcode.POOL):
                m.d.comb += [
                    vec_run_a.payload.addr.eq(hpool.addr),
                    vec_run_a.payload.count.eq(hpool.count),
                    vec_run_a.payload.window.eq(hpool.window),
                ]
            with m.Else():
                m.d.comb += [
                    vec_run_a.payload.addr.eq(hadd.a_addr),
                    vec_run_a.payload.count.eq(hadd.count),
                    vec_run_a.payload.window.eq(0),
                ]
        m.d.sync += taken.eq(start)
        with m.If(start):
            m.d.sync += params_loaded.eq(0)

        # Queue update: pop the head the cycle after it started (`taken`), push at the first free entry, count down
        # the tiles waited for.
        new = Signal(entry_layout)
        m.d.comb += [
            new.opcode.eq(cur.opcode),
            new.args.eq(cur.args),
            new.end.eq(end["rq"]),
            new.pending.eq(Mux(cur.opcode == Opcode.REQUANT, outstanding - tile_done, 0)),
        ]
        # Each entry reads `taken` from a copy of its own: one register drove the update of every entry (some 40
        # flip-flops each; 10.4 ns at 16 x 16).
        taken_copies = [register_copy(m, start, name=f"oq{i}_taken", platform=platform, init=0)
                        for i in range(depth)]
        shifted_valid = [Signal(name=f"oq{i}_valid_next") for i in range(depth)]
        for i in range(depth):
            if i + 1 < depth:
                m.d.comb += shifted_valid[i].eq(Mux(taken_copies[i], q_valid[i + 1], q_valid[i]))
            else:
                m.d.comb += shifted_valid[i].eq(q_valid[i] & ~taken_copies[i])
        for i in range(depth):
            shifted = Signal(entry_layout, name=f"oq{i}_shifted")
            m.d.comb += shifted.eq(Mux(taken_copies[i], q[i + 1], q[i]) if i + 1 < depth else q[i])
            entry = Signal(entry_layout, name=f"oq{i}_next")
            m.d.comb += entry.eq(shifted)
            with m.If(tile_done & (shifted.pending != 0)):
                m.d.comb += entry.pending.eq(shifted.pending - 1)
            before = Mux(taken_copies[i], q_valid[i], q_valid[i - 1]) if i else 1   # shifted_valid[i - 1]
            first_free = ~shifted_valid[i] & before
            with m.If(oq_push & first_free):
                m.d.sync += [q[i].eq(new), q_valid[i].eq(1)]
            with m.Else():
                m.d.sync += [q[i].eq(entry), q_valid[i].eq(shifted_valid[i])]

        return m
