"""A GEMM as an NPU program: data in external memory, loads, computes and stores overlapped through the queues.

:func:`gemm_program` turns ``out = requantize(A @ W + bias)`` into a memory image and a program of
:mod:`haneul.rtl.isa` instructions that the NPU runs on its own:

* ``A`` (``M x K`` int8, row-major) stays as it is in memory. It is loaded in *blocks* of ``m_tile`` rows; a
  ``LOAD`` walks each row's K tiles (contiguous bytes, so the DMA reads them in bursts) into the scratchpad layout
  of :mod:`haneul.firmware.gemm` (line ``kt * m_tile + m`` of the block buffer). A K tail shorter than a line is a
  second ``LOAD`` whose line segment is the tail (the DMA fills the rest of the line with zeros).
* ``W`` (``K x N``) is rearranged once, offline, into weight-tile order (weights are constants: the compiler
  stores them as the scratchpad wants them), so each N tile's weights are one contiguous ``LOAD``.
* The requantiser parameters of each N tile are one ``PARAM`` beat.
* ``out`` (``M x N`` int8, row-major) is written by one ``STORE`` per output tile, straight from the output stream.

Steps ``j = (block, n_tile)`` alternate between two weight buffers, two ``A`` block buffers and the two
accumulator halves. The program is software-pipelined: the loads of step ``j + 1`` are spread among the computes of
step ``j`` in the program (:func:`interleave`), so that the load queue has them while the datapath works on step
``j`` and neither queue starves the other's fetch. Tokens:

* the last ``LOAD`` of a step sends ``signal_next``; the first ``MATMUL`` of the step waits for it;
* the last ``MATMUL`` of a step sends ``signal_prev`` once the array has taken its vectors; the weight ``LOAD`` of
  step ``j + 2`` (which overwrites the same buffer) waits for it, and the ``A`` block ``LOAD`` that follows it is
  covered by the same token (the block it overwrites was finished two or more steps before).

Scratchpad plan: the weights from line 0 (every N tile, loaded once, when they fit beside two blocks of at least
``min(M, 16)`` rows; else the two buffers of one N tile each), then the two block buffers. The blocks start at the
first bank boundary after the weights (:func:`plan_blocks`, the geometry from :mod:`haneul.firmware.spad`), so that
no ``MATMUL`` reads its activation lines from a bank that the weight reader wants: the scratchpad serves one read
per bank and cycle, and the weight reader, holding the next tile, would take every other turn (``docs/memories.md``).
Where that does not fit (one bank, or weights that leave too little room behind their last bank), the blocks
follow the weights directly, as before.
"""

import dataclasses

import numpy as np

from haneul.rtl import isa
from haneul.rtl.commands import Matmul, Requant, weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Params

from .gemm import GemmError, requant_beats, weight_tiles
from .spad import bank_boundary

__all__ = ["GemmProgram", "gemm_program", "param_bytes"]


def _align(value, to):
    return -(-value // to) * to


def param_bytes(beat, config, bus_bytes):
    """The bytes of one requantiser parameter beat (a :class:`~haneul.rtl.ppu.Params` value as a ``dict``) in
    memory: its bits, little-endian, padded to whole bus words (what ``PARAM`` reads)."""
    layout = Params(config.cols)
    bits = layout.const(beat).as_value().value
    size = _align(-(-layout.size // 8), bus_bytes)
    return bits.to_bytes(size, "little")


@dataclasses.dataclass(frozen=True)
class GemmProgram:
    """An NPU program for one GEMM and the memory image it needs.

    Attributes
    ----------
    config : DatapathConfig
    m, k, n, m_tile : int
    program : bytes
        The instructions (``END`` included).
    segments : tuple of (int, bytes)
        What to write to memory before the run: the program, ``A``, the rearranged ``W``, the parameters.
    cmd_addr, a_addr, w_addr, param_addr, out_addr : int
        Where each is.
    instructions : tuple
        The program as :mod:`haneul.rtl.isa` values.
    steps : int
        Output tiles (``blocks * n_tiles``).
    a_bytes : int
        Bytes of the activations' memory region.
    a_spad : int
        First scratchpad line of the activation block buffers (the weights start at line 0).
    separate_banks : bool
        Whether the plan keeps the activation blocks and the weights in different scratchpad banks
        (:func:`plan_blocks`).
    """
    config: DatapathConfig
    m: int
    k: int
    n: int
    m_tile: int
    program: bytes
    segments: tuple
    cmd_addr: int
    a_addr: int
    w_addr: int
    param_addr: int
    out_addr: int
    instructions: tuple
    steps: int
    a_bytes: int
    a_spad: int
    separate_banks: bool

    @property
    def out_bytes(self):
        return self.m * self.n

    @property
    def end(self):
        """The first address after everything the program touches."""
        return self.out_addr + self.out_bytes

    def output(self, memory):
        """The ``m x n`` int8 result from ``memory`` (bytes of the whole image from address 0, or a callable
        ``read(addr, length) -> bytes``)."""
        if callable(memory):
            raw = memory(self.out_addr, self.out_bytes)
        else:
            raw = memory[self.out_addr:self.out_addr + self.out_bytes]
        return np.frombuffer(bytes(raw), dtype=np.int8).reshape(self.m, self.n).copy()

    @property
    def bytes_moved_min(self):
        """Bytes the computation must move at least: the activations, the weights and the output once."""
        return self.a_bytes + self.k * self.n + self.m * self.n


def gemm_program(a, w, bias, multiplier, shift, *, output_offset=0, act_min=-128, act_max=127,
                 single_rounding=False, config=None, bus_bytes=16, base=0x1000, m_tile=None, separate_banks=True):
    """Build the NPU program of ``requantize(A @ W + bias)``.

    Parameters
    ----------
    a : ndarray of int8, ``M x K``
    w : ndarray of int8, ``K x N``
    bias, multiplier, shift : array-like of int
        Per output channel (``N``) or scalars: the requantiser parameters (:mod:`haneul.rtl.ppu`).
    output_offset, act_min, act_max : int
        Output zero point and clamp bounds.
    single_rounding : bool
        FULLY_CONNECTED rounding instead of the convolutions' double rounding.
    config : DatapathConfig, optional
    bus_bytes : int
        Bytes per word of the NPU's memory port.
    base : int
        Address of the memory image (the program comes first, each region aligned to 64 bytes).
    m_tile : int, optional
        Rows per block. Default: as many as fit in the scratchpad next to the weights (behind their last bank when
        the blocks go to other banks), at most half the accumulator.
    separate_banks : bool
        Keep the activation blocks out of the weights' scratchpad banks where the scratchpad allows it
        (:func:`plan_blocks`); false: right after the weights, as before the planner knew the banks.

    Returns
    -------
    GemmProgram
    """
    if config is None:
        config = DatapathConfig()
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise GemmError(f"A {a.shape} and W {w.shape} are not the operands of a matrix product")
    m, k = a.shape
    rows = config.rows
    k_tiles = -(-k // rows)
    full_tiles, tail = divmod(k, rows)

    def a_loads(a_addr, m0, count, spad, m_tile):
        """A block: for each row, its K tiles (contiguous bytes) into lines ``spad + kt * m_tile + row``."""
        out = []
        if full_tiles:
            out.append(isa.Load(ext_addr=a_addr + m0 * k, spad_addr=spad, length=rows,
                                loops=((full_tiles, rows, m_tile), (count, k, 1))))
        if tail:
            out.append(isa.Load(ext_addr=a_addr + m0 * k + full_tiles * rows, spad_addr=spad + full_tiles * m_tile,
                                length=tail, loops=((count, k, 1),)))
        return out

    return schedule(a.astype(np.int8).tobytes(), a_loads, m, k_tiles, w.astype(np.int8), bias, multiplier, shift,
                    output_offset=output_offset, act_min=act_min, act_max=act_max, single_rounding=single_rounding,
                    config=config, bus_bytes=bus_bytes, base=base, m_tile=m_tile, k=k,
                    separate_banks=separate_banks)


def plan_blocks(config, w_region, k_tiles, m, *, resident, m_tile=None, m_step=1, separate_banks=True):
    """Where the two activation block buffers go: ``(first line, rows per block, separate)``.

    The weights take scratchpad lines ``0 .. w_region - 1`` (all N tiles when ``resident``, else two buffers); the
    two block buffers, ``k_tiles * m_tile`` lines each, follow one after the other. The array reads a ``MATMUL``'s
    activation lines and weight tiles on two ports that take turns at a bank they both want (the weight reader,
    holding the next tile, takes every other turn even without room for the line: ``docs/memories.md``), so with
    ``separate_banks`` the blocks start at the first bank boundary after the weights
    (:func:`~haneul.firmware.spad.bank_boundary`), and no bank holds both (``separate`` is then true):

    * with ``m_tile`` given, when blocks of ``m_tile`` rows fit there;
    * else with as many rows as fit there (a multiple of ``m_step``, at most ``m`` and half the accumulator), when
      that is at least one step and the weights are resident or the blocks are no more than in the packed layout
      (with weights in two buffers, every block loads them all again: more blocks would move more bytes).

    Otherwise (``separate_banks`` false, a single bank, weights that leave too little room behind their last bank),
    the blocks start right after the weights: the packed layout, in which they may share a bank with them.

    Raises
    ------
    GemmError
        If blocks of ``m_tile`` rows (or, ``m_tile`` None, of ``m_step`` rows) fit neither way.
    """
    half = config.acc_depth // 2

    def most(a_start):
        """The most rows per block with the buffers from line ``a_start``."""
        return min(half, max(0, config.spad_depth - a_start) // (2 * k_tiles))

    def rows(a_start):
        return min(m, most(a_start)) // m_step * m_step

    packed, split = w_region, bank_boundary(config, w_region)
    if separate_banks:
        if m_tile is not None:
            if 1 <= m_tile <= most(split):
                return split, m_tile, True
        else:
            ms, mp = rows(split), rows(packed)
            if ms >= 1 and (resident or -(-m // ms) <= -(-m // max(mp, 1))):
                return split, ms, True
    fit = most(packed)
    if m_tile is None:
        m_tile = rows(packed) or m_step
    if not 1 <= m_tile <= fit:
        raise GemmError(f"{k_tiles} K tiles need {w_region} scratchpad lines of weights; M tile {m_tile} does not "
                        f"fit (at most {fit} rows per block)")
    return packed, m_tile, False


def interleave(loads, computes):
    """The loads of the next step spread evenly over the computes of this one, in program order.

    The fetcher dispatches in program order and waits when the next instruction's queue is full, so a run of
    instructions for one queue holds up the others: the loads of step ``j + 1`` go out among the computes of step
    ``j`` (the first load first), so that both queues stay fed.
    """
    out, k = [], 0
    for i, compute in enumerate(computes):
        while k < len(loads) and k * len(computes) <= i * len(loads):
            out.append(loads[k])
            k += 1
        out.append(compute)
    return out + loads[k:]


def schedule(a_image, a_loads, m, k_tiles, w, bias, multiplier, shift, *, output_offset, act_min, act_max,
             single_rounding, config, bus_bytes, base, m_tile, k, m_step=1, separate_banks=True):
    """The program of an output of ``m`` rows (pixels) by ``N`` channels computed from ``k_tiles`` K tiles.

    ``a_image`` is what the activations' memory region holds; ``a_loads(a_addr, m0, count, spad, m_tile)`` gives
    the ``LOAD`` s that put rows ``m0 .. m0 + count - 1`` of the activation matrix into the scratchpad, K tile
    ``kt`` of row ``r`` at line ``spad + kt * m_tile + r``. ``w`` is the ``(k_tiles * rows) x N`` weight matrix
    (zero rows where a K tile is not full). ``m_tile`` (default: as many as fit, a multiple of ``m_step``) and
    ``separate_banks``: :func:`plan_blocks`.
    """
    rows, cols = config.rows, config.cols
    n = w.shape[1]
    if rows > bus_bytes or cols > bus_bytes:
        raise GemmError(f"A {rows} x {cols} array needs a memory port of at least {max(rows, cols)} bytes")
    n_tiles = -(-n // cols)
    tile = weight_tile_lines(config)
    w_tiles = k_tiles * tile                 # lines of one N tile's weights
    half = config.acc_depth // 2
    # Weights resident (loaded once) if they fit with two blocks of at least min(m, 16) rows; else two buffers.
    resident = n_tiles * w_tiles + 2 * k_tiles * min(m, 16, half) <= config.spad_depth
    w_region = n_tiles * w_tiles if resident else 2 * w_tiles
    a_start, m_tile, separated = plan_blocks(config, w_region, k_tiles, m, resident=resident, m_tile=m_tile,
                                             m_step=m_step, separate_banks=separate_banks)
    blocks = -(-m // m_tile)
    steps = blocks * n_tiles

    w_image = weight_tiles(w, config).tobytes()
    beats = requant_beats(n, config, bias, multiplier, shift, output_offset, act_min, act_max, single_rounding)
    p_image = b"".join(param_bytes(beat, config, bus_bytes) for beat in beats)
    p_size = len(p_image) // n_tiles

    fmt = isa.InstructionFormat(config)
    a_buf = [a_start + b * k_tiles * m_tile for b in range(2)]

    def build(layout):
        def loads(j):
            blk, nt = divmod(j, n_tiles)
            out = []
            if not resident:
                out.append(isa.Load(ext_addr=layout["w"] + nt * w_tiles * rows, spad_addr=(j % 2) * w_tiles,
                                    length=rows, loops=((w_tiles, rows, 1),), wait_next=j >= 2))
            elif j == 0:
                out.append(isa.Load(ext_addr=layout["w"], spad_addr=0, length=rows,
                                    loops=((n_tiles * w_tiles, rows, 1),)))
            if nt == 0:
                m0 = blk * m_tile
                a = a_loads(layout["a"], m0, min(m_tile, m - m0), a_buf[blk % 2], m_tile)
                if resident and blk >= 2:
                    # The block buffer was last read by block blk - 2: wait for its last step's token.
                    a[0] = dataclasses.replace(a[0], wait_next=True)
                out += a
            if out:
                out[-1] = dataclasses.replace(out[-1], signal_next=True)
            out.append(isa.Param(ext_addr=layout["param"] + nt * p_size, target=isa.ParamTarget.REQUANT))
            return out

        def computes(j):
            blk, nt = divmod(j, n_tiles)
            m0 = blk * m_tile
            count = min(m_tile, m - m0)
            acc = (j % 2) * half
            w_base = nt * w_tiles if resident else (j % 2) * w_tiles
            # Tokens: a step waits for its loads if it has any; the step that ends a buffer's use signals.
            has_loads = (not resident) or nt == 0 or j == 0
            last_use = (not resident) or nt == n_tiles - 1
            out = []
            for kt in range(k_tiles):
                out.append(isa.Compute(Matmul(act_addr=a_buf[blk % 2] + kt * m_tile, weight_addr=w_base + kt * tile,
                                              acc_addr=acc, count=count, accumulate=kt > 0),
                                       wait_prev=has_loads and kt == 0,
                                       signal_prev=last_use and kt == k_tiles - 1))
            out.append(isa.Compute(Requant(acc_addr=acc, count=count, load_params=True)))
            n0 = nt * cols
            out.append(isa.Store(ext_addr=layout["out"] + m0 * n + n0, length=min(cols, n - n0),
                                 loops=((count, n),)))
            return out

        instrs = loads(0)
        for j in range(steps):
            instrs += interleave(loads(j + 1) if j + 1 < steps else [], computes(j))
        instrs.append(isa.End())
        return instrs

    # Lay out the image: the program's size does not depend on the addresses.
    sizes = {"program": len(build({"w": 0, "a": 0, "param": 0, "out": 0})) * isa.INSTR_BYTES,
             "a": len(a_image), "w": len(w_image), "param": len(p_image), "out": m * n}
    layout = {}
    addr = base
    for name, size in sizes.items():
        layout[name] = addr
        addr = _align(addr + size, 64)
    instrs = build(layout)
    program = fmt.program(instrs)
    segments = ((layout["program"], program), (layout["a"], a_image), (layout["w"], w_image),
                (layout["param"], p_image))
    return GemmProgram(config=config, m=m, k=k, n=n, m_tile=m_tile, program=program, segments=segments,
                       cmd_addr=layout["program"], a_addr=layout["a"], w_addr=layout["w"],
                       param_addr=layout["param"], out_addr=layout["out"], instructions=tuple(instrs), steps=steps,
                       a_bytes=len(a_image), a_spad=a_start, separate_banks=separated)
