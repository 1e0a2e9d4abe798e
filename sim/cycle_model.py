"""Cycle model of the NPU: how long a program (:mod:`haneul.rtl.isa`) takes, without simulating the RTL.

The model schedules every instruction on the resources the hardware has, in the order the hardware allows:

* the **read channel** of the DMA (one bus word per cycle): instruction fetch (``INSTR_BYTES / bus_bytes`` words per
  instruction) and ``LOAD`` / ``PARAM`` lines, one line per cycle, then ``read_latency`` cycles until the data are in;
  the load unit goes first when it and the fetcher want the channel at once (its priority at the DMA's command port);
* the **fetcher**: in program order; an instruction waits for room in its queue (``QUEUE_DEPTH`` entries and the
  unit's own register), which is what lets a long-running queue hold up the fetch of the others;
* the **array**: a ``MATMUL`` takes a vector per cycle once its weight tile is in (read during the ``MATMUL``
  before, or after its own hand-out when the array had nothing to read it during), but the activation reader and the
  weight reader share the scratchpad's banks (:func:`array_run`): while the weight reader reads the next tile, or
  waits with the one after for the array's shadow registers, it takes every other turn of its bank, and an
  activation line in that bank takes two cycles. A ``MATMUL`` whose accumulator lines a queued or running read-out
  still has to read waits until that read-out is over (the sequencer's write-after-read rule). Its results are in
  the accumulator ``array_latency`` cycles after its last vector;
* the **read-out**: a ``REQUANT`` streams ``count`` lines through the requantiser, one per ``requant_fold`` cycles
  (``DatapathConfig.requant_fold``), once the ``MATMUL`` s before it have written their results,
  ``readout_latency`` cycles (plus ``requant_fold - 1`` when folded) from the accumulator to the output stream;
* the **write channel**: a ``STORE`` writes its lines as the output stream produces them, one per cycle, and
  completes ``write_latency`` cycles after its last line;
* the **tokens**: an instruction starts no earlier than the completion of the instruction whose signal it takes.

It is a model: it assumes a memory that answers at full rate, counts a line that needs two new bus words as two
cycles of the read channel, leaves out the fixed overheads of a short run and every bank conflict inside the
datapath but the array's two readers'. ``benchmarks/npu_gemm.py`` prints it next to the RTL's cycle count
(``BUSY_CYCLES``, Verilator, 16 x 16, RTL at 25907a1, the bank-aware scratchpad plan): GEMM 64 x 64 x 64 1,969
against 2,034, ic01's first CONV_2D 5,821 against 5,934, GEMM 256 x 256 x 256 72,085 against 71,170. In the packed
layout (``gemm_program(..., separate_banks=False)``) the 64 x 64 x 64 GEMM has its weights and activations in one
bank, and the array takes a vector every other cycle: 2,840 against 2,826 (1,881 before the model had the bank
sharing); ic01's layer 6,006 against 5,954. The bank geometry comes from :mod:`haneul.firmware.spad`.
"""

import dataclasses

from haneul.firmware.spad import bank_of
from haneul.rtl import commands, isa
from haneul.rtl.commands import weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.output_select import OutputSelect
from haneul.rtl.ppu import Params, Requantizer
from haneul.rtl.scratchpad import Scratchpad
from haneul.sim import dma_model

__all__ = ["Timing", "estimate_cycles"]

#: Instruction queue entries per queue (``haneul.rtl.cmdproc.QUEUE_DEPTH``) plus the unit's register.
QUEUE_ROOM = 4 + 1


@dataclasses.dataclass(frozen=True)
class Timing:
    """Latencies of the model, in cycles (measured on the RTL; see the module documentation)."""
    read_latency: int = 6
    write_latency: int = 8
    array_extra: int = 6          # from a vector's read to its result in the accumulator: array latency + array_extra
    # the requantiser and the datapath's output select, from the accumulator to the output stream
    readout_latency: int = Requantizer.LATENCY + OutputSelect.LATENCY
    issue: int = 2                # cycles a unit needs to take and hand out one instruction
    start: int = 8                # from START to the first fetch request


def estimate_cycles(instructions, config=None, *, bus_bytes=16, timing=Timing()):
    """Cycles from ``START`` to the end of the run of ``instructions`` (a list of :mod:`haneul.rtl.isa` values
    ending with ``End``), and per-resource figures: ``{"cycles", "array_busy", "read_words", "write_lines"}``."""
    cfg = config or DatapathConfig()
    array_latency = cfg.latency + timing.array_extra
    fold = cfg.requant_fold
    readout_latency = timing.readout_latency + fold - 1
    fetch_words = isa.INSTR_BYTES // bus_bytes
    param_words = -(-Params(cfg.cols).size // (8 * bus_bytes))

    program = [i for i in instructions if not isinstance(i, isa.End)]
    queue_of = [isa.QUEUE_OF[i.opcode] for i in program]
    n = len(program)

    rd_free = timing.start        # the read channel
    fetch_done = [None] * n       # when each instruction is in its queue
    started = [None] * n
    unit_free = {q: 0 for q in isa.QueueId}
    array_free = 0
    weights_at = None             # when the next MATMUL's weight tile is in the array (None: not read by then)
    weights_for = None            # the hand-out of that MATMUL it assumes (handed out later, it reads its tile itself)
    results_at = 0                # when the results of every MATMUL issued so far are in the accumulator
    readout_free = 0
    wr_free = 0
    out_lines = []                # times at which output lines appear, in order
    out_taken = 0
    tokens = {}                   # (src, dst) -> list of times
    taken = {}
    heads = {q: [k for k in range(n) if queue_of[k] == q] for q in isa.QueueId}
    pos = {q: 0 for q in isa.QueueId}
    next_fetch = 0
    last_fetch = timing.start
    end = 0
    array_busy = read_words = write_lines = 0

    readouts = []                 # (first line, end, when its read-out is over) of every REQUANT so far
    compute_order = heads[isa.QueueId.COMPUTE]
    compute_pos = {k: p for p, k in enumerate(compute_order)}
    qpos = [None] * n             # each instruction's place in its queue
    for q in isa.QueueId:
        for p, k in enumerate(heads[q]):
            qpos[k] = p

    def neighbours(q):
        return isa.QueueId((q.value - 1) % 3), isa.QueueId((q.value + 1) % 3)

    read_cycles = {k: load_words(i, bus_bytes) if isinstance(i, isa.Load) else i.count * param_words
                   for k, i in enumerate(program) if isinstance(i, (isa.Load, isa.Param))}

    def in_queue(j, t):
        """When instruction ``j`` is in its queue: its fetch, or, not fetched yet, the earliest the fetcher can have
        it at ``t``: the read channel first serves the loads in the load queue that the load unit can issue (it has
        priority), and the instructions before ``j`` must have room in their queues (``None`` if one has not)."""
        if fetch_done[j] is not None:
            return fetch_done[j]
        for x in range(next_fetch, j + 1):
            blocker = qpos[x] - QUEUE_ROOM
            if blocker >= 0 and started[heads[queue_of[x]][blocker]] is None:
                return None
        when = max(t, rd_free, last_fetch) + (j - next_fetch + 1) * fetch_words
        waits = {}
        for x in heads[isa.QueueId.LOAD][pos[isa.QueueId.LOAD]:]:
            if x > j or fetch_done[x] is None:
                break
            for flag, src in zip(("wait_prev", "wait_next"), neighbours(isa.QueueId.LOAD)):
                if getattr(program[x], flag):
                    index = taken.get((src, isa.QueueId.LOAD), 0) + waits.get(src, 0)
                    times = tokens.get((src, isa.QueueId.LOAD), [])
                    if index >= len(times) or times[index] > when:
                        return when + timing.read_latency
                    waits[src] = waits.get(src, 0) + 1
            when += read_cycles[x]
        return when + timing.read_latency

    def upcoming(k, t):
        """The next two MATMULs after MATMUL ``k`` (started at ``t``) in the compute queue, as ``(when, weight
        tile)``: when the compute unit hands each to the datapath, in order, after its fetch, the tokens it waits
        for and its write-after-read wait. Those that wait for something not scheduled yet (a token not sent, the
        read-out of a ``REQUANT`` after ``k``, a fetch held up by a full queue) come after ``k``'s vectors and are
        left out."""
        out, when, waits, reads = [], t, {}, []
        for p in range(compute_pos[k] + 1, len(compute_order)):
            j = program[compute_order[p]]
            fetched = in_queue(compute_order[p], t)
            if fetched is None:
                return out
            when = max(when + timing.issue, fetched)
            for flag, src in zip(("wait_prev", "wait_next"), neighbours(isa.QueueId.COMPUTE)):
                if getattr(j, flag):
                    index = taken.get((src, isa.QueueId.COMPUTE), 0) + waits.get(src, 0)
                    times = tokens.get((src, isa.QueueId.COMPUTE), [])
                    if index >= len(times):
                        return out
                    when = max(when, times[index])
                    waits[src] = waits.get(src, 0) + 1
            if not isinstance(j, isa.Compute):
                continue
            if isinstance(j.command, commands.Requant):
                reads.append((j.command.acc_addr, j.command.acc_addr + j.command.count))
            elif isinstance(j.command, commands.Matmul):
                mm = j.command
                if any(lo < mm.acc_addr + mm.count and mm.acc_addr < hi for lo, hi in reads):
                    return out
                when = max(when, war_end(mm, readouts))
                out.append((when, mm.weight_addr))
                if len(out) == 2:
                    return out
        return out

    def token_time(src, dst):
        k = taken.get((src, dst), 0)
        times = tokens.get((src, dst), [])
        return times[k] if k < len(times) else None

    def candidates():
        out = []
        if next_fetch < n:
            q = queue_of[next_fetch]
            same = heads[q]
            idx = qpos[next_fetch]
            blocker = same[idx - QUEUE_ROOM] if idx >= QUEUE_ROOM else None
            if blocker is None or started[blocker] is not None:
                t = max(rd_free, last_fetch, started[blocker] if blocker is not None else 0)
                out.append((t, "fetch", None))
        for q in isa.QueueId:
            if pos[q] >= len(heads[q]):
                continue
            k = heads[q][pos[q]]
            if fetch_done[k] is None:
                continue
            instr = program[k]
            prev, nxt = neighbours(q)
            t = max(fetch_done[k], unit_free[q])
            ok = True
            for flag, src in (("wait_prev", prev), ("wait_next", nxt)):
                if getattr(instr, flag):
                    tt = token_time(src, q)
                    if tt is None:
                        ok = False
                    else:
                        t = max(t, tt)
            if isinstance(instr, isa.Store) and len(out_lines) - out_taken < instr.lines:
                ok = False
            if ok:
                out.append((t, "start", q))
        return out

    while True:
        cands = candidates()
        if not cands:
            break
        # (the load unit goes before the fetcher at the DMA's command port)
        t, kind, q = min(cands, key=lambda c: (c[0], c[1] == "fetch"))
        if kind == "fetch":
            k = next_fetch
            rd_free = t + fetch_words
            read_words += fetch_words
            last_fetch = t + fetch_words
            fetch_done[k] = t + fetch_words + timing.read_latency
            next_fetch += 1
            continue
        k = heads[q][pos[q]]
        pos[q] += 1
        instr = program[k]
        prev, nxt = neighbours(q)
        for flag, src in (("wait_prev", prev), ("wait_next", nxt)):
            if getattr(instr, flag):
                taken[src, q] = taken.get((src, q), 0) + 1
        started[k] = t
        done = t
        if isinstance(instr, (isa.Load, isa.Param)):
            words = read_cycles[k]
            begin = max(t, rd_free)
            rd_free = begin + words
            read_words += words
            done = rd_free + timing.read_latency
            unit_free[q] = begin + max(words, timing.issue)
        elif isinstance(instr, isa.Compute) and isinstance(instr.command, commands.Matmul):
            mm = instr.command
            handout = max(t, war_end(mm, readouts))
            if weights_at is None or handout > weights_for:
                # nobody read its weight tile during the MATMUL before: it reads it now, before its first vector
                begin = max(handout + tile_read(mm, cfg), array_free)
            else:
                begin = max(handout, array_free, weights_at)
            nxt = upcoming(k, t)
            array_free, weights_at = array_run(mm, begin, nxt, cfg)
            weights_for = nxt[0][0] if nxt else None
            span = array_free - begin
            array_busy += mm.count
            done = array_free                                   # all vectors taken: the signal's meaning
            results_at = max(results_at, array_free + array_latency)
            unit_free[q] = max(t + timing.issue, begin - 2 * span)
        elif isinstance(instr, isa.Compute) and isinstance(instr.command, commands.Requant):
            begin = max(t, readout_free, results_at)
            readout_free = begin + instr.command.count * fold
            readouts.append((instr.command.acc_addr, instr.command.acc_addr + instr.command.count, readout_free))
            out_lines += [begin + readout_latency + i * fold for i in range(instr.command.count)]
            done = readout_free + readout_latency
            unit_free[q] = t + timing.issue
        elif isinstance(instr, isa.Compute):
            done = max(t, array_free + array_latency, readout_free + readout_latency)
            unit_free[q] = t + timing.issue
        elif isinstance(instr, isa.Store):
            line_time = max(t, wr_free)
            for i in range(instr.lines):
                line_time = max(line_time + 1, out_lines[out_taken + i])
            out_taken += instr.lines
            write_lines += instr.lines
            wr_free = line_time
            done = line_time + timing.write_latency
            unit_free[q] = t + timing.issue
        else:  # NOP
            unit_free[q] = t + timing.issue
        for flag, dst in (("signal_prev", prev), ("signal_next", nxt)):
            if getattr(instr, flag):
                tokens.setdefault((q, dst), []).append(done)
        end = max(end, done)

    if next_fetch < n or any(pos[q] < len(heads[q]) for q in isa.QueueId):
        raise ValueError("the program deadlocks in the cycle model (a token or an output line never comes)")
    end = max(end, rd_free + timing.read_latency, wr_free + timing.write_latency)
    return {"cycles": end, "array_busy": array_busy, "read_words": read_words, "write_lines": write_lines}


def war_end(matmul, readouts):
    """When ``matmul`` may start after the read-outs ``[(first, end, over)]`` of the ``REQUANT`` s before it: the
    sequencer holds a ``MATMUL`` whose accumulator lines overlap a queued or running read-out until it is over."""
    first, end = matmul.acc_addr, matmul.acc_addr + matmul.count
    return max((over for lo, hi, over in readouts if lo < end and first < hi), default=0)


def tile_read(matmul, config):
    """Cycles from the hand-out of ``matmul`` to its first vector when its weight tile has not been read before
    (the array had nothing to read it during): the scratchpad's read latency (:attr:`Scratchpad.latency
    <haneul.rtl.scratchpad.Scratchpad.latency>`) after a line per cycle, or per two cycles when its activation
    lines start in the same bank: the activation reader, its response FIFO full of the first vectors that the
    array does not take yet, then wins every other turn of the bank for nothing (see :func:`array_run`)."""
    shared = bank_of(config, matmul.act_addr) == bank_of(config, matmul.weight_addr)
    return Scratchpad.latency + weight_tile_lines(config) * (2 if shared else 1)


def array_run(matmul, begin, upcoming, config):
    """``(vectors, weights)``: when the array has taken the last vector of ``matmul`` (streaming from ``begin``),
    and when the weight tile of the next ``MATMUL`` is in its shadow registers (``None`` if that ``MATMUL`` is
    handed out only after this one: it then reads its tile before its first vector).

    The activation reader and the weight reader share the scratchpad's banks (``DatapathConfig.spad_banks`` of
    ``spad_depth / spad_banks`` lines; :class:`~haneul.rtl.scratchpad.Scratchpad`): a bank serves one read per
    cycle, round robin between the readers whose next request is for it, and it serves the weight reader's turn
    whether or not that reader has room for the line (the arbitration does not look at the credits): a cycle lost
    to both. While ``matmul``'s vectors stream, the weight reader reads the tile of the next ``MATMUL``
    (``upcoming[0] = (handed out, weight_addr)``) into the array's shadow registers, and then holds the first
    request of the one after (``upcoming[1]``) until the shadow registers are free again, at the end of ``matmul``,
    taking every other turn of its bank meanwhile. So an activation line in the bank the weight reader wants takes
    two cycles; in another bank the two readers run side by side, a line per cycle each.
    """
    tile = weight_tile_lines(config)
    (h1, w1), (h2, w2) = (list(upcoming) + [(None, 0)] * 2)[:2]
    cycle, sent, read = begin, 0, 0         # vectors sent, lines of the next tile read
    weight_turn = True                      # the bank's round robin (the activation reader was served last)
    while sent < matmul.count:
        if h1 is not None and read < tile and cycle >= h1:
            wants, useful = bank_of(config, w1 + read), 1
        elif h2 is not None and cycle >= h2 and read == tile:
            wants, useful = bank_of(config, w2), 0         # no room in the shadow registers: the turn is lost
        else:
            wants, useful = None, 0
        if wants == bank_of(config, matmul.act_addr + sent):
            if weight_turn:
                read += useful
            else:
                sent += 1
            weight_turn = not weight_turn
        else:
            sent += 1
            read += useful
            weight_turn = True
        cycle += 1
    if h1 is None:
        return cycle, None
    return cycle, max(cycle, h1) + tile - read


def load_words(load, bus_bytes):
    """Cycles the DMA's read side needs for ``load``: one per line, and one more for every line that needs a second
    new bus word (a line's words are requested once, and shared with the previous line of the descriptor when it
    starts in the previous line's last word or lies on the same two words)."""
    cycles, last = 0, None
    for _, ext in dma_model.load_iterations(load):
        if ext is None:
            cycles += 1
            continue
        first = ext // bus_bytes
        final = (ext + load.length - 1) // bus_bytes
        if last is not None and first != final and last == (first, final):
            new = 0                                   # the same two words as the previous line: both kept
        else:
            new = final - first + 1 - (1 if last is not None and first == last[1] else 0)
        cycles += max(1, new)
        last = (first, final)
    return cycles
