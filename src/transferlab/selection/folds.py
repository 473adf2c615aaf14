"""Stratified k-fold splits of the selection data (train + validation images, never test)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from transferlab.selection.errors import SelectionError

logger = logging.getLogger("transferlab")


@dataclass(frozen=True)
class Folds:
    """``k`` stratified folds of ``n`` labelled rows.

    Attributes:
        train: k arrays of row indices (int64) each fold trains on.
        val: k arrays of row indices each fold is scored on; together a partition of range(n).
        labels: (n,) int64 class indices of the rows.
        num_classes: C; classes absent from the rows still count (their probability column stays).
        seed: the shuffling seed.
    """

    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]
    labels: np.ndarray
    num_classes: int
    seed: int

    @property
    def k(self) -> int:
        return len(self.val)

    def padded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The folds as rectangular arrays for batched training.

        Returns:
            (train_idx (k, T) int32, train_len (k,) int32, val_idx (k, V) int32, val_mask (k, V) float32);
            rows shorter than the longest fold are padded with index 0 (masked out).
        """
        t = max(len(a) for a in self.train)
        v = max(len(b) for b in self.val)
        train_idx = np.zeros((self.k, t), np.int32)
        val_idx = np.zeros((self.k, v), np.int32)
        val_mask = np.zeros((self.k, v), np.float32)
        for i, (a, b) in enumerate(zip(self.train, self.val)):
            train_idx[i, :len(a)] = a
            val_idx[i, :len(b)] = b
            val_mask[i, :len(b)] = 1.0
        return train_idx, np.array([len(a) for a in self.train], np.int32), val_idx, val_mask


def make_folds(labels: np.ndarray, num_classes: int, k: int = 5, seed: int = 42) -> Folds:
    """Stratified, shuffled k-fold split (scikit-learn's ``StratifiedKFold``), reproducible from ``seed``.

    Args:
        labels: (n,) int class indices of the selection rows.
        num_classes: number of classes C.
        k: folds wanted (default 5); lowered, with a warning, to the size of the smallest class
            when a class has fewer than ``k`` images, so every fold sees every class.
        seed: shuffling seed.

    Raises:
        SelectionError: fewer than 2 images in some present class, or ``k < 2``.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, np.int64)
    if k < 2:
        raise SelectionError(f"--folds must be at least 2, got {k}.")
    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        raise SelectionError("Model selection needs at least 2 classes with images in the train and validation "
                             "splits.")
    smallest = int(present.min())
    if smallest < 2:
        raise SelectionError(f"A class has only {smallest} image outside the test split; cross-validation needs "
                             "at least 2 per class. Add images to that class (or lower --test-fraction).")
    if smallest < k:
        logger.warning("The smallest class has %d images: using %d folds instead of %d.", smallest, smallest, k)
        k = smallest
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pairs = list(splitter.split(np.zeros(len(labels)), labels))
    return Folds(tuple(np.sort(a) for a, _ in pairs), tuple(np.sort(b) for _, b in pairs), labels, num_classes, seed)
