"""Imbalanced classes: when to act, and by which metric class weighting is chosen on validation.

Rule (``class_weight="auto"``, the default): the training split is *imbalanced* when its largest
class has at least :data:`IMBALANCE_RATIO` (3) times the images of its smallest. Then the head
is fitted twice on the cached features, without weights and with scikit-learn's "balanced"
weights, and the variant with the higher validation macro-F1 is kept (ties: the higher balanced
accuracy, then "balanced"). Accuracy is not used: on 90 % good parts, calling everything good
scores 0.9. Below the ratio nothing is weighted. Each fit takes well under a second on cached
features, and both are seeded, so the choice is the same on every run with the same seed. The
fits are :func:`transferlab.training.head.choose_class_weight`'s; the rule and the record are here.

This module does not import TensorFlow at import time (the console summary uses its rule).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

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
