"""TFLite import: the IR of real models, and one clear error for each kind of bad model."""

import numpy as np
import pytest

from haneul.errors import ModelError, UnsupportedError
from haneul.firmware import tflite
from haneul.firmware.ir import Activation, OpType, Padding
from tests.conftest import model_path, MODEL_FILES
from tests.tflite_builder import ModelBuilder, ACT, PADDING


def test_ic01_ir():
    g = tflite.load(model_path("ic01"))
    assert [op.type for op in g.operators].count(OpType.CONV_2D) == 9
    conv0 = g.operators[0]
    assert conv0.inputs[0].shape == (1, 32, 32, 3) and conv0.outputs[0].shape == (1, 32, 32, 16)
    assert conv0.options.padding is Padding.SAME and conv0.options.activation is Activation.RELU
    w = conv0.inputs[1]
    assert w.quant.per_channel and w.quant.scale.size == 16 and w.data.dtype == np.int8
    assert conv0.inputs[2].data.dtype == np.int32
    assert g.inputs[0].scale == 1.0 and g.inputs[0].zero_point == -128


@pytest.mark.parametrize("name", list(MODEL_FILES))
def test_every_model_imports(name):
    g = tflite.load(model_path(name))
    assert g.operators and all(t.dtype == np.int8 for t in g.inputs + g.outputs)


def _conv_builder(act_dtype=np.int8, w_dtype=np.int8, act="RELU", quantise_acts=True, op="CONV_2D", **opts):
    b = ModelBuilder()
    q = dict(scale=0.1, zero_point=0) if quantise_acts else {}
    x = b.tensor((1, 4, 4, 2), act_dtype, name="image", **q)
    w = b.tensor((3, 3, 3, 2), w_dtype, data=np.ones((3, 3, 3, 2)), scale=[0.1] * 3, zero_point=0, name="kernel")
    bias = b.tensor((3,), np.int32, data=np.zeros(3), scale=[0.01] * 3, name="bias")
    y = b.tensor((1, 4, 4, 3), act_dtype, name="features", **q)
    b.op(op, [x, w, bias], [y], padding=PADDING["SAME"], strideH=1, strideW=1, fusedActivationFunction=ACT[act],
         dilationHFactor=1, dilationWFactor=1, **opts)
    return b.build([x], [y])


BAD_MODELS = {
    "float": (lambda: _conv_builder(np.float32, np.float32, quantise_acts=False),
              UnsupportedError, r"float32: this is a float model"),
    "dynamic-range": (lambda: _conv_builder(np.float32, np.int8, quantise_acts=False),
                      UnsupportedError, r"dynamic-range quantised"),
    "uint8": (lambda: _conv_builder(np.uint8, np.uint8), UnsupportedError, r"'image' is uint8"),
    "fused TANH": (lambda: _conv_builder(act="TANH"), UnsupportedError,
                   r"operator 0 \(CONV_2D\): fused activation TANH is not supported"),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_models(kind):
    build, error, message = BAD_MODELS[kind]
    with pytest.raises(error, match=message):
        tflite.loads(build())


def test_unsupported_operator():
    b = ModelBuilder()
    x = b.tensor((1, 8), scale=0.1, zero_point=0, name="x")
    y = b.tensor((1, 8), scale=0.1, zero_point=0, name="y")
    b.op("TANH", [x], [y])
    with pytest.raises(UnsupportedError, match=r"operator 0 \(TANH\): operator TANH is not supported"):
        tflite.loads(b.build([x], [y]))


def test_shape_mismatch_names_the_operator():
    b = ModelBuilder()
    x = b.tensor((1, 4, 4, 2), scale=0.1, zero_point=0)
    w = b.tensor((3, 3, 3, 2), data=np.ones((3, 3, 3, 2)), scale=[0.1] * 3, zero_point=0)
    y = b.tensor((1, 5, 4, 3), scale=0.1, zero_point=0, name="wrong")
    b.op("CONV_2D", [x, w], [y], padding=PADDING["SAME"], strideH=1, strideW=1, dilationHFactor=1,
         dilationWFactor=1)
    with pytest.raises(ModelError, match=r"operator 0 \(CONV_2D\): output 'wrong' has shape \[1, 5, 4, 3\], but "
                                         r"the operator produces \[1, 4, 4, 3\]"):
        tflite.loads(b.build([x], [y]))


def test_asymmetric_weights_rejected():
    b = ModelBuilder()
    x = b.tensor((1, 8), scale=0.1, zero_point=0)
    w = b.tensor((4, 8), data=np.ones((4, 8)), scale=0.1, zero_point=3, name="fcw")
    y = b.tensor((1, 4), scale=0.1, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y])
    with pytest.raises(UnsupportedError, match="weights 'fcw' have a non-zero zero point"):
        tflite.loads(b.build([x], [y]))


def test_malformed_files(tmp_path):
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        tflite.loads(b"hello world, not a model")
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        tflite.loads(b"")
    data = model_path("ic01").read_bytes()
    with pytest.raises(ModelError, match="malformed TFLite flatbuffer|buffer|refers to"):
        tflite.loads(data[:5000])
    with pytest.raises(ModelError, match="cannot read model file"):
        tflite.load(tmp_path / "missing.tflite")


def test_corrupted_files_never_crash_deep_inside():
    # Random byte flips in a real model: the importer either succeeds or raises ModelError, nothing else.
    data = bytearray(model_path("kws01").read_bytes())
    rng = np.random.default_rng(7)
    for _ in range(40):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), size=8):
            bad[pos] = int(rng.integers(0, 256))
        try:
            tflite.loads(bytes(bad))
        except ModelError:
            pass
