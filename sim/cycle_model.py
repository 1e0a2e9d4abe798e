"""Cycle model of the NPU: how long a program (:mod:`haneul.rtl.isa`) takes, without simulating the RTL.

The model schedules every instruction on the resources the hardware has, in the order the hardware allows:

* the **read channel** of the DMA (one bus word per cycle): instruction fetch (``INSTR_BYTES / bus_bytes`` words per
  instruction) and ``LOAD`` / ``PARAM`` lines, one line per cycle, then ``read_latency`` cycles until the data are in;
* the **fetcher**: in program order; an instruction waits for room in its queue (``QUEUE_DEPTH`` entries and the
  unit's own register), which is what lets a long-running queue hold up the fetch of the others;
* the **array**: a ``MATMUL`` keeps it for ``max(count, weight tile lines)`` cycles (the next weight tile streams in
  while the current one works); its results are in the accumulator ``array_latency`` cycles after its last vector;
* the **read-out**: a ``REQUANT`` streams ``count`` lines through the requantiser, one per ``requant_fold`` cycles
  (``DatapathConfig.requant_fold``), once the ``MATMUL`` s before it have written their results,
  ``readout_latency`` cycles (plus ``requant_fold - 1`` when folded) from the accumulator to the output stream;
* the **write channel**: a ``STORE`` writes its lines as the output stream produces them, one per cycle, and
  completes ``write_latency`` cycles after its last line;
* the **tokens**: an instruction starts no earlier than the completion of the instruction whose signal it takes.

It is a model: it assumes a memory that answers at full rate, counts a line that needs two new bus words as two
cycles of the read channel, and ignores bank conflicts inside the datapath. ``benchmarks/npu_gemm.py`` prints it next to the RTL's cycle count.
"""

import dataclasses

from haneul.rtl import commands, isa
from haneul.rtl.commands import weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.output_select import OutputSelect
from haneul.rtl.ppu import Params, Requantizer
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
    tile = weight_tile_lines(cfg)
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

    def neighbours(q):
        return isa.QueueId((q.value - 1) % 3), isa.QueueId((q.value + 1) % 3)

    def token_time(src, dst):
        k = taken.get((src, dst), 0)
        times = tokens.get((src, dst), [])
        return times[k] if k < len(times) else None

    def candidates():
        out = []
        if next_fetch < n:
            q = queue_of[next_fetch]
            same = heads[q]
            idx = same.index(next_fetch)
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
        t, kind, q = min(cands, key=lambda c: c[0])
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
            words = load_words(instr, bus_bytes) if isinstance(instr, isa.Load) else instr.count * param_words
            begin = max(t, rd_free)
            rd_free = begin + words
            read_words += words
            done = rd_free + timing.read_latency
            unit_free[q] = begin + max(words, timing.issue)
        elif isinstance(instr, isa.Compute) and isinstance(instr.command, commands.Matmul):
            begin = max(t, array_free)
            span = max(instr.command.count, tile)
            array_free = begin + span
            array_busy += instr.command.count
            done = array_free                                   # all vectors taken: the signal's meaning
            results_at = max(results_at, array_free + array_latency)
            unit_free[q] = max(t + timing.issue, begin - 2 * span)
        elif isinstance(instr, isa.Compute) and isinstance(instr.command, commands.Requant):
            begin = max(t, readout_free, results_at)
            readout_free = begin + instr.command.count * fold
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
