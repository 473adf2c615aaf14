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

from transferlab.data.augment import AUGMENT_PRESETS, AugmentConfig
from transferlab.data.decode import INTERPOLATIONS, RESIZE_MODES
from transferlab.data.split import check_fractions
from transferlab.data.tiles import DEFAULT_OVERLAP, DEFAULT_POOL, MAX_GRID, MAX_OVERLAP, TILE_POOLS, check_tiling
from transferlab.errors import ConfigError
from transferlab.features.extract import ENGINES
from transferlab.training.duration import parse_duration
from transferlab.training.imbalance import CLASS_WEIGHT_CHOICES

Strategy = Literal["feature-extraction", "fine-tune", "auto"]
Head = Literal["keras", "logistic"]
HEADS: tuple[str, ...] = get_args(Head)
Schedule = Literal["constant", "cosine", "plateau"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
SCHEDULES: tuple[str, ...] = get_args(Schedule)

DEFAULT_TARGET_RECALL = 0.95  # --good-class without --target-recall

# Settings that only take effect with strategy "fine-tune" (or "auto", which may fine-tune).
FINE_TUNE_SETTINGS = ("unfreeze", "unfreeze_from", "fine_tune_epochs", "fine_tune_lr", "fine_tune_batch_size",
                      "fine_tune_patience", "fine_tune_views", "weight_decay", "layer_decay", "clip_norm",
                      "schedule", "warmup_epochs", "augment", "time_budget")


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
            minimum: float | None = None, maximum: float | None = None, exclusive_max: bool = False,
            flag: str | None = None, cli: bool = True, default_factory: Any = dataclasses.MISSING,
            parse: Any = None) -> Any:
    """A :class:`TrainConfig` field with its constraint and help, declared once.

    Args:
        default: the default value (or ``default_factory``).
        help: one line for ``--help`` and the docs.
        choices: the allowed values (None is always allowed when the field's type admits it).
        minimum, maximum: inclusive numeric bounds (``exclusive_max`` makes the upper one strict).
        flag: the CLI option (default: ``--`` + the field name with dashes).
        cli: False for settings that have no plain option.
        parse: how the CLI turns the option's text into the value (default: the field's type).
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                "exclusive_max": exclusive_max, "flag": flag, "cli": cli, "parse": parse}
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
                                            "center-crop 0.875); 'auto': the backbone's own, squash or pad, "
                                            "whichever heads score best on validation", choices=RESIZE_MODES + ("auto",))
    interpolation: str | None = setting(None, "resampling filter (default: the backbone's)",
                                        choices=tuple(INTERPOLATIONS))
    crop_fraction: float | None = setting(None, "centre-crop fraction for --resize-mode center-crop",
                                          minimum=0.0, maximum=1.0)
    tiles: str = setting("1", f"features of an N x N grid of overlapping tiles of the backbone's input, pooled (small "
                              f"defects on large images; 1: off, up to {MAX_GRID}); 'auto': 1, 2 or 3 by heads on "
                              "validation when the training images are at least twice the backbone's input")
    tile_overlap: float = setting(DEFAULT_OVERLAP, "overlap of neighbouring tiles, as a fraction of a tile",
                                  minimum=0.0, maximum=MAX_OVERLAP)
    tile_pool: str = setting(DEFAULT_POOL, "how tile features are pooled: max (the tile showing a defect decides), mean, "
                                           "or max+mean (both, twice the features)", choices=TILE_POOLS)
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
    class_weight: str | None = setting("auto", "'auto': when the largest training class has >= 3x the images of the "
                                               "smallest, weight classes or not, whichever gives the higher "
                                               "validation macro-F1; 'balanced': inverse frequency; 'none'",
                                       choices=CLASS_WEIGHT_CHOICES)
    good_class: str | None = setting(None, "the defect-free class: with --target-recall, a decision threshold on "
                                           "P(good) is chosen on validation and saved with the model")
    target_recall: float | None = setting(None, "share of not-good (defective) images that must be caught at the "
                                                "operating point (default 0.95 when --good-class is given)",
                                          minimum=0.0, maximum=1.0)
    uncertain_below: float | None = setting(None, "predictions whose top probability is below this come back "
                                                  "as 'uncertain', for a person to check", minimum=0.0, maximum=1.0)
    patience: int = setting(10, "early stopping patience in epochs on validation loss", minimum=0)
    head_weight_decay: float = setting(0.0, "decoupled weight decay of the head's Adam (AdamW)", minimum=0.0)
    head: str = setting("keras", "the head: 'keras' (dropout, optional hidden layer, softmax; Adam) or 'logistic' "
                                 "(a linear probe: standardised features, L2 logistic regression, L-BFGS)",
                        choices=HEADS)
    logistic_c: float = setting(0.01, "logistic head: inverse L2 strength C (compare and --tune choose it)",
                                minimum=0.0)
    # ---- fine-tuning (strategy "fine-tune"; "auto" fine-tunes when it pays, within time_budget)
    strategy: str = setting("feature-extraction", "train the head on frozen features, fine-tune the backbone's "
                                                  "top after it, or auto: the head first, then fine-tuning kept "
                                                  "only if it improves validation, fitted to --time-budget",
                            choices=STRATEGIES)
    time_budget: float | None = setting(None, "auto/fine-tune: seconds for the whole run, e.g. 600, 10m, 1h30m; "
                                              "fine-tuning epochs are fitted to it", minimum=0.0,
                                        parse=parse_duration)
    unfreeze: str = setting("auto", "fine-tune: 'auto' (every layer, 8 epochs at lr 3e-4, when they fit in "
                                    "--time-budget, or in 20 minutes without one: timed on one batch; else the "
                                    "top 16 layers on cached views), 'all', or the number of top backbone layers "
                                    "with weights (16: EfficientNet-Lite0's last 5 blocks and head conv)")
    unfreeze_from: str | None = setting(None, "fine-tune: unfreeze this layer and all above it")
    fine_tune_epochs: int = setting(10, "most fine-tune epochs; early stopping often ends sooner", minimum=0)
    fine_tune_lr: float | None = setting(None, "fine-tune learning rate (default: head rate / 2)", minimum=0.0)
    fine_tune_batch_size: int = setting(16, "fine-tune batch size", minimum=1)
    fine_tune_patience: int = setting(3, "fine-tune early stopping patience on validation loss (0: off)", minimum=0)
    fine_tune_views: int = setting(4, "fine-tune only the top on this many cached augmented views of the frozen "
                                      "bottom (0: stream images; all layers always stream)", minimum=0)
    weight_decay: float = setting(0.05, "fine-tune AdamW weight decay", minimum=0.0)
    layer_decay: float = setting(0.85, "fine-tune rate factor per block downwards (1: every layer at the full rate)",
                                 minimum=0.0, maximum=1.0)
    clip_norm: float = setting(1.0, "fine-tune global gradient-norm clipping (0: none)", minimum=0.0)
    schedule: str = setting("cosine", "fine-tune learning-rate schedule (cosine has a warm-up)", choices=SCHEDULES)
    warmup_epochs: int = setting(1, "fine-tune warm-up epochs of the cosine schedule", minimum=0)
    augment: AugmentConfig | str | None = setting(
        "standard", "fine-tune augmentation preset: " + ", ".join(AUGMENT_PRESETS) + " (micrograph and aerial add "
        "vertical flips and 90-degree turns; Python: also an AugmentConfig)", parse=str)
    # ---- run
    engine: str = setting("auto", "feature extraction engine", choices=ENGINES)
    ray: str | None = setting(None, "extract features on a Ray cluster: 'auto', 'local' or its address "
                                    "(`--ray` alone: auto)", cli=False)
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
        if self.class_weight is None:  # runs before "auto" existed stored None for no weighting
            object.__setattr__(self, "class_weight", "none")
        if self.good_class is not None and self.target_recall is None:
            object.__setattr__(self, "target_recall", DEFAULT_TARGET_RECALL)
        for name in ("unfreeze", "tiles"):  # a number as Python callers write it: 16, 2
            if isinstance(getattr(self, name), int) and not isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, str(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~transferlab.errors.ConfigError` naming the bad setting and its valid values."""
        for f in dataclasses.fields(self):
            check_setting(f, getattr(self, f.name))
        if not (self.unfreeze in ("auto", "all") or self.unfreeze.isdigit()):
            raise ConfigError(f"unfreeze must be 'auto', 'all' or a number of layers, got {self.unfreeze!r}.")
        self._validate_tiles()
        if self.learning_rate <= 0 or (self.fine_tune_lr is not None and self.fine_tune_lr <= 0):
            raise ConfigError(f"learning rates must be > 0, got learning_rate={self.learning_rate!r}, "
                              f"fine_tune_lr={self.fine_tune_lr!r}.")
        if self.layer_decay <= 0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay!r}.")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time_budget must be more than 0 seconds, got {self.time_budget!r}.")
        if not (self.augment is None or isinstance(self.augment, AugmentConfig) or self.augment in AUGMENT_PRESETS):
            raise ConfigError(f"augment must be one of {', '.join(AUGMENT_PRESETS)} (or None), got {self.augment!r}.")
        if self.crop_fraction is not None and self.crop_fraction <= 0:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")
        if self.target_recall is not None and self.good_class is None:
            raise ConfigError("target_recall needs good_class: name the defect-free class (--good-class NAME), "
                              "whose probability the threshold is on.")
        if self.target_recall is not None and self.target_recall <= 0:
            raise ConfigError(f"target_recall must be in (0, 1], got {self.target_recall!r}.")
        if self.logistic_c <= 0:
            raise ConfigError(f"logistic_c must be > 0, got {self.logistic_c!r}.")
        if self.head == "logistic" and self.strategy == "fine-tune":
            raise ConfigError("--head logistic is fitted on cached features only: use --strategy feature-extraction, "
                              "or --head keras to fine-tune.")
        check_fractions(self.val_fraction, self.test_fraction)
        if self.ray and self.engine == "keras":
            raise ConfigError("ray runs the backbone under ONNX Runtime on the workers; engine 'keras' runs only in "
                              "this process: drop one of them.")

    def _validate_tiles(self) -> None:
        if self.tiles != "auto" and not self.tiles.isdigit():
            raise ConfigError(f"tiles must be a whole number from 1 (no tiling) to {MAX_GRID}, or 'auto', "
                              f"got {self.tiles!r}.")
        check_tiling(1 if self.tile_grid is None else self.tile_grid, self.tile_overlap, self.tile_pool)
        if self.tiles != "1" and self.strategy == "fine-tune":
            raise ConfigError(f"--tiles {self.tiles} is for frozen features: fine-tuning streams single images of the "
                              "backbone's own input. Use --strategy feature-extraction (or auto, which then keeps "
                              "the frozen-feature model) with tiles, or --tiles 1 to fine-tune.")

    @property
    def tile_grid(self) -> int | None:
        """The tiles per side asked for (1: no tiling), or None for "auto" (chosen on validation)."""
        return None if self.tiles == "auto" else int(self.tiles)

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
        if self.strategy in ("fine-tune", "auto"):
            return []
        defaults = TrainConfig()
        return [name for name in FINE_TUNE_SETTINGS if getattr(self, name) != getattr(defaults, name)]

    def applied_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the settings this strategy does not use (what a report lists)."""
        unused = () if self.strategy in ("fine-tune", "auto") else FINE_TUNE_SETTINGS
        return {k: v for k, v in self.to_dict().items() if k not in unused}


def field_type(f: dataclasses.Field) -> type:
    """The non-None type of a field (``int | None`` -> int)."""
    hints = typing.get_type_hints(TrainConfig)
    args = [a for a in get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
    return args[0]


def check_setting(f: dataclasses.Field, value: Any) -> None:
    """Check one value against its field's declared type, choices and range."""
    meta, kind = f.metadata, field_type(f)
    if value is None:
        if type(None) in get_args(typing.get_type_hints(TrainConfig)[f.name]):  # its type admits None
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
