"""A CONV_2D as an NPU program, with the im2col done by the DMA engine on the fly.

The convolution is the GEMM ``out[p, oc] = requantize(sum_k cols[p, k] * w[k, oc] + bias)`` over output pixels ``p``
(rows of the output) and ``k = (ky, kx, c)``, scheduled by :func:`haneul.firmware.npu_gemm.schedule`. What is
special is how the activation "matrix" ``cols`` gets into the scratchpad: it is never built in memory. The input
stays an ``H x W x C`` int8 tensor (NHWC); ``LOAD`` s read it straight into scratchpad lines.

**Row-packed layout** (layers with ``KW * C <= rows``, e.g. the RGB input layers): a K tile is one
kernel row ``ky``, and the scratchpad line of pixel ``(oy, ox)`` for K tile ``ky`` holds the ``KW * C`` input bytes
``x[iy, ix0 .. ix0 + KW - 1, :]`` (``iy = oy * sh + ky - pad_top``, ``ix0 = ox * sw - pad_left``), which are
contiguous in NHWC memory, followed by filler. One ``LOAD`` per (block, ``ky``, run of columns) walks the pixels:
loop 0 over ``ox`` (external stride ``sw * C``), loop 1 over ``oy`` (``sh * W * C``), with the rows above and below
the image as padding iterations of loop 1 and the columns at the left and right borders as their own ``LOAD`` s
whose line segment (``offset``, ``length``) leaves out the kernel columns outside the image. Every byte not read
is the input zero point, which is what TFLite pads with. (Where a kernel row lies entirely in the padding for a
block's output rows, its lines are read, with stride 0, from one line of zero points stored after the input.)

**Channel-major layout** (every other layer): a K tile is one kernel tap ``(ky, kx)`` and one block of ``rows``
channels, and the line of pixel ``(oy, ox)`` holds those channels of input pixel ``(iy, ix)``. One ``LOAD`` per
(block, ``ky``, ``kx``) walks ``ox`` (loop 0, the columns outside the image as its padding iterations), ``oy`` (loop
1, the rows above and below) and the channel blocks (loop 2); a partial last channel block gets its own ``LOAD``.

The array adds ``x * w`` without the input offset; the offset's share, ``input_offset * sum(w[:, oc])``, is a
constant per output channel and is folded into the bias here (padding with the zero point makes padded taps add
``zero_point * w``, which the folded term cancels, exactly as TFLite's ``(x + input_offset) * w`` is zero there).
"""

import numpy as np

from haneul.errors import HaneulError
from haneul.rtl import isa
from haneul.rtl.config import DatapathConfig

from .npu_gemm import schedule

__all__ = ["ConvError", "conv_program", "fold_bias"]


class ConvError(HaneulError, ValueError):
    """A convolution this scheduler cannot map (the layout's limits), or inconsistent arguments."""


def fold_bias(bias, filters, input_offset):
    """``bias + input_offset * sum(filters[oc])`` per output channel, wrapped to int32 as the accumulator is."""
    o = filters.shape[0]
    b = np.zeros(o, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    folded = b + int(input_offset) * filters.reshape(o, -1).astype(np.int64).sum(axis=1)
    return ((folded + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int64)


def _taps(outputs, stride, offset, size):
    """The input coordinates ``o * stride + offset`` of the output coordinates ``outputs`` under one kernel tap,
    and the indices of those inside ``0 .. size - 1`` (the others are padding)."""
    coords = [o * stride + offset for o in outputs]
    return coords, [i for i, v in enumerate(coords) if 0 <= v < size]


def _geometry(x, filters, p):
    h, w, c = x.shape
    oc, kh, kw, _ = filters.shape
    (pt, _), (pl, _) = p.padding
    return h, w, c, oc, kh, kw, p.stride, pt, pl, p.output_size, -int(p.input_offset)


def _row_packed(x, filters, p, rows):
    """Row-packed layout (``KW * C <= rows``): K tile ``ky``, a line = ``x[iy, ix0 .. ix0 + KW - 1, :]``."""
    h, w, c, oc, kh, kw, (sh, sw), pt, pl, (oh, ow), zero_point = _geometry(x, filters, p)
    line = kw * c

    # Column runs: consecutive output columns whose kernel columns inside the image are the same.
    runs = []
    for ox in range(ow):
        ix0 = ox * sw - pl
        kx_a, kx_b = max(0, -ix0), min(kw - 1, w - 1 - ix0)
        if kx_a > kx_b:
            raise ConvError(f"output column {ox} sees no input column (padding {p.padding} is wider than the "
                            f"kernel)")
        if runs and runs[-1][2:] == (kx_a, kx_b) and runs[-1][1] == ox - 1:
            runs[-1] = (runs[-1][0], ox, kx_a, kx_b)
        else:
            runs.append((ox, ox, kx_a, kx_b))

    def a_loads(a_addr, m0, count, spad, m_tile):
        oy0, n_rows = m0 // ow, count // ow
        loads = []
        for ky in range(kh):
            iys, real = _taps(range(oy0, oy0 + n_rows), sh, ky - pt, h)
            if not real:
                # The kernel row lies entirely in the padding for these output rows: every line is the zero
                # point, read from a line of zero points kept after the input (stride 0).
                loads.append(isa.Load(ext_addr=a_addr + x.nbytes, spad_addr=spad + ky * m_tile, length=line,
                                      loops=((ow, 0, 1), (n_rows, 0, ow)), pad_value=zero_point))
                continue
            before, after = real[0], n_rows - 1 - real[-1]
            for ox_lo, ox_hi, kx_a, kx_b in runs:
                ext = a_addr + (iys[real[0]] * w + ox_lo * sw - pl + kx_a) * c
                loads.append(isa.Load(
                    ext_addr=ext, spad_addr=spad + ky * m_tile + ox_lo, offset=kx_a * c,
                    length=(kx_b - kx_a + 1) * c, pad_value=zero_point,
                    loops=((ox_hi - ox_lo + 1, sw * c, 1), (n_rows, sh * w * c, ow)), pad=((0, 0), (before, after))))
        return loads

    w_mat = np.zeros((kh * rows, oc), dtype=np.int8)
    for ky in range(kh):
        w_mat[ky * rows:ky * rows + line] = filters[:, ky].reshape(oc, line).T
    return a_loads, kh, w_mat, line


def _channel_major(x, filters, p, rows):
    """Channel-major layout (any ``C``): K tile ``((ky * KW + kx) * channel_blocks + cb)``, a line = channels
    ``cb * rows ..`` of input pixel ``(iy, ix)``. One ``LOAD`` per (block, ``ky``, ``kx``) walks ``ox`` (loop 0, the
    columns outside the image as its padding), ``oy`` (loop 1, padding above and below) and the channel blocks
    (loop 2); a partial last channel block is its own ``LOAD`` with a shorter line segment."""
    h, w, c, oc, kh, kw, (sh, sw), pt, pl, (oh, ow), zero_point = _geometry(x, filters, p)
    blocks_c = -(-c // rows)
    full_c, tail_c = divmod(c, rows)

    def a_loads(a_addr, m0, count, spad, m_tile):
        oy0, n_rows = m0 // ow, count // ow
        loads = []
        for ky in range(kh):
            iys, real_y = _taps(range(oy0, oy0 + n_rows), sh, ky - pt, h)
            for kx in range(kw):
                ixs, real_x = _taps(range(ow), sw, kx - pl, w)
                first = spad + (ky * kw + kx) * blocks_c * m_tile
                if not real_y or not real_x:
                    # The whole tap lies in the padding for these rows: zero-point lines, read with stride 0.
                    loads.append(isa.Load(ext_addr=a_addr + x.nbytes, spad_addr=first, length=rows,
                                          loops=((ow, 0, 1), (n_rows, 0, ow), (blocks_c, 0, m_tile)),
                                          pad_value=zero_point))
                    continue
                pads = ((real_x[0], ow - 1 - real_x[-1]), (real_y[0], n_rows - 1 - real_y[-1]))
                if max(max(pd) for pd in pads) >= 1 << isa.PAD_WIDTH:
                    raise ConvError(f"padding of {pads} lines does not fit the LOAD's {isa.PAD_WIDTH}-bit fields")
                ext = a_addr + (iys[real_y[0]] * w + ixs[real_x[0]]) * c
                loops = ((ow, sw * c, 1), (n_rows, sh * w * c, ow))
                if full_c:
                    loads.append(isa.Load(ext_addr=ext, spad_addr=first, length=rows, pad_value=zero_point,
                                          loops=loops + ((full_c, rows, m_tile),), pad=pads))
                if tail_c:
                    loads.append(isa.Load(ext_addr=ext + full_c * rows, spad_addr=first + full_c * m_tile,
                                          length=tail_c, pad_value=zero_point, loops=loops, pad=pads))
        return loads

    k_tiles = kh * kw * blocks_c
    w_mat = np.zeros((k_tiles * rows, oc), dtype=np.int8)
    for ky in range(kh):
        for kx in range(kw):
            for cb in range(blocks_c):
                width = min(rows, c - cb * rows)
                kt = (ky * kw + kx) * blocks_c + cb
                w_mat[kt * rows:kt * rows + width] = filters[:, ky, kx, cb * rows:cb * rows + width].T
    return a_loads, k_tiles, w_mat, rows


def conv_program(x, filters, bias, p, *, config=None, bus_bytes=16, base=0x1000, rows_per_block=None,
                 separate_banks=True):
    """The NPU program of ``kernels.conv_2d(x, filters, bias, p)`` for one image.

    Parameters
    ----------
    x : ndarray of int8, ``[1, H, W, C]`` or ``[H, W, C]``
    filters : ndarray of int8, ``[OC, KH, KW, C]`` (TFLite's OHWI)
    bias : ndarray of int32 ``[OC]`` or None
    p : haneul.sim.golden.params.ConvParams
        What TFLite's Prepare computes (offsets, per-channel multipliers and shifts, stride, padding, clamp).
    config : DatapathConfig, optional
    bus_bytes : int
    base : int
        Address of the memory image.
    rows_per_block : int, optional
        Output rows per block (default: as many as fit).
    separate_banks : bool
        Keep the activation blocks out of the weights' scratchpad banks where the scratchpad allows it
        (:func:`haneul.firmware.npu_gemm.plan_blocks`).

    Returns
    -------
    haneul.firmware.npu_gemm.GemmProgram
        Its output is ``OH * OW`` rows of ``OC`` values: reshape to ``[OH, OW, OC]``.
    """
    if config is None:
        config = DatapathConfig()
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ConvError(f"conv_program runs one image at a time, not a batch of {x.shape[0]}")
        x = x[0]
    filters = np.asarray(filters)
    if x.ndim != 3 or filters.ndim != 4 or filters.shape[3] != x.shape[2]:
        raise ConvError(f"input {x.shape} and filters {filters.shape} are not a convolution's operands")
    c = x.shape[2]
    oc, kh, kw, _ = filters.shape
    rows = config.rows
    if tuple(p.dilation) != (1, 1):
        raise ConvError(f"dilation {p.dilation} is not supported by the NPU's convolution layouts")
    oh, ow = p.output_size
    zero_point = -int(p.input_offset)
    half = config.acc_depth // 2
    if ow > half:
        raise ConvError(f"an output row of {ow} pixels does not fit in half the accumulator ({half} lines)")
    layout = _row_packed if kw * c <= rows else _channel_major
    a_loads, k_tiles, w_mat, line = layout(x, filters, p, rows)
    # The activations' region: the input, then one line of zero points (the source of all-padding lines).
    a_image = x.astype(np.int8).tobytes() + bytes([zero_point & 0xFF]) * line

    folded = fold_bias(bias, filters, p.input_offset)
    # A block is whole output rows: its M tile a multiple of the row (as many rows as fit by default).
    return schedule(a_image, a_loads, oh * ow, k_tiles, w_mat, folded, p.output_multiplier, p.output_shift,
                    output_offset=p.output_offset, act_min=p.act_min, act_max=p.act_max, single_rounding=False,
                    config=config, bus_bytes=bus_bytes, base=base, k=kh * kw * c, m_step=ow,
                    m_tile=None if rows_per_block is None else rows_per_block * ow, separate_banks=separate_banks)
