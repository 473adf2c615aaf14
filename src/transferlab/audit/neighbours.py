"""Cosine nearest neighbours of bottleneck features, shared by the duplicate and outlier checks.

scikit-learn's brute-force :class:`~sklearn.neighbors.NearestNeighbors` computes distances in
row chunks (``pairwise_distances_chunked``), so memory grows with ``N * k``, never ``N * N``;
on L2-normalised vectors the Euclidean distance orders neighbours exactly as cosine
similarity does (``|a - b|^2 = 2 - 2 cos``) and uses the fast BLAS path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.audit.defaults import DEFAULT_NEIGHBOURS


@dataclass
class Neighbours:
    """The ``k`` nearest other rows of every row.

    Attributes:
        indices: (N, k) int64 row indices, nearest first (never the row itself).
        similarity: (N, k) float32 cosine similarities, descending per row.
    """

    indices: np.ndarray
    similarity: np.ndarray


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero), float32."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def nearest_neighbours(features: np.ndarray, k: int = DEFAULT_NEIGHBOURS) -> Neighbours:
    """Cosine nearest neighbours of every row among the other rows.

    Args:
        features: (N, D) float features (normalised here), N >= 2.
        k: neighbours per row; lowered to N - 1.

    Returns:
        :class:`Neighbours` with (N, min(k, N - 1)) arrays.
    """
    from sklearn.neighbors import NearestNeighbors

    unit = normalise(features)
    k = int(min(k, len(unit) - 1))
    if k < 1:
        return Neighbours(np.zeros((len(unit), 0), np.int64), np.zeros((len(unit), 0), np.float32))
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean").fit(unit)
    distance, indices = index.kneighbors(unit)
    # Drop each row itself; with ties (identical vectors) it need not come first, so drop by value.
    rows = np.arange(len(unit))[:, None]
    keep = indices != rows
    # Rows where the row itself was not among the k + 1 (more than k identical vectors): drop the last.
    keep[keep.all(axis=1), -1] = False
    indices = indices[keep].reshape(len(unit), k)
    distance = distance[keep].reshape(len(unit), k)
    similarity = np.clip(1.0 - distance.astype(np.float64) ** 2 / 2.0, -1.0, 1.0).astype(np.float32)
    return Neighbours(indices.astype(np.int64), similarity)
