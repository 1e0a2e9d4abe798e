"""Integer kernels of the golden model, one function per operator, as in TFLite's reference kernels.

Each function takes int8 numpy arrays and the parameters from :mod:`haneul.sim.golden.params`, and returns the
int8 result. Accumulation is exact: int8 x int8 products are summed in float64 (exact below 2^53, far above any
int32 accumulator) so that numpy's BLAS does the heavy lifting, then wrapped to int32 as the C++ code would.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .quant import (wrap_int32, multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_single_rounding,
                    multiply_by_quantized_multiplier_smaller_than_one_exp,
                    multiply_by_quantized_multiplier_greater_than_one, saturating_rounding_doubling_high_mul,
                    rounding_divide_by_pot, saturating_rounding_multiply_by_pot, INT32_MAX)

__all__ = ["conv_2d", "depthwise_conv_2d", "fully_connected", "average_pool_2d", "max_pool_2d", "add", "softmax",
           "pad", "reshape", "concatenation", "requantize"]


def _int8(x, act_min, act_max):
    return np.clip(x, act_min, act_max).astype(np.int8)


def requantize(acc, multiplier, shift, output_offset, act_min, act_max, single_rounding=False):
    """The output stage shared by CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED.

    ``acc`` is the int32 accumulator (bias included), channels last; ``multiplier``/``shift`` broadcast over the
    channel axis. The convolutions round twice (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT);
    FULLY_CONNECTED rounds once. This is exactly what the NPU's post-processing unit computes.
    """
    if single_rounding:
        out = multiply_by_quantized_multiplier_single_rounding(wrap_int32(acc), multiplier, shift)
    else:
        out = multiply_by_quantized_multiplier(wrap_int32(acc), multiplier, shift)
    out = out + output_offset
    return _int8(out, act_min, act_max)


def _windows(x, kernel, p, pad_value):
    """[N, OH, OW, C, KH, KW] view of the (padded) input windows of a convolution or pooling."""
    (pt, pb), (pl, pr) = p.padding
    kh, kw = kernel
    dh, dw = getattr(p, "dilation", (1, 1))
    sh, sw = p.stride
    oh, ow = p.output_size
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    # Pad enough for every window, then crop what VALID does not use.
    need_h = (oh - 1) * sh + eh
    need_w = (ow - 1) * sw + ew
    pb = max(0, need_h - x.shape[1] - pt)
    pr = max(0, need_w - x.shape[2] - pl)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    win = sliding_window_view(xp, (eh, ew), axis=(1, 2))
    return win[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw, :, ::dh, ::dw]


def conv_2d(x, filters, bias, p):
    """``reference_integer_ops::ConvPerChannel``. x: [N,H,W,C] int8, filters: [O,KH,KW,C] int8, bias: [O] int32."""
    o, kh, kw, c = filters.shape
    # Padding with 0 after the input offset is the same as padding with the input zero point before it.
    xo = x.astype(np.float64) + p.input_offset
    win = _windows(xo, (kh, kw), p, 0.0)                          # [N, OH, OW, C, KH, KW]
    n, oh, ow = win.shape[:3]
    cols = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * oh * ow, kh * kw * c)
    acc = cols @ filters.reshape(o, kh * kw * c).T.astype(np.float64)
    acc = acc.astype(np.int64).reshape(n, oh, ow, o)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return requantize(acc, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max)


def depthwise_conv_2d(x, filters, bias, p):
    """``reference_integer_ops::DepthwiseConvPerChannel``. filters: [1,KH,KW,C*M] int8."""
    _, kh, kw, oc = filters.shape
    c = x.shape[3]
    m = p.depth_multiplier
    xo = x.astype(np.int64) + p.input_offset
    win = _windows(xo, (kh, kw), p, 0)                            # [N, OH, OW, C, KH, KW]
    f = filters.reshape(kh, kw, c, m).astype(np.int64)
    acc = np.einsum("nhwcij,ijcm->nhwcm", win, f).reshape(*win.shape[:3], c * m)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return requantize(acc, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max)


def fully_connected(x, weights, bias, p):
    """``reference_integer_ops::FullyConnected`` (and ``FullyConnectedPerChannel``). weights: [O, I] int8."""
    o, i = weights.shape
    xo = x.reshape(-1, i).astype(np.float64) + p.input_offset
    acc = (xo @ (weights.astype(np.float64) + p.filter_offset).T).astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return requantize(acc, p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max,
                      single_rounding=True)


def average_pool_2d(x, p):
    """``reference_integer_ops::AveragePool``: the window is clipped to the input; rounds half away from zero."""
    win = _windows(x.astype(np.int64), p.filter, p, 0)
    ones = np.ones((1,) + x.shape[1:3] + (1,), dtype=np.int64)
    count = _windows(ones, p.filter, p, 0).sum(axis=(4, 5))       # [1, OH, OW, 1]
    acc = win.sum(axis=(4, 5))
    half = count // 2
    # C++ integer division truncates toward zero.
    pos = (acc + half) // count
    neg = -((-acc + half) // count)
    return _int8(np.where(acc > 0, pos, neg), p.act_min, p.act_max)


def max_pool_2d(x, p):
    """``reference_integer_ops::MaxPool``: the window is clipped to the input."""
    win = _windows(x.astype(np.int64), p.filter, p, np.iinfo(np.int64).min)
    return _int8(win.max(axis=(4, 5)), p.act_min, p.act_max)


def add(x1, x2, p):
    """``reference_integer_ops::Add`` (with numpy broadcasting for the broadcast variant)."""
    def scaled(x, offset, mult, shift):
        shifted = (x.astype(np.int64) + offset) * (1 << p.left_shift)
        return multiply_by_quantized_multiplier_smaller_than_one_exp(shifted, mult, shift)
    raw_sum = (scaled(x1, p.input1_offset, p.input1_multiplier, p.input1_shift)
               + scaled(x2, p.input2_offset, p.input2_multiplier, p.input2_shift))
    raw_out = multiply_by_quantized_multiplier_smaller_than_one_exp(raw_sum, p.output_multiplier,
                                                                    p.output_shift) + p.output_offset
    return _int8(raw_out, p.act_min, p.act_max)


# -- softmax: gemmlowp fixed point ----------------------------------------------------------------------------

def _fx_mul(a, b):
    """gemmlowp ``FixedPoint * FixedPoint``: integer bits add, raw is SaturatingRoundingDoublingHighMul."""
    return saturating_rounding_doubling_high_mul(a, b)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor series around -1/8)."""
    constant_term = 1895147668                      # exp(-1/8)
    constant_1_over_3 = 715827883
    x = wrap_int32(a + (1 << 28))                   # a + 1/8
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(
        wrap_int32(_fx_mul(wrap_int32(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return wrap_int32(constant_term + _fx_mul(constant_term, wrap_int32(x + poly)))


def _exp_on_negative_values(a, integer_bits):
    """gemmlowp ``exp_on_negative_values`` for a Q(integer_bits).(31-integer_bits) input; Q0.31 result."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap_int32((a & mask) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = wrap_int32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = 1 << (fractional_bits + exponent)
            result = np.where(remainder & bit, _fx_mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: 1/(1+a) for a in [0, 1), Q0.31 in and out (Newton-Raphson)."""
    s = a + INT32_MAX                               # RoundingHalfSum(a, One), in 64 bits
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))
    constant_48_over_17 = 1515870810                # Q2.29
    constant_neg_32_over_17 = -1010580540           # Q2.29
    x = wrap_int32(constant_48_over_17 + _fx_mul(half_denominator, constant_neg_32_over_17))
    one_q2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = _fx_mul(half_denominator, x)
        one_minus = wrap_int32(one_q2 - half_denominator_times_x)
        x = wrap_int32(x + saturating_rounding_multiply_by_pot(_fx_mul(x, one_minus), 2))
    return saturating_rounding_multiply_by_pot(x, 1)


def _count_leading_zeros32(x):
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    clz = np.full(x.shape, 32, dtype=np.int64)
    nz = x != 0
    clz[nz] = 31 - np.floor(np.log2(x[nz].astype(np.float64))).astype(np.int64)
    # Guard against float rounding at the top of the range.
    fix = nz & ((x >> (31 - clz)) == 0)
    clz[fix] -= 1
    return clz


def _get_reciprocal(x, x_integer_digits):
    """``GetReciprocal``: (1/x as Q0.31 scaled into [0.5, 1), number of bits of x over one)."""
    headroom_plus_one = _count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x.astype(np.int64) << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    shifted_sum_minus_one = wrap_int32(shifted)
    return _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def softmax(x, p):
    """``reference_ops::Softmax`` for int8 in and out (gemmlowp fixed point), over the last axis."""
    accumulation_integer_bits = 12
    scaled_diff_integer_bits = 5
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    diff = rows - rows.max(axis=1, keepdims=True)
    valid = diff >= p.diff_min
    rescaled = multiply_by_quantized_multiplier_greater_than_one(diff, p.input_multiplier, p.input_left_shift)
    exp = _exp_on_negative_values(rescaled, scaled_diff_integer_bits)
    # Rescale<12>: Q0.31 -> Q12.19; sums of Q12.19 values wrap like int32 (they never reach it for int8 rows).
    contrib = np.where(valid, rounding_divide_by_pot(exp, accumulation_integer_bits), 0)
    sum_of_exps = wrap_int32(contrib.sum(axis=1, keepdims=True))
    shifted_scale, num_bits_over_unit = _get_reciprocal(sum_of_exps, accumulation_integer_bits)
    if np.any(num_bits_over_unit + 31 - 8 > 31):
        # The reference kernel's RoundingDivideByPOT asserts here (LiteRT aborts): the row's sum of exponentials
        # reaches 512, e.g. more than 511 values equal to the row maximum.
        raise ValueError("softmax row too flat: its sum of exponentials reaches 512, outside the range of the "
                         "reference kernel's int8 fixed-point softmax")
    unsat = rounding_divide_by_pot(_fx_mul(shifted_scale, exp), num_bits_over_unit + 31 - 8)
    out = np.clip(unsat - 128, -128, 127)
    out = np.where(valid, out, -128)
    return out.astype(np.int8).reshape(x.shape)


def pad(x, paddings, pad_value):
    """``reference_ops::Pad`` with the output zero point as the pad value."""
    return np.pad(x, [tuple(int(v) for v in row) for row in paddings], constant_values=pad_value).astype(np.int8)


def reshape(x, shape):
    return x.reshape(shape)


def concatenation(xs, axis):
    return np.concatenate(xs, axis=axis)
