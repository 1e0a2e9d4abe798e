"""The fixed-point primitives against known values and against scalar transcriptions of the C++ code."""

import numpy as np
import pytest

from haneul.sim.golden import quant as q

MIN, MAX = q.INT32_MIN, q.INT32_MAX


def test_tflite_round_is_half_away_from_zero():
    assert q.tflite_round([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999]).tolist() == [1, 2, 3, -1, -3, 2]


@pytest.mark.parametrize("real,expected", [
    (0.0, (0, 0)), (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (3 << 29, 0)), (2.0 ** -40, (0, 0)),
    (1.0 - 2.0 ** -33, (1 << 30, 1)),          # significand rounds up to 2^31: halved, exponent + 1
    (2.0 ** -31, (1 << 30, -30)), (2.0 ** -32, (1 << 30, -31)), (2.0 ** -33, (0, 0)),
])
def test_quantize_multiplier(real, expected):
    assert q.quantize_multiplier(real) == expected


def _srdhm(a, b):
    if a == b == MIN:
        return MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return int(v / (1 << 31)) if abs(v) < 2**52 else (abs(v) // (1 << 31)) * (1 if v >= 0 else -1)


def _rdbpot(x, e):
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def test_srdhm_and_rdbpot_against_scalar_transcription():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(MIN, MAX, 3000, endpoint=True), [MIN, MAX, 0, -1, 1, MIN, MAX]])
    b = np.concatenate([rng.integers(MIN, MAX, 3000, endpoint=True), [MIN, MAX, 0, -1, 1, MAX, MIN]])
    got = q.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    e = rng.integers(0, 32, a.size)
    got = q.rounding_divide_by_pot(a, e)
    assert got.tolist() == [_rdbpot(int(x), int(k)) for x, k in zip(a, e)]


def test_known_values():
    assert q.saturating_rounding_doubling_high_mul(MIN, MIN) == MAX
    assert q.saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29
    assert q.rounding_divide_by_pot([5, -5, 4, -3, 3], 1).tolist() == [3, -3, 2, -2, 2]
    assert q.wrap_int32([MAX + 1, MIN - 1]).tolist() == [MIN, MAX]


def test_single_rounding_is_one_rounding():
    x = np.array([2691, -2691, 1, -1, MAX, MIN])
    m, s = 1442659867, -5
    exact = [int(v) * m / 2 ** (31 - s) for v in x]
    got = q.multiply_by_quantized_multiplier_single_rounding(x, m, s)
    assert got.tolist() == [int(np.floor(v + 0.5)) for v in exact]    # ties toward +inf, as (x*M + half) >> n
    # The double-rounding form differs on this accumulator (the case found in ad01).
    assert q.multiply_by_quantized_multiplier(2691, m, s) == 57 and got[0] == 56


def test_rounding_divide_by_pot_rejects_bad_exponent():
    with pytest.raises(ValueError):
        q.rounding_divide_by_pot(1, 32)
