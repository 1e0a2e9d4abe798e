"""Random layers for testbenches: operands and TFLite parameters that the golden model and the NPU both run."""

import numpy as np

from haneul.sim.golden.params import ConvParams, compute_padding
from haneul.sim.golden.quant import quantize_multiplier

__all__ = ["random_conv"]


def random_conv(rng, *, h, w, c, oc, k, stride, same, scales=(0.002, 0.02), clamp=None):
    """A random CONV_2D: ``(x, filters, bias, params)`` for an ``h x w x c`` input, ``oc`` filters of ``k = (kh,
    kw)``, ``stride`` in both directions, SAME or VALID padding, per-channel scales uniform in ``scales``, random
    zero points. ``clamp`` is ``(act_min, act_max)``; by default ``act_min`` is -128 and ``act_max`` random.
    ``rng`` is a ``numpy.random.Generator``."""
    oh = -(-h // stride) if same else (h - k[0]) // stride + 1
    ow = -(-w // stride) if same else (w - k[1]) // stride + 1
    pad = ((compute_padding(h, k[0], stride, 1, oh), compute_padding(w, k[1], stride, 1, ow)) if same
           else ((0, 0), (0, 0)))
    mult, shift = (np.array(v) for v in zip(*(quantize_multiplier(s) for s in rng.uniform(*scales, oc))))
    input_offset, output_offset = int(rng.integers(-127, 129)), int(rng.integers(-128, 128))
    act_min, act_max = clamp if clamp is not None else (-128, int(rng.integers(0, 128)))
    p = ConvParams(input_offset=input_offset, output_offset=output_offset, output_multiplier=mult,
                   output_shift=shift, stride=(stride, stride), dilation=(1, 1), padding=pad, output_size=(oh, ow),
                   act_min=act_min, act_max=act_max)
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    f = rng.integers(-128, 128, (oc, k[0], k[1], c), dtype=np.int8)
    bias = rng.integers(-5000, 5000, oc).astype(np.int32)
    return x, f, bias, p
