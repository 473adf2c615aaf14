"""What a training run chooses on its validation split: class weighting, the resize, the operating point.

Each is a function of its own, called by :mod:`transferlab.api.training` at one point of the
run, and each returns what it chose so that the caller records it in ``config.json``
``extras`` (``"imbalance"``, ``"resize"``, ``"operating_point"``):

- :func:`resolve_class_weight`: ``class_weight="auto"`` (the default) on imbalanced classes;
- :func:`choose_resize`: ``resize_mode="auto"``;
- :func:`choose_operating_point`: ``good_class``/``target_recall`` and ``uncertain_below``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from transferlab.data.dataset import ImageDataset
from transferlab.data.decode import ResizeConfig
from transferlab.errors import ConfigError
from transferlab.features import SplitFeatures, extract_splits
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


def choose_resize(prep, show_progress: bool) -> tuple[ResizeConfig, dict]:
    """``resize_mode="auto"``: the backbone's own resize, "squash" and "pad" each get a head fitted on
    their features (cached like any others); the best by validation macro-F1, then validation loss.

    Args:
        prep: the :class:`~transferlab.api.training.PreparedRun` (its dataset, backbone, info,
            resize and config are used).

    Returns:
        (the resize to train with, the record for ``extras["resize"]``: chosen mode, metric, scores).
    """
    from transferlab._keras import keras
    from transferlab.training.head import build_head, fit_head, predict_head
    from transferlab.training.imbalance import rare_class_scores

    config = prep.config
    if prep.warm is not None and prep.warm.resize:
        return prep.resize, {"chosen": prep.resize.mode, "reason": "the starting model's resize"}
    if not prep.dataset.split("val"):
        logger.warning("--resize-mode auto needs a validation split to compare on: keeping %s.", prep.resize.mode)
        return prep.resize, {"chosen": prep.resize.mode, "reason": "no validation split"}
    num_classes = len(prep.dataset.class_names)
    candidates = {mode: replace(prep.resize, mode=mode) for mode in dict.fromkeys((prep.resize.mode, "squash", "pad"))}
    scores = {}
    for mode, resize in candidates.items():
        features, _, _ = extract_splits(prep.dataset, prep.backbone, prep.info, resize, cache_dir=config.cache_dir,
                                        engine=config.engine, show_progress=show_progress)
        train, val = features["train"], features["val"]
        keras.utils.set_random_seed(config.seed)
        head = build_head(prep.info.feature_dim, num_classes, hidden_units=config.hidden_units, dropout=config.dropout)
        fit_head(head, train.x, train.y, val.x, val.y, epochs=config.epochs, batch_size=config.batch_size,
                 learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                 class_weight=config.class_weight, patience=config.patience, seed=config.seed)
        probs = predict_head(head, val.x)
        f1, balanced = rare_class_scores(val.y, probs.argmax(axis=1), num_classes)
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(val.y)), val.y], 1e-7, 1.0))))
        scores[mode] = {"macro_f1": round(f1, 4), "balanced_accuracy": round(balanced, 4), "val_loss": round(loss, 4)}
    best = max(scores, key=lambda m: (scores[m]["macro_f1"], -scores[m]["val_loss"]))
    logger.info("Resize chosen on validation: %s (%s)", best, ", ".join(
        f"{m}: macro-F1 {s['macro_f1']:.3f}, loss {s['val_loss']:.3f}" for m, s in scores.items()))
    return candidates[best], {"chosen": best, "metric": "validation macro_f1, then validation loss", "scores": scores}


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
