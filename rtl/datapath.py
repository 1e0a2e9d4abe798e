"""The datapath top of Haneul: memories, systolic array, post-processing units and the sequencer that runs them.

::

    spad_wr ──> scratchpad ──rd 1──> weight packer ──> weight ┐
                (int8, rows) ──rd 0────────────────────> act  ├ systolic array ──> result writer ──> accumulator
                    │                                         ┘  rows x cols        (addr, accumulate)  (int32, cols)
                    └─rd 2, 3──> adder / pooling unit (rows lanes) ─┐                                       │ read-out
                         │                                          │                                       v
                         └─> column reader -> window buffer ->      │                      depthwise unit ─> mux
                               depthwise unit (rows lanes x 9 taps) │                                       v
                 cmd ──> sequencer ──> runs, read-out commands,     └──────────> out <──────────── requantiser
                           │    ^      parameters, out_sel                       (int8, cols)      ^
                           │    └── ppu_param, add_param ──────────────────────────────────────────┘
                           └──> busy, idle, error, error_code; counters

The sequencer (:mod:`haneul.rtl.sequencer`) executes the command words of :mod:`haneul.rtl.commands`:
``MATMUL`` streams a weight tile and ``count`` activation lines from the scratchpad through the array into
consecutive accumulator lines (overwriting or accumulating), ``REQUANT`` streams accumulator lines through the
requantiser to ``out``, ``ADD`` and ``POOL`` stream scratchpad lines through the adder or the pooling unit to
``out``, ``DWCONV`` streams the columns of an input tile through the depthwise unit (:mod:`haneul.rtl.depthwise`)
and its sums through the requantiser to ``out``. See ``docs/datapath.md`` for the timing and the tiling of large GEMMs
(:func:`haneul.firmware.gemm.plan_gemm`).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import eltwise, pool
from .accumulator import Accumulator
from .depthwise import ColumnReader
from .depthwise_engine import DepthwiseEngine
from .commands import POOL_MAX_WINDOW, CommandFormat, CommandWord, ErrorCode, Opcode
from .config import DatapathConfig
from .ppu import Params, Requantizer
from .output_select import OutputSelect
from .pe import register_copy
from .register_slice import RegisterSlice
from .scratchpad import Scratchpad, WriteRequest
from .sequencer import WINDOW_WIDTH, LineReader, LineRun, Queue, ResultRun, ResultWriter, Sequencer, WeightPacker
from .systolic import SystolicArray

__all__ = ["Datapath"]


class Datapath(wiring.Component):
    """Haneul's compute datapath: scratchpad, systolic array, accumulator and requantiser, run by a command stream.

    Every size comes from ``config``: ``rows`` is the scratchpad line width and the K depth of a tile, ``cols`` the
    N width of a tile and the lane count of the accumulator, the requantiser and ``out``; the memory depths and bank
    counts are ``spad_depth``, ``spad_banks``, ``acc_depth`` and ``acc_banks``.

    Streams follow :mod:`amaranth.lib.stream`; every input may have gaps in ``valid`` and ``out`` may be stalled at
    any time. ``spad_wr`` is independent of the command stream: loading the scratchpad and the commands that read
    what was loaded are ordered by whoever drives both (the DMA and the command processor), for example by loading
    one half of the scratchpad while the commands work on the other.

    The vector units (:class:`~haneul.rtl.eltwise.Adder` for ``ADD``, :class:`~haneul.rtl.pool.Pool` for ``POOL``)
    read int8 scratchpad lines of ``rows`` elements and send lines of ``cols`` lanes, so they need ``rows <= cols``;
    a datapath built without one flags its command with :attr:`~haneul.rtl.commands.ErrorCode.UNSUPPORTED`. The
    adder costs three multipliers per pipeline lane (8 ECP5 DSP blocks; ``config.add_lanes`` lanes, so it takes a
    line every ``rows // add_lanes`` cycles), the pooling unit one per lane (one DSP block). The depthwise
    unit (``DWCONV``: a :class:`~haneul.rtl.depthwise.ColumnReader` on scratchpad read ports 2 and 3 and a
    :class:`~haneul.rtl.depthwise_engine.DepthwiseEngine`, 3 x 3 window buffers and depthwise units of ``rows``
    lanes x ``config.dw_taps`` multipliers in all, a window in ``config.dw_passes`` beats) shares the requantiser with
    the accumulator read-out through a two-way multiplexer switched by ``out_sel``; it is the largest of the
    optional units (``docs/fpga.md``).

    Parameters
    ----------
    config : DatapathConfig, optional
        Default: ``DatapathConfig()``. ``input_width`` must be 8 and ``acc_width`` 32 (the requantiser's formats).
    add : bool, optional
        Build the element-wise adder (``ADD``). Default: when ``rows <= cols``.
    pool : bool, optional
        Build the pooling unit (``POOL``). Default: when ``rows <= cols``.
    depthwise : bool, optional
        Build the depthwise unit (``DWCONV``). Default: when ``rows <= cols``.

    Members
    -------
    cmd : In(stream.Signature(CommandWord(config)))
        Command words (:mod:`haneul.rtl.commands`; :func:`~haneul.rtl.commands.encode` makes them).
    spad_wr : In(stream.Signature(WriteRequest(config, rows, spad_addr_width)))
        Scratchpad line writes (``addr``, ``data``); always ready.
    ppu_param : In(stream.Signature(Params(cols)))
        Requantiser parameters: one beat is taken for every ``REQUANT`` and ``DWCONV`` with ``load_params`` set, in
        command order.
    add_param : In(stream.Signature(eltwise.Params))
        Only with the adder: its parameters, one beat for every ``ADD`` with ``load_params`` set, in command order.
    out : Out(stream.Signature(ArrayLayout(signed(8), cols)))
        Output lines in command order: one per accumulator line read by ``REQUANT``, one per line pair of ``ADD``,
        one per window of ``POOL`` (the vector units fill lanes ``0 .. rows - 1``, the others are zero) and one per
        output pixel of ``DWCONV`` (lanes ``0 .. rows - 1``; the others are the requantised zero). It leaves
        through an :class:`~haneul.rtl.output_select.OutputSelect` (a credit count beside each unit, a queue and
        a register slice at the output): ``valid`` and ``payload`` are flip-flops, ``ready`` reaches only the
        slice, and a line accepted from a unit is on ``out`` four cycles later.
    busy : Out(1)
        A command is being executed or data is in flight.
    idle : Out(1)
        ``~busy``.
    error : Out(1)
        Sticky: an illegal command was seen; from then on commands are discarded until ``error_clear``.
    error_code : Out(ErrorCode)
        The reason (:class:`~haneul.rtl.commands.ErrorCode`).
    error_clear : In(1)
        Clears ``error`` and ``error_code``.
    busy_cycles : Out(32)
        Cycles with ``busy`` high since reset (wraps); like the other counters it counts a cycle late.
    active_cycles : Out(32)
        Cycles in which the systolic array took an activation vector since reset (wraps).
    macs : Out(48)
        Multiply-accumulates issued to the array since reset, ``rows * cols`` per activation vector, including the
        zero padding of partial tiles (wraps).

    Attributes
    ----------
    config : DatapathConfig
    format : CommandFormat
        Encoder and decoder of the command words.
    has_add, has_pool, has_depthwise : bool
        Whether the adder, the pooling unit and the depthwise unit are built.
    """

    #: Entries of the queues of weight and activation runs between the sequencer and the line readers: how many
    #: ``MATMUL`` s the sequencer may hand out ahead of the array (besides the one each reader holds and the two
    #: the register slice in front of each queue may hold).
    RUN_QUEUE_DEPTH = 2

    def __init__(self, config=None, *, add=None, pool=None, depthwise=None):
        if config is None:
            config = DatapathConfig()
        elif not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        if config.input_width != 8:
            raise ValueError(f"The datapath takes int8 activations and weights: input width must be 8, "
                             f"not {config.input_width}")
        if config.acc_width != 32:
            raise ValueError(f"The requantiser takes int32 accumulators: accumulator width must be 32, "
                             f"not {config.acc_width}")
        fits = config.rows <= config.cols
        units = {"add": "adder", "pool": "pooling unit", "depthwise": "depthwise unit"}
        for name, value in (("add", add), ("pool", pool), ("depthwise", depthwise)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"Option {name} must be a bool or None, not {value!r}")
            if value and not fits:
                raise ValueError(f"The {units[name]} needs rows <= cols (its lines of {config.rows} elements go "
                                 f"out on {config.cols} lanes)")
        self.config = config
        self.format = CommandFormat(config)
        self.has_add = fits if add is None else add
        self.has_pool = fits if pool is None else pool
        self.has_depthwise = fits if depthwise is None else depthwise
        ports = {
            "cmd":           In(stream.Signature(CommandWord(config))),
            "spad_wr":       In(stream.Signature(WriteRequest(config, config.rows, config.spad_addr_width))),
            "ppu_param":     In(stream.Signature(Params(config.cols))),
        }
        if self.has_add:
            ports["add_param"] = In(stream.Signature(eltwise.Params))
        ports.update({
            "out":           Out(stream.Signature(data.ArrayLayout(signed(8), config.cols))),
            "busy":          Out(1),
            "idle":          Out(1),
            "error":         Out(1),
            "error_code":    Out(ErrorCode),
            "error_clear":   In(1),
            "busy_cycles":   Out(32),
            "active_cycles": Out(32),
            "macs":          Out(48),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config

        vector_ports = 2 if self.has_add or self.has_depthwise else 1 if self.has_pool else 0
        m.submodules.scratchpad = spad = Scratchpad(cfg, read_ports=2 + vector_ports)
        m.submodules.array = array = SystolicArray(cfg)
        # The accumulator's output queue takes the requantiser's `ready` a cycle ahead (`early_ready`), into copies
        # beside each part of the 512-bit queue, and sends its lines from an output register (`registered`, each
        # 64-bit part loaded at copies of its own): the requantiser's input register, across the die, then loads
        # from flip-flops, not from the queue's LUT-RAM read (44-146 endpoints up to 11.9 ns at 16 x 16).
        m.submodules.accumulator = acc = Accumulator(cfg, early_ready=True, registered=True)
        m.submodules.requantizer = requant = Requantizer(cfg.cols, fold=cfg.requant_fold)
        m.submodules.sequencer = seq = Sequencer(
            cfg, Params(cfg.cols),
            add_param_shape=eltwise.Params if self.has_add else None,
            pool_param_shape=pool.Config if self.has_pool else None,
            depthwise=self.has_depthwise)
        m.submodules.weight_reader = weight_reader = LineReader(cfg.spad_addr_width)
        m.submodules.act_reader = act_reader = LineReader(cfg.spad_addr_width)
        m.submodules.weight_queue = weight_queue = Queue(LineRun(cfg.spad_addr_width), self.RUN_QUEUE_DEPTH)
        m.submodules.act_queue = act_queue = Queue(LineRun(cfg.spad_addr_width), self.RUN_QUEUE_DEPTH)
        m.submodules.weight_packer = packer = WeightPacker(cfg)
        m.submodules.result_queue = result_queue = Queue(ResultRun(cfg.acc_addr_width), seq.max_tiles)
        m.submodules.result_writer = writer = ResultWriter(cfg, cfg.acc_addr_width)

        # Commands and loads.
        wiring.connect(m, wiring.flipped(self.cmd), seq.cmd)
        wiring.connect(m, wiring.flipped(self.spad_wr), spad.wr)

        # The sequencer's runs enter their queues through register slices: the queues' `ready` (their fill level)
        # then does not run back into the sequencer's hand-out decision, nor that decision into the queues' LUT-RAM
        # write enables and levels (10.9 ns at 16 x 16).
        def sliced(source, name):
            m.submodules[name] = slice_ = RegisterSlice(source.payload.shape())
            wiring.connect(m, source, slice_.i)
            return slice_.o

        # Weights: scratchpad read port 1, packed into rows of `cols` elements.
        wiring.connect(m, sliced(seq.weight_run, "weight_run_slice"), weight_queue.i)
        wiring.connect(m, weight_queue.o, weight_reader.run)
        wiring.connect(m, weight_reader.req, spad.rd_req[1])
        # The lines reach the array's weight registers through a register slice, from flip-flops: straight from
        # the response queue's LUT-RAM read they were 14.6 ns at 16 x 16 (the array's weight bus spans the die).
        wiring.connect(m, sliced(spad.rd_resp[1], "weight_resp_slice"), packer.i)
        wiring.connect(m, packer.o, array.weight)

        # Activations: scratchpad read port 0, with the tile's `last`.
        wiring.connect(m, sliced(seq.act_run, "act_run_slice"), act_queue.i)
        wiring.connect(m, act_queue.o, act_reader.run)
        wiring.connect(m, act_reader.req, spad.rd_req[0])
        wiring.connect(m, spad.rd_resp[0], array.act)

        # Results into the accumulator.
        wiring.connect(m, sliced(seq.result_run, "result_run_slice"), result_queue.i)
        wiring.connect(m, result_queue.o, writer.run)
        wiring.connect(m, array.result, writer.result)
        wiring.connect(m, writer.wr, acc.wr)
        m.d.comb += seq.tile_done.eq(writer.done)

        # Read-out through the requantiser.
        wiring.connect(m, seq.acc_cmd, acc.rd_cmd)
        m.d.comb += seq.acc_busy.eq(acc.rd_busy)
        if not self.has_depthwise:
            wiring.connect(m, acc.rd_data, requant.i)
            m.d.comb += acc.rd_ready_next.eq(requant.i_ready_next)
        wiring.connect(m, wiring.flipped(self.ppu_param), seq.param_in)
        wiring.connect(m, seq.param_out, requant.param)

        # A unit is idle when its output queue owes nothing (every beat it accepted has left on `o`): the units'
        # own credit counts, not counters of the datapath's fed from both ends of each unit.
        idle_units = [~requant.busy]

        # Vector units: scratchpad read port 2 feeds the adder's first operand or the pooling unit (whichever the
        # sequencer selected: they never run at the same time), port 3 the adder's second operand.
        outputs = {Opcode.REQUANT: requant.o}
        resp_a = spad.rd_resp[2] if vector_ports else None
        resp_b = spad.rd_resp[3] if vector_ports == 2 else None
        if vector_ports:
            idle_units.append(~spad.rd_busy[2])
        if vector_ports == 2:
            idle_units.append(~spad.rd_busy[3])
        # Which vector unit the scratchpad's ports 2 and 3 (their requests and responses) and the requantiser's
        # input belong to: `out_sel == opcode` a cycle late, from a flip-flop, not the compare itself (it sat in
        # front of the scratchpad's arbitration and of the units' input handshakes). A cycle late is soon enough:
        # `out_sel` changes as a unit's first run is handed out, its reader's first request comes two cycles after
        # that at the earliest (the run's register, then the request's) and its first response later still; the
        # unit it replaces has drained (no request, response or result of it is left).
        # Each use has a copy of its own (`use`): one register was the select of the requantiser's 512-bit input
        # multiplexer and of both ports' request and response routing, 4.9 ns of routing at 16 x 16 (session 16).
        # The copies load from the sequencer's one-hot `out_is` flip-flops, not from a compare on `out_sel` (whose
        # LUTs, shared with the output select's, were 7.5 ns of routing from the copies).
        chosen = {}

        def routed_to(opcode, use):
            if (opcode, use) not in chosen:
                chosen[opcode, use] = register_copy(m, seq.out_is[opcode.name.lower()], platform=platform, init=0,
                                                    name=f"routed_to_{opcode.name.lower()}_{use}")
            return chosen[opcode, use]

        # Requests on ports 2 and 3: from the vector line readers, or (out_sel == DWCONV) from the column reader.
        requesters = {2: [], 3: []}
        if self.has_add or self.has_pool:
            m.submodules.vec_reader_a = reader_a = LineReader(cfg.spad_addr_width, window_width=WINDOW_WIDTH)
            wiring.connect(m, seq.vec_run_a, reader_a.run)
            requesters[2].append((None, reader_a.req))
            idle_units.append(~reader_a.busy)
        if self.has_add:
            m.submodules.adder = adder = eltwise.Adder(cfg.rows, fold=cfg.rows // cfg.add_lanes)
            m.submodules.vec_reader_b = reader_b = LineReader(cfg.spad_addr_width)
            wiring.connect(m, seq.vec_run_b, reader_b.run)
            requesters[3].append((None, reader_b.req))
            m.d.comb += [
                adder.b.valid.eq(resp_b.valid),
                adder.b.payload.eq(resp_b.payload.data),
                resp_b.ready.eq(adder.b.ready),
                adder.a.payload.eq(resp_a.payload.data),
            ]
            with m.If(routed_to(Opcode.ADD, "a")):
                m.d.comb += [
                    adder.a.valid.eq(resp_a.valid),
                    resp_a.ready.eq(adder.a.ready),
                ]
            wiring.connect(m, wiring.flipped(self.add_param), seq.add_param_in)
            wiring.connect(m, seq.add_param_out, adder.param)
            idle_units += [~adder.busy, ~reader_b.busy]
            outputs[Opcode.ADD] = adder.o
        if self.has_pool:
            m.submodules.pool = pooler = pool.Pool(cfg.rows, max_count=POOL_MAX_WINDOW)
            m.d.comb += pooler.i.payload.eq(resp_a.payload)
            with m.If(routed_to(Opcode.POOL, "a")):
                m.d.comb += [
                    pooler.i.valid.eq(resp_a.valid),
                    resp_a.ready.eq(pooler.i.ready),
                ]
            wiring.connect(m, seq.pool_param, pooler.param)
            idle_units.append(~pooler.busy)
            outputs[Opcode.POOL] = pooler.o
        if self.has_depthwise:
            # DWCONV: the column reader on ports 2 and 3 feeds the window buffer and the unit; the unit's sums
            # (rows lanes, the others zero) go into the requantiser instead of the accumulator read-out.
            m.submodules.dw_reader = dw_reader = ColumnReader(cfg)
            # The window buffers and units per group of 4 lanes (DepthwiseEngine), each behind register slices of
            # its own: the buffer's column registers and the unit's weight memories load on a `valid` from a
            # flip-flop beside them, not on the reader's response handshakes (17.6 ns in session 13's routed run)
            # nor on one register for the whole die (13.8 ns).
            m.submodules.dw_engine = dw_engine = DepthwiseEngine(cfg)
            wiring.connect(m, seq.dw_run, dw_reader.run)
            wiring.connect(m, dw_reader.weight, dw_engine.weight)
            wiring.connect(m, dw_reader.column, dw_engine.column)
            requesters[2].append((Opcode.DWCONV, dw_reader.req_a))
            requesters[3].append((Opcode.DWCONV, dw_reader.req_b))
            for port, resp, sink in ((2, resp_a, dw_reader.resp_a), (3, resp_b, dw_reader.resp_b)):
                m.d.comb += sink.payload.eq(resp.payload)
                with m.If(routed_to(Opcode.DWCONV, f"resp{port}")):
                    m.d.comb += [
                        sink.valid.eq(resp.valid),
                        resp.ready.eq(sink.ready),
                    ]
            selected = routed_to(Opcode.DWCONV, "requant")
            source = acc.rd_data
            m.d.comb += [
                requant.i.valid.eq(Mux(selected, dw_engine.result.valid, source.valid)),
                dw_engine.result.ready.eq(selected & requant.i.ready),
                source.ready.eq(~selected & requant.i.ready),
                # (`selected` is `out_sel == DWCONV` registered.)
                acc.rd_ready_next.eq(~seq.out_is.dwconv & requant.i_ready_next),
            ]
            # The payload multiplexer, a select copy per lane.
            for lane in range(cfg.cols):
                dw_lane = dw_engine.result.payload[lane] if lane < cfg.rows else 0
                m.d.comb += requant.i.payload[lane].eq(
                    Mux(routed_to(Opcode.DWCONV, f"requant_l{lane}"), dw_lane, source.payload[lane]))
            idle_units += [~dw_reader.busy, ~dw_engine.busy]
            outputs[Opcode.DWCONV] = requant.o
        for port, users in requesters.items():
            if len(users) == 1:
                wiring.connect(m, users[0][1], spad.rd_req[port])
            elif users:
                (_, vector), (opcode, other) = users
                with m.If(routed_to(opcode, f"req{port}")):
                    wiring.connect(m, other, spad.rd_req[port])
                with m.Else():
                    wiring.connect(m, vector, spad.rd_req[port])

        # The output stream: the unit selected by the sequencer (the depthwise unit's sums come through the
        # requantiser), through an OutputSelect: each unit is let go by a credit count beside it and its lines reach
        # a queue and a register slice at the output through pipeline registers, so neither the consumer's `ready`
        # nor a unit's lines cross the die in one cycle; vector lines fill the first `rows` lanes.
        sources = []                                    # (stream, opcodes routed to it)
        for opcode, source in outputs.items():
            for known, opcodes in sources:
                if known is source:
                    opcodes.append(opcode)
                    break
            else:
                sources.append((source, [opcode]))
        m.submodules.out_select = out_select = OutputSelect(self.out.payload.shape(), len(sources))
        for k, (source, opcodes) in enumerate(sources):
            port = out_select.i[k]
            m.d.comb += [
                out_select.select[k].eq(Cat(*(seq.out_is[opcode.name.lower()] for opcode in opcodes)).any()),
                port.valid.eq(source.valid),
                source.ready.eq(port.ready),
            ]
            for lane in range(source.payload.shape().length):
                m.d.comb += port.payload[lane].eq(source.payload[lane])
        wiring.connect(m, out_select.o, wiring.flipped(self.out))
        idle_units.append(~out_select.busy)
        m.d.comb += seq.drained.eq(Cat(*idle_units).all())

        # Status and counters.
        m.d.comb += [
            self.busy.eq(seq.busy),
            self.idle.eq(~seq.busy),
            self.error.eq(seq.error),
            self.error_code.eq(seq.error_code),
            seq.error_clear.eq(self.error_clear),
        ]
        # The counters count a cycle late, from registered conditions: `busy` is a function of every unit's state
        # and its net reached the 32-bit counter's enables across the die (13.6 ns at 16 x 16).
        busy_r, took_act = Signal(name="busy_r"), Signal(name="took_act")
        m.d.sync += [busy_r.eq(seq.busy), took_act.eq(array.act.valid & array.act.ready)]
        with m.If(busy_r):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.If(took_act):
            m.d.sync += [
                self.active_cycles.eq(self.active_cycles + 1),
                self.macs.eq(self.macs + cfg.macs_per_cycle),
            ]

        return m
