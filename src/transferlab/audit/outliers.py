"""Outliers: images far from every other image of the dataset (placeholders, wrong domain, blanks).

An image's *typicality* is its mean cosine similarity to its ``k`` nearest neighbours in
backbone features (byte copies of it excluded, so a duplicated placeholder is still an outlier),
or its similarity to the nearest class centroid where that is higher ("far from every class"). The outlier score is
a robust z-score of how much less typical it is than the dataset's median image:

    score = (median(t) - t_i) / (1.4826 * MAD(t))

(1.4826 * MAD estimates the standard deviation of normally distributed values, so a score of 3.5
means "3.5 standard deviations less typical", the cut-off of Iglewicz & Hoaglin for modified
z-scores). Images with ``score >= threshold`` are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.audit.defaults import DEFAULT_OUTLIER_THRESHOLD
from transferlab.audit.neighbours import Neighbours, normalise

OUTLIER_NEIGHBOURS = 5


@dataclass
class Outliers:
    """Per-content outlier scores.

    Attributes:
        typicality: (M,) float32 mean cosine similarity to the nearest neighbours (or class centroid).
        score: (M,) float32 robust z-score; higher is more unusual.
        is_outlier: (M,) bool, ``score >= threshold``.
    """

    typicality: np.ndarray
    score: np.ndarray
    is_outlier: np.ndarray


def find_outliers(features: np.ndarray, labels: np.ndarray, neighbours: Neighbours, *,
                  threshold: float = DEFAULT_OUTLIER_THRESHOLD, k: int = OUTLIER_NEIGHBOURS) -> Outliers:
    """Score every distinct content by how far it lies from the rest.

    Args:
        features: (M, D) features, one row per distinct content.
        labels: (M,) int label of each content (its first file's).
        neighbours: nearest neighbours of those rows (:func:`~transferlab.audit.neighbours.nearest_neighbours`).
        threshold: flag scores at or above this robust z-score (default 3.5).
        k: neighbours averaged (at most those in ``neighbours``).

    Returns:
        :class:`Outliers` row-aligned with ``features``.
    """
    unit = normalise(features)
    m = len(unit)
    k = min(k, neighbours.similarity.shape[1])
    near = neighbours.similarity[:, :k].mean(axis=1) if k else np.zeros(m, np.float32)
    centroids = np.stack([unit[labels == label].mean(axis=0) for label in np.unique(labels)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    # The closest centroid of *any* class: an image close to a class it is not labelled as is a
    # label error (labels.py), not an outlier; one in a sparse part of its class is not one either.
    centroid_sim = (unit @ centroids.T).max(axis=1)
    typicality = np.maximum(near, centroid_sim).astype(np.float32)
    median = float(np.median(typicality))
    mad = float(np.median(np.abs(typicality - median)))
    scale = 1.4826 * mad if mad > 0 else max(float(typicality.std()), 1e-6)
    score = ((median - typicality) / scale).astype(np.float32)
    return Outliers(typicality, score, score >= threshold)
