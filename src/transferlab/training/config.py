"""Every setting of a training run: declared once, validated, serialisable to ``config.json``.

Each field of :class:`TrainConfig` carries its constraint (type, choices, range) and its help
text as field metadata (:func:`setting`). Validation, the ``transferlab train`` options and
their ``--help`` are all derived from those declarations, so a default or a valid range is
written in one place only. A config is frozen once validated: change it with
:meth:`TrainConfig.replace`, which validates again.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from transferlab.data.decode import INTERPOLATIONS, RESIZE_MODES
from transferlab.data.pipeline import AugmentConfig
from transferlab.data.split import check_fractions
from transferlab.errors import ConfigError
from transferlab.features.extract import ENGINES

Strategy = Literal["feature-extraction", "fine-tune"]
Head = Literal["keras", "logistic"]
HEADS: tuple[str, ...] = get_args(Head)
Schedule = Literal["constant", "cosine", "plateau"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
SCHEDULES: tuple[str, ...] = get_args(Schedule)

# Settings that only take effect with strategy "fine-tune".
FINE_TUNE_SETTINGS = ("unfreeze", "unfreeze_from", "fine_tune_epochs", "fine_tune_lr", "fine_tune_batch_size",
                      "schedule", "warmup_epochs", "augment")


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
            minimum: float | None = None, maximum: float | None = None, exclusive_max: bool = False,
            flag: str | None = None, cli: bool = True, default_factory: Any = dataclasses.MISSING) -> Any:
    """A :class:`TrainConfig` field with its constraint and help, declared once.

    Args:
        default: the default value (or ``default_factory``).
        help: one line for ``--help`` and the docs.
        choices: the allowed values (None is always allowed when the field's type admits it).
        minimum, maximum: inclusive numeric bounds (``exclusive_max`` makes the upper one strict).
        flag: the CLI option (default: ``--`` + the field name with dashes).
        cli: False for settings that have no plain option (e.g. ``augment``).
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                "exclusive_max": exclusive_max, "flag": flag, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``transferlab.train``; defaults give a good model on most image folders.

    Resize defaults (None) follow the backbone's own evaluation resize, e.g. centre crop 0.875,
    bicubic for EfficientNet-Lite: measured on hymenoptera it ties with "squash", on
    masonry_cracks it beats it by 3-5 points. Use "squash" or "pad" when objects of interest
    touch the image border. The head's dropout (0.5) and label smoothing (0.1) are the best of a
    small grid on hymenoptera and masonry_cracks. Every field's constraint and help is listed by
    ``transferlab train --help``.
    """

    # ---- backbone
    backbone: str = setting("efficientnet_lite0",
                            "registry name (see `transferlab backbones`) or path to your own saved model")
    weights: str | None = setting("imagenet", "'imagenet' (default), a local weights file, or 'none' for random init")
    feature_layer: str | None = setting(None, "layer to take features from (personal models; default: automatic)")
    preprocess: str | None = setting(None, "declare a personal model's preprocessing: none, 0-1, -1-1, caffe, "
                                           "torch, lite")
    unsafe: bool = setting(False, "allow Lambda layers in a personal model (runs code from the file)", cli=False)
    # ---- input
    image_size: int | None = setting(None, "input size in pixels (default: the backbone's)", minimum=16)
    resize_mode: str | None = setting(None, "how images become squares (default: the backbone's own, e.g. "
                                            "center-crop 0.875)", choices=RESIZE_MODES)
    interpolation: str | None = setting(None, "resampling filter (default: the backbone's)",
                                        choices=tuple(INTERPOLATIONS))
    crop_fraction: float | None = setting(None, "centre-crop fraction for --resize-mode center-crop",
                                          minimum=0.0, maximum=1.0)
    # ---- data
    val_fraction: float = setting(0.1, "validation fraction of the hash split", minimum=0.0, maximum=1.0,
                                  exclusive_max=True)
    test_fraction: float = setting(0.1, "test fraction of the hash split", minimum=0.0, maximum=1.0,
                                   exclusive_max=True)
    seed: int = setting(42, "seed of the split, initialisation and shuffling", minimum=0)
    # ---- head, on cached features
    epochs: int = setting(100, "maximum head epochs; early stopping usually ends sooner", minimum=1)
    batch_size: int = setting(32, "head batch size", minimum=1)
    learning_rate: float = setting(1e-3, "head learning rate, Adam", minimum=0.0)
    hidden_units: int = setting(0, "size of a hidden dense layer in the head (0: none)", minimum=0)
    dropout: float = setting(0.5, "dropout in the head", minimum=0.0, maximum=1.0, exclusive_max=True)
    label_smoothing: float = setting(0.1, "label smoothing", minimum=0.0, maximum=1.0, exclusive_max=True)
    class_weight: str | None = setting(None, "'balanced' to weight classes by inverse frequency",
                                       choices=("balanced",))
    patience: int = setting(10, "early stopping patience in epochs on validation loss", minimum=0)
    weight_decay: float = setting(0.0, "decoupled weight decay of the head's Adam (AdamW)", minimum=0.0)
    head: str = setting("keras", "the head: 'keras' (dropout, optional hidden layer, softmax; Adam) or 'logistic' "
                                 "(a linear probe: standardised features, L2 logistic regression, L-BFGS)",
                        choices=HEADS)
    logistic_c: float = setting(0.01, "logistic head: inverse L2 strength C (compare and --tune choose it)",
                                minimum=0.0)
    # ---- fine-tuning (strategy "fine-tune")
    strategy: str = setting("feature-extraction", "train the head on frozen features, or fine-tune the backbone's "
                                                  "top after it", choices=STRATEGIES)
    unfreeze: str = setting("20", "fine-tune: 'all' or the number of top backbone layers with weights")
    unfreeze_from: str | None = setting(None, "fine-tune: unfreeze this layer and all above it")
    fine_tune_epochs: int = setting(5, "fine-tune epochs", minimum=0)
    fine_tune_lr: float | None = setting(None, "fine-tune learning rate (default: head rate / 10)", minimum=0.0)
    fine_tune_batch_size: int = setting(16, "fine-tune batch size", minimum=1)
    schedule: str = setting("cosine", "fine-tune learning-rate schedule (cosine has a warm-up)", choices=SCHEDULES)
    warmup_epochs: int = setting(1, "fine-tune warm-up epochs of the cosine schedule", minimum=0)
    augment: AugmentConfig | None = setting(help="fine-tune augmentation (None: off)", cli=False,
                                            default_factory=AugmentConfig)
    # ---- run
    engine: str = setting("auto", "feature extraction engine", choices=ENGINES)
    tensorboard: bool = setting(False, "write TensorBoard logs to RUN/tensorboard", cli=False)
    max_gallery: int = setting(48, "misclassified images shown in report.html", minimum=0)
    cache_dir: str | None = setting(None, "feature cache folder (default: user cache dir or $TRANSFERLAB_CACHE_DIR)")
    runs_dir: str = setting("runs", "where run directories go")
    name: str | None = setting(None, "run name (default: <data folder>-<timestamp>)")

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        for f in dataclasses.fields(self):  # JSON has no int/float distinction: 1 means 1.0
            if field_type(f) is float and isinstance(getattr(self, f.name), int) \
                    and not isinstance(getattr(self, f.name), bool):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        if isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool):
            object.__setattr__(self, "unfreeze", str(self.unfreeze))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~transferlab.errors.ConfigError` naming the bad setting and its valid values."""
        for f in dataclasses.fields(self):
            check_setting(f, getattr(self, f.name))
        if not (self.unfreeze == "all" or self.unfreeze.isdigit()):
            raise ConfigError(f"unfreeze must be 'all' or a number of layers, got {self.unfreeze!r}.")
        if self.learning_rate <= 0 or (self.fine_tune_lr is not None and self.fine_tune_lr <= 0):
            raise ConfigError(f"learning rates must be > 0, got learning_rate={self.learning_rate!r}, "
                              f"fine_tune_lr={self.fine_tune_lr!r}.")
        if self.crop_fraction is not None and self.crop_fraction <= 0:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")
        if self.logistic_c <= 0:
            raise ConfigError(f"logistic_c must be > 0, got {self.logistic_c!r}.")
        if self.head == "logistic" and self.strategy == "fine-tune":
            raise ConfigError("--head logistic is fitted on cached features only: use --strategy feature-extraction, "
                              "or --head keras to fine-tune.")
        check_fractions(self.val_fraction, self.test_fraction)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown training setting(s): {', '.join(unknown)}. "
                              f"Valid: {', '.join(sorted(known))}.")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with ``changes`` applied."""
        return self.from_dict({**self.to_dict(), **changes})

    def ignored_settings(self) -> list[str]:
        """Settings that differ from their defaults but have no effect with this strategy."""
        if self.strategy == "fine-tune":
            return []
        defaults = TrainConfig()
        return [name for name in FINE_TUNE_SETTINGS if getattr(self, name) != getattr(defaults, name)]


def field_type(f: dataclasses.Field) -> type:
    """The non-None type of a field (``int | None`` -> int)."""
    hints = typing.get_type_hints(TrainConfig)
    args = [a for a in get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
    return args[0]


def check_setting(f: dataclasses.Field, value: Any) -> None:
    """Check one value against its field's declared type, choices and range."""
    meta, kind = f.metadata, field_type(f)
    if value is None:
        if f.default is None or f.default_factory is not dataclasses.MISSING:
            return
        raise ConfigError(f"{f.name} must not be None.")
    if kind in (int, float):
        numeric = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise ConfigError(f"{f.name} must be {'an integer' if kind is int else 'a number'}, got {value!r}.")
        low, high = meta.get("minimum"), meta.get("maximum")
        if low is not None and value < low:
            raise ConfigError(f"{f.name} must be >= {low}, got {value!r}.")
        if high is not None and (value >= high if meta.get("exclusive_max") else value > high):
            raise ConfigError(f"{f.name} must be {'<' if meta.get('exclusive_max') else '<='} {high}, got {value!r}.")
    elif kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{f.name} must be True or False, got {value!r}.")
    elif kind is str and not isinstance(value, str):
        raise ConfigError(f"{f.name} must be a string, got {value!r}.")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}.")


def cli_settings() -> list[dataclasses.Field]:
    """The fields that ``transferlab train`` offers as ``--options``, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)]
