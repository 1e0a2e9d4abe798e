"""The six MLPerf Tiny models: golden model against LiteRT's reference kernels, every tensor, bit for bit."""

import re

import numpy as np
import pytest

from haneul.firmware import tflite
from haneul.firmware.inputs import load_input
from haneul.sim import golden
from haneul.sim.reference import ReferenceInterpreter
from tests.conftest import MODELS, MODEL_FILES, model_path
from tests.sim.golden_check import assert_bit_exact

N_RANDOM = 20


@pytest.mark.parametrize("name", list(MODEL_FILES))
def test_model_random_inputs_every_tensor(name):
    path = model_path(name)
    graph = tflite.load(path)
    ref = ReferenceInterpreter(path)
    rng = np.random.default_rng(1234)
    for _ in range(N_RANDOM):
        x = rng.integers(-128, 128, size=graph.inputs[0].shape, dtype=np.int8)
        assert_bit_exact(path, x, ref=ref, graph=graph)


def test_kws01_sample():
    path = model_path("kws01")
    graph = tflite.load(path)
    x = np.fromfile(MODELS / "samples" / "kws01_sample_mfcc_int8_49x10.bin", dtype=np.int8)
    expected = np.fromfile(MODELS / "reference_outputs_litert" / "kws01_sample_output_int8_12.bin", dtype=np.int8)
    out = assert_bit_exact(path, x.reshape(graph.inputs[0].shape), graph=graph)[0]
    assert np.array_equal(out.reshape(-1), expected)
    assert int(np.argmax(out)) == 5          # "on"


def test_ad01_sample_windows():
    path = model_path("ad01")
    graph = tflite.load(path)
    ref = ReferenceInterpreter(path)
    q = np.fromfile(MODELS / "reference_outputs_litert" / "ad01_sample_input_quantized_int8_200x128.bin",
                    dtype=np.int8).reshape(200, 128)
    expected = np.fromfile(MODELS / "reference_outputs_litert" / "ad01_sample_output_int8_196x640.bin",
                           dtype=np.int8).reshape(196, 640)
    # The quantised input is reproducible from the float log-mel sample.
    fp = np.fromfile(MODELS / "samples" / "ad01_toycar_normal_id_01_00000000_logmel_fp32_200x128.bin",
                     dtype="<f4").reshape(200, 128)
    from haneul.firmware.inputs import quantize
    assert np.array_equal(quantize(fp, graph.inputs[0]), q)
    for w in range(196):
        x = q[w:w + 5].reshape(1, 640)
        if w % 7 == 0:      # every tensor on a subset, final outputs on all windows
            out = assert_bit_exact(path, x, ref=ref, graph=graph)[0]
        else:
            out = golden.run(graph, x)[0]
        assert np.array_equal(out.reshape(-1), expected[w]), f"window {w}"


def test_chelsea_is_a_cat(tmp_path):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency")
    from PIL import Image
    png = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(png)
    path = model_path("ic01")
    graph = tflite.load(path)
    x = load_input(png, graph.inputs[0])
    assert x.shape == (1, 32, 32, 3)
    out = assert_bit_exact(path, x, graph=graph)[0]
    assert int(np.argmax(out)) == 3          # CIFAR-10 class 3: cat


def _manifest_macs():
    text = (MODELS / "MANIFEST.md").read_text()
    macs = {}
    for name in MODEL_FILES:
        m = re.search(rf"^\| {name} \| \d+ \| .*? \| ([\d,]+) \|$", text, re.M)
        if m:
            macs[name] = int(m.group(1).replace(",", ""))
    return macs


def test_mac_counts_match_manifest():
    macs = _manifest_macs()
    assert set(macs) == set(MODEL_FILES)
    for name, expected in macs.items():
        assert tflite.load(model_path(name)).macs == expected, name
