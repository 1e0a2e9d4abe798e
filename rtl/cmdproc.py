"""The command processor: fetches the program, runs the load, compute and store queues, and ends the run.

::

               DMA read lines (dest FETCH)                          DMA read lines (dest SPAD / PARAM)
                        │                                                      │
    start ─> fetcher ──>│ line FIFO ─> decoder ─┬─> load queue ──> load unit ──┼─> rd_cmd (LOAD, PARAM)
    cmd_addr  │ rd_cmd (FETCH, reserved space)  ├─> compute queue ─> compute ──┼─> dp_cmd ──> datapath
              v                                 └─> store queue ─> store unit ─┼─> wr_cmd ──> DMA write
             END                                        tokens ^  v            │   (lines: datapath out)
                                                                               ├─> spad_wr
                                                      param line FIFO <────────┘─> ppu_param / add_param

The instruction set and the meaning of every field are in :mod:`haneul.rtl.isa` (``docs/isa.md``). This module
executes it:

* **Fetcher.** From ``start`` it reads the program at ``cmd_addr`` through the DMA's read channel (destination
  ``FETCH``), :data:`FETCH_BLOCK` instructions per request, only when the line FIFO has room for all the lines it
  asks for, so fetched lines never hold up the DMA's read data. It never reads past the end of the address
  window (a request is cut to one instruction there, which the DMA then reports as ``ADDR_WINDOW`` if it is
  outside). Lines arriving after ``END`` are dropped.
* **Decoder.** Assembles an instruction from ``INSTR_BYTES / bus bytes`` lines, checks its opcode
  (``ILLEGAL_OPCODE``) and pushes it into the queue of :data:`haneul.rtl.isa.QUEUE_OF`; ``END`` stops fetching.
* **Units.** Each pops its queue, checks the arguments as the encoder does (``BAD_COUNT``, ``BAD_RANGE``,
  ``UNSUPPORTED``), takes the tokens its ``wait_*`` flags ask for, issues the instruction and moves on. The signal
  flags of issued instructions wait in a completion queue, without holding up the instructions after them, until
  the instruction has completed: a load's last line has arrived, a store's last write response (``wr_done``), a
  ``MATMUL`` has had all its activation vectors taken by the array (``dp_vectors``, so its scratchpad lines may be
  overwritten), any other ``COMPUTE`` or ``NOP`` when the datapath is idle. ``PARAM`` lines go into a line FIFO whose space is reserved before the request is issued; a ``PARAM``
  asks for at most :attr:`CommandProcessor.param_beats_max` beats (``BAD_COUNT`` otherwise).
* **Tokens.** One counter per ordered pair of queues (:data:`TOKEN_WIDTH` bits). A signal to a full counter waits.
* **Run control.** The run is done when ``END`` has been decoded and every queue, unit, completion queue, the DMA
  and the datapath are idle. An error from any unit, the DMA or the datapath, a deadlock (every unit waits for a
  token that nothing will send, for :data:`DEADLOCK_CYCLES` cycles; or nothing at all moves for ``watchdog``
  cycles, e.g. output lines that no ``STORE`` takes) or ``abort`` ends the run with an
  :class:`~haneul.rtl.isa.ErrorCode`: the command processor stops issuing, asks the DMA to abort (it finishes the
  bus transactions it started), waits for it, then resets every queue, unit and the datapath (``flush``) so that the
  next ``start`` begins from a clean state without a reset of the NPU.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from . import eltwise, isa, ppu
from .commands import CommandWord, Opcode
from .config import DatapathConfig
from .dma import ReadCommand, ReadDest, ReadLine
from .scratchpad import WriteRequest
from .sequencer import Queue

__all__ = ["FETCH_BLOCK", "TOKEN_WIDTH", "DEADLOCK_CYCLES", "WATCHDOG_CYCLES", "Events", "CommandProcessor"]

#: Instructions per fetch request.
FETCH_BLOCK = 2
#: Width of a token counter.
TOKEN_WIDTH = 8
#: Cycles the deadlock condition must hold before the run ends with ``DEADLOCK``.
DEADLOCK_CYCLES = 16
#: Default cycles without any progress (no handshake on the bus, the datapath's streams or in the array) after
#: which a run ends with ``DEADLOCK``: a datapath whose output no ``STORE`` takes, a memory that never answers.
WATCHDOG_CYCLES = 1 << 14
#: Entries of each instruction queue.
QUEUE_DEPTH = 4
#: Entries of the completion queues of the load and store units (instructions issued, not yet complete).
COMPLETION_DEPTH = 8
#: Parameter beats the parameter line FIFO holds.
PARAM_BEATS = 2


class Events(data.Struct):
    """Per-cycle events of the command processor, for the performance counters.

    Members
    -------
    fetch_wait
        The decoder waits for instruction lines while the program has not ended.
    load_dep, compute_dep, store_dep
        The unit holds an instruction whose ``wait_*`` tokens are not there.
    load_dma
        The load unit waits for the DMA to take its read command (or for parameter space).
    compute_busy
        The compute unit waits for the datapath to take a command or to drain.
    store_dma
        The store unit waits for the DMA to take its write command.
    """
    fetch_wait:   1
    load_dep:     1
    compute_dep:  1
    store_dep:    1
    load_dma:     1
    compute_busy: 1
    store_dma:    1


class _Ring:
    """Indices of the token counters: ``(source queue, destination queue)`` for every ordered pair."""
    PAIRS = [(a, b) for a in isa.QueueId for b in isa.QueueId if a != b]

    @staticmethod
    def prev(q):
        return isa.QueueId((q.value - 1) % 3)

    @staticmethod
    def next(q):
        return isa.QueueId((q.value + 1) % 3)


class _Engine(wiring.Component):
    """Everything of the command processor that ``flush`` resets: fetcher, decoder, queues, units, tokens."""

    def __init__(self, config, data_width, has_add, addr_width):
        self.config = config
        self.data_width = data_width
        self.has_add = has_add
        self.addr_width = addr_width
        self.bus_bytes = data_width // 8
        self.lines_per_instr = isa.INSTR_BYTES // self.bus_bytes
        self.param_lines = {
            isa.ParamTarget.REQUANT: -(-data.Layout.cast(ppu.Params(config.cols)).size // data_width),
            isa.ParamTarget.ADD: -(-data.Layout.cast(eltwise.Params).size // data_width),
        }
        self.param_fifo_depth = PARAM_BEATS * max(self.param_lines.values())
        ports = {
            "start":       In(1),
            "cmd_addr":    In(addr_width),
            "window_end":  In(addr_width + 1),

            "rd_cmd":      Out(stream.Signature(ReadCommand)),
            "rd_data":     In(stream.Signature(ReadLine(config, data_width))),
            "wr_cmd":      Out(stream.Signature(isa.StoreArgs)),
            "wr_done":     In(1),

            "dp_cmd":      Out(stream.Signature(CommandWord(config))),
            "dp_busy":     In(1),
            "dp_vectors":  In(32),
            "spad_wr":     Out(stream.Signature(WriteRequest(config, config.rows, config.spad_addr_width))),
            "ppu_param":   Out(stream.Signature(ppu.Params(config.cols))),
        }
        if has_add:
            ports["add_param"] = Out(stream.Signature(eltwise.Params))
        ports.update({
            "idle":       Out(1),
            "ended":      Out(1),
            "stuck":      Out(1),
            "error":      Out(1),
            "error_code": Out(isa.ErrorCode),
            "error_addr": Out(addr_width),
            "dma_addr":   Out(addr_width),
            "dp_addr":    Out(addr_width),
            "events":     Out(Events),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        L = self.lines_per_instr
        bus_bytes = self.bus_bytes
        dw = self.data_width

        errors = []  # (condition, code), first one wins

        # Token counters ---------------------------------------------------------------------------------------
        tokens = {pair: Signal(TOKEN_WIDTH, name=f"tok_{pair[0].name.lower()}_{pair[1].name.lower()}")
                  for pair in _Ring.PAIRS}
        give = {pair: Signal(name=f"give_{pair[0].name.lower()}_{pair[1].name.lower()}") for pair in _Ring.PAIRS}
        take = {pair: Signal(name=f"take_{pair[0].name.lower()}_{pair[1].name.lower()}") for pair in _Ring.PAIRS}
        for pair in _Ring.PAIRS:
            with m.If(give[pair] & ~take[pair]):
                m.d.sync += tokens[pair].eq(tokens[pair] + 1)
            with m.Elif(take[pair] & ~give[pair]):
                m.d.sync += tokens[pair].eq(tokens[pair] - 1)

        def full(pair):
            return tokens[pair] == (1 << TOKEN_WIDTH) - 1

        def tokens_ready(queue, deps):
            """Whether the tokens ``deps`` waits for are there (for unit ``queue``)."""
            p, n = (_Ring.prev(queue), queue), (_Ring.next(queue), queue)
            return (~deps.wait_prev | (tokens[p] != 0)) & (~deps.wait_next | (tokens[n] != 0))

        def take_tokens(queue, deps):
            p, n = (_Ring.prev(queue), queue), (_Ring.next(queue), queue)
            return [take[p].eq(deps.wait_prev), take[n].eq(deps.wait_next)]

        def can_signal(queue, deps):
            p, n = (queue, _Ring.prev(queue)), (queue, _Ring.next(queue))
            return (~deps.signal_prev | ~full(p)) & (~deps.signal_next | ~full(n))

        def signal(queue, deps):
            p, n = (queue, _Ring.prev(queue)), (queue, _Ring.next(queue))
            return [give[p].eq(deps.signal_prev), give[n].eq(deps.signal_next)]

        # Fetcher ----------------------------------------------------------------------------------------------
        m.submodules.fetch_fifo = fetch_fifo = SyncFIFO(width=dw, depth=2 * FETCH_BLOCK * L)
        pc = Signal(self.addr_width)
        fetching = Signal()
        ended = Signal()
        inflight = Signal(range(fetch_fifo.depth + 1))   # fetch lines requested, not yet arrived
        block_bytes = FETCH_BLOCK * isa.INSTR_BYTES
        whole_block = (pc + block_bytes) <= self.window_end
        fetch_lines = Mux(whole_block, FETCH_BLOCK * L, L)
        room = fetch_fifo.depth - fetch_fifo.level - inflight
        fetch_req = Signal()
        fetch_cmd = Signal(ReadCommand)
        m.d.comb += [
            fetch_req.eq(fetching & ~ended & (room >= fetch_lines)),
            fetch_cmd.dest.eq(ReadDest.FETCH),
            fetch_cmd.args.ext_addr.eq(pc),
            fetch_cmd.args.length.eq(bus_bytes),
            fetch_cmd.args.loops[0].count.eq(fetch_lines),
            fetch_cmd.args.loops[0].ext_stride.eq(bus_bytes),
            fetch_cmd.args.loops[1].count.eq(1),
            fetch_cmd.args.loops[2].count.eq(1),
        ]
        with m.If(self.start):
            m.d.sync += [pc.eq(self.cmd_addr), fetching.eq(1)]

        # The read command port is shared by the fetcher and the load unit (the load unit first).
        load_req = Signal()
        load_cmd = Signal(ReadCommand)
        fetch_taken = Signal()
        with m.If(load_req):
            m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.eq(load_cmd)]
        with m.Elif(fetch_req):
            m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.eq(fetch_cmd),
                         fetch_taken.eq(self.rd_cmd.ready)]
        with m.If(fetch_taken):
            m.d.sync += pc.eq(pc + Mux(whole_block, block_bytes, isa.INSTR_BYTES))

        # Read lines: to the fetch FIFO, the scratchpad or the parameter FIFO, by destination.
        rd = self.rd_data
        m.submodules.param_fifo = param_fifo = SyncFIFO(width=dw, depth=self.param_fifo_depth)
        fetch_arrived = Signal()
        with m.Switch(rd.payload.dest):
            with m.Case(ReadDest.FETCH):
                m.d.comb += [
                    fetch_fifo.w_data.eq(rd.payload.data),
                    fetch_fifo.w_en.eq(rd.valid & ~ended),
                    rd.ready.eq(fetch_fifo.w_rdy | ended),
                    fetch_arrived.eq(rd.valid),
                ]
            with m.Case(ReadDest.SPAD):
                m.d.comb += [
                    self.spad_wr.valid.eq(rd.valid),
                    self.spad_wr.payload.addr.eq(rd.payload.addr),
                    self.spad_wr.payload.data.eq(rd.payload.data.as_value()[:cfg.rows * 8]),
                    rd.ready.eq(self.spad_wr.ready),
                ]
            with m.Case(ReadDest.PARAM):
                m.d.comb += [
                    param_fifo.w_data.eq(rd.payload.data),
                    param_fifo.w_en.eq(rd.valid),
                    rd.ready.eq(param_fifo.w_rdy),
                ]
        took_fetch_line = fetch_req & fetch_taken
        with m.If(took_fetch_line & ~(fetch_arrived & rd.ready)):
            m.d.sync += inflight.eq(inflight + fetch_lines)
        with m.Elif(took_fetch_line):
            m.d.sync += inflight.eq(inflight + fetch_lines - 1)
        with m.Elif(fetch_arrived & rd.ready):
            m.d.sync += inflight.eq(inflight - 1)

        # Decoder ----------------------------------------------------------------------------------------------
        instr_bits = Signal(isa.INSTR_WIDTH)
        got = Signal(range(L + 1))
        instr = isa.Instruction()(instr_bits)
        entry = data.StructLayout({"instr": isa.Instruction(), "addr": unsigned(self.addr_width)})
        queues = {q: Queue(entry, QUEUE_DEPTH) for q in isa.QueueId}
        dec_pc = Signal(self.addr_width)     # address of the instruction being assembled
        with m.If(self.start):
            m.d.sync += dec_pc.eq(self.cmd_addr)
        for q, queue in queues.items():
            m.submodules[f"{q.name.lower()}_queue"] = queue
        have = got == L
        m.d.comb += fetch_fifo.r_en.eq(~have & ~ended)
        with m.If(fetch_fifo.r_rdy & fetch_fifo.r_en):
            m.d.sync += [
                instr_bits.eq(Cat(instr_bits[dw:], fetch_fifo.r_data) if L > 1 else fetch_fifo.r_data),
                got.eq(got + 1),
            ]
        dispatched = Signal()
        legal = Signal()
        with m.Switch(instr.opcode):
            for opcode, queue_id in isa.QUEUE_OF.items():
                with m.Case(opcode):
                    q = queues[queue_id]
                    m.d.comb += [
                        legal.eq(1),
                        q.i.payload.instr.eq(instr),
                        q.i.payload.addr.eq(dec_pc),
                        q.i.valid.eq(have),
                        dispatched.eq(have & q.i.ready),
                    ]
            with m.Case(isa.Opcode.END):
                m.d.comb += [legal.eq(1), dispatched.eq(have)]
                with m.If(have):
                    m.d.sync += ended.eq(1)
        with m.If(dispatched):
            m.d.sync += [got.eq(0), dec_pc.eq(dec_pc + isa.INSTR_BYTES)]
        errors.append((have & ~legal, isa.ErrorCode.ILLEGAL_OPCODE, dec_pc))
        dispatch_stalled = have & legal & ~dispatched

        # Load unit --------------------------------------------------------------------------------------------
        m.submodules.load_done = load_done = Queue(isa.Deps, COMPLETION_DEPTH)
        lq = queues[isa.QueueId.LOAD].o
        li = isa.Instruction()(Signal(isa.INSTR_WIDTH, name="load_instr"))
        l_addr = Signal(self.addr_width)
        l_valid = Signal()       # li holds an instruction not yet issued
        l_checked = Signal()     # its arguments have been checked
        largs, pargs = li.args.load, li.args.param
        # The scratchpad line range of a LOAD: registered products, one cycle after the instruction is taken.
        last_line = Signal(isa.SPAD_FIELD_WIDTH + 2 * 16 + 2)
        m.d.sync += last_line.eq(largs.spad_addr + sum((lp.count - 1) * lp.spad_stride for lp in largs.loops))
        load_err = Signal(isa.ErrorCode)
        is_load = li.opcode == isa.Opcode.LOAD
        with m.If(is_load):
            with m.If((largs.length == 0) | Cat(*(lp.count == 0 for lp in largs.loops)).any()
                      | Cat(*(pd.before + pd.after >= largs.loops[k].count for k, pd in enumerate(largs.pad))).any()):
                m.d.comb += load_err.eq(isa.ErrorCode.BAD_COUNT)
            with m.Elif((largs.offset + largs.length > cfg.rows) | (last_line >= cfg.spad_depth)):
                m.d.comb += load_err.eq(isa.ErrorCode.BAD_RANGE)
        with m.Else():
            p_lines = Signal(range(self.param_fifo_depth + 1))
            with m.Switch(pargs.target):
                for target, lines in self.param_lines.items():
                    with m.Case(target):
                        m.d.comb += p_lines.eq(lines)
            with m.If((pargs.target == isa.ParamTarget.ADD) & (not self.has_add)):
                m.d.comb += load_err.eq(isa.ErrorCode.UNSUPPORTED)
            with m.Elif((pargs.count == 0) | (pargs.count > PARAM_BEATS)):
                m.d.comb += load_err.eq(isa.ErrorCode.BAD_COUNT)
        errors.append((l_valid & l_checked & (load_err != isa.ErrorCode.NONE), load_err, l_addr))

        # Parameter FIFO space: lines of PARAM requests issued and not yet taken out of the FIFO.
        param_reserved = Signal(range(self.param_fifo_depth + 1))
        param_want = Signal(range(self.param_fifo_depth * PARAM_BEATS + 1))
        m.d.comb += param_want.eq(p_lines * pargs.count)
        param_room = (self.param_fifo_depth - param_reserved) >= param_want

        with m.If(~l_valid):
            m.d.comb += lq.ready.eq(1)
            with m.If(lq.valid):
                m.d.sync += [li.eq(lq.payload.instr), l_addr.eq(lq.payload.addr), l_valid.eq(1), l_checked.eq(0)]
        with m.Else():
            m.d.sync += l_checked.eq(1)
        l_go = Signal()
        m.d.comb += l_go.eq(l_valid & l_checked & (load_err == isa.ErrorCode.NONE)
                            & tokens_ready(isa.QueueId.LOAD, li.deps) & load_done.i.ready
                            & (is_load | param_room))
        m.d.comb += [
            load_req.eq(l_go),
            load_cmd.dest.eq(Mux(is_load, ReadDest.SPAD, ReadDest.PARAM)),
        ]
        with m.If(is_load):
            m.d.comb += load_cmd.args.eq(largs)
        with m.Else():
            m.d.comb += [
                load_cmd.args.ext_addr.eq(pargs.ext_addr),
                load_cmd.args.length.eq(bus_bytes),
                load_cmd.args.loops[0].count.eq(param_want),
                load_cmd.args.loops[0].ext_stride.eq(bus_bytes),
                load_cmd.args.loops[1].count.eq(1),
                load_cmd.args.loops[2].count.eq(1),
            ]
        load_issued = l_go & self.rd_cmd.ready
        with m.If(load_issued):
            m.d.comb += take_tokens(isa.QueueId.LOAD, li.deps)
            m.d.comb += [load_done.i.valid.eq(1), load_done.i.payload.eq(li.deps)]
            m.d.sync += l_valid.eq(0)

        # Parameter lines -> beats. The targets of the PARAMs issued, in order, with their beat counts.
        m.submodules.param_jobs = param_jobs = Queue(
            data.StructLayout({"target": isa.ParamTarget, "count": unsigned(isa.LOOP_COUNT_WIDTH)}), COMPLETION_DEPTH)
        m.d.comb += [
            param_jobs.i.valid.eq(load_issued & ~is_load),
            param_jobs.i.payload.target.eq(pargs.target),
            param_jobs.i.payload.count.eq(pargs.count),
        ]
        max_lines = max(self.param_lines.values())
        beat = Signal(max_lines * dw)
        beat_lines = Signal(range(max_lines + 1))
        beats_done = Signal(isa.LOOP_COUNT_WIDTH)
        job = param_jobs.o.payload
        need = Signal(range(max_lines + 1))
        with m.Switch(job.target):
            for target, lines in self.param_lines.items():
                with m.Case(target):
                    m.d.comb += need.eq(lines)
        beat_full = param_jobs.o.valid & (beat_lines == need)
        m.d.comb += param_fifo.r_en.eq(param_jobs.o.valid & ~beat_full)
        with m.If(param_fifo.r_en & param_fifo.r_rdy):
            with m.Switch(beat_lines):
                for k in range(max_lines):
                    with m.Case(k):
                        m.d.sync += beat[k * dw:(k + 1) * dw].eq(param_fifo.r_data)
            m.d.sync += beat_lines.eq(beat_lines + 1)
        taken_beat = Signal()
        m.d.comb += [
            self.ppu_param.payload.eq(beat),
            self.ppu_param.valid.eq(beat_full & (job.target == isa.ParamTarget.REQUANT)),
        ]
        with m.If(self.ppu_param.valid & self.ppu_param.ready):
            m.d.comb += taken_beat.eq(1)
        if self.has_add:
            m.d.comb += [
                self.add_param.payload.eq(beat),
                self.add_param.valid.eq(beat_full & (job.target == isa.ParamTarget.ADD)),
            ]
            with m.If(self.add_param.valid & self.add_param.ready):
                m.d.comb += taken_beat.eq(1)
        with m.If(taken_beat):
            m.d.sync += [beat_lines.eq(0), beats_done.eq(beats_done + 1)]
            with m.If(beats_done + 1 == job.count):
                m.d.comb += param_jobs.o.ready.eq(1)
                m.d.sync += beats_done.eq(0)
        freed = Signal(range(max_lines + 1))
        m.d.comb += freed.eq(Mux(taken_beat, need, 0))
        m.d.sync += param_reserved.eq(param_reserved + Mux(load_issued & ~is_load, param_want, 0) - freed)

        # Load completions: the last line of every LOAD and PARAM, in order.
        load_last = rd.valid & rd.ready & rd.payload.last & (rd.payload.dest != ReadDest.FETCH)
        with m.If(load_last):
            m.d.comb += load_done.o.ready.eq(1)
            m.d.comb += signal(isa.QueueId.LOAD, load_done.o.payload)
        # (A full token counter would need to wait: the completion is applied regardless, saturation is checked
        # by the unit before issuing, below.)

        # Compute unit -----------------------------------------------------------------------------------------
        # Signals wait in `c_pending` until the instruction has completed, without holding up the instructions
        # after it. A MATMUL has completed (for its scratchpad lines, which is what a load waits for) once the
        # array has taken all the activation vectors issued up to and including its own: `dp_vectors` (the
        # datapath's count of vectors taken) has reached `target`. Any other instruction with a signal flag
        # completes when the datapath is idle.
        cq = queues[isa.QueueId.COMPUTE].o
        ci = isa.Instruction()(Signal(isa.INSTR_WIDTH, name="compute_instr"))
        c_addr = Signal(self.addr_width)
        c_valid = Signal()
        m.submodules.compute_done = c_pending = Queue(
            data.StructLayout({"deps": isa.Deps, "vectors": 1, "target": 32}), COMPLETION_DEPTH)
        issued_vectors = Signal(32)
        with m.If(self.start):
            m.d.sync += issued_vectors.eq(self.dp_vectors)
        with m.If(~c_valid):
            m.d.comb += cq.ready.eq(1)
            with m.If(cq.valid):
                m.d.sync += [ci.eq(cq.payload.instr), c_addr.eq(cq.payload.addr), c_valid.eq(1)]
        c_signals = ci.deps.signal_prev | ci.deps.signal_next
        c_ready = tokens_ready(isa.QueueId.COMPUTE, ci.deps) & (~c_signals | c_pending.i.ready)
        is_compute = ci.opcode == isa.Opcode.COMPUTE
        word = CommandWord(cfg)(ci.args.compute.command[:CommandWord(cfg).size])
        is_matmul = is_compute & (word.opcode == Opcode.MATMUL)
        with m.If(c_valid & c_ready):
            with m.If(is_compute):
                m.d.comb += [
                    self.dp_cmd.valid.eq(1),
                    self.dp_cmd.payload.eq(word),
                ]
            with m.If(~is_compute | self.dp_cmd.ready):
                m.d.comb += take_tokens(isa.QueueId.COMPUTE, ci.deps)
                m.d.sync += c_valid.eq(0)
                target = issued_vectors + Mux(is_matmul, word.args.matmul.count, 0)
                m.d.sync += issued_vectors.eq(target)
                m.d.comb += [
                    c_pending.i.valid.eq(c_signals),
                    c_pending.i.payload.deps.eq(ci.deps),
                    c_pending.i.payload.vectors.eq(is_matmul),
                    c_pending.i.payload.target.eq(target),
                ]
        head = c_pending.o.payload
        reached = (self.dp_vectors - head.target)[31] == 0
        with m.If(c_pending.o.valid & Mux(head.vectors, reached, ~self.dp_busy)):
            m.d.comb += c_pending.o.ready.eq(1)
            m.d.comb += signal(isa.QueueId.COMPUTE, head.deps)

        # Store unit -------------------------------------------------------------------------------------------
        m.submodules.store_done = store_done = Queue(isa.Deps, COMPLETION_DEPTH)
        sq = queues[isa.QueueId.STORE].o
        si = isa.Instruction()(Signal(isa.INSTR_WIDTH, name="store_instr"))
        s_addr = Signal(self.addr_width)
        s_valid = Signal()
        sargs = si.args.store
        store_err = Signal(isa.ErrorCode)
        with m.If(Cat(*(lp.count == 0 for lp in sargs.loops)).any()):
            m.d.comb += store_err.eq(isa.ErrorCode.BAD_COUNT)
        with m.Elif((sargs.length == 0) | (sargs.length > cfg.cols)):
            m.d.comb += store_err.eq(isa.ErrorCode.BAD_RANGE)
        errors.append((s_valid & (store_err != isa.ErrorCode.NONE), store_err, s_addr))
        with m.If(~s_valid):
            m.d.comb += sq.ready.eq(1)
            with m.If(sq.valid):
                m.d.sync += [si.eq(sq.payload.instr), s_addr.eq(sq.payload.addr), s_valid.eq(1)]
        s_go = (s_valid & (store_err == isa.ErrorCode.NONE) & tokens_ready(isa.QueueId.STORE, si.deps)
                & store_done.i.ready)
        m.d.comb += [
            self.wr_cmd.valid.eq(s_go),
            self.wr_cmd.payload.eq(sargs),
        ]
        with m.If(s_go & self.wr_cmd.ready):
            m.d.comb += take_tokens(isa.QueueId.STORE, si.deps)
            m.d.comb += [store_done.i.valid.eq(1), store_done.i.payload.eq(si.deps)]
            m.d.sync += s_valid.eq(0)
        with m.If(self.wr_done):
            m.d.comb += store_done.o.ready.eq(1)
            m.d.comb += signal(isa.QueueId.STORE, store_done.o.payload)

        # Status -----------------------------------------------------------------------------------------------
        code = Signal(isa.ErrorCode)
        for cond, err, addr in reversed(errors):
            with m.If(cond):
                m.d.comb += [code.eq(err), self.error_addr.eq(addr)]
        m.d.comb += [
            self.error.eq(code != isa.ErrorCode.NONE),
            self.error_code.eq(code),
        ]
        # Addresses of the instructions the DMA and the datapath received last (for their errors).
        with m.If(self.rd_cmd.valid & self.rd_cmd.ready):
            m.d.sync += self.dma_addr.eq(Mux(load_req, l_addr, pc))
        with m.If(self.wr_cmd.valid & self.wr_cmd.ready):
            m.d.sync += self.dma_addr.eq(s_addr)
        with m.If(self.dp_cmd.valid & self.dp_cmd.ready):
            m.d.sync += self.dp_addr.eq(c_addr)
        queues_empty = Cat(*(~q.o.valid for q in queues.values())).all()
        units_idle = (~l_valid & ~c_valid & ~s_valid & ~load_done.o.valid & ~store_done.o.valid & ~c_pending.o.valid
                      & ~param_jobs.o.valid)
        m.d.comb += [
            self.ended.eq(ended),
            self.idle.eq(queues_empty & units_idle & ~have & ~self.dp_busy),
        ]
        # Stuck: nothing can move. Each unit is empty or waits for tokens it does not have; no completion is
        # pending; the fetcher has ended or cannot hand its instruction to a full queue.
        l_blocked = ~l_valid | (l_checked & ~tokens_ready(isa.QueueId.LOAD, li.deps))
        c_blocked = ~c_valid | ~c_ready
        s_blocked = ~s_valid | ~tokens_ready(isa.QueueId.STORE, si.deps)
        waiting = ((l_valid & l_blocked) | (c_valid & c_blocked) | (s_valid & s_blocked))
        m.d.comb += self.stuck.eq(
            waiting & l_blocked & c_blocked & s_blocked & ~self.dp_busy
            & ~load_done.o.valid & ~store_done.o.valid & ~c_pending.o.valid & ~param_jobs.o.valid
            & Cat(*(~q.o.valid for q in queues.values())).all()
            & (ended | dispatch_stalled))

        m.d.comb += [
            self.events.fetch_wait.eq(fetching & ~ended & ~have),
            self.events.load_dep.eq(l_valid & l_checked & ~tokens_ready(isa.QueueId.LOAD, li.deps)),
            self.events.compute_dep.eq(c_valid & ~tokens_ready(isa.QueueId.COMPUTE, ci.deps)),
            self.events.store_dep.eq(s_valid & ~tokens_ready(isa.QueueId.STORE, si.deps)),
            self.events.load_dma.eq(load_req & ~self.rd_cmd.ready | (l_valid & l_checked & ~is_load & ~param_room)),
            self.events.compute_busy.eq(self.dp_cmd.valid & ~self.dp_cmd.ready),
            self.events.store_dma.eq(self.wr_cmd.valid & ~self.wr_cmd.ready),
        ]
        return m


class CommandProcessor(wiring.Component):
    """Fetches and runs an NPU program (:mod:`haneul.rtl.isa`) on the DMA engine and the datapath.

    Parameters
    ----------
    config : DatapathConfig
    data_width : int
        Width of the DMA's bus words (and of its read lines).
    addr_width : int
        Width of external addresses.
    has_add : bool
        Whether the datapath has the adder (``PARAM`` to ``ADD`` is ``UNSUPPORTED`` otherwise).
    watchdog : int
        Cycles without ``progress`` after which a run ends with ``DEADLOCK`` (default :data:`WATCHDOG_CYCLES`).

    Members
    -------
    start : In(1)
        Start a run of the program at ``cmd_addr`` (ignored while ``busy``).
    abort : In(1)
        End the run with ``ABORTED``.
    cmd_addr : In(addr_width)
    window_base, window_size : In(addr_width)
        The external window (the fetcher does not prefetch past its end; the DMA checks every access).
    busy : Out(1)
        A run is in progress (including its clean-up after an error).
    done : Out(1)
        One-cycle pulse: the run ended, successfully when ``error_code`` is ``NONE``.
    error_code : Out(isa.ErrorCode)
        Valid with ``done``.
    error_addr : Out(addr_width)
        Valid with ``done`` and an error: the address of the instruction at fault (an illegal instruction, or the
        last instruction handed to the DMA engine or the datapath for their errors; zero for aborts and
        deadlocks).
    flush : Out(1)
        One-cycle pulse that resets the DMA and the datapath after an error (the DMA is idle by then).
    dma_abort : Out(1)
        Asks the DMA to stop issuing and finish the transactions it started.
    rd_cmd, rd_data, wr_cmd, wr_done
        To the DMA engine.
    dp_cmd, spad_wr, ppu_param, add_param, dp_busy, dp_error, dp_error_code
        To the datapath.
    dma_busy, dma_error, dma_error_code
        From the DMA engine.
    progress : In(1)
        Something moved this cycle (a handshake on the bus or on a datapath stream, a vector into the array).
    events : Out(Events)
    """

    def __init__(self, config=None, *, data_width=128, addr_width=32, has_add=True, watchdog=WATCHDOG_CYCLES):
        if config is None:
            config = DatapathConfig()
        if not isinstance(config, DatapathConfig):
            raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
        if isa.INSTR_BYTES % (data_width // 8):
            raise ValueError(f"Bus width {data_width} does not divide an instruction of {isa.INSTR_WIDTH} bits")
        self.config = config
        self.data_width = data_width
        self.addr_width = addr_width
        self.has_add = has_add
        if not isinstance(watchdog, int) or watchdog < 2 * DEADLOCK_CYCLES:
            raise ValueError(f"Watchdog must be an integer of at least {2 * DEADLOCK_CYCLES} cycles, not {watchdog!r}")
        self.watchdog = watchdog
        self._engine = _Engine(config, data_width, has_add, addr_width)
        ports = {
            "start":          In(1),
            "abort":          In(1),
            "cmd_addr":       In(addr_width),
            "window_base":    In(addr_width),
            "window_size":    In(addr_width),
            "busy":           Out(1),
            "done":           Out(1),
            "error_code":     Out(isa.ErrorCode),
            "error_addr":     Out(addr_width),
            "flush":          Out(1),
            "dma_abort":      Out(1),
            "dma_busy":       In(1),
            "dma_error":      In(1),
            "dma_error_code": In(isa.ErrorCode),
            "dp_busy":        In(1),
            "dp_vectors":     In(32),
            "dp_error":       In(1),
            "dp_error_code":  In(4),
            "progress":       In(1),
            "events":         Out(Events),
        }
        for name in ("rd_cmd", "rd_data", "wr_cmd", "wr_done", "dp_cmd", "spad_wr", "ppu_param", "add_param"):
            if name in self._engine.signature.members:
                ports[name] = self._engine.signature.members[name]
        super().__init__(ports)

    @property
    def param_beats_max(self):
        return PARAM_BEATS

    def elaborate(self, platform):
        m = Module()
        eng_flush = Signal()
        m.submodules.engine = engine = ResetInserter(eng_flush)(self._engine)

        for name in ("rd_cmd", "wr_cmd", "dp_cmd", "spad_wr", "ppu_param", "add_param"):
            if name in self.signature.members:
                wiring.connect(m, getattr(engine, name), wiring.flipped(getattr(self, name)))
        wiring.connect(m, wiring.flipped(self.rd_data), engine.rd_data)
        m.d.comb += [
            engine.wr_done.eq(self.wr_done),
            engine.dp_busy.eq(self.dp_busy),
            engine.dp_vectors.eq(self.dp_vectors),
            engine.cmd_addr.eq(self.cmd_addr),
            engine.window_end.eq(self.window_base + self.window_size),
            self.events.eq(engine.events),
        ]

        code = Signal(isa.ErrorCode)
        addr = Signal(self.addr_width)
        m.d.comb += self.error_addr.eq(addr)
        stuck_for = Signal(range(DEADLOCK_CYCLES + 1))
        with m.If(engine.stuck):
            m.d.sync += stuck_for.eq(Mux(stuck_for == DEADLOCK_CYCLES, stuck_for, stuck_for + 1))
        with m.Else():
            m.d.sync += stuck_for.eq(0)

        quiet_for = Signal(range(self.watchdog + 1))
        with m.If(self.progress | ~self.busy):
            m.d.sync += quiet_for.eq(0)
        with m.Elif(quiet_for != self.watchdog):
            m.d.sync += quiet_for.eq(quiet_for + 1)

        with m.FSM():
            with m.State("IDLE"):
                # The engine is held in reset between runs: every run starts from empty queues and no tokens.
                m.d.comb += eng_flush.eq(1)
                with m.If(self.start):
                    m.d.sync += [code.eq(isa.ErrorCode.NONE), addr.eq(0)]
                    m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += [self.busy.eq(1), engine.start.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                fail = Signal(isa.ErrorCode)
                fail_addr = Signal(self.addr_width)
                # Priority: abort, DMA, datapath, engine, deadlock.
                with m.If(self.abort):
                    m.d.comb += fail.eq(isa.ErrorCode.ABORTED)
                with m.Elif(self.dma_error):
                    m.d.comb += [fail.eq(self.dma_error_code), fail_addr.eq(engine.dma_addr)]
                with m.Elif(self.dp_error):
                    m.d.comb += [fail.eq(self.dp_error_code), fail_addr.eq(engine.dp_addr)]
                with m.Elif(engine.error):
                    m.d.comb += [fail.eq(engine.error_code), fail_addr.eq(engine.error_addr)]
                with m.Elif((stuck_for == DEADLOCK_CYCLES) | (quiet_for == self.watchdog)):
                    m.d.comb += fail.eq(isa.ErrorCode.DEADLOCK)
                with m.If(fail != isa.ErrorCode.NONE):
                    m.d.sync += [code.eq(fail), addr.eq(fail_addr)]
                    m.next = "STOP"
                with m.Elif(engine.ended & engine.idle & ~self.dma_busy):
                    m.d.comb += [self.done.eq(1), self.error_code.eq(isa.ErrorCode.NONE)]
                    m.next = "IDLE"
            with m.State("STOP"):
                # Stop issuing (the engine is held in reset from here on) and tell the DMA to stop: it finishes
                # the bus transactions it started and drops everything else.
                m.d.comb += [self.busy.eq(1), self.dma_abort.eq(1), eng_flush.eq(1)]
                m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [self.busy.eq(1), eng_flush.eq(1)]
                with m.If(~self.dma_busy):
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.comb += [self.busy.eq(1), eng_flush.eq(1), self.flush.eq(1),
                             self.done.eq(1), self.error_code.eq(code)]
                m.next = "IDLE"
        return m
