"""Model inputs from files: ``.npy`` arrays, raw int8 ``.bin`` files, and images (PNG/JPEG).

An image is resized to the model input and quantised with the input tensor's scale and zero point. The real-valued
range the network was trained on is read off the input quantisation: the representable range
``scale * ([-128, 127] - zero_point)`` is matched to the nearest of the usual pixel normalisations ([0, 255], [0, 1],
[-1, 1]); ic01 (scale 1, zero point -128) gets raw pixels, vww01 (scale 1/255, zero point -128) pixels / 255.
"""

from pathlib import Path

import numpy as np

from haneul.errors import InputError

__all__ = ["load_input", "random_input", "quantize", "image_to_input", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

_NORMALISATIONS = {            # name: (real value of pixel 0, real value of pixel 255)
    "0..255": (0.0, 255.0),
    "0..1": (0.0, 1.0),
    "-1..1": (-1.0, 1.0),
}


def quantize(real, tensor):
    """Quantise real values for ``tensor``: ``clamp(round_half_away(real / scale) + zero_point, -128, 127)``."""
    q = np.asarray(real, dtype=np.float64) / tensor.scale
    q = np.where(q >= 0, np.floor(q + 0.5), -np.floor(-q + 0.5)) + tensor.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def _normalisation(tensor):
    lo = tensor.scale * (-128 - tensor.zero_point)
    hi = tensor.scale * (127 - tensor.zero_point)
    return min(_NORMALISATIONS.items(), key=lambda kv: abs(kv[1][0] - lo) + abs(kv[1][1] - hi))


def _check_image_tensor(tensor):
    if len(tensor.shape) != 4 or tensor.shape[0] != 1 or tensor.shape[3] not in (1, 3):
        raise InputError(f"input tensor '{tensor.name}' has shape {list(tensor.shape)}: an image input needs "
                         "[1, H, W, 1] or [1, H, W, 3]")


def image_to_input(image, tensor):
    """A PIL image -> int8 input for an NHWC image tensor (resized with bilinear filtering)."""
    from PIL import Image
    _check_image_tensor(tensor)
    _, h, w, c = tensor.shape
    image = image.convert("RGB" if c == 3 else "L").resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float64).reshape(1, h, w, c)
    _, (lo, hi) = _normalisation(tensor)
    return quantize(lo + pixels * (hi - lo) / 255.0, tensor)


def load_input(path, tensor):
    """Load an input for ``tensor`` from ``path`` (``.npy``, raw int8 ``.bin``, or an image file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"input file {str(path)!r} is not a valid .npy array: {e}") from None
        if x.dtype != np.int8:
            raise InputError(f"input file {str(path)!r} holds {x.dtype} values; the model input '{tensor.name}' "
                             f"is int8 (quantise with scale {tensor.scale:g} and zero point {tensor.zero_point})")
        if x.size != tensor.size:
            raise InputError(f"input file {str(path)!r} has shape {list(x.shape)} ({x.size} values); the model "
                             f"input '{tensor.name}' has shape {list(tensor.shape)} ({tensor.size} values)")
        return x.reshape(tensor.shape)
    if suffix == ".bin":
        raw = np.fromfile(path, dtype=np.int8)
        if raw.size != tensor.size:
            raise InputError(f"input file {str(path)!r} has {raw.size} bytes; the model input '{tensor.name}' "
                             f"needs {tensor.size} int8 values")
        return raw.reshape(tensor.shape)
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError
        _check_image_tensor(tensor)
        try:
            with Image.open(path) as image:
                return image_to_input(image, tensor)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"input file {str(path)!r} is not a readable image: {e}") from None
    raise InputError(f"input file {str(path)!r}: unknown format {suffix or '(no suffix)'!r}; use .npy (int8), "
                     ".bin (raw int8) or an image (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")


def random_input(tensor, seed=0):
    """A deterministic uniform random int8 input for ``tensor``."""
    return np.random.default_rng(seed).integers(-128, 128, size=tensor.shape, dtype=np.int8)
