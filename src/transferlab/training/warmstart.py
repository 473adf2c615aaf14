"""Start training from a saved model (``--from``): new images arrived, or a new class set.

* A transferlab model (``runs/old/model.keras``: image -> "backbone_*" -> "head"): its backbone,
  fine-tuned or not, is kept as is. With the same classes, training continues from its head.
  With other classes, the classifier layer is replaced (a hidden layer of the same size is
  kept).
* Any other model Keras can load in safe mode: used as a personal-model backbone (cut before
  its classification head, see :mod:`transferlab.backbones.personal`) with a new head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transferlab._keras import keras
from transferlab.backbones import BackboneInfo, resolve_backbone
from transferlab.backbones.personal import load_keras_model
from transferlab.backbones.tiling import grid_of, is_tiled
from transferlab.errors import MissingFileError
from transferlab.rundir import RunDir, read_json

logger = logging.getLogger("transferlab")


@dataclass
class WarmStart:
    backbone: keras.Model
    info: BackboneInfo
    head: keras.Model | None  # reusable head (same classes), else None
    hidden_weights: list | None  # weights of the old hidden layer, to seed a new head
    resize: dict | None  # the old run's resize settings, when known
    note: str


def _submodel(model: keras.Model, predicate) -> keras.Model | None:
    return next((layer for layer in model.layers if isinstance(layer, keras.Model) and predicate(layer.name)), None)


def _old_run_metadata(path: Path) -> tuple[list[str] | None, dict | None]:
    run = RunDir(path.parent)
    names = run.read_labels() if run.labels.exists() else None
    return names, read_json(run.config).get("resize")


def warm_start(path: str | Path, class_names: list[str], *, hidden_units: int = 0,
               unsafe: bool = False) -> WarmStart:
    """Prepare backbone and (maybe) head from a saved model for training on ``class_names``."""
    path = Path(path).expanduser().resolve()
    if path.is_dir() and RunDir(path).model.exists():
        path = RunDir(path).model
    if not path.exists():
        raise MissingFileError(f"--from {path}: no such model. Pass a run directory or a .keras/.h5 file.")
    model = load_keras_model(path, unsafe=unsafe)
    backbone = _submodel(model, lambda n: n.startswith("backbone"))
    old_head = _submodel(model, lambda n: n == "head")
    if backbone is None or old_head is None:
        backbone, info = resolve_backbone(str(path), unsafe=unsafe)
        return WarmStart(backbone, info, None, None, None,
                         f"--from {path.name}: a Keras model used as backbone (features from layer "
                         f"{info.feature_layer!r}), new head")
    old_names, resize = _old_run_metadata(path)
    size = int(backbone.input_shape[1])
    info = BackboneInfo(
        name=f"from:{path}", family="personal", input_size=size, preprocess="none",
        resize_mode=(resize or {}).get("mode", "squash"), crop_fraction=(resize or {}).get("crop_fraction", 1.0),
        interpolation=(resize or {}).get("interpolation", "bilinear"), feature_layer=backbone.layers[-1].name,
        feature_dim=int(backbone.output_shape[-1]), params=int(backbone.count_params()), imagenet_top1=None,
        weights_available=True, weights_source=str(path), notes="backbone of a transferlab model (--from)",
        # A tiled model's backbone stays tiled (and so feature-extraction only).
        tiling=grid_of(backbone).to_dict() if is_tiled(backbone) else None)
    backbone.trainable = False
    if old_names == list(class_names):
        return WarmStart(backbone, info, old_head, None, resize,
                         f"--from {path.name}: same {len(class_names)} classes, continuing from its head")
    hidden = None
    try:
        layer = old_head.get_layer("hidden")
        if hidden_units and layer.units == hidden_units:
            hidden = layer.get_weights()
    except ValueError:
        pass
    what = "hidden layer kept, " if hidden else ""
    return WarmStart(backbone, info, None, hidden, resize,
                     f"--from {path.name}: classes changed ({old_names or 'unknown'} -> {class_names}); "
                     f"backbone kept, {what}new classifier")
