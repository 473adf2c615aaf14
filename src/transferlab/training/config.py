"""Every setting of a training run, validated, serialisable to ``config.json`` and back.

A run directory's ``config.json`` holds a :class:`TrainConfig`; ``TrainConfig.from_dict`` of it
plus the same data reproduces the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transferlab.data.decode import INTERPOLATIONS, RESIZE_MODES
from transferlab.data.pipeline import AugmentConfig
from transferlab.data.split import check_fractions

STRATEGIES = ("feature-extraction", "fine-tune")
HEADS = ("keras", "logistic")
SCHEDULES = ("constant", "cosine", "plateau")


@dataclass
class TrainConfig:
    """Settings of ``transferlab.train``; defaults give a good model on most image folders.

    Backbone:
        backbone: registry name (``transferlab backbones``) or path to a saved model / SavedModel.
        weights: "imagenet", a local weights file, or None for random initialisation.
        feature_layer: layer to take features from (personal models); default: automatic.
        preprocess: declare a personal model's preprocessing (none, 0-1, -1-1, caffe, torch, lite).
        unsafe: allow loading Lambda layers from a personal model (runs code from the file).
    Input:
        image_size: the backbone's native size unless given.
        resize_mode, interpolation, crop_fraction: default (None) to the backbone's own
            evaluation resize, e.g. centre crop 0.875, bicubic for EfficientNet-Lite: measured
            on hymenoptera it ties with "squash", on masonry_cracks it beats it by 3-5 points.
            Use "squash" or "pad" when objects of interest touch the image border.
    Data:
        val_fraction, test_fraction, seed: the stable hash split (ignored for pre-split folders).
    Head (phase 2, on cached features):
        epochs, batch_size, learning_rate, hidden_units (0: linear head), dropout (0.5) and
        label_smoothing (0.1): the best of a small grid on hymenoptera and masonry_cracks,
        class_weight (None or "balanced"), patience (early stopping on val loss,
        best weights restored), weight_decay (decoupled, AdamW; default 0).
        head: "keras" (the above) or "logistic": a linear probe (standardised features,
        L2 logistic regression with inverse strength logistic_c, L-BFGS) fitted on the
        training split, saved as the same Dense softmax layer. ``transferlab compare`` and
        ``--tune`` choose these; ``--backbone auto`` picks the backbone too.
    Fine-tuning (strategy "fine-tune"):
        unfreeze ("all" or a number of weighted layers from the top), unfreeze_from (layer name),
        fine_tune_epochs, fine_tune_lr, schedule, warmup_epochs, augment.
    Run:
        engine: feature extraction engine ("auto", "onnx", "keras"); tensorboard: write logs to
        RUN/tensorboard; max_gallery: mistakes shown in report.html; cache_dir; runs_dir; name.
    """

    backbone: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    feature_layer: str | None = None
    preprocess: str | None = None
    unsafe: bool = False
    image_size: int | None = None
    resize_mode: str | None = None
    interpolation: str | None = None
    crop_fraction: float | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_units: int = 0
    dropout: float = 0.5
    label_smoothing: float = 0.1
    class_weight: str | None = None
    patience: int = 10
    weight_decay: float = 0.0
    head: str = "keras"
    logistic_c: float = 0.01
    strategy: str = "feature-extraction"
    unfreeze: str = "20"
    unfreeze_from: str | None = None
    fine_tune_epochs: int = 5
    fine_tune_lr: float | None = None
    fine_tune_batch_size: int = 16
    schedule: str = "cosine"
    warmup_epochs: int = 1
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    engine: str = "auto"
    tensorboard: bool = False
    max_gallery: int = 48
    cache_dir: str | None = None
    runs_dir: str = "runs"
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad setting and its valid values."""
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")

        for name in ("epochs", "batch_size", "fine_tune_batch_size"):
            positive_int(name)
        for name in ("hidden_units", "patience", "fine_tune_epochs", "warmup_epochs", "max_gallery"):
            positive_int(name, 0)
        if self.image_size is not None:
            positive_int("image_size", 16)
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if self.fine_tune_lr is not None and not self.fine_tune_lr > 0:
            raise ValueError(f"fine_tune_lr must be > 0, got {self.fine_tune_lr!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}.")
        if not (isinstance(self.logistic_c, (int, float)) and self.logistic_c > 0):
            raise ValueError(f"logistic_c must be > 0, got {self.logistic_c!r}.")
        if self.head == "logistic" and self.strategy == "fine-tune":
            raise ValueError("head 'logistic' trains on cached features only; use strategy 'feature-extraction' "
                             "(or the Keras head to fine-tune).")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}.")
        if self.resize_mode is not None and self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}.")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}.")
        if self.crop_fraction is not None and not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        if self.engine not in ("auto", "onnx", "keras"):
            raise ValueError(f"engine must be 'auto', 'onnx' or 'keras', got {self.engine!r}.")
        if not (str(self.unfreeze) == "all" or str(self.unfreeze).isdigit()):
            raise ValueError(f"unfreeze must be 'all' or a number of layers, got {self.unfreeze!r}.")
        check_fractions(self.val_fraction, self.test_fraction)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown training setting(s): {', '.join(unknown)}. Valid: {', '.join(sorted(known))}.")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **changes})
