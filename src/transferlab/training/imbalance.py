"""Imbalanced classes: when to act, and class weighting chosen on validation by a metric that sees rare classes.

Rule (``class_weight="auto"``, the default): the training split is *imbalanced* when its largest
class has at least :data:`IMBALANCE_RATIO` (3) times the images of its smallest. Then the head
is fitted twice on the cached features, without weights and with scikit-learn's "balanced"
weights, and the variant with the higher validation macro-F1 is kept (ties: the higher balanced
accuracy, then "balanced"). Accuracy is not used: on 90 % good parts, calling everything good
scores 0.9. Below the ratio nothing is weighted. Each fit takes well under a second on cached
features, and both are seeded, so the choice is the same on every run with the same seed.

This module does not import TensorFlow at import time (the console summary uses its rule).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger("transferlab")

IMBALANCE_RATIO = 3.0
CLASS_WEIGHT_CHOICES = ("auto", "balanced", "none")  # None (older runs) means "none"


def imbalance_ratio(counts: Sequence[int]) -> float:
    """Largest / smallest class count, over classes with at least one image (1.0 for < 2 such classes)."""
    present = [int(c) for c in counts if c > 0]
    return max(present) / min(present) if len(present) >= 2 else 1.0


def is_imbalanced(counts: Sequence[int], ratio: float = IMBALANCE_RATIO) -> bool:
    """True when the largest class has at least ``ratio`` times the images of the smallest one."""
    return imbalance_ratio(counts) >= ratio


def rare_class_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(macro-F1, balanced accuracy) over all ``num_classes`` labels: every class counts the same."""
    from sklearn.metrics import f1_score, recall_score

    labels = list(range(num_classes))
    present = sorted(set(np.asarray(y_true).tolist()))  # balanced accuracy: mean recall of present classes
    return (float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)))


@dataclass(frozen=True)
class ImbalanceChoice:
    """What ``class_weight="auto"`` decided, as recorded in ``config.json`` ``extras["imbalance"]``.

    Attributes:
        requested: the setting ("auto", "balanced" or None).
        class_weight: what the head was trained with ("balanced" or None).
        ratio: largest / smallest training class count.
        imbalanced: ``ratio >= IMBALANCE_RATIO``.
        metric: the validation metric that chose ("macro_f1"), or None when nothing was compared.
        scores: variant ("none", "balanced") -> {"macro_f1", "balanced_accuracy"} on validation.
        reason: one sentence for the console and the report.
    """

    requested: str | None
    class_weight: str | None
    ratio: float
    imbalanced: bool
    metric: str | None = None
    scores: dict | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def choose_class_weight(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
                        y_val: np.ndarray | None, num_classes: int, *, requested: str | None = "auto",
                        hidden_units: int = 0, dropout: float = 0.5, epochs: int = 100, batch_size: int = 32,
                        learning_rate: float = 1e-3, label_smoothing: float = 0.1, patience: int = 10,
                        seed: int = 42, make_head: Callable[[], object] | None = None) -> ImbalanceChoice:
    """Resolve ``class_weight="auto"`` (other values are returned as they are).

    Args:
        x_train, x_val: (N, D) float32 cached features; y_train, y_val: (N,) int class indices.
        num_classes: C, the head's outputs.
        requested: "auto", "balanced" or None.
        hidden_units ... seed: the head's settings (TrainConfig's), so each candidate is the
            head that training would fit; both start from the same seeded initial weights.
        make_head: builds a fresh candidate head (default: ``build_head`` with these settings,
            after ``keras.utils.set_random_seed(seed)``).

    Returns:
        The :class:`ImbalanceChoice`. Without validation images "auto" weights an imbalanced
        training split ("balanced"): nothing to compare on, and the rare classes are the point.
    """
    counts = np.bincount(np.asarray(y_train, np.int64), minlength=num_classes)
    ratio = round(imbalance_ratio(counts), 3)
    imbalanced = ratio >= IMBALANCE_RATIO
    if requested != "auto":
        weight = "balanced" if requested == "balanced" else None
        return ImbalanceChoice(requested, weight, ratio, imbalanced, reason=f"class weighting '{weight or 'none'}' "
                               "as set")
    if not imbalanced:
        return ImbalanceChoice(requested, None, ratio, False, reason=f"classes are balanced enough (largest/smallest "
                               f"training class {ratio:.1f}:1 < {IMBALANCE_RATIO:g}:1): no class weighting")
    if x_val is None or len(x_val) == 0:
        return ImbalanceChoice(requested, "balanced", ratio, True, reason=f"classes are imbalanced ({ratio:.1f}:1) "
                               "and there is no validation split to compare on: 'balanced' class weights")
    from transferlab._keras import keras
    from transferlab.training.head import build_head, fit_head, predict_head

    scores = {}
    for variant in (None, "balanced"):
        keras.utils.set_random_seed(seed)  # the same initial weights for both candidates
        head = make_head() if make_head else build_head(x_train.shape[1], num_classes, hidden_units=hidden_units,
                                                        dropout=dropout)
        fit_head(head, x_train, y_train, x_val, y_val, epochs=epochs, batch_size=batch_size,
                 learning_rate=learning_rate, label_smoothing=label_smoothing, class_weight=variant,
                 patience=patience, seed=seed)
        f1, bal = rare_class_scores(y_val, predict_head(head, x_val).argmax(axis=1), num_classes)
        scores[variant or "none"] = {"macro_f1": round(f1, 4), "balanced_accuracy": round(bal, 4)}
    key = {v: (s["macro_f1"], s["balanced_accuracy"], v == "balanced") for v, s in scores.items()}
    best = max(key, key=key.get)
    chosen = "balanced" if best == "balanced" else None
    other = "none" if best == "balanced" else "balanced"
    reason = (f"classes are imbalanced (largest/smallest training class {ratio:.1f}:1): class weighting "
              f"'{best}' chosen on validation macro-F1 {scores[best]['macro_f1']:.3f} vs "
              f"{scores[other]['macro_f1']:.3f} with '{other}'")
    return ImbalanceChoice(requested, chosen, ratio, True, "macro_f1", scores, reason)
