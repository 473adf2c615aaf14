"""Likely label errors: out-of-fold probabilities, then the confident-learning rule.

1. **Out-of-fold probabilities.** Stratified k-fold over the cached bottleneck features; a
   linear probe (multinomial logistic regression on standardised features) is fitted on k-1
   folds and predicts the held-out fold, so no image is scored by a model that saw its label.
2. **Confident learning** (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
   Uncertainty in Dataset Labels", JAIR 70, 2021, sections 3.1-3.2), written here from the
   paper (the cleanlab package is AGPL-licensed and is not used):

   * per-class threshold ``t_j`` = mean out-of-fold probability of class ``j`` over the images
     *labelled* ``j`` (the classifier's expected self-confidence for that class);
   * an image labelled ``i`` is *confidently counted* as class ``j`` when ``p_j >= t_j``; if
     several classes pass, the one with the highest ``p_j`` (eq. 1, the confident joint
     ``C[i][j]``);
   * the images off the diagonal of ``C`` (confidently another class than their label) are
     the label issues: the paper's method "CL: C_{y~,y*}" (sec. 3.2).
   * ``C`` calibrated to the label counts and normalised estimates the joint distribution of
     given and true labels ``Q``; ``n * Q[i][j]`` (i != j) is the estimated number of images
     labelled ``i`` that are really ``j``, reported per class pair.

   Issues are ranked by self-confidence, ``1 - p_given``: the lower the out-of-fold probability
   of its own label, the likelier an image is mislabeled (with two classes this is the order of
   the normalised margin the paper prunes by, too).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from transferlab.audit.defaults import DEFAULT_C, DEFAULT_FOLDS
from transferlab.data.sources import DatasetError

logger = logging.getLogger("transferlab")

# DEFAULT_C, the inverse regularisation of the linear probe, was chosen on hymenoptera and
# masonry_cracks with 5 % of the labels flipped (Lite0 features, 3 seeds): C = 0.01..0.1 ranked the
# flipped images alike (precision at k 0.80-0.85); weaker regularisation (C = 1) fits the flipped
# labels and flags more clean images (flagged precision 0.58-0.71 against 0.75-0.88 at 0.05).


@dataclass
class LabelIssues:
    """Out-of-fold probabilities and the confident-learning verdict for every image.

    Attributes:
        probabilities: (N, C) float32 out-of-fold class probabilities.
        given: (N,) int64 given labels.
        suggested: (N,) int64 the confidently counted class, or the argmax where none passes
            its threshold.
        score: (N,) float32 ``1 - p_given`` in [0, 1]; higher is a likelier label error.
        is_issue: (N,) bool, off the diagonal of the confident joint.
        thresholds: (C,) float32 per-class thresholds ``t_j``.
        confident_joint: (C, C) int64 counts ``C[given][true]``.
        noise_matrix: (C, C) float64, ``n * Q``: estimated images per (given, true) pair.
    """

    probabilities: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    is_issue: np.ndarray
    thresholds: np.ndarray
    confident_joint: np.ndarray
    noise_matrix: np.ndarray

    def ranking(self) -> np.ndarray:
        """Indices of the issues, likeliest label error first."""
        rows = np.flatnonzero(self.is_issue)
        return rows[np.argsort(-self.score[rows], kind="stable")]


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                              folds: int = DEFAULT_FOLDS, seed: int = 0, C: float = DEFAULT_C) -> np.ndarray:
    """Class probabilities of every image from a linear probe that did not see it.

    Args:
        features: (N, D) float32 bottleneck features.
        labels: (N,) int class indices in ``[0, num_classes)``.
        num_classes: number of classes (columns of the result; a class with no image gets 0).
        folds: k of the stratified k-fold; lowered to the smallest class's size (at least 2).
        seed: shuffling seed of the folds.
        C: inverse L2 regularisation strength of the logistic regression.

    Returns:
        (N, num_classes) float32 probabilities; rows sum to 1.

    Raises:
        DatasetError: when fewer than two classes, or a class, have fewer than two images.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        raise DatasetError(f"need at least two classes with two or more images each to find label errors "
                         f"(images per class: {counts.tolist()}); add images to the small classes.")
    k = int(max(2, min(folds, present.min())))
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    # One BLAS thread: L-BFGS makes many small matrix products, and two BLAS threads on a busy
    # 2-core machine made a 689-image fit 60x slower (4.8 s against 0.08 s, measured).
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe stopped at max_iter still ranks well
        for fit_rows, held_rows in splitter.split(features, labels):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500))
            probe.fit(features[fit_rows], labels[fit_rows])
            probs[np.ix_(held_rows, probe.classes_)] = probe.predict_proba(features[held_rows])
    return probs


def confident_learning(probabilities: np.ndarray, given: np.ndarray) -> LabelIssues:
    """Apply the confident-learning rule (Northcutt et al., JAIR 2021) to out-of-fold probabilities.

    Args:
        probabilities: (N, C) out-of-fold probabilities.
        given: (N,) int given labels.

    Returns:
        :class:`LabelIssues` for every image.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    n, num_classes = probs.shape
    counts = np.bincount(given, minlength=num_classes)
    # t_j: mean self-confidence of class j over the images labelled j (sec. 3.1); a class with no
    # image gets an unreachable threshold so nothing is counted as it.
    sums = np.zeros(num_classes)
    np.add.at(sums, given, probs[np.arange(n), given])
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)

    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    counted = above.any(axis=1)
    suggested = np.where(counted, confident, probs.argmax(axis=1))
    joint = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(joint, (given[counted], confident[counted]), 1)
    is_issue = counted & (confident != given)

    # Calibrate rows to the given-label counts (eq. 2), normalise to Q, scale to image counts.
    row_sums = joint.sum(axis=1, keepdims=True)
    calibrated = np.where(row_sums > 0, joint / np.maximum(row_sums, 1) * counts[:, None], 0.0)
    total = calibrated.sum()
    noise = calibrated / total * n if total > 0 else calibrated

    score = 1.0 - probs[np.arange(n), given]
    return LabelIssues(probabilities=probs.astype(np.float32), given=given, suggested=suggested.astype(np.int64),
                       score=score.astype(np.float32), is_issue=is_issue, thresholds=thresholds.astype(np.float32),
                       confident_joint=joint, noise_matrix=noise)


def find_label_issues(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = DEFAULT_FOLDS,
                      seed: int = 0, C: float = DEFAULT_C) -> LabelIssues:
    """:func:`out_of_fold_probabilities` then :func:`confident_learning`."""
    probs = out_of_fold_probabilities(features, labels, num_classes, folds=folds, seed=seed, C=C)
    return confident_learning(probs, labels)
