"""Fixed-point arithmetic of the TFLite reference kernels, vectorised with numpy.

Each function mirrors the function of the same name in TFLite's ``kernels/internal/common.h`` and
``quantization_util.cc`` (and gemmlowp's ``fixedpoint.h``), with the same rounding. Values are carried in
``int64`` arrays and wrapped to the int32 range wherever the C++ code works in ``int32_t``.
"""

import math

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX",
    "wrap_int32", "tflite_round", "quantize_multiplier", "quantize_multiplier_smaller_than_one_exp",
    "quantize_multiplier_greater_than_one",
    "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot", "saturating_rounding_multiply_by_pot",
    "multiply_by_quantized_multiplier", "multiply_by_quantized_multiplier_single_rounding",
    "multiply_by_quantized_multiplier_smaller_than_one_exp",
    "multiply_by_quantized_multiplier_greater_than_one",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap_int32(x):
    """Two's-complement wrap of an integer array to int32 (what ``int32_t`` arithmetic does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def tflite_round(x):
    """``TfLiteRound``: round half away from zero (``std::round``), not Python's round-half-even."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, np.floor(x + 0.5), -np.floor(-x + 0.5))


def quantize_multiplier(double_multiplier):
    """``QuantizeMultiplier``: real multiplier -> (int32 significand in Q0.31, power-of-two exponent).

    Multipliers so small that the shift would be below -31 are flushed to zero, as in TFLite.
    """
    double_multiplier = float(double_multiplier)
    if double_multiplier < 0:
        raise ValueError(f"Multiplier must be non-negative, not {double_multiplier!r}")
    if double_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(double_multiplier)
    q_fixed = int(tflite_round(q * (1 << 31)))
    assert q_fixed <= (1 << 31)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    assert q_fixed <= INT32_MAX
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one_exp(double_multiplier):
    """``QuantizeMultiplierSmallerThanOneExp``: as :func:`quantize_multiplier`, for multipliers below one."""
    if not 0.0 < double_multiplier < 1.0:
        raise ValueError(f"Multiplier must be in (0, 1), not {double_multiplier!r}")
    q, shift = quantize_multiplier(double_multiplier)
    assert shift <= 0
    return q, shift


def quantize_multiplier_greater_than_one(double_multiplier):
    """``QuantizeMultiplierGreaterThanOne``: as :func:`quantize_multiplier`, for multipliers above one."""
    if not double_multiplier > 1.0:
        raise ValueError(f"Multiplier must be greater than one, not {double_multiplier!r}")
    q, shift = quantize_multiplier(double_multiplier)
    assert shift >= 0
    return q, shift


def saturating_rounding_doubling_high_mul(a, b):
    """``SaturatingRoundingDoublingHighMul``: the high 32 bits of ``2*a*b``, rounded, saturating at INT32_MIN^2."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    # C++ integer division truncates toward zero.
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """``RoundingDivideByPOT``: arithmetic right shift by ``exponent`` with round-half-away-from-zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    if np.any(exponent < 0) or np.any(exponent > 31):
        raise ValueError("RoundingDivideByPOT exponent must be in [0, 31]")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_rounding_multiply_by_pot(x, exponent):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` on int32 raw values."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    result = wrap_int32(x << exponent)
    result = np.where(x > threshold, INT32_MAX, result)
    return np.where(x < -threshold, INT32_MIN, result)


def multiply_by_quantized_multiplier(x, quantized_multiplier, shift):
    """``MultiplyByQuantizedMultiplier`` (double rounding): ``x * M * 2^shift`` with M in Q0.31.

    ``quantized_multiplier`` and ``shift`` may be arrays that broadcast against ``x`` (per-channel).
    """
    shift = np.asarray(shift, dtype=np.int64)
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    x = wrap_int32(np.asarray(x, dtype=np.int64) << left_shift)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, quantized_multiplier), right_shift)


def multiply_by_quantized_multiplier_single_rounding(x, quantized_multiplier, shift):
    """``MultiplyByQuantizedMultiplier`` on a 64-bit accumulator: one rounding, ``(x*M + 2^(30-shift)) >> (31-shift)``.

    This is what LiteRT's reference FULLY_CONNECTED computes for int8 (measured: it differs from the double-rounding
    form of :func:`multiply_by_quantized_multiplier` in about 0.3% of ad01's outputs, and matches on every one).
    """
    x = np.asarray(x, dtype=np.int64)
    total_shift = 31 - np.asarray(shift, dtype=np.int64)
    if np.any(total_shift < 1) or np.any(total_shift > 62):
        raise ValueError("single-rounding shift must be in [-31, 30]")
    # x * M can exceed 64 bits only for accumulators beyond 2^32, which int32 accumulation never produces.
    prod = x * np.asarray(quantized_multiplier, dtype=np.int64)
    return (prod + (np.int64(1) << (total_shift - 1))) >> total_shift


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, quantized_multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp``: ``left_shift`` is zero or negative."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, quantized_multiplier), -np.asarray(left_shift))


def multiply_by_quantized_multiplier_greater_than_one(x, quantized_multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierGreaterThanOne``: ``left_shift`` is zero or positive."""
    x = wrap_int32(np.asarray(x, dtype=np.int64) << np.asarray(left_shift, dtype=np.int64))
    return saturating_rounding_doubling_high_mul(x, quantized_multiplier)
