"""The one-line hint ``train`` prints when its cached features already show a dirty dataset.

Cheap by design (a small fraction of the head's training time, measured in bench_audit.py):
nothing is decoded and no extra model is fitted.

* Label errors: the confident-learning rule (:func:`~transferlab.audit.labels.confident_learning`)
  on the trained head's probabilities for the validation and test images, which the head was not
  fitted on (out of sample, as the rule needs).
* Leakage: validation/test images whose bytes equal a training image's, or whose features are
  near-identical to one (cosine >= 0.98; distinct photos of one subject reached 0.95 in Lite0
  features, resized copies 0.75-0.99, so this counts only the closest copies: the audit finds more).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from transferlab.audit.labels import confident_learning
from transferlab.features.dataset import SplitFeatures

NEAR_IDENTICAL = 0.98
# "Many": at least this many images and this share of the validation + test images.
MIN_IMAGES, MIN_LABEL_SHARE, MIN_LEAK_SHARE = 3, 0.03, 0.01


def dataset_warnings(splits: Mapping[str, SplitFeatures], held_out_probabilities: np.ndarray | None) -> dict:
    """Counts of likely label errors and of train/held-out copies among the validation and test images.

    Args:
        splits: ``{"train"|"val"|"test": SplitFeatures}`` of the run.
        held_out_probabilities: (N_val + N_test, C) the head's probabilities for the validation
            then the test images, or None (no label check, e.g. after fine-tuning).

    Returns:
        ``{"held_out": n, "label_issues": k or None, "copies_of_train": m}``.
    """
    from sklearn.neighbors import NearestNeighbors

    from transferlab.audit.neighbours import normalise

    train = splits["train"]
    held = [r for s in ("val", "test") for r in splits[s].records]
    x_held = np.concatenate([splits["val"].x, splits["test"].x])
    y_held = np.concatenate([splits["val"].y, splits["test"].y])
    out = {"held_out": len(held), "label_issues": None, "copies_of_train": 0}
    if not held or not len(train):
        return out
    train_hashes = {r.sha256 for r in train.records}
    exact = np.array([r.sha256 in train_hashes for r in held])
    distance, _ = NearestNeighbors(n_neighbors=1).fit(normalise(train.x)).kneighbors(normalise(x_held))
    near = 1.0 - distance[:, 0] ** 2 / 2.0 >= NEAR_IDENTICAL
    out["copies_of_train"] = int((exact | near).sum())
    if held_out_probabilities is not None:
        out["label_issues"] = int(confident_learning(held_out_probabilities, y_held).is_issue.sum())
    return out


def training_hint(counts: dict, data: str) -> str | None:
    """The hint line for :func:`dataset_warnings`' counts, or None when the data looks clean enough."""
    n = counts["held_out"]
    parts = []
    labels = counts.get("label_issues")
    if labels is not None and labels >= max(MIN_IMAGES, MIN_LABEL_SHARE * n):
        parts.append(f"{labels} of the {n} validation/test images look mislabeled")
    copies = counts["copies_of_train"]
    if copies >= max(MIN_IMAGES, MIN_LEAK_SHARE * n):
        parts.append(f"{copies} of them are copies of training images (test accuracy looks better than it is)")
    if not parts:
        return None
    return f"Hint: {'; '.join(parts)}. `transferlab audit {data}` lists them and can write a cleaned CSV."
