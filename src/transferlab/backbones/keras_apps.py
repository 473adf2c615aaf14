"""Keras Applications as headless backbones: constructors, weight files, offline handling.

Every network is built with ``include_top=False, pooling=None`` (and ``include_preprocessing=False``
where the constructor has that argument: MobileNetV3, EfficientNetV2, ConvNeXt), so the output is
the last 4-D feature map and *our* preprocessing layer is the only place pixels are normalised.
EfficientNet B0-B3 cannot drop their built-in ``Rescaling`` + ``Normalization`` layers, so their
mode is ``"none"``.

Preprocessing modes, checked against ``keras/src/applications/*.py`` (Keras 3.15) and tested
numerically in ``tests/test_backbones.py``:

* mobilenet_v2, resnet*_v2, inception_v3, xception: ``preprocess_input(mode="tf")`` -> ``-1-1``.
* resnet50: ``mode="caffe"`` -> ``caffe``.  densenet121: ``mode="torch"`` -> ``torch``.
* mobilenet_v3: the built-in layer is ``Rescaling(1/127.5, offset=-1)`` -> ``-1-1``.
* efficientnet_v2 b0-b3: the built-in layers are ``Rescaling(1/255)`` + ``Normalization`` with the
  ImageNet mean/std ("original V1 preprocessing for Bx variants") -> ``torch`` (not ``-1-1``: that
  branch applies only to the S/M/L variants).
* convnext: the built-in ``PreStem`` normalises with ImageNet mean/std * 255 -> ``torch``.
* efficientnet b0-b3: contained in the network -> ``none``.

ImageNet weights: we never let a constructor download behind our back. The network is built with
``weights=None`` and the Keras no-top weight file is loaded explicitly, after checking the Keras
cache (``$KERAS_HOME/models`` or ``~/.keras/models``); a missing file is fetched with Keras' own
``keras.utils.get_file`` into that cache, unless we are offline, in which case
:class:`WeightsUnavailableError` says exactly which file to fetch and where to put it.
``weights=PATH`` takes the headless weights: Keras' ``*_notop.h5`` file or ``base.save_weights()``.

Layer names: MobileNetV3's last ``Activation`` and ConvNeXt's final ``LayerNorm`` get names from
a global counter (``activation_17``), which change between builds; we rename them
``top_activation`` / ``top_layernorm`` so ``feature_layer`` and saved configs are stable.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from transferlab.errors import ConfigError, MissingFileError, TransferlabError

logger = logging.getLogger(__name__)

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"
WEIGHTS_HOST = "storage.googleapis.com"
OFFLINE_ENV = "TRANSFERLAB_OFFLINE"
_MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)


class WeightsUnavailableError(TransferlabError, RuntimeError):
    """Pretrained weights are neither cached locally nor downloadable (offline)."""


@dataclass(frozen=True)
class KerasAppSpec:
    """Static facts about one Keras application (published numbers, Keras file names)."""

    constructor: str  # attribute of keras.applications
    module: str  # keras.applications submodule (has preprocess_input)
    input_size: int
    preprocess: str
    feature_dim: int
    params: int  # include_top=False, weights=None build (keras 3.15)
    top1: float | None  # keras.io/api/applications table (MobileNetV3: its docstring)
    crop_fraction: float
    weights_file: str  # Keras' include_top=False file name ("{rows}" for mobilenet_v2)
    weights_url_dir: str
    feature_layer: str  # last layer of the headless net (we rename Keras' auto-named ones)
    min_size: int = 32
    include_preprocessing_arg: bool = False
    hash_key: str | None = None  # key into the Keras module's WEIGHTS_HASHES
    notes: str = ""


def _eff_crop(size: int) -> float:
    """EfficientNet (V1) eval: centre crop of size/(size + 32) of the short side."""
    return round(size / (size + 32), 4)


KERAS_APPS: dict[str, KerasAppSpec] = {
    "mobilenet_v2": KerasAppSpec(
        "MobileNetV2", "mobilenet_v2", 224, "-1-1", 1280, 2257984, 71.3, 0.875,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        _GCS + "mobilenet_v2/", "out_relu"),
    "mobilenet_v3_small": KerasAppSpec(
        "MobileNetV3Small", "mobilenet_v3", 224, "-1-1", 576, 939120, 68.1, 0.875,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", _GCS + "mobilenet_v3/",
        "top_activation",
        include_preprocessing_arg=True, hash_key="small_224_1.0_float"),
    "mobilenet_v3_large": KerasAppSpec(
        "MobileNetV3Large", "mobilenet_v3", 224, "-1-1", 960, 2996352, 75.6, 0.875,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", _GCS + "mobilenet_v3/",
        "top_activation",
        include_preprocessing_arg=True, hash_key="large_224_1.0_float"),
    "resnet50": KerasAppSpec(
        "ResNet50", "resnet50", 224, "caffe", 2048, 23587712, 74.9, 0.875,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/",
        "conv5_block3_out", hash_key="resnet50"),
    "resnet50_v2": KerasAppSpec(
        "ResNet50V2", "resnet_v2", 224, "-1-1", 2048, 23564800, 76.0, 0.875,
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/",
        "post_relu", hash_key="resnet50v2"),
    "resnet101_v2": KerasAppSpec(
        "ResNet101V2", "resnet_v2", 224, "-1-1", 2048, 42626560, 77.2, 0.875,
        "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/",
        "post_relu", hash_key="resnet101v2"),
    "inception_v3": KerasAppSpec(
        "InceptionV3", "inception_v3", 299, "-1-1", 2048, 21802784, 77.9, 0.875,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "inception_v3/",
        "mixed10", min_size=75),
    **{
        f"efficientnet_b{i}": KerasAppSpec(
            f"EfficientNetB{i}", "efficientnet", size, "none", dim, params, top1, _eff_crop(size),
            f"efficientnetb{i}_notop.h5", "https://storage.googleapis.com/keras-applications/",
            "top_activation", hash_key=f"b{i}",
            notes="Rescaling+Normalization are inside the network (cannot be removed).")
        for i, size, dim, params, top1 in [
            (0, 224, 1280, 4049571, 77.1), (1, 240, 1280, 6575239, 79.1),
            (2, 260, 1408, 7768569, 80.1), (3, 300, 1536, 10783535, 81.6)]
    },
    **{
        f"efficientnet_v2_b{i}": KerasAppSpec(
            f"EfficientNetV2B{i}", "efficientnet_v2", size, "torch", dim, params, top1, 1.0,
            f"efficientnetv2-b{i}_notop.h5", _GCS + "efficientnet_v2/", "top_activation",
            include_preprocessing_arg=True, hash_key=f"b{i}",
            notes="eval: centre square crop of the short side (crop_padding=0), no margin.")
        for i, size, dim, params, top1 in [
            (0, 224, 1280, 5919312, 78.7), (1, 240, 1280, 6931124, 79.8),
            (2, 260, 1408, 8769374, 80.5), (3, 300, 1536, 12930622, 82.0)]
    },
    "convnext_tiny": KerasAppSpec(
        "ConvNeXtTiny", "convnext", 224, "torch", 768, 27820128, 81.3, 0.875,
        "convnext_tiny_notop.h5", _GCS + "convnext/", "top_layernorm",
        include_preprocessing_arg=True, hash_key="convnext_tiny",
        notes="Keras applies the final LayerNorm per position before our average pooling "
              "(pooling=None), not after it as the original head does."),
    "densenet121": KerasAppSpec(
        "DenseNet121", "densenet", 224, "torch", 1024, 7037504, 75.0, 0.875,
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "densenet/", "relu"),
    "xception": KerasAppSpec(
        "Xception", "xception", 299, "-1-1", 2048, 20861480, 79.0, 0.875,
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "xception/",
        "block14_sepconv2_act", min_size=71),
}


def get_spec(name: str) -> KerasAppSpec:
    """The :class:`KerasAppSpec` for ``name`` (KeyError if not a Keras application)."""
    return KERAS_APPS[name]


# ---- weight files -----------------------------------------------------------------------------

def keras_cache_dir() -> Path:
    """Keras' weight cache, read now (not at import): ``$KERAS_HOME/models``, ``~/.keras/models``.

    Like ``keras.utils.get_file``, uses ``/tmp/.keras`` when ``~`` is not writable.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home).expanduser() / "models"


def _cache_dirs() -> list[Path]:
    """Where a cached file may be: our cache dir, plus Keras' /tmp fallback if that's read-only."""
    preferred = keras_cache_dir()
    dirs = [preferred]
    if preferred.parent.exists() and not os.access(preferred.parent, os.W_OK):
        dirs.append(Path("/tmp/.keras/models"))
    return dirs


def weights_file_name(name: str, input_size: int | None = None) -> str:
    """Keras' file name for the include_top=False ImageNet weights of ``name``."""
    spec = get_spec(name)
    size = input_size or spec.input_size
    rows = size if size in _MOBILENET_V2_ROWS else 224  # as MobileNetV2() chooses
    return spec.weights_file.format(rows=rows)


def weights_url(name: str, input_size: int | None = None) -> str:
    """Download URL of :func:`weights_file_name`."""
    return get_spec(name).weights_url_dir + weights_file_name(name, input_size)


def cached_weights_path(name: str, input_size: int | None = None) -> Path | None:
    """Path of the ImageNet weight file in the Keras cache, or None when not downloaded yet."""
    fname = weights_file_name(name, input_size)
    for folder in _cache_dirs():
        if (folder / fname).is_file():
            return folder / fname
    return None


_probe_cache: dict[str, tuple[float, bool]] = {}


def _offline_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_offline(timeout: float = 3.0) -> bool:
    """True when ``TRANSFERLAB_OFFLINE=1`` or the weights host is unreachable within ``timeout``.

    The probe (DNS + TCP connect to port 443) runs in a daemon thread so a hanging resolver can't
    block us longer than ``timeout``; its answer is remembered for a minute.
    """
    if _offline_env():
        return True
    cached = _probe_cache.get(WEIGHTS_HOST)
    if cached and time.monotonic() - cached[0] < 60:
        return not cached[1]
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((WEIGHTS_HOST, 443), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    _probe_cache[WEIGHTS_HOST] = (time.monotonic(), result["ok"])
    return not result["ok"]


def offline_message(name: str, input_size: int | None = None) -> str:
    """What to do when the ImageNet weights of ``name`` can't be downloaded."""
    fname = weights_file_name(name, input_size)
    folder = keras_cache_dir()
    return (
        f"ImageNet weights for backbone {name!r} are not available offline: {fname} is not in "
        f"the Keras cache and {WEIGHTS_HOST} cannot be reached"
        f"{f' ({OFFLINE_ENV}=1)' if _offline_env() else ''}.\n"
        f"  Fetch it from: {weights_url(name, input_size)}\n"
        f"  and place it in: {folder}/  (i.e. {folder / fname})\n"
        f"  or pass a local weights file with --weights PATH (weights=PATH), "
        f"or --weights none (weights=None) for random initialisation."
    )


def _keras_file_hash(name: str) -> str | None:
    """Keras' own expected hash of the no-top file, when its module exposes one."""
    spec = get_spec(name)
    if spec.hash_key is None:
        return None
    try:
        module_name = "resnet" if spec.module.startswith("resnet") else spec.module
        module = importlib.import_module(f"keras.src.applications.{module_name}")
        return module.WEIGHTS_HASHES[spec.hash_key][1]
    except (ImportError, AttributeError, KeyError, IndexError):
        return None


def resolve_imagenet_weights(name: str, input_size: int | None = None) -> Path:
    """Local path of the ImageNet no-top weights of ``name``: cached, or downloaded by Keras.

    Raises:
        WeightsUnavailableError: not cached and offline (fails within ~3 s).
    """
    cached = cached_weights_path(name, input_size)
    if cached is not None:
        return cached
    if is_offline():
        raise WeightsUnavailableError(offline_message(name, input_size))
    fname = weights_file_name(name, input_size)
    logger.info("Downloading %s into %s", fname, keras_cache_dir())
    try:
        keras_cache_dir().mkdir(parents=True, exist_ok=True)
        path = keras.utils.get_file(
            fname, weights_url(name, input_size), cache_subdir="models",
            cache_dir=str(keras_cache_dir().parent), file_hash=_keras_file_hash(name))
    except Exception as exc:  # network errors come in many types
        raise WeightsUnavailableError(f"{offline_message(name, input_size)}\n  ({exc})") from exc
    return Path(path)


# ---- building ---------------------------------------------------------------------------------

def _check_weights_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"Weights file not found: {p}. Pass an existing .h5 / .weights.h5 "
                                "file, 'imagenet', or None.")
    if not p.name.endswith((".h5", ".hdf5", ".keras")):
        raise ConfigError(f"Unsupported weights file {p.name!r}: expected a Keras .h5 / .weights.h5 "
                         "file (e.g. Keras' *_notop.h5 or one written by model.save_weights()).")
    return p


_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _fold_efficientnet_rescaling(model: keras.Model) -> None:
    """Reproduce Keras' imagenet-only extra ``Rescaling(1/sqrt(std))`` of EfficientNet B0-B7.

    Keras' ImageNet file stores the ImageNet *std* as the Normalization variance and Keras adds
    ``Rescaling(1/sqrt(std))`` only when ``weights == "imagenet"`` (tensorflow#49930), giving
    ``(x - mean) / std``. We build with ``weights=None`` and load the file ourselves, so we fold
    the factor into the variance instead: ``(x - m) / sqrt(s) / sqrt(s) == (x - m) / sqrt(s * s)``.
    Only a variance equal to the std is touched: random-init stats (1) and already folded stats
    (std**2, e.g. from ``base.save_weights()`` of a backbone built here) are left alone.
    """
    norm = next(l for l in model.layers if isinstance(l, keras.layers.Normalization))
    mean, variance, *rest = norm.get_weights()
    if np.allclose(variance, _IMAGENET_STD, rtol=1e-3):
        norm.set_weights([mean, variance * _IMAGENET_STD, *rest])


def build_keras_app(
    name: str,
    *,
    weights: str | os.PathLike | None = "imagenet",
    input_size: int | None = None,
    feature_layer: str | None = None,
) -> tuple[keras.Model, Path | None]:
    """Build the headless application ``name`` as a functional model named ``"base"``.

    Returns ``(base, weights_path)``; ``weights_path`` is None for random init. The output is
    the 4-D feature map of the last layer, or of ``feature_layer`` when given.
    """
    spec = get_spec(name)
    size = int(input_size or spec.input_size)
    if size < spec.min_size:
        raise ConfigError(f"{name} needs input_size >= {spec.min_size}; got {size}.")
    weights_path: Path | None = None
    if isinstance(weights, str) and weights == "imagenet":
        weights_path = resolve_imagenet_weights(name, size)  # before building: fails fast
    elif weights is not None:
        weights_path = _check_weights_file(weights)

    kwargs = {"include_preprocessing": False} if spec.include_preprocessing_arg else {}
    constructor = getattr(keras.applications, spec.constructor)
    net = constructor(include_top=False, weights=None, pooling=None,
                      input_shape=(size, size, 3), **kwargs)
    if weights_path is not None:
        try:
            net.load_weights(str(weights_path))
        except Exception as exc:
            raise ConfigError(
                f"Could not load weights {weights_path} into {name} (include_top=False): {exc}. "
                f"The file must hold the headless {spec.constructor} weights, e.g. Keras' "
                f"{weights_file_name(name, size)} or base.save_weights() of this backbone."
            ) from exc
        if spec.module == "efficientnet":
            _fold_efficientnet_rescaling(net)
    last = net.layers[-1]
    if last.name != spec.feature_layer and spec.feature_layer not in {l.name for l in net.layers}:
        # MobileNetV3's last Activation and ConvNeXt's last LayerNorm get global-counter names
        # ("activation_17"); a stable name lets users and saved configs refer to it.
        last.name = spec.feature_layer
    return cut_at_layer(net, feature_layer, name), weights_path


def cut_at_layer(net: keras.Model, feature_layer: str | None, what: str) -> keras.Model:
    """``net`` renamed ``"base"``, or its sub-model ending at ``feature_layer`` when given."""
    if feature_layer is None or feature_layer == net.layers[-1].name:
        net.name = "base"
        return net
    names = [layer.name for layer in net.layers]
    if feature_layer not in names:
        raise ConfigError(f"{what} has no layer {feature_layer!r}. Available layers: "
                         f"{', '.join(names)}")
    return keras.Model(net.inputs[0], net.get_layer(feature_layer).output, name="base")


def keras_preprocess_input(name: str):
    """Keras' own ``preprocess_input`` for ``name`` (a pass-through for models that include it)."""
    return getattr(keras.applications, get_spec(name).module).preprocess_input
