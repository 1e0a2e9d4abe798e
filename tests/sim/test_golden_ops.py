"""Per-operator edge cases: the golden model against LiteRT's reference kernels on single-operator models."""

import numpy as np
import pytest

from tests.tflite_builder import ModelBuilder, PADDING, ACT
from tests.sim.golden_check import assert_bit_exact

INT32_MAX = 2**31 - 1


def rand_int8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int8)


def conv_model(rng, in_shape, out_c, kernel, stride=(1, 1), padding="SAME", act="NONE", dilation=(1, 1),
               in_zp=None, out_zp=None, in_scale=None, out_scale=None, w_scales=None, bias=None, weights=None,
               depthwise=False, depth_multiplier=1):
    n, h, w, c = in_shape
    kh, kw = kernel
    in_scale = in_scale if in_scale is not None else float(rng.uniform(0.005, 0.1))
    out_scale = out_scale if out_scale is not None else float(rng.uniform(0.01, 0.5))
    in_zp = int(rng.integers(-128, 128)) if in_zp is None else in_zp
    out_zp = int(rng.integers(-128, 128)) if out_zp is None else out_zp
    if depthwise:
        out_c = c * depth_multiplier
        wshape = (1, kh, kw, out_c)
        axis = 3
    else:
        wshape = (out_c, kh, kw, c)
        axis = 0
    w_scales = w_scales if w_scales is not None else rng.uniform(0.001, 0.05, size=out_c).astype(np.float32)
    weights = weights if weights is not None else rand_int8(rng, wshape, -127, 127)
    bias = bias if bias is not None else rng.integers(-5000, 5000, size=out_c).astype(np.int32)
    eff_h, eff_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    if padding == "SAME":
        oh, ow = -(-h // stride[0]), -(-w // stride[1])
    else:
        oh, ow = (h - eff_h + stride[0]) // stride[0], (w - eff_w + stride[1]) // stride[1]
    b = ModelBuilder()
    x = b.tensor(in_shape, scale=in_scale, zero_point=in_zp, name="input")
    wt = b.tensor(wshape, data=weights, scale=w_scales, zero_point=0, axis=axis, name="weights")
    bt = b.tensor((out_c,), np.int32, data=bias, scale=np.float32(in_scale) * np.asarray(w_scales), zero_point=0,
                  name="bias")
    y = b.tensor((n, oh, ow, out_c), scale=out_scale, zero_point=out_zp, name="output")
    opts = dict(padding=PADDING[padding], strideH=stride[0], strideW=stride[1], fusedActivationFunction=ACT[act],
                dilationHFactor=dilation[0], dilationWFactor=dilation[1])
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], depthMultiplier=depth_multiplier, **opts)
    else:
        b.op("CONV_2D", [x, wt, bt], [y], **opts)
    return b.build([x], [y])


CONV_CASES = [
    # in_shape, out_c, kernel, stride, padding, act, dilation
    ((1, 8, 8, 3), 16, (3, 3), (1, 1), "SAME", "RELU", (1, 1)),
    ((1, 9, 7, 5), 17, (3, 3), (2, 2), "SAME", "NONE", (1, 1)),        # non-square, odd sizes, channels not 16k
    ((1, 9, 7, 5), 17, (3, 3), (2, 2), "VALID", "RELU6", (1, 1)),
    ((1, 10, 6, 1), 8, (4, 2), (2, 1), "SAME", "RELU_N1_TO_1", (1, 1)),  # non-square kernel, kws01-like
    ((1, 1, 1, 33), 7, (1, 1), (1, 1), "VALID", "NONE", (1, 1)),         # 1x1 spatial
    ((1, 1, 1, 4), 3, (3, 3), (1, 1), "SAME", "RELU", (1, 1)),           # 1x1 input, SAME border everywhere
    ((2, 6, 6, 4), 5, (3, 3), (1, 1), "SAME", "NONE", (1, 1)),           # batch 2
    ((1, 11, 11, 3), 4, (3, 3), (1, 1), "SAME", "NONE", (2, 2)),         # dilation
    ((1, 12, 12, 8), 6, (5, 5), (3, 3), "VALID", "RELU", (1, 1)),
    ((1, 32, 32, 3), 16, (3, 3), (1, 1), "SAME", "RELU", (1, 1)),        # ic01 first layer shape
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-k{c[2][0]}{c[2][1]}-s{c[3][0]}{c[3][1]}-{c[4]}-{c[5]}")
def test_conv_2d(rng, case):
    in_shape, out_c, kernel, stride, padding, act, dilation = case
    model = conv_model(rng, in_shape, out_c, kernel, stride, padding, act, dilation)
    for _ in range(3):
        assert_bit_exact(model, rand_int8(rng, in_shape))


@pytest.mark.parametrize("in_zp,out_zp", [(-128, -128), (127, 127), (-128, 127), (127, -128)])
def test_conv_2d_extreme_zero_points(rng, in_zp, out_zp):
    model = conv_model(rng, (1, 5, 6, 4), 6, (3, 3), in_zp=in_zp, out_zp=out_zp, act="RELU")
    for x in (rand_int8(rng, (1, 5, 6, 4)), np.full((1, 5, 6, 4), -128, np.int8), np.full((1, 5, 6, 4), 127, np.int8)):
        assert_bit_exact(model, x)


def test_conv_2d_saturation(rng):
    # Large effective scale: outputs saturate at -128 and 127.
    weights = np.where(rng.random((8, 3, 3, 4)) < 0.5, -127, 127).astype(np.int8)
    model = conv_model(rng, (1, 6, 6, 4), 8, (3, 3), in_scale=0.5, out_scale=0.01, weights=weights,
                       w_scales=np.full(8, 0.05, np.float32), in_zp=0, out_zp=0)
    for x in (np.full((1, 6, 6, 4), -128, np.int8), np.full((1, 6, 6, 4), 127, np.int8), rand_int8(rng, (1, 6, 6, 4))):
        out = assert_bit_exact(model, x)[0]
    assert out.min() == -128 and out.max() == 127


def test_conv_2d_accumulator_extremes(rng):
    # Bias near the int32 limits: accumulator plus bias stays inside int32 but close to its edges.
    max_acc = 3 * 3 * 4 * 255 * 127
    bias = np.array([INT32_MAX - max_acc, -INT32_MAX + max_acc, 0, INT32_MAX // 2], dtype=np.int32)
    model = conv_model(rng, (1, 4, 4, 4), 4, (3, 3), bias=bias, in_scale=0.02, out_scale=1e4)
    for x in (np.full((1, 4, 4, 4), 127, np.int8), np.full((1, 4, 4, 4), -128, np.int8), rand_int8(rng, (1, 4, 4, 4))):
        assert_bit_exact(model, x)


def test_conv_2d_shift_below_minus_31(rng):
    # Effective scale ~1e-11 < 2^-31: QuantizeMultiplier flushes the multiplier to zero; output = zero point.
    model = conv_model(rng, (1, 4, 4, 2), 3, (3, 3), in_scale=1e-5, out_scale=100.0,
                       w_scales=np.full(3, 1e-4, np.float32), out_zp=7)
    out = assert_bit_exact(model, rand_int8(rng, (1, 4, 4, 2)))[0]
    assert np.all(out == 7)


def test_conv_2d_large_multiplier_left_shift(rng):
    # Effective scale > 1: positive shifts (left shift before the high multiply).
    model = conv_model(rng, (1, 4, 4, 2), 3, (1, 1), in_scale=0.9, out_scale=0.001,
                       w_scales=np.full(3, 0.01, np.float32), bias=np.zeros(3, np.int32))
    for _ in range(3):
        assert_bit_exact(model, rand_int8(rng, (1, 4, 4, 2), -3, 3))


DW_CASES = [
    ((1, 25, 5, 64), (3, 3), (1, 1), "SAME", "RELU", 1),      # kws01
    ((1, 12, 12, 16), (3, 3), (2, 2), "SAME", "RELU6", 1),    # vww01 stride 2
    ((1, 30, 1, 40), (3, 1), (1, 1), "VALID", "NONE", 1),     # sww01 kx1
    ((1, 7, 9, 5), (3, 3), (1, 2), "VALID", "NONE", 2),       # depth multiplier 2, odd sizes
    ((1, 1, 1, 3), (3, 3), (1, 1), "SAME", "RELU", 1),
]


@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-k{c[1][0]}{c[1][1]}-s{c[2][0]}{c[2][1]}-{c[3]}-m{c[5]}")
def test_depthwise_conv_2d(rng, case):
    in_shape, kernel, stride, padding, act, mult = case
    model = conv_model(rng, in_shape, None, kernel, stride, padding, act, depthwise=True, depth_multiplier=mult)
    for _ in range(3):
        assert_bit_exact(model, rand_int8(rng, in_shape))


def fc_model(rng, batch, n_in, n_out, act="NONE", per_channel=False, keep_num_dims=False, in_shape=None,
             in_zp=None, out_zp=None):
    in_scale, out_scale = float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.05, 0.5))
    in_zp = int(rng.integers(-128, 128)) if in_zp is None else in_zp
    out_zp = int(rng.integers(-128, 128)) if out_zp is None else out_zp
    w_scales = (rng.uniform(0.001, 0.02, size=n_out) if per_channel else rng.uniform(0.001, 0.02, size=1)).astype(np.float32)
    in_shape = in_shape or (batch, n_in)
    out_shape = (*in_shape[:-1], n_out) if keep_num_dims else (int(np.prod(in_shape)) // n_in, n_out)
    b = ModelBuilder()
    x = b.tensor(in_shape, scale=in_scale, zero_point=in_zp)
    w = b.tensor((n_out, n_in), data=rand_int8(rng, (n_out, n_in), -127, 127), scale=w_scales, zero_point=0)
    bt = b.tensor((n_out,), np.int32, data=rng.integers(-3000, 3000, n_out).astype(np.int32),
                  scale=np.float32(in_scale) * w_scales, zero_point=0)
    y = b.tensor(out_shape, scale=out_scale, zero_point=out_zp)
    b.op("FULLY_CONNECTED", [x, w, bt], [y], fusedActivationFunction=ACT[act], keepNumDims=keep_num_dims)
    return b.build([x], [y]), in_shape


@pytest.mark.parametrize("batch,n_in,n_out,act,per_channel", [
    (1, 64, 10, "NONE", False), (1, 640, 128, "RELU", False), (3, 17, 5, "RELU6", False),
    (1, 128, 33, "NONE", True), (2, 8, 128, "RELU_N1_TO_1", True), (1, 1, 1, "NONE", False)])
def test_fully_connected(rng, batch, n_in, n_out, act, per_channel):
    model, in_shape = fc_model(rng, batch, n_in, n_out, act, per_channel)
    for _ in range(10):
        assert_bit_exact(model, rand_int8(rng, in_shape))


def test_fully_connected_keep_num_dims(rng):
    model, in_shape = fc_model(rng, None, 12, 7, keep_num_dims=True, in_shape=(1, 3, 12))
    assert_bit_exact(model, rand_int8(rng, in_shape))


@pytest.mark.parametrize("in_zp,out_zp", [(-128, -128), (127, 127)])
def test_fully_connected_extreme_zero_points(rng, in_zp, out_zp):
    model, in_shape = fc_model(rng, 1, 32, 16, in_zp=in_zp, out_zp=out_zp)
    for x in (np.full(in_shape, -128, np.int8), np.full(in_shape, 127, np.int8), rand_int8(rng, in_shape)):
        assert_bit_exact(model, x)


def add_model(rng, shape1, shape2, act="NONE", scales=None, zps=None):
    scales = scales or [float(s) for s in rng.uniform(0.01, 0.2, 3)]
    zps = zps or [int(z) for z in rng.integers(-128, 128, 3)]
    out_shape = np.broadcast_shapes(shape1, shape2)
    b = ModelBuilder()
    a = b.tensor(shape1, scale=scales[0], zero_point=zps[0])
    c = b.tensor(shape2, scale=scales[1], zero_point=zps[1])
    y = b.tensor(out_shape, scale=scales[2], zero_point=zps[2])
    b.op("ADD", [a, c], [y], fusedActivationFunction=ACT[act])
    return b.build([a, c], [y])


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_add(rng, act):
    model = add_model(rng, (1, 5, 7, 16), (1, 5, 7, 16), act)
    for _ in range(3):
        assert_bit_exact(model, [rand_int8(rng, (1, 5, 7, 16)), rand_int8(rng, (1, 5, 7, 16))])


def test_add_extremes(rng):
    shape = (1, 4, 4, 8)
    for scales, zps in [([0.1, 0.1, 0.01], [-128, 127, 0]), ([0.5, 0.001, 0.3], [127, -128, -128]),
                        ([0.02, 0.05, 0.05], [0, 0, 127])]:
        model = add_model(rng, shape, shape, "NONE", scales, zps)
        for x1, x2 in [(np.full(shape, 127, np.int8), np.full(shape, 127, np.int8)),
                       (np.full(shape, -128, np.int8), np.full(shape, -128, np.int8)),
                       (rand_int8(rng, shape), rand_int8(rng, shape))]:
            assert_bit_exact(model, [x1, x2])


def test_add_broadcast(rng):
    model = add_model(rng, (1, 3, 4, 5), (1, 1, 1, 5))
    assert_bit_exact(model, [rand_int8(rng, (1, 3, 4, 5)), rand_int8(rng, (1, 1, 1, 5))])


def pool_model(rng, kind, in_shape, filt, stride, padding, act="NONE"):
    scale, zp = float(rng.uniform(0.01, 0.2)), int(rng.integers(-128, 128))
    n, h, w, c = in_shape
    if padding == "SAME":
        oh, ow = -(-h // stride[0]), -(-w // stride[1])
    else:
        oh, ow = (h - filt[0] + stride[0]) // stride[0], (w - filt[1] + stride[1]) // stride[1]
    b = ModelBuilder()
    x = b.tensor(in_shape, scale=scale, zero_point=zp)
    y = b.tensor((n, oh, ow, c), scale=scale, zero_point=zp)
    b.op(kind, [x], [y], padding=PADDING[padding], strideH=stride[0], strideW=stride[1], filterHeight=filt[0],
         filterWidth=filt[1], fusedActivationFunction=ACT[act])
    return b.build([x], [y])


POOL_CASES = [
    ((1, 8, 8, 64), (8, 8), (8, 8), "VALID", "NONE"),     # ic01 global pool
    ((1, 25, 5, 64), (25, 5), (25, 5), "VALID", "NONE"),  # kws01
    ((1, 7, 9, 5), (3, 3), (2, 2), "SAME", "RELU"),       # clipped windows at the border
    ((1, 6, 5, 3), (2, 3), (1, 2), "VALID", "RELU6"),
    ((1, 1, 1, 17), (3, 3), (1, 1), "SAME", "NONE"),
]


@pytest.mark.parametrize("kind", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-f{c[1][0]}{c[1][1]}-{c[3]}-{c[4]}")
def test_pool(rng, kind, case):
    in_shape, filt, stride, padding, act = case
    model = pool_model(rng, kind, in_shape, filt, stride, padding, act)
    for x in (rand_int8(rng, in_shape), rand_int8(rng, in_shape), np.full(in_shape, -128, np.int8),
              np.full(in_shape, 127, np.int8)):
        assert_bit_exact(model, x)


def softmax_model(rng, shape, in_scale, in_zp, beta=1.0):
    b = ModelBuilder()
    x = b.tensor(shape, scale=in_scale, zero_point=in_zp)
    y = b.tensor(shape, scale=1 / 256, zero_point=-128)
    b.op("SOFTMAX", [x], [y], beta=beta)
    return b.build([x], [y])


@pytest.mark.parametrize("shape,in_scale,beta", [
    ((1, 10), 0.1, 1.0), ((1, 12), 0.05, 1.0), ((1, 2), 0.3, 1.0), ((3, 100), 0.02, 1.0), ((1, 10), 0.1, 0.5),
    ((1, 1000), 0.05, 1.0), ((2, 4, 7), 1.0, 1.0), ((1, 5), 0.0001, 1.0)])
def test_softmax(rng, shape, in_scale, beta):
    model = softmax_model(rng, shape, in_scale, int(rng.integers(-128, 128)), beta)
    inputs = [rand_int8(rng, shape), rand_int8(rng, shape)]
    if shape[-1] < 512:   # more equal maxima than that overflow the reference kernel (see the next test)
        inputs += [np.full(shape, 127, np.int8), np.full(shape, -128, np.int8)]
    for x in inputs:
        assert_bit_exact(model, x)


def test_softmax_too_flat_is_a_clear_error(rng):
    from haneul.errors import ModelError
    from haneul.firmware import tflite
    from haneul.sim import golden
    graph = tflite.loads(softmax_model(rng, (1, 600), 0.05, 0))
    with pytest.raises(ModelError, match="SOFTMAX.*sum of exponentials reaches 512"):
        golden.run(graph, np.zeros((1, 600), np.int8))


def test_softmax_one_hot_saturates(rng):
    model = softmax_model(rng, (1, 10), 1.0, 0)
    x = np.full((1, 10), -128, np.int8)
    x[0, 3] = 127
    out = assert_bit_exact(model, x)[0]
    assert out[0, 3] == 127 and np.all(np.delete(out[0], 3) == -128)


def test_pad_reshape_concatenation(rng):
    scale, zp = 0.05, -7
    b = ModelBuilder()
    x1 = b.tensor((1, 3, 4, 2), scale=scale, zero_point=zp)
    x2 = b.tensor((1, 3, 4, 3), scale=scale, zero_point=zp)
    cat = b.tensor((1, 3, 4, 5), scale=scale, zero_point=zp)
    b.op("CONCATENATION", [x1, x2], [cat], axis=3)
    pads = b.tensor((4, 2), np.int32, data=np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))
    padded = b.tensor((1, 6, 5, 5), scale=scale, zero_point=zp)
    b.op("PAD", [cat, pads], [padded])
    shape = b.tensor((2,), np.int32, data=np.array([1, 150], np.int32))
    flat = b.tensor((1, 150), scale=scale, zero_point=zp)
    b.op("RESHAPE", [padded, shape], [flat], newShape=[1, 150])
    model = b.build([x1, x2], [flat])
    out = assert_bit_exact(model, [rand_int8(rng, (1, 3, 4, 2)), rand_int8(rng, (1, 3, 4, 3))])[0]
    assert np.sum(out == zp) >= 150 - 60


def test_concatenation_negative_axis(rng):
    b = ModelBuilder()
    x1 = b.tensor((2, 3), scale=0.1, zero_point=1)
    x2 = b.tensor((2, 4), scale=0.1, zero_point=1)
    y = b.tensor((2, 7), scale=0.1, zero_point=1)
    b.op("CONCATENATION", [x1, x2], [y], axis=-1)
    assert_bit_exact(b.build([x1, x2], [y]), [rand_int8(rng, (2, 3)), rand_int8(rng, (2, 4))])
