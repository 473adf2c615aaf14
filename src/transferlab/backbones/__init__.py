"""Pretrained backbones: the registry, Keras applications, EfficientNet-Lite and your own models.

    >>> from transferlab.backbones import list_backbones, load_backbone
    >>> model = load_backbone("efficientnet_lite0")  # raw RGB 0..255 -> (N, 1280)
"""

from transferlab._tf import import_tf

import_tf()  # before any module here imports Keras: TensorFlow's start-up chatter is filtered once

from transferlab.backbones.keras_apps import WeightsUnavailableError  # noqa: E402
from transferlab.backbones.personal import UnsafeModelError  # noqa: E402
from transferlab.backbones.preprocessing import (  # noqa: E402
    PREPROCESS_MODES,
    preprocess_numpy,
    preprocessing_layer,
)
from transferlab.backbones.registry import (  # noqa: E402
    BackboneInfo,
    check_backbone_name,
    check_fine_tunable,
    get_backbone_info,
    list_backbones,
    load_backbone,
    resolve_backbone,
    weights_fingerprint,
)

__all__ = [
    "BackboneInfo",
    "PREPROCESS_MODES",
    "UnsafeModelError",
    "WeightsUnavailableError",
    "check_backbone_name",
    "check_fine_tunable",
    "get_backbone_info",
    "list_backbones",
    "load_backbone",
    "preprocess_numpy",
    "preprocessing_layer",
    "resolve_backbone",
    "weights_fingerprint",
]
