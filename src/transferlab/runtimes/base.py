"""The one interface every model runner has, and the pixel conversion they share."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    """Runs a model on a batch of images.

    Attributes:
        name: "keras", "onnx", "tflite" or "savedmodel".
        input_size: the square input side in pixels, or None when the model accepts any size.
        num_classes: the width of the output (classes for a classifier, features for a
            backbone), or None when the model does not declare it.
    """

    name: str
    input_size: int | None
    num_classes: int | None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Map images (N, S, S, 3), uint8 or float in 0..255, to float32 outputs (N, C)."""
        ...


def as_dtype(images: np.ndarray, dtype) -> np.ndarray:
    """``images`` in ``dtype``; floats going to an integer input are rounded and clipped to its range."""
    images = np.asarray(images)
    dtype = np.dtype(dtype)
    if images.dtype == dtype:
        return images
    if dtype.kind in "iu" and images.dtype.kind == "f":
        info = np.iinfo(dtype)
        images = np.clip(np.round(images), info.min, info.max)
    return images.astype(dtype)


def static_dim(dim) -> int | None:
    """A positive static dimension as int, None for a dynamic one."""
    return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else None
