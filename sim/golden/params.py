"""Prepare: the integer parameters of each operator, computed from the graph as TFLite's ``Prepare`` functions do.

These are the numbers the hardware consumes too (per-channel multipliers and shifts, offsets, clamp bounds): the
compiler reuses this module, so the golden model and the NPU agree by construction on everything but the arithmetic.
Floating-point steps follow the C++ types exactly (float32 where TFLite multiplies floats, double elsewhere).
"""

from dataclasses import dataclass

import numpy as np

from haneul.firmware.ir import Activation, OpType, Padding
from .quant import (quantize_multiplier, quantize_multiplier_smaller_than_one_exp,
                    quantize_multiplier_greater_than_one, tflite_round)

__all__ = [
    "activation_range", "compute_padding", "ConvParams", "DepthwiseParams", "FullyConnectedParams", "PoolParams",
    "AddParams", "SoftmaxParams", "prepare",
]


def activation_range(activation, scale, zero_point, qmin=-128, qmax=127):
    """``CalculateActivationRangeQuantized``: the int8 clamp bounds of a fused activation."""
    def quantize(f):
        # TFLite divides in float32 and rounds half away from zero.
        return zero_point + int(tflite_round(np.float32(f) / np.float32(scale)))
    if activation is Activation.NONE:
        return qmin, qmax
    if activation is Activation.RELU:
        return max(qmin, quantize(0.0)), qmax
    if activation is Activation.RELU6:
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation is Activation.RELU_N1_TO_1:
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise ValueError(f"Unknown activation {activation!r}")


def compute_padding(in_size, filter_size, stride, dilation, out_size):
    """``ComputePaddingHeightWidth`` for one axis: (padding before, padding after) of a window."""
    effective = (filter_size - 1) * dilation + 1
    total = max(0, (out_size - 1) * stride + effective - in_size)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class ConvParams:
    """Integer parameters of CONV_2D (``ConvParams`` plus the per-channel arrays of ``OpData``)."""
    input_offset: int
    output_offset: int
    output_multiplier: np.ndarray   # int64 [out_channels], Q0.31 significands
    output_shift: np.ndarray        # int64 [out_channels], power-of-two exponents
    stride: tuple                   # (h, w)
    dilation: tuple                 # (h, w)
    padding: tuple                  # ((top, bottom), (left, right))
    output_size: tuple              # (h, w)
    act_min: int
    act_max: int


@dataclass(frozen=True)
class DepthwiseParams(ConvParams):
    depth_multiplier: int = 1


@dataclass(frozen=True)
class FullyConnectedParams:
    input_offset: int
    filter_offset: int
    output_offset: int
    output_multiplier: np.ndarray   # [1] per-tensor or [out_features] per-channel
    output_shift: np.ndarray
    act_min: int
    act_max: int


@dataclass(frozen=True)
class PoolParams:
    filter: tuple
    stride: tuple
    padding: tuple
    output_size: tuple
    act_min: int
    act_max: int


@dataclass(frozen=True)
class AddParams:
    left_shift: int
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int


@dataclass(frozen=True)
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def _per_channel_multipliers(input_scale, filter_scales, output_scale, channels):
    # PopulateConvolutionQuantizationParams: the product is formed in double.
    filter_scales = np.broadcast_to(np.asarray(filter_scales, dtype=np.float32), (channels,))
    mult = np.empty(channels, dtype=np.int64)
    shift = np.empty(channels, dtype=np.int64)
    for c in range(channels):
        effective = float(np.float64(input_scale) * np.float64(filter_scales[c]) / np.float64(output_scale))
        mult[c], shift[c] = quantize_multiplier(effective)
    return mult, shift


def _window(op, x, kh, kw):
    o = op.options
    dil = (getattr(o, "dilation_h", 1), getattr(o, "dilation_w", 1))
    out = op.outputs[0]
    oh, ow = out.shape[1], out.shape[2]
    if o.padding is Padding.SAME:
        pad = (compute_padding(x.shape[1], kh, o.stride_h, dil[0], oh),
               compute_padding(x.shape[2], kw, o.stride_w, dil[1], ow))
    else:
        pad = ((0, 0), (0, 0))
    return dict(stride=(o.stride_h, o.stride_w), dilation=dil, padding=pad, output_size=(oh, ow))


def _conv(op):
    x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
    channels = w.shape[0] if op.type is OpType.CONV_2D else w.shape[3]
    mult, shift = _per_channel_multipliers(x.quant.scale[0], w.quant.scale, out.quant.scale[0], channels)
    act_min, act_max = activation_range(op.options.activation, out.scale, out.zero_point)
    common = dict(input_offset=-x.zero_point, output_offset=out.zero_point, output_multiplier=mult,
                  output_shift=shift, act_min=act_min, act_max=act_max, **_window(op, x, w.shape[1], w.shape[2]))
    if op.type is OpType.DEPTHWISE_CONV_2D:
        return DepthwiseParams(depth_multiplier=op.options.depth_multiplier, **common)
    return ConvParams(**common)


def _fully_connected(op):
    x, w, out = op.inputs[0], op.inputs[1], op.outputs[0]
    if w.quant.per_channel:
        mult, shift = _per_channel_multipliers(x.quant.scale[0], w.quant.scale, out.quant.scale[0], w.shape[0])
    else:
        mult, shift = _per_channel_multipliers(x.quant.scale[0], w.quant.scale, out.quant.scale[0], 1)
    act_min, act_max = activation_range(op.options.activation, out.scale, out.zero_point)
    return FullyConnectedParams(input_offset=-x.zero_point, filter_offset=-w.zero_point, output_offset=out.zero_point,
                                output_multiplier=mult, output_shift=shift, act_min=act_min, act_max=act_max)


def _pool(op):
    x, out, o = op.inputs[0], op.outputs[0], op.options
    act_min, act_max = activation_range(o.activation, out.scale, out.zero_point)
    win = _window(op, x, o.filter_h, o.filter_w)
    return PoolParams(filter=(o.filter_h, o.filter_w), stride=win["stride"], padding=win["padding"],
                      output_size=win["output_size"], act_min=act_min, act_max=act_max)


def _add(op):
    a, b, out = op.inputs[0], op.inputs[1], op.outputs[0]
    left_shift = 20
    # The scales are float32; 2*max(...) and (1 << 20) * scale are exact in float32, the ratios are double.
    twice_max = np.float64(np.float32(2) * max(np.float32(a.quant.scale[0]), np.float32(b.quant.scale[0])))
    m1, s1 = quantize_multiplier_smaller_than_one_exp(float(np.float64(a.quant.scale[0]) / twice_max))
    m2, s2 = quantize_multiplier_smaller_than_one_exp(float(np.float64(b.quant.scale[0]) / twice_max))
    out_real = float(twice_max / np.float64(np.float32(1 << left_shift) * np.float32(out.quant.scale[0])))
    mo, so = quantize_multiplier_smaller_than_one_exp(out_real)
    act_min, act_max = activation_range(op.options.activation, out.scale, out.zero_point)
    return AddParams(left_shift=left_shift, input1_offset=-a.zero_point, input1_multiplier=m1, input1_shift=s1,
                     input2_offset=-b.zero_point, input2_multiplier=m2, input2_shift=s2,
                     output_offset=out.zero_point, output_multiplier=mo, output_shift=so,
                     act_min=act_min, act_max=act_max)


SCALED_DIFF_INTEGER_BITS = 5


def calculate_input_radius(input_integer_bits, input_left_shift, total_signed_bits=31):
    """``CalculateInputRadius``."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * (1 << (total_signed_bits - input_integer_bits))
                          / (1 << input_left_shift))
    return int(np.floor(max_input_rescaled))


def _softmax(op):
    x = op.inputs[0]
    # PreprocessSoftmaxScaling (double rounding build): cap at 2^31 - 1.
    real = min(float(op.options.beta) * float(np.float64(x.quant.scale[0])) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)),
               (1 << 31) - 1.0)
    mult, left_shift = quantize_multiplier_greater_than_one(real)
    diff_min = -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, left_shift)
    return SoftmaxParams(input_multiplier=mult, input_left_shift=left_shift, diff_min=diff_min)


_PREPARE = {
    OpType.CONV_2D: _conv,
    OpType.DEPTHWISE_CONV_2D: _conv,
    OpType.FULLY_CONNECTED: _fully_connected,
    OpType.AVERAGE_POOL_2D: _pool,
    OpType.MAX_POOL_2D: _pool,
    OpType.ADD: _add,
    OpType.SOFTMAX: _softmax,
}


def prepare(op):
    """The integer parameters of ``op`` (``None`` for operators that need none: RESHAPE, PAD, CONCATENATION)."""
    fn = _PREPARE.get(op.type)
    return fn(op) if fn is not None else None
