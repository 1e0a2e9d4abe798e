import os
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("HANEUL_MODELS", ROOT / "models" / "mlperf_tiny"))

MODEL_FILES = {
    "ic01": "ic01_resnet8_cifar10_int8.tflite",
    "ic02": "ic02_resnet_large_cifar10_int8.tflite",
    "kws01": "kws01_dscnn_speechcommands_int8.tflite",
    "vww01": "vww01_mobilenetv1_025_96x96_int8.tflite",
    "ad01": "ad01_fc_autoencoder_toycar_int8.tflite",
    "sww01": "sww01_streaming_wakeword_int8.tflite",
}


def model_path(name):
    path = MODELS / MODEL_FILES[name]
    if not path.exists():
        pytest.fail(f"MLPerf Tiny model {path} not found (set HANEUL_MODELS to the folder holding the models)")
    return path


@pytest.fixture
def rng(request):
    # A fixed seed per test: reproducible, and different tests see different data. CRC-32 of the test's id, not
    # `hash()`, which Python salts per process (PYTHONHASHSEED): with it every run drew different data.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
