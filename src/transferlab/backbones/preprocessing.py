"""Pixel preprocessing as Keras layers, so it lives inside every model we save.

Every backbone in transferlab takes raw RGB pixels in 0..255. The normalisation a network was
trained with is a named *mode*; :func:`preprocessing_layer` turns a mode into built-in Keras
layers only (no custom classes), so a saved model loads with plain ``keras.models.load_model``
in safe mode and converts cleanly to SavedModel, ONNX and TFLite.
"""

from __future__ import annotations

import keras
import numpy as np

from transferlab.errors import ConfigError

# mode -> (human description). The numbers live in _affine_params.
PREPROCESS_MODES: dict[str, str] = {
    "none": "pixels passed through unchanged (0..255)",
    "0-1": "pixel / 255",
    "-1-1": "pixel / 127.5 - 1",
    "lite": "(pixel - 127) / 128 (TF EfficientNet-Lite)",
    "caffe": "RGB->BGR, minus ImageNet BGR mean (ResNet50/VGG style)",
    "torch": "(pixel / 255 - ImageNet mean) / ImageNet std, per channel",
}

_IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float64)
_IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float64)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float64)


def check_preprocess_mode(mode: str) -> str:
    """Return ``mode`` if known, else raise a ValueError listing the valid modes."""
    if mode not in PREPROCESS_MODES:
        valid = ", ".join(PREPROCESS_MODES)
        raise ConfigError(f"Unknown preprocessing mode {mode!r}. Choose one of: {valid}.")
    return mode


def preprocess_numpy(images: np.ndarray, mode: str) -> np.ndarray:
    """Apply ``mode`` to a float/uint8 array of shape (..., 3) in 0..255; returns float32.

    The reference implementation the Keras layers are tested against.
    """
    check_preprocess_mode(mode)
    x = np.asarray(images, dtype=np.float64)
    if mode == "none":
        out = x
    elif mode == "0-1":
        out = x / 255.0
    elif mode == "-1-1":
        out = x / 127.5 - 1.0
    elif mode == "lite":
        out = (x - 127.0) / 128.0
    elif mode == "caffe":
        out = x[..., ::-1] - _CAFFE_MEAN_BGR
    else:  # torch
        out = (x / 255.0 - _IMAGENET_MEAN_RGB) / _IMAGENET_STD_RGB
    return out.astype(np.float32)


def preprocessing_layer(mode: str, name: str | None = None) -> keras.layers.Layer | None:
    """Build the Keras layer for ``mode`` (built-in layers only); ``None`` for mode ``"none"``.

    Input and output: float tensors of shape (N, H, W, 3).
    """
    check_preprocess_mode(mode)
    name = name or f"preprocess_{mode.replace('-', '_').replace('1_1', 'pm1')}"
    if mode == "none":
        return None
    if mode == "0-1":
        return keras.layers.Rescaling(1.0 / 255.0, name=name)
    if mode == "-1-1":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if mode == "lite":
        return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=name)
    # Per-channel modes: a frozen 1x1 convolution expresses both the channel permutation
    # (caffe's RGB->BGR) and the per-channel affine map exactly, with a built-in layer that
    # every export format supports. (Keras' Normalization layer became extra ONNX graph inputs.)
    if mode == "caffe":
        kernel = np.eye(3)[:, ::-1]  # out[c] = in[2 - c]
        bias = -_CAFFE_MEAN_BGR
    else:  # torch
        kernel = np.diag(1.0 / (255.0 * _IMAGENET_STD_RGB))
        bias = -_IMAGENET_MEAN_RGB / _IMAGENET_STD_RGB
    layer = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel.reshape(1, 1, 3, 3).astype(np.float32), bias.astype(np.float32)])
    return layer
