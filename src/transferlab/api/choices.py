"""What a training run chooses on its validation split: class weighting, the resize, the operating point.

Each is a function of its own, called by :mod:`transferlab.api.training` at one point of the
run, and each returns what it chose so that the caller records it in ``config.json``
``extras`` (``"imbalance"``, ``"resize"``, ``"operating_point"``):

- :func:`resolve_class_weight`: ``class_weight="auto"`` (the default) on imbalanced classes;
- :func:`choose_resize`: ``resize_mode="auto"``;
- :func:`choose_tiles`: ``tiles="auto"`` (``"tiles"``);
- :func:`choose_operating_point`: ``good_class``/``target_recall`` and ``uncertain_below``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from transferlab.data.dataset import ImageDataset
from transferlab.data.decode import ResizeConfig
from transferlab.errors import ConfigError
from transferlab.features import SplitFeatures, extract_splits, resize_for
from transferlab.training.config import TrainConfig
from transferlab.training.imbalance import ImbalanceChoice

logger = logging.getLogger("transferlab")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def check_decision_settings(config: TrainConfig, dataset: ImageDataset) -> None:
    """``good_class`` names a class and the validation split has images to choose on: said before any work.

    Raises:
        ConfigError: naming the classes, or saying to raise ``--val-fraction``.
    """
    from transferlab.training.operating_point import good_index

    if config.good_class is not None:
        good_index(dataset.class_names, config.good_class)
        if not dataset.split("val"):
            raise ConfigError("--good-class chooses its threshold on the validation split, which is empty: "
                              "raise --val-fraction.")


def resolve_class_weight(config: TrainConfig, features: dict[str, SplitFeatures],
                         num_classes: int) -> tuple[TrainConfig, ImbalanceChoice]:
    """The config the head trains with, ``class_weight="auto"`` resolved on validation
    (:func:`transferlab.training.head.choose_class_weight`), and the choice (logged when "auto")."""
    from transferlab.training.head import choose_class_weight

    train, val = features["train"], features["val"]
    choice = choose_class_weight(train.x, train.y, val.x, val.y, num_classes, requested=config.class_weight,
                                 hidden_units=config.hidden_units, dropout=config.dropout, epochs=config.epochs,
                                 batch_size=config.batch_size, learning_rate=config.learning_rate,
                                 label_smoothing=config.label_smoothing, patience=config.patience, seed=config.seed)
    if config.class_weight == "auto":
        logger.info(_sentence(choice.reason))
    return config.replace(class_weight=choice.class_weight or "none"), choice


def build_backbone(config: TrainConfig, tiles: int | None = None):
    """``(backbone, info)`` of ``config``'s backbone settings, with ``tiles`` per side (default: the
    config's; 1 for "auto" until :func:`choose_tiles` has chosen)."""
    from transferlab.backbones import resolve_backbone

    grid = tiles or config.tile_grid or 1
    return resolve_backbone(config.backbone, weights=config.weights, input_size=config.image_size,
                            feature_layer=config.feature_layer, preprocess=config.preprocess, unsafe=config.unsafe,
                            tiles=grid, tile_overlap=config.tile_overlap, tile_pool=config.tile_pool)


def fine_tune_blocker(config: TrainConfig, info) -> str | None:
    """Why strategy auto cannot fine-tune ``info``'s backbone (None: it can, or the strategy never
    fine-tunes); strategy fine-tune raises instead.

    Raises:
        ConfigError: strategy "fine-tune" with a backbone that cannot be fine-tuned.
    """
    from transferlab.backbones import check_fine_tunable

    if config.strategy == "fine-tune":
        check_fine_tunable(info)
    elif config.strategy == "auto":
        try:
            check_fine_tunable(info)
        except ConfigError as exc:  # auto still gives the frozen-feature model
            return str(exc)
    return None


def run_resize(config: TrainConfig, info) -> ResizeConfig:
    """The backbone's own resize with the config's overrides ("auto" modes start from the backbone's own)."""
    return resize_for(info, mode=None if config.resize_mode == "auto" else config.resize_mode,
                      interpolation=config.interpolation, crop_fraction=config.crop_fraction)


def _validation_scores(prep, candidates: dict, show_progress: bool) -> tuple[object, dict]:
    """Each candidate ``(backbone, info, resize)`` gets the run's kind of head (``config.head``) fitted on its
    training features (cached like any others) and is scored on validation: the best by macro-F1, then
    validation loss.

    Returns:
        (the best candidate's key, {key: {"macro_f1", "balanced_accuracy", "val_loss"}}).
    """
    from transferlab._keras import keras
    from transferlab.training.head import build_head, fit_head, predict_head
    from transferlab.training.imbalance import rare_class_scores
    from transferlab.training.probe import fit_logistic_head

    config, num_classes, scores = prep.config, len(prep.dataset.class_names), {}
    for key, (backbone, info, resize) in candidates.items():
        # Train and validation only: the test images are not read while choosing.
        features, _, _ = extract_splits(prep.dataset, backbone, info, resize, cache_dir=config.cache_dir,
                                        engine=config.engine, show_progress=show_progress, splits=("train", "val"))
        train, val = features["train"], features["val"]
        if config.head == "logistic":  # scored with the head the run will train
            head = fit_logistic_head(train.x, train.y, num_classes, c=config.logistic_c,
                                     class_weight=config.class_weight)
        else:
            keras.utils.set_random_seed(config.seed)
            head = build_head(info.feature_dim, num_classes, hidden_units=config.hidden_units, dropout=config.dropout)
            fit_head(head, train.x, train.y, val.x, val.y, epochs=config.epochs, batch_size=config.batch_size,
                     learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                     class_weight=config.class_weight, patience=config.patience, seed=config.seed)
        probs = predict_head(head, val.x)
        f1, balanced = rare_class_scores(val.y, probs.argmax(axis=1), num_classes)
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(val.y)), val.y], 1e-7, 1.0))))
        scores[key] = {"macro_f1": round(f1, 4), "balanced_accuracy": round(balanced, 4), "val_loss": round(loss, 4)}
    best = max(scores, key=lambda k: (scores[k]["macro_f1"], -scores[k]["val_loss"]))
    return best, scores


def _score_line(scores: dict) -> str:
    return ", ".join(f"{k}: macro-F1 {s['macro_f1']:.3f}, loss {s['val_loss']:.3f}" for k, s in scores.items())


_METRIC = "validation macro_f1, then validation loss"


def choose_resize(prep, show_progress: bool) -> tuple[ResizeConfig, dict]:
    """``resize_mode="auto"``: the backbone's own resize, "squash" and "pad" each get a head fitted on
    their features (cached like any others); the best by validation macro-F1, then validation loss.

    Args:
        prep: the :class:`~transferlab.api.training.PreparedRun` (its dataset, backbone, info,
            resize and config are used).

    Returns:
        (the resize to train with, the record for ``extras["resize"]``: chosen mode, metric, scores).
    """
    if prep.warm is not None and prep.warm.resize:
        return prep.resize, {"chosen": prep.resize.mode, "reason": "the starting model's resize"}
    if not prep.dataset.split("val"):
        logger.warning("--resize-mode auto needs a validation split to compare on: keeping %s.", prep.resize.mode)
        return prep.resize, {"chosen": prep.resize.mode, "reason": "no validation split"}
    candidates = {mode: (prep.backbone, prep.info, replace(prep.resize, mode=mode))
                  for mode in dict.fromkeys((prep.resize.mode, "squash", "pad"))}
    best, scores = _validation_scores(prep, candidates, show_progress)
    logger.info("Resize chosen on validation: %s (%s)", best, _score_line(scores))
    return candidates[best][2], {"chosen": best, "metric": _METRIC, "scores": scores}


#: tiles="auto" compares tiling only when the training images' median shorter side is at least this
#: many times the backbone's input (smaller images gain no detail from tiles); 3 x 3 tiles from 3x.
AUTO_TILES_FROM = 2.0
AUTO_TILES_3_FROM = 3.0


def tile_candidates(median_side: float, input_size: int) -> list[int]:
    """Tiles per side that ``tiles="auto"`` compares for images of ``median_side`` px (shorter side)."""
    ratio = median_side / input_size
    return [1] + ([2] if ratio >= AUTO_TILES_FROM else []) + ([3] if ratio >= AUTO_TILES_3_FROM else [])


def choose_tiles(prep, show_progress: bool) -> dict:
    """``tiles="auto"``: no tiling, 2 x 2 and (for images 3x the input) 3 x 3 tiles, each scored by a head
    on validation like :func:`choose_resize`; sets ``prep``'s backbone, info, resize and metadata to the
    choice (and, for strategy auto, why a tiled backbone is not fine-tuned).

    Returns:
        The record kept as ``extras["tiles"]``: chosen tiles per side, reason or metric and scores.
    """
    from transferlab.backbones.trusted import trust_record

    sides = [min(r.width, r.height) for r in prep.dataset.split("train")]
    median = float(np.median(sides)) if sides else 0.0
    size = prep.info.input_size
    options = tile_candidates(median, size)
    if len(options) == 1:
        record = {"chosen": 1, "reason": f"the training images' median shorter side ({median:.0f} px) is under "
                                         f"{AUTO_TILES_FROM:g}x the backbone's input ({size} px)"}
        detail = record["reason"]
    elif not prep.dataset.split("val"):
        record = {"chosen": 1, "reason": "no validation split to compare tiles on"}
        detail = record["reason"]
    else:
        candidates = {1: (prep.backbone, prep.info, prep.resize)}
        for grid in options[1:]:
            backbone, info = build_backbone(prep.config, grid)
            candidates[grid] = (backbone, info, run_resize(prep.config, info))
        best, scores = _validation_scores(prep, candidates, show_progress)
        record = {"chosen": best, "metric": _METRIC, "scores": {str(k): v for k, v in scores.items()},
                  "median_shorter_side": median}
        prep.backbone, prep.info, prep.resize = candidates[best]
        detail = _score_line({f"{k}x{k}": v for k, v in scores.items()})
    chosen = record["chosen"]
    logger.info("Tiles chosen: %s (%s)", f"{chosen}x{chosen}" if chosen > 1 else "none (whole image)", detail)
    prep.metadata.backbone = {**prep.info.to_dict(), **trust_record(prep.info)}
    prep.metadata.resize = prep.resize.to_dict()
    if prep.not_tunable is None:
        prep.not_tunable = fine_tune_blocker(prep.config, prep.info)
    prep.metadata.extras["tiles"] = record
    return record


def choose_operating_point(config: TrainConfig, val: SplitFeatures, class_names: list[str], head, clf,
                           backbone_changed: bool = False):
    """The decision rule of ``good_class``/``target_recall`` and ``uncertain_below``, chosen on the
    validation split's probabilities, and set on ``clf`` (so that its ``predict`` applies it).

    Args:
        val: the validation split's features (frozen backbone: ``head`` scores them; after
            fine-tuning ``clf`` predicts its images instead).
        head: the fitted head (Keras model, features -> probabilities).
        clf: the run's :class:`~transferlab.api.Classifier`.
        backbone_changed: fine-tuning was kept (strategy fine-tune or auto), so the cached
            features no longer are what the model sees.

    Returns:
        (the :class:`~transferlab.training.operating_point.DecisionRule` or None when neither
        setting is given, (validation probabilities (N, C), labels (N,)) or None).
    """
    from transferlab.training.head import predict_head
    from transferlab.training.operating_point import format_figures, select_rule

    if config.good_class is None and config.uncertain_below is None:
        return None, None
    if backbone_changed:  # fine-tuned: the cached features are not what the model sees any more
        probs, errors = clf.predict_files([r.path for r in val.records])
        keep = np.array([i not in errors for i in range(len(val.records))], dtype=bool)
        probs, y = probs[keep], val.y[keep]
    else:
        probs, y = predict_head(head, val.x), val.y
    rule = select_rule(probs, y, class_names, good_class=config.good_class, target_recall=config.target_recall,
                       uncertain_below=config.uncertain_below)
    clf.decision = rule
    logger.info("Decision rule: %s\n%s", rule.describe(), format_figures(rule.validation, "val"))
    return rule, (probs, y)
