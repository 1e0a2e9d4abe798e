"""Host-side plan of a depthwise 3 x 3 convolution for the datapath's ``DWCONV``: scratchpad layout, commands,
requantiser parameters.

:func:`plan_dwconv` turns DEPTHWISE_CONV_2D (depth multiplier 1, 3 x 3 kernel, stride 1 or 2, TFLite padding of at
most one pixel per side, which is every SAME or VALID 3 x 3 layer) over an ``H x W x C`` input into:

* **channel groups** of ``rows`` channels (a scratchpad line): one ``DWCONV`` per group, each loading the group's
  ``ppu_param`` beat (bias, multiplier and shift per channel; lanes past ``C`` are zero);
* an optional **band** of output rows ``out_rows = (oy0, oy1)``, for layers whose input does not fit the scratchpad:
  the band's input rows (with the halo of the kernel) are the command's tile, and its ``pad_top`` / ``pad_bottom``
  are set only where the band touches the image border. :func:`dwconv_bands` splits a layer into bands that fit.

Padding: by default the tile holds only image pixels and the depthwise unit masks the padding taps (``pad_*``
fields). With ``prepadded=True`` the tile holds the padded input, the padding pixels written as the input zero point
(what a DMA with padding does), and the command has no ``pad_*``. Both give the same output.

Scratchpad layout (line addresses; ``tile = tile_h * tile_w`` lines, raster order, channels ``g * rows ..`` of a
pixel in one line, zero past ``C``)::

    input:    a_base + g * tile + y * tile_w + x          pixel (y0 + y, x) of the band's tile, group g
    weights:  w_base + g * 9 + i * 3 + j                  filter[i, j, g * rows ..], zero past C

By default the weights follow the input. The output of group ``g`` is ``out_h * out_w`` lines on ``out`` in raster
order (channels in lanes ``0 .. rows - 1``); :meth:`DwconvPlan.assemble` puts them back into ``[out_h, out_w, C]``.
"""

import dataclasses

import numpy as np

from haneul.errors import HaneulError
from haneul.rtl.commands import DWCONV_KERNEL, DWCONV_SIZE_WIDTH, Dwconv, dwconv_output_size
from haneul.rtl.config import DatapathConfig
from haneul.rtl.ppu import Rounding

__all__ = ["DwconvError", "DwconvPlan", "plan_dwconv", "dwconv_bands"]

K = DWCONV_KERNEL


class DwconvError(HaneulError, ValueError):
    """A depthwise convolution that ``DWCONV`` cannot run, or that does not fit in the scratchpad."""


@dataclasses.dataclass
class DwconvPlan:
    """The commands and scratchpad layout of (a band of) one depthwise layer; see :func:`plan_dwconv`.

    Attributes
    ----------
    config : DatapathConfig
    channels, groups : int
        ``C`` and ``ceil(C / rows)``.
    out_rows : (int, int)
        Output rows ``oy0 .. oy1 - 1`` of the layer computed by this plan.
    out_w : int
        Output columns.
    in_rows : (int, int)
        Input rows ``y0 .. y1 - 1`` of the layer in the tile (without padding rows).
    tile_h, tile_w : int
        Size of a group's tile in the scratchpad (including padding pixels when ``prepadded``).
    a_base, w_base : int
        First line of the input tiles and of the weight lines.
    commands : list of Dwconv
        One per channel group, in group order.
    """
    config: DatapathConfig
    channels: int
    groups: int
    out_rows: tuple
    out_w: int
    in_rows: tuple
    padding: tuple
    prepadded: bool
    zero_point: int
    tile_h: int
    tile_w: int
    a_base: int
    w_base: int
    commands: list

    @property
    def tile_lines(self):
        return self.tile_h * self.tile_w

    @property
    def lines(self):
        """Scratchpad lines used from ``a_base`` (input tiles, then weights when they follow)."""
        return max(self.a_base + self.groups * self.tile_lines, self.w_base + self.groups * K * K) - self.a_base

    @property
    def out_lines(self):
        return self.groups * (self.out_rows[1] - self.out_rows[0]) * self.out_w

    def _group(self, values, g):
        rows = self.config.rows
        part = np.zeros(values.shape[:-1] + (rows,), dtype=np.int64)
        chans = values[..., g * rows:(g + 1) * rows]
        part[..., :chans.shape[-1]] = chans
        return part

    def activation_lines(self, x):
        """``[(line, values)]`` of the band's input tiles, from the layer input ``x`` (``[H, W, C]`` or
        ``[1, H, W, C]`` int8)."""
        x = np.asarray(x).reshape(-1, *np.asarray(x).shape[-2:])
        (pt, pb), (pl, pr) = self.padding
        y0, y1 = self.in_rows
        band = x[y0:y1]
        if self.prepadded:
            band = np.pad(band.astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=self.zero_point)
        writes = []
        for g in range(self.groups):
            lines = self._group(band, g).reshape(-1, self.config.rows)
            base = self.a_base + g * self.tile_lines
            writes += [(base + n, line) for n, line in enumerate(lines)]
        return writes

    def weight_lines(self, filters):
        """``[(line, values)]`` of the weights, from the filter (``[1, 3, 3, C]`` or ``[3, 3, C]`` int8)."""
        f = np.asarray(filters).reshape(K * K, -1)
        return [(self.w_base + g * K * K + t, line) for g in range(self.groups)
                for t, line in enumerate(self._group(f, g))]

    def param_beats(self, bias, multiplier, shift, output_offset, act_min, act_max):
        """The ``ppu_param`` beats, one per command (double rounding, as TFLite's depthwise convolution)."""
        cols, rows = self.config.cols, self.config.rows
        per_channel = [np.broadcast_to(np.asarray(v, dtype=np.int64), (self.channels,))
                       for v in (bias, multiplier, shift)]
        config = {"output_offset": int(output_offset), "act_min": int(act_min), "act_max": int(act_max),
                  "rounding": Rounding.DOUBLE}
        beats = []
        for g in range(self.groups):
            lanes = []
            for lane in range(cols):
                ch = g * rows + lane
                b, mult, sh = (int(v[ch]) for v in per_channel) if lane < rows and ch < self.channels else (0, 0, 0)
                lanes.append({"bias": b, "multiplier": mult, "shift": sh})
            beats.append({"config": config, "lanes": lanes})
        return beats

    def assemble(self, lines):
        """The ``[out_h, out_w, C]`` int8 output of the band from the lines received on ``out``, in order."""
        lines = np.asarray(list(lines), dtype=np.int64)
        if len(lines) != self.out_lines:
            raise DwconvError(f"Expected {self.out_lines} output lines, got {len(lines)}")
        rows = self.config.rows
        oh = self.out_rows[1] - self.out_rows[0]
        per_group = lines[:, :rows].reshape(self.groups, oh, self.out_w, rows)
        return per_group.transpose(1, 2, 0, 3).reshape(oh, self.out_w, -1)[:, :, :self.channels].astype(np.int8)


def _layer(height, width, stride, padding):
    if stride not in (1, 2):
        raise DwconvError(f"DWCONV takes stride 1 or 2, not {stride}")
    (pt, pb), (pl, pr) = padding
    if not all(p in (0, 1) for p in (pt, pb, pl, pr)):
        raise DwconvError(f"DWCONV takes at most one pixel of padding per side, not {padding}")
    return dwconv_output_size(height, width, stride, padding)


def plan_dwconv(height, width, channels, stride, padding, config, *, zero_point, a_base=0, w_base=None,
                out_rows=None, prepadded=False):
    """Plan a 3 x 3 depthwise convolution (or the band ``out_rows`` of its output rows) for ``DWCONV``.

    Parameters
    ----------
    height, width, channels : int
        Input size.
    stride : int
        1 or 2.
    padding : ((int, int), (int, int))
        TFLite padding ``((top, bottom), (left, right))``, each 0 or 1 (``haneul.sim.golden.params``).
    config : DatapathConfig
    zero_point : int
        Input zero point.
    a_base, w_base : int
        First line of the input tiles, and of the weights (default: right after the tiles).
    out_rows : (int, int), optional
        Only output rows ``oy0 .. oy1 - 1``. Default: all.
    prepadded : bool
        The tile holds the padded input (padding pixels are the zero point) instead of masking the padding.
    """
    out_h, out_w = _layer(height, width, stride, padding)
    oy0, oy1 = (0, out_h) if out_rows is None else out_rows
    if not 0 <= oy0 < oy1 <= out_h:
        raise DwconvError(f"Output rows {oy0} .. {oy1 - 1} are not inside the {out_h} output rows")
    (pt, pb), (pl, pr) = padding
    first, last = oy0 * stride - pt, (oy1 - 1) * stride - pt + K - 1      # input rows of the band's windows
    band_pad = (int(first < 0), int(last >= height))
    y0, y1 = max(first, 0), min(last, height - 1) + 1
    pads = (band_pad, (pl, pr))
    tile_h, tile_w = (y1 - y0, width) if not prepadded else (y1 - y0 + sum(band_pad), width + pl + pr)
    limit = (1 << DWCONV_SIZE_WIDTH) - 1
    if tile_h > limit or tile_w > limit:
        raise DwconvError(f"A DWCONV tile of {tile_h} x {tile_w} pixels is larger than {limit} x {limit}; "
                          f"split the output rows into bands")
    rows = config.rows
    groups = -(-channels // rows)
    if w_base is None:
        w_base = a_base + groups * tile_h * tile_w
    commands = []
    for g in range(groups):
        (t, b), (left, right) = ((0, 0), (0, 0)) if prepadded else pads
        commands.append(Dwconv(act_addr=a_base + g * tile_h * tile_w, weight_addr=w_base + g * K * K,
                               height=tile_h, width=tile_w, stride2=stride == 2, pad_top=t, pad_bottom=b,
                               pad_left=left, pad_right=right, zero_point=int(zero_point), load_params=True))
    plan = DwconvPlan(config=config, channels=channels, groups=groups, out_rows=(oy0, oy1), out_w=out_w,
                      in_rows=(y0, y1), padding=pads, prepadded=prepadded, zero_point=int(zero_point),
                      tile_h=tile_h, tile_w=tile_w, a_base=a_base, w_base=w_base, commands=commands)
    if a_base + plan.lines > config.spad_depth:
        raise DwconvError(f"The plan needs scratchpad lines {a_base} .. {a_base + plan.lines - 1}, past the end of "
                          f"the scratchpad ({config.spad_depth} lines)")
    for cmd in commands:
        if cmd.output_size != (oy1 - oy0, out_w):
            raise DwconvError(f"internal: {cmd} gives {cmd.output_size} pixels, not {(oy1 - oy0, out_w)}")
    return plan


def dwconv_bands(height, width, channels, stride, padding, config, max_lines, *, prepadded=False):
    """Split the output rows of a layer into bands ``(oy0, oy1)`` whose plan (input tiles and weights) takes at most
    ``max_lines`` scratchpad lines, each as many rows as fit."""
    out_h, _ = _layer(height, width, stride, padding)
    bands = []
    oy0 = 0
    while oy0 < out_h:
        oy1 = oy0 + 1
        fits = lambda end: plan_dwconv(height, width, channels, stride, padding, config, zero_point=0,  # noqa: E731
                                       out_rows=(oy0, end), prepadded=prepadded).lines <= max_lines
        if not fits(oy1):
            raise DwconvError(f"One output row of the layer needs more than {max_lines} scratchpad lines")
        while oy1 < out_h and fits(oy1 + 1):
            oy1 += 1
        bands.append((oy0, oy1))
        oy0 = oy1
    return bands
