"""Host-side tiling of a GEMM for the datapath: scratchpad layout, command list, requantiser parameters.

:func:`plan_gemm` splits ``out = requantize(A @ W + bias)`` (``A``: ``M x K`` int8, ``W``: ``K x N`` int8) into the
work the datapath does:

* **K tiles** of ``rows`` (the array's depth): each output tile is computed by one ``MATMUL`` per K tile into the
  same accumulator lines, the first overwriting (``accumulate = 0``) and the others adding.
* **N tiles** of ``cols`` (the array's width): each has its own weight tiles and its own requantiser parameters.
* **M tiles** of at most half the accumulator: output tiles alternate between the two accumulator halves (so the
  read-out of one overlaps the computation of the next in the other bank), and within each half they rotate
  through as many slots of ``m_tile`` lines as the half holds, so that a tile rarely has to wait for the read-out
  of the tile that used its lines before (the sequencer's write-after-read check).

Partial tiles are zero-padded here, on the host: the K tail of an activation line and of a weight tile is zero (the
array has no notion of a shorter K), the N tail of a weight row is zero and its requantiser lanes are zero, and the
padded output lanes are dropped by :meth:`GemmPlan.assemble`.

Scratchpad layout (line addresses from ``a_base`` and ``w_base``)::

    A:  a_base + kt * M + m                             = A[m, kt*rows : (kt+1)*rows]          (zero-padded)
    W:  w_base + (nt * k_tiles + kt) * tile + k * lpr + p = W[kt*rows + k, nt*cols + p*rows : ...] (zero-padded)

with ``tile = weight_tile_lines(config)`` and ``lpr = weight_lines_per_row(config)`` (one weight row of ``cols``
elements in ``ceil(cols / rows)`` lines).

The plan only depends on the shapes, so a compiler makes it once per layer; the data go in with
:meth:`GemmPlan.activation_lines`, :meth:`GemmPlan.weight_lines` and :meth:`GemmPlan.param_beats`.
"""

import dataclasses

import numpy as np

from haneul.errors import HaneulError
from haneul.rtl.commands import Matmul, Requant, weight_lines_per_row, weight_tile_lines
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Rounding

from .spad import bank_boundary, bank_lines, bank_of

__all__ = ["GemmError", "Readout", "GemmPlan", "plan_gemm", "weight_tiles", "requant_beats"]


class GemmError(HaneulError, ValueError):
    """A GEMM that cannot be planned (bad shapes, or it does not fit in the memories)."""


@dataclasses.dataclass(frozen=True)
class Readout:
    """One ``REQUANT`` of a plan: which output rows and which N tile its lines hold.

    Attributes
    ----------
    m0 : int
        First output row.
    rows : int
        Output rows (lines on ``out``).
    n_tile : int
        N tile: the lines hold output columns ``n_tile * cols ..``.
    load_params : bool
        The ``REQUANT`` loads a parameter beat (the N tile differs from the previous read-out's).
    """
    m0: int
    rows: int
    n_tile: int
    load_params: bool


@dataclasses.dataclass(frozen=True)
class GemmPlan:
    """The datapath work of one GEMM, as made by :func:`plan_gemm`.

    Attributes
    ----------
    config : DatapathConfig
    m, k, n : int
        GEMM shape: ``A`` is ``m x k``, ``W`` is ``k x n``.
    m_tile : int
        Rows per output tile.
    k_tiles, n_tiles, m_tiles : int
        Tile counts.
    a_base, w_base : int
        First scratchpad lines of ``A`` and ``W``.
    a_lines, w_lines : int
        Scratchpad lines of ``A`` and ``W``.
    acc_base : int
        Offset in each accumulator half of the first output-tile slot.
    acc_slots : int
        Output-tile slots per accumulator half: output tile ``j`` uses lines from
        ``(j % 2) * half_depth + acc_base + ((j // 2) % acc_slots) * m_tile``.
    commands : tuple
        The commands, in order (:class:`~haneul.rtl.commands.Matmul` and :class:`~haneul.rtl.commands.Requant`).
    readouts : tuple of Readout
        One per ``REQUANT``, in order.
    """
    config: DatapathConfig
    m: int
    k: int
    n: int
    m_tile: int
    k_tiles: int
    n_tiles: int
    m_tiles: int
    a_base: int
    w_base: int
    a_lines: int
    w_lines: int
    acc_base: int
    acc_slots: int
    commands: tuple
    readouts: tuple

    @property
    def out_lines(self):
        """Lines the plan sends on ``out``."""
        return sum(r.rows for r in self.readouts)

    @property
    def array_vectors(self):
        """Activation vectors the plan streams through the array (``M * k_tiles * n_tiles``)."""
        return sum(c.count for c in self.commands if isinstance(c, Matmul))

    def activation_lines(self, a):
        """Scratchpad writes ``[(addr, line)]`` (``line``: int8 array of ``rows``) that load ``A``."""
        a = self._check("A", a, (self.m, self.k))
        rows = self.config.rows
        padded = np.zeros((self.m, self.k_tiles * rows), dtype=np.int8)
        padded[:, :self.k] = a
        return [(self.a_base + kt * self.m + i, padded[i, kt * rows:(kt + 1) * rows])
                for kt in range(self.k_tiles) for i in range(self.m)]

    def weight_lines(self, w):
        """Scratchpad writes ``[(addr, line)]`` that load ``W`` (``k x n``), one weight tile per (N, K) tile."""
        tiles = weight_tiles(self._check("W", w, (self.k, self.n)), self.config)
        flat = tiles.reshape(-1, self.config.rows)
        return [(self.w_base + i, flat[i]) for i in range(len(flat))]

    def param_beats(self, bias, multiplier, shift, output_offset, act_min, act_max, single_rounding=False):
        """The ``ppu_param`` beats of the plan, one per ``REQUANT`` with ``load_params``, in order.

        Each is a value of the requantiser's :class:`~haneul.rtl.ppu.Params` layout (a ``dict``) for one N tile:
        lanes past ``n`` get zero bias, multiplier and shift.

        Parameters
        ----------
        bias, multiplier, shift : array-like of int
            Per output channel (``n`` values), or scalars.
        output_offset, act_min, act_max : int
            Output zero point and clamp bounds.
        single_rounding : bool
            Single rounding (FULLY_CONNECTED) instead of double rounding (convolutions).
        """
        per_tile = requant_beats(self.n, self.config, bias, multiplier, shift, output_offset, act_min, act_max,
                                 single_rounding)
        return [per_tile[r.n_tile] for r in self.readouts if r.load_params]

    def assemble(self, lines):
        """The ``m x n`` int8 output from the lines received on ``out`` (each ``cols`` int8 values), in order."""
        lines = list(lines)
        if len(lines) != self.out_lines:
            raise GemmError(f"Expected {self.out_lines} output lines, got {len(lines)}")
        cols = self.config.cols
        out = np.zeros((self.m, self.n), dtype=np.int8)
        it = iter(lines)
        for r in self.readouts:
            n0 = r.n_tile * cols
            width = min(cols, self.n - n0)
            for i in range(r.rows):
                out[r.m0 + i, n0:n0 + width] = np.asarray(next(it))[:width]
        return out

    @staticmethod
    def _check(name, x, shape):
        x = np.asarray(x)
        if x.shape != shape:
            raise GemmError(f"{name} must have shape {shape}, not {x.shape}")
        if x.dtype != np.int8:
            raise GemmError(f"{name} must be int8, not {x.dtype}")
        return x


def weight_tiles(w, config):
    """``W`` (``k x n`` int8) as the scratchpad holds it: an array of shape ``(n_tiles, k_tiles, tile_lines, rows)``,
    one weight tile per (N, K) tile, zero-padded (``tile_lines = weight_tile_lines(config)``)."""
    rows, cols, lpr = config.rows, config.cols, weight_lines_per_row(config)
    k, n = w.shape
    k_tiles, n_tiles = -(-k // rows), -(-n // cols)
    padded = np.zeros((k_tiles * rows, n_tiles * lpr * rows), dtype=np.int8)
    for nt in range(n_tiles):
        width = min(cols, n - nt * cols)
        padded[:k, nt * lpr * rows:nt * lpr * rows + width] = w[:, nt * cols:nt * cols + width]
    # (kt, k, nt, p, e) -> (nt, kt, k, p, e): row k of a tile is lpr lines of `rows` elements.
    tiles = padded.reshape(k_tiles, rows, n_tiles, lpr, rows).transpose(2, 0, 1, 3, 4)
    return tiles.reshape(n_tiles, k_tiles, rows * lpr, rows)


def requant_beats(n, config, bias, multiplier, shift, output_offset, act_min, act_max, single_rounding=False):
    """The requantiser parameter beats (:class:`~haneul.rtl.ppu.Params` values as ``dict`` s) of the
    ``ceil(n / cols)`` N tiles of an output with ``n`` channels; lanes past ``n`` get zero bias, multiplier and
    shift. ``bias``, ``multiplier``, ``shift`` are per channel (``n`` values) or scalars."""
    cols = config.cols
    per_channel = [np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for v in (bias, multiplier, shift)]
    shared = {"output_offset": int(output_offset), "act_min": int(act_min), "act_max": int(act_max),
              "rounding": Rounding.SINGLE if single_rounding else Rounding.DOUBLE}
    beats = []
    for nt in range(-(-n // cols)):
        lanes = []
        for lane in range(cols):
            ch = nt * cols + lane
            b, mult, sh = (int(v[ch]) for v in per_channel) if ch < n else (0, 0, 0)
            lanes.append({"bias": b, "multiplier": mult, "shift": sh})
        beats.append({"config": shared, "lanes": lanes})
    return beats


def _positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise GemmError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def plan_gemm(m, k, n, config=None, *, a_base=0, w_base=None, acc_base=0, m_tile=None):
    """Plan ``requantize(A @ W + bias)`` for ``A`` of ``m x k`` and ``W`` of ``k x n`` int8 values.

    Parameters
    ----------
    m, k, n : int
        GEMM shape.
    config : DatapathConfig, optional
        Default: ``DatapathConfig()``.
    a_base : int
        First scratchpad line of ``A`` (``k_tiles * m`` lines).
    w_base : int, optional
        First scratchpad line of ``W`` (``n_tiles * k_tiles * weight_tile_lines`` lines). Default: in banks that
        hold no line of ``A``, so that activation and weight reads never take turns at a bank
        (:mod:`haneul.firmware.spad`): the first bank boundary at or after the end of ``A`` if ``W`` fits there,
        else ending before the bank of ``A``'s first line if it fits there, else right after ``A``.
    acc_base : int
        Offset in each accumulator half of the output-tile slots, which fill the rest of the half.
    m_tile : int, optional
        Rows per output tile, at most half the accumulator. Default: ``min(m, acc_depth // 2)``.

    Returns
    -------
    GemmPlan

    Raises
    ------
    GemmError
        For a bad shape or a GEMM that does not fit the memories.
    """
    if config is None:
        config = DatapathConfig()
    elif not isinstance(config, DatapathConfig):
        raise TypeError(f"Configuration must be a DatapathConfig, not {config!r}")
    m, k, n = (_positive_int(name, v) for name, v in (("M", m), ("K", k), ("N", n)))
    rows, cols = config.rows, config.cols
    half = config.acc_depth // 2
    if m_tile is None:
        m_tile = min(m, half)
    m_tile = _positive_int("M tile", m_tile)
    if m_tile > half:
        raise GemmError(f"M tile {m_tile} exceeds half the accumulator ({half} lines)")
    if not isinstance(acc_base, int) or not 0 <= acc_base or acc_base + m_tile > half:
        raise GemmError(f"Accumulator offset {acc_base!r} with M tile {m_tile} does not fit in a half of the "
                        f"accumulator ({half} lines)")
    acc_slots = (half - acc_base) // m_tile

    k_tiles = -(-k // rows)
    n_tiles = -(-n // cols)
    m_tiles = -(-m // m_tile)
    a_lines = k_tiles * m
    w_lines = n_tiles * k_tiles * weight_tile_lines(config)
    if w_base is None:
        # Behind the last bank of A, else ending before its first bank, else (one bank, no room) right behind A.
        above = bank_boundary(config, a_base + a_lines)
        below = bank_of(config, a_base) * bank_lines(config) - w_lines
        if above + w_lines <= config.spad_depth:
            w_base = above
        elif below >= 0:
            w_base = below
        else:
            w_base = a_base + a_lines
    for name, base, lines in (("A", a_base, a_lines), ("W", w_base, w_lines)):
        if base < 0 or base + lines > config.spad_depth:
            raise GemmError(f"{name} needs scratchpad lines {base}..{base + lines - 1}, past the end of the "
                            f"scratchpad ({config.spad_depth} lines)")
    if a_base < w_base + w_lines and w_base < a_base + a_lines:
        raise GemmError(f"A (lines {a_base}..{a_base + a_lines - 1}) and W (lines {w_base}..{w_base + w_lines - 1}) "
                        f"overlap")

    commands, readouts = [], []
    tile = weight_tile_lines(config)
    last_n = None
    j = 0
    for mt in range(m_tiles):
        m0 = mt * m_tile
        count = min(m_tile, m - m0)
        for nt in range(n_tiles):
            acc = (j % 2) * half + acc_base + (j // 2) % acc_slots * m_tile
            for kt in range(k_tiles):
                commands.append(Matmul(act_addr=a_base + kt * m + m0,
                                       weight_addr=w_base + (nt * k_tiles + kt) * tile,
                                       acc_addr=acc, count=count, accumulate=kt > 0))
            load = nt != last_n
            commands.append(Requant(acc_addr=acc, count=count, load_params=load))
            readouts.append(Readout(m0=m0, rows=count, n_tile=nt, load_params=load))
            last_n = nt
            j += 1

    return GemmPlan(config=config, m=m, k=k, n=n, m_tile=m_tile, k_tiles=k_tiles, n_tiles=n_tiles,
                    m_tiles=m_tiles, a_base=a_base, w_base=w_base, a_lines=a_lines, w_lines=w_lines,
                    acc_base=acc_base, acc_slots=acc_slots, commands=tuple(commands), readouts=tuple(readouts))
