"""Instruction-level simulator of the NPU: runs a program (:mod:`haneul.rtl.isa`) on a numpy memory.

It executes what the hardware executes, one whole instruction at a time: ``LOAD`` / ``STORE`` through the DMA
reference model (:mod:`haneul.sim.dma_model`), ``PARAM`` into the parameter queues, ``MATMUL`` and ``REQUANT`` with
the golden model's arithmetic, the output lines through a queue between ``REQUANT`` and ``STORE``. The three
instruction queues run as the command processor runs them: each in order, an instruction starts only when the
tokens its ``wait_*`` flags ask for are there, and sends its signals when it completes. Which queue goes next is
chosen at random (``seed``), so a program whose tokens do not order a read after the write it needs (or a write
after the read it must not disturb) gives a different result from one interleaving to another, and a program
whose queues wait for each other forever ends with :class:`IsaError` (``DEADLOCK``), as the hardware does.

::

    sim = IsaSim(config)
    sim.write(addr, data)
    stats = sim.run(cmd_addr)        # raises IsaError with the hardware's error code on an illegal program
    out = sim.read(out_addr, n)
"""

import collections
import random

import numpy as np

from haneul.errors import HaneulError
from haneul.rtl import commands, isa
from haneul.rtl.commands import weight_lines_per_row, weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Params, Rounding
from haneul.sim import dma_model
from haneul.sim.golden import kernels

__all__ = ["IsaError", "IsaSim"]


class IsaError(HaneulError, RuntimeError):
    """A run that the NPU ends with an error; ``code`` is the :class:`~haneul.rtl.isa.ErrorCode`."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code


class IsaSim:
    """See the module documentation.

    Parameters
    ----------
    config : DatapathConfig, optional
    mem_size : int
        Bytes of memory from address 0.
    bus_bytes : int
        Bytes per bus word (the layout of parameter beats in memory).
    seed : int
        Chooses the interleaving of the queues.
    """

    def __init__(self, config=None, *, mem_size=1 << 20, bus_bytes=16, seed=0):
        self.config = config or DatapathConfig()
        self.fmt = isa.InstructionFormat(self.config)
        self.mem = np.zeros(mem_size, dtype=np.uint8)
        self.bus_bytes = bus_bytes
        self.rng = random.Random(seed)
        cfg = self.config
        self.spad = np.zeros((cfg.spad_depth, cfg.rows), dtype=np.int8)
        self.acc = np.zeros((cfg.acc_depth, cfg.cols), dtype=np.int64)
        self.params = None

    def write(self, addr, data):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        self.mem[addr:addr + len(data)] = data

    def read(self, addr, length):
        return bytes(self.mem[addr:addr + length])

    # Datapath commands ----------------------------------------------------------------------------------------

    def _weight_tile(self, addr):
        cfg = self.config
        lpr = weight_lines_per_row(cfg)
        lines = self.spad[addr:addr + weight_tile_lines(cfg)].astype(np.int64)
        return lines.reshape(cfg.rows, lpr * cfg.rows)[:, :cfg.cols]

    def _compute(self, cmd, param_queue, out_queue):
        if isinstance(cmd, (commands.Nop, commands.Fence)):
            return
        if isinstance(cmd, commands.Matmul):
            result = self.spad[cmd.act_addr:cmd.act_addr + cmd.count].astype(np.int64) @ \
                self._weight_tile(cmd.weight_addr)
            lines = slice(cmd.acc_addr, cmd.acc_addr + cmd.count)
            self.acc[lines] = (self.acc[lines] if cmd.accumulate else 0) + result
            self.acc[lines] = (self.acc[lines] + (1 << 31)) % (1 << 32) - (1 << 31)
            self.vectors += cmd.count
            return
        if isinstance(cmd, commands.Requant):
            if cmd.load_params:
                self.params = param_queue.popleft()
            p = self.params
            if p is None:
                raise IsaError(isa.ErrorCode.BAD_COUNT, "REQUANT before any parameters")
            lanes = p["lanes"]
            bias = np.array([ln["bias"] for ln in lanes], dtype=np.int64)
            mult = np.array([ln["multiplier"] for ln in lanes], dtype=np.int64)
            shift = np.array([ln["shift"] for ln in lanes], dtype=np.int64)
            c = p["config"]
            acc = self.acc[cmd.acc_addr:cmd.acc_addr + cmd.count] + bias
            out = kernels.requantize(acc, mult, shift, c["output_offset"], c["act_min"], c["act_max"],
                                     single_rounding=c["rounding"] == Rounding.SINGLE)
            out_queue.extend(np.asarray(out, dtype=np.int8))
            return
        raise IsaError(isa.ErrorCode.UNSUPPORTED, f"{type(cmd).__name__} is not modelled by the ISA simulator")

    def _param_beat(self, addr):
        layout = Params(self.config.cols)
        size = -(-layout.size // (8 * self.bus_bytes)) * self.bus_bytes
        bits = int.from_bytes(self.read(addr, size), "little") & ((1 << layout.size) - 1)
        view = layout.from_bits(bits)

        return {
            "config": {"output_offset": int(view.config.output_offset), "act_min": int(view.config.act_min),
                       "act_max": int(view.config.act_max), "rounding": Rounding(view.config.rounding)},
            "lanes": [{"bias": int(ln.bias), "multiplier": int(ln.multiplier), "shift": int(ln.shift)}
                      for ln in view.lanes],
        }, size

    # Running a program ----------------------------------------------------------------------------------------

    def _fetch(self, cmd_addr, window):
        base, size = window
        pc, program = cmd_addr, []
        while True:
            if not (base <= pc and pc + isa.INSTR_BYTES <= base + size):
                raise IsaError(isa.ErrorCode.ADDR_WINDOW, f"instruction fetch at {pc:#x}")
            word = int.from_bytes(self.read(pc, isa.INSTR_BYTES), "little")
            try:
                instr = self.fmt.decode(word)
            except (isa.InstructionError, commands.CommandError) as e:
                raise IsaError(isa.ErrorCode.ILLEGAL_OPCODE, f"at {pc:#x}: {e}") from None
            if isinstance(instr, isa.End):
                return program
            program.append((pc, instr))
            pc += isa.INSTR_BYTES

    def run(self, cmd_addr, *, window=None, max_steps=1_000_000):
        """Run the program at ``cmd_addr``. Returns statistics (instructions, lines, bytes moved)."""
        window = window or (0, len(self.mem))
        program = self._fetch(cmd_addr, window)
        queues = {q: collections.deque() for q in isa.QueueId}
        for pc, instr in program:
            try:
                self.fmt.encode(instr)
            except (ValueError, TypeError) as e:
                code = isa.ErrorCode.BAD_COUNT if "count" in str(e) or "padding" in str(e) else isa.ErrorCode.BAD_RANGE
                raise IsaError(code, f"at {pc:#x}: {e}") from None
            queues[isa.QUEUE_OF[instr.opcode]].append((pc, instr))
        tokens = collections.Counter()
        param_queue, out_queue = collections.deque(), collections.deque()
        self.vectors = 0
        stats = collections.Counter()

        def neighbours(q):
            return isa.QueueId((q.value - 1) % 3), isa.QueueId((q.value + 1) % 3)

        def ready(q):
            if not queues[q]:
                return False
            pc, instr = queues[q][0]
            prev, nxt = neighbours(q)
            if instr.wait_prev and not tokens[prev, q]:
                return False
            if instr.wait_next and not tokens[nxt, q]:
                return False
            if isinstance(instr, isa.Store) and len(out_queue) < instr.lines:
                return False
            if isinstance(instr, isa.Compute) and isinstance(instr.command, commands.Requant) and \
                    instr.command.load_params and not param_queue:
                return False
            return True

        for _ in range(max_steps):
            runnable = [q for q in isa.QueueId if ready(q)]
            if not runnable:
                break
            q = self.rng.choice(runnable)
            pc, instr = queues[q].popleft()
            prev, nxt = neighbours(q)
            tokens[prev, q] -= instr.wait_prev
            tokens[nxt, q] -= instr.wait_next
            self._execute(pc, instr, window, param_queue, out_queue, stats)
            tokens[q, prev] += instr.signal_prev
            tokens[q, nxt] += instr.signal_next
            stats["instructions"] += 1
        if any(queues.values()):
            waiting = {q.name: str(queues[q][0][1].opcode.name) for q in isa.QueueId if queues[q]}
            raise IsaError(isa.ErrorCode.DEADLOCK, f"no queue can go on: {waiting}")
        if out_queue:
            raise IsaError(isa.ErrorCode.DEADLOCK, f"{len(out_queue)} output lines were never stored")
        stats["vectors"] = self.vectors
        return dict(stats)

    def _check_window(self, accesses, window, pc):
        bad = dma_model.first_outside(accesses, *window)
        if bad is not None:
            raise IsaError(isa.ErrorCode.ADDR_WINDOW, f"instruction at {pc:#x} accesses {bad:#x}")

    def _execute(self, pc, instr, window, param_queue, out_queue, stats):
        cfg = self.config
        if isinstance(instr, isa.Load):
            self._check_window(dma_model.load_accesses(instr), window, pc)
            for addr, line in dma_model.load_lines(self.mem, instr, line_bytes=cfg.rows, spad_depth=cfg.spad_depth):
                self.spad[addr] = line[:cfg.rows]
            stats["load_lines"] += instr.lines
            stats["rd_bytes"] += instr.lines * instr.length
        elif isinstance(instr, isa.Param):
            addr = instr.ext_addr
            for _ in range(instr.count):
                beat, size = self._param_beat(addr)
                self._check_window([(addr, size)], window, pc)
                param_queue.append(beat)
                addr += size
                stats["rd_bytes"] += size
        elif isinstance(instr, isa.Compute):
            self._compute(instr.command, param_queue, out_queue)
        elif isinstance(instr, isa.Store):
            self._check_window(dma_model.store_accesses(instr), window, pc)
            lines = [out_queue.popleft() for _ in range(instr.lines)]
            dma_model.store(self.mem, instr, lines)
            stats["wr_bytes"] += instr.lines * instr.length
