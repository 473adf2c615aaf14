"""Images given as pixels (NumPy arrays, PIL images) -> the uint8 batch a model takes.

The input contract of :meth:`transferlab.inference.Predictor.predict_proba` for pixels, in one
place: which shapes are images, how values are read (uint8, 0..1 or 0..255 floats), what is
refused, and the same RGB conversion and resize as for files (:mod:`transferlab.data.decode`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

# _to_rgb: the same conversion of any Pillow mode to RGB as for files (one rule for alpha and grayscale).
from transferlab.data.decode import ResizeConfig, _to_rgb, resize_image
from transferlab.errors import ConfigError

__all__ = ["images_to_batch", "is_image_input"]


def is_image_input(images) -> bool:
    """True when ``images`` are pixels (an array, a PIL image, or a list of them), False for paths.

    Raises:
        ConfigError: a list that mixes paths with arrays/PIL images, or holds something else.
    """
    if isinstance(images, (np.ndarray, Image.Image)):
        return True
    if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, (list, tuple)):
        return False
    pixels = [isinstance(x, (np.ndarray, Image.Image)) for x in images]
    paths = [isinstance(x, (str, bytes, os.PathLike)) for x in images]
    if all(pixels):
        return bool(images)
    if all(paths):
        return False
    if any(pixels) and any(paths):
        raise ConfigError("A list of inputs must hold only paths or only images (NumPy arrays / PIL images), "
                          "not both: predict the two kinds in separate calls.")
    other = next(x for x, a, b in zip(images, pixels, paths) if not (a or b))
    raise ConfigError(f"Cannot predict on a {type(other).__name__} ({str(other)[:40]!r}): pass image paths, "
                      "NumPy arrays (H, W, 3) / (N, H, W, 3) or PIL images.")


def _split_array(arr: np.ndarray) -> list[np.ndarray]:
    """One array -> its images: (H, W) and (H, W, 1|3|4) are one image, (N, H, W) and
    (N, H, W, 1|3|4) a batch. A 3-D array whose last axis is 1, 3 or 4 is one image."""
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4)):
        return [arr]
    if arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (1, 3, 4)):
        return list(arr)
    raise ConfigError(f"Expected images of shape (H, W, 3), (N, H, W, 3), (H, W) or (N, H, W) (grayscale), "
                      f"or with 4 channels (RGBA), got an array of shape {arr.shape}.")


def _to_uint8(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pixel values -> uint8 by the input contract of :meth:`Predictor.predict_proba`.

    Float arrays are judged together: all values in [0, 1] means the 0..1 convention (x 255),
    otherwise 0..255. Negative values or values above 255 are refused: they are normalised
    inputs (``(x - mean) / std``, ``x / 127.5 - 1``) that the model would silently misread.
    """
    floats = [a for a in arrays if a.dtype.kind == "f" and a.size]
    unit = False
    if floats:
        if not all(np.isfinite(a).all() for a in floats):
            raise ConfigError("The image arrays hold NaN or infinite values: pass uint8 pixels (0..255).")
        lo, hi = min(float(a.min()) for a in floats), max(float(a.max()) for a in floats)
        if lo < 0 or hi > 255:
            raise ConfigError(f"Float image values must lie in 0..1 or 0..255, got {lo:g}..{hi:g}: pass uint8 "
                              "images (0..255) or floats in 0..1 / 0..255, without normalisation "
                              "(the model applies its own preprocessing).")
        unit = hi <= 1.0
    out = []
    for a in arrays:
        if a.dtype == np.uint8:
            out.append(a)
        elif a.dtype.kind == "f":
            out.append(np.clip(np.round(a * 255.0 if unit else a), 0, 255).astype(np.uint8))
        elif a.dtype.kind in "iu":
            if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
                raise ConfigError(f"Integer image values must lie in 0..255, got {int(a.min())}..{int(a.max())} "
                                  f"({a.dtype}): pass uint8 pixels (scale 16-bit images down first).")
            out.append(a.astype(np.uint8))
        else:
            raise ConfigError(f"Image arrays must hold numbers (uint8 0..255, or floats in 0..1 or 0..255), "
                              f"got dtype {a.dtype}.")
    return out


def images_to_batch(images, resize: ResizeConfig) -> np.ndarray:
    """Arrays and PIL images (see :meth:`Predictor.predict_proba`) -> uint8 (N, S, S, 3), resized like files.

    Grayscale is expanded to RGB and alpha composited over white, as for files
    (:mod:`transferlab.data.decode`); images of any size, each resized on its own.
    """
    size = resize.size
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (size, size, 3):
        return images  # already the model's input: no copy
    items = [images] if isinstance(images, (np.ndarray, Image.Image)) else list(images)
    arrays: list[np.ndarray] = []
    pil: dict[int, Image.Image] = {}
    for item in items:
        if isinstance(item, Image.Image):
            # As for a file: EXIF orientation applied, any mode converted to RGB.
            pil[len(arrays)] = _to_rgb(ImageOps.exif_transpose(item) or item)
            arrays.append(np.zeros((0,), np.uint8))  # placeholder, keeps the order
        else:
            arrays.extend(_split_array(np.asarray(item)))
    pixels = _to_uint8([a for i, a in enumerate(arrays) if i not in pil])
    converted = iter(pixels)
    batch = []
    for i in range(len(arrays)):
        if i in pil:
            img = pil[i]
        else:
            a = next(converted)
            if a.ndim == 3 and a.shape[-1] == 3 and a.shape[:2] == (size, size):
                batch.append(a)
                continue
            img = _to_rgb(Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a))
        batch.append(resize_image(img, (size, size), mode=resize.mode, interpolation=resize.interpolation,
                                  crop_fraction=resize.crop_fraction))
    return np.stack(batch) if batch else np.zeros((0, size, size, 3), np.uint8)
