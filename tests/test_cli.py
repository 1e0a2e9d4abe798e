"""The ``haneul`` command line, run as a subprocess like a user would."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import model_path
from tests.firmware.test_tflite import _conv_builder


def haneul(*args):
    return subprocess.run([sys.executable, "-m", "haneul.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_inspect_ic01():
    r = haneul("inspect", model_path("ic01"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum("CONV_2D" in l for l in lines) == 9
    assert "stride=2x2 pad=SAME act=RELU quant=per-channel(32) MACs=1,179,648" in r.stdout
    assert lines[-1] == "total MACs: 12,501,632"


def test_run_photo_with_report(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image
    png = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(png)
    report, out = tmp_path / "r.json", tmp_path / "out.npy"
    r = haneul("run", model_path("ic01"), "--backend", "golden", "--input", png, "--output", out,
               "--report-json", report)
    assert r.returncode == 0, r.stderr
    assert "top class: 3" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["backend"] == "golden" and rep["top_class"] == 3 and rep["output_shape"] == [1, 10]
    assert rep["macs"] == 12501632
    assert np.load(out).shape == (1, 10)


def test_run_random_input_says_so():
    r = haneul("run", model_path("kws01"))
    assert r.returncode == 0, r.stderr
    assert "deterministic random" in r.stdout


def test_run_backends_agree(tmp_path):
    x = np.random.default_rng(3).integers(-128, 128, (1, 49, 10, 1), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for backend in ("golden", "reference"):
        r = haneul("run", model_path("kws01"), "--backend", backend, "--input", tmp_path / "x.npy",
                   "--output", tmp_path / f"{backend}.npy")
        assert r.returncode == 0, r.stderr
        outs.append(np.load(tmp_path / f"{backend}.npy"))
    assert np.array_equal(*outs)


def _bad(tmp_path):
    cases = {}
    (tmp_path / "float.tflite").write_bytes(_conv_builder(np.float32, np.float32, quantise_acts=False))
    cases["float model"] = (["inspect", tmp_path / "float.tflite"], "is float32")
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 100)
    cases["malformed"] = (["run", tmp_path / "junk.tflite"], "not a TFLite flatbuffer")
    np.save(tmp_path / "float.npy", np.zeros((1, 49, 10, 1), np.float32))
    cases["float input"] = (["run", model_path("kws01"), "--input", tmp_path / "float.npy"],
                            "holds float32 values; the model input 'input_1' is int8")
    np.save(tmp_path / "shape.npy", np.zeros((1, 50, 10), np.int8))
    cases["wrong shape"] = (["run", model_path("kws01"), "--input", tmp_path / "shape.npy"],
                            "has shape [1, 50, 10] (500 values); the model input 'input_1' has shape [1, 49, 10, 1]")
    (tmp_path / "notimage.png").write_bytes(b"not a png")
    cases["bad image"] = (["run", model_path("ic01"), "--input", tmp_path / "notimage.png"], "not a readable image")
    cases["missing model"] = (["inspect", tmp_path / "nope.tflite"], "cannot read model file")
    cases["image for audio model"] = (["run", model_path("ad01"), "--input", tmp_path / "notimage.png"],
                                      "an image input needs")
    return cases


def test_bad_inputs_exit_2_without_traceback(tmp_path):
    for name, (args, message) in _bad(tmp_path).items():
        r = haneul(*args)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)
        assert r.stderr.startswith("haneul: error: ") and message in r.stderr, (name, r.stderr)
