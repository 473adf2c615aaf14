"""Exact and near-duplicate images, grouped, with the groups that cross splits or labels.

* **Exact** copies share the SHA-256 of their bytes, already computed when the dataset was
  checked (:mod:`transferlab.data.dataset`); copies under two labels were left out of the dataset
  there and are reported here too.
* **Near** duplicates (the same picture resized, re-encoded, slightly cropped) need two signals:
  in EfficientNet-Lite0 features a copy resized to 80 % and re-saved at JPEG quality 70 had
  cosine similarity 0.86 to its original, while distinct photos of the same subject reached
  0.95, so feature similarity alone cannot separate them. Candidates are the feature nearest
  neighbours above ``min_similarity`` (cheap: no image is opened); a candidate pair is a
  duplicate when the perceptual hashes (DCT hash of the ``imagehash`` library, BSD licence) of
  the two images differ in at most ``max_hash_distance`` of 64 bits. A DCT hash alone does not
  survive cropping (5 % off each side moved it by 9 bits, median), so each image is also hashed
  with 5 % and 10 % cut off each side, and the distance of a pair is the smallest between one
  image whole and the other whole or cut. Only candidate images are decoded, at reduced size
  (JPEG draft mode).

Measured on 20 photos each of hymenoptera_data and masonry_cracks (``benchmarks/bench_audit.py``
repeats it): copies resized to 50-80 %, re-encoded at JPEG quality 50-90, or cropped 5-10 % per
side were at most 4 bits away and at least 0.75 cosine similar; the closest distinct photos
among feature neighbours were 10 bits away (overlapping masonry patches of one wall) and 20 in
hymenoptera.

Pairs are merged into groups (connected components), and each group is reported once.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from transferlab.audit.defaults import DEFAULT_MAX_HASH_DISTANCE, DEFAULT_MIN_SIMILARITY
from transferlab.audit.neighbours import Neighbours

logger = logging.getLogger("transferlab")

# DEFAULT_MIN_SIMILARITY (0.70) gates on feature similarity before any image is decoded: copies
# measured >= 0.75 (see above); a lower gate only costs hashing time. DEFAULT_MAX_HASH_DISTANCE (6
# of 64 bits): copies measured <= 4, distinct photos >= 10.
_HASH_DRAFT = (128, 128)  # the hash looks at 32x32 pixels: decode JPEGs at 1/2..1/8 scale
_CROPS = (0.0, 0.05, 0.10)  # fraction cut off each side before hashing


@dataclass
class Member:
    """One file of a duplicate group."""

    path: str
    label: str
    split: str | None  # None: left out of the dataset (same bytes under two labels)
    sha256: str
    row: int | None = None  # index into the dataset's records, None when left out


@dataclass
class DuplicateGroup:
    """Files showing the same picture.

    Attributes:
        members: the files, sorted by split (train first) then path.
        kind: "exact" (all byte-identical) or "near".
        similarity: lowest cosine feature similarity of a linked pair (1.0 for exact copies).
        hash_distance: highest DCT-hash distance of a linked pair, in bits (0 for exact copies).
    """

    members: list[Member]
    kind: str
    similarity: float = 1.0
    hash_distance: int = 0
    id: str = ""

    @property
    def splits(self) -> list[str]:
        return sorted({m.split for m in self.members if m.split})

    @property
    def labels(self) -> list[str]:
        return sorted({m.label for m in self.members})

    @property
    def crosses_splits(self) -> bool:
        """Train/val/test leakage: the same picture sits in more than one split."""
        return len(self.splits) > 1

    @property
    def two_labels(self) -> bool:
        return len(self.labels) > 1

    def to_dict(self) -> dict:
        """JSON-serialisable: id, kind, similarity, hash distance, splits, labels, flags and files."""
        return {"id": self.id, "kind": self.kind, "similarity": round(self.similarity, 4),
                "hash_distance": self.hash_distance, "splits": self.splits, "labels": self.labels,
                "crosses_splits": self.crosses_splits, "two_labels": self.two_labels,
                "files": [{"path": m.path, "label": m.label, "split": m.split} for m in self.members]}

    def severity(self) -> tuple:
        """Sort key, worst first: label conflicts, then leakage, then the closest copies."""
        return (not self.two_labels, not self.crosses_splits, -self.similarity, self.members[0].path)


def perceptual_hashes(paths: Sequence[str], workers: int = 2) -> list[np.ndarray | None]:
    """DCT perceptual hashes of each image, whole and centre-cropped (None: unreadable).

    Args:
        paths: image files.
        workers: decoding threads (Pillow decodes without holding the GIL).

    Returns:
        Per image a (3, 64) bool array: the 64-bit hash of the whole image, then with 5 % and
        10 % cut off each side.
    """
    import imagehash

    from transferlab.data.decode import ImageDecodeError, open_rgb

    def one(path: str) -> np.ndarray | None:
        try:
            img = open_rgb(path, draft_size=_HASH_DRAFT)
        except ImageDecodeError as exc:
            logger.warning("no perceptual hash for %s: %s", path, exc.reason)
            return None
        w, h = img.size
        crops = [img if f == 0 else img.crop((round(w * f), round(h * f), round(w * (1 - f)), round(h * (1 - f))))
                 for f in _CROPS]
        return np.stack([imagehash.phash(c).hash.ravel() for c in crops])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, paths))


def hash_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Bits apart of two images' hashes: the closest of one whole against the other whole or cut."""
    whole = np.count_nonzero(a[0] != b, axis=1)  # a whole vs b whole / cut
    cut = np.count_nonzero(a[1:] != b[0], axis=1)  # a cut vs b whole
    return int(min(whole.min(), cut.min()))


@dataclass
class _Pairs:
    a: list[int] = field(default_factory=list)
    b: list[int] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    distance: list[int] = field(default_factory=list)


def near_duplicate_pairs(neighbours: Neighbours, paths: Sequence[str], *,
                         min_similarity: float = DEFAULT_MIN_SIMILARITY,
                         max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE, workers: int = 2) -> _Pairs:
    """Pairs of distinct contents that are feature neighbours and perceptual-hash matches.

    Args:
        neighbours: nearest neighbours among the distinct contents (one row per content).
        paths: one file per content, row-aligned with ``neighbours``.

    Returns:
        Row pairs ``a < b`` with their cosine similarity and hash distance.
    """
    close = neighbours.similarity >= min_similarity
    a = np.repeat(np.arange(len(paths)), neighbours.indices.shape[1])[close.ravel()]
    b = neighbours.indices.ravel()[close.ravel()]
    sim = neighbours.similarity.ravel()[close.ravel()]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, first = np.unique(lo * len(paths) + hi, return_index=True)  # each unordered pair once
    lo, hi, sim = lo[first], hi[first], sim[first]
    pairs = _Pairs()
    if not len(lo):
        return pairs
    rows = np.unique(np.concatenate([lo, hi]))
    hashes = dict(zip(rows.tolist(), perceptual_hashes([paths[r] for r in rows], workers=workers)))
    for x, y, s in zip(lo.tolist(), hi.tolist(), sim.tolist()):
        hx, hy = hashes[x], hashes[y]
        if hx is None or hy is None:
            continue
        distance = hash_distance(hx, hy)
        if distance <= max_hash_distance:
            pairs.a.append(x)
            pairs.b.append(y)
            pairs.similarity.append(s)
            pairs.distance.append(distance)
    return pairs


def group_duplicates(records: Sequence, content_of_row: np.ndarray, pairs: _Pairs,
                     label_conflicts: Sequence[dict] = ()) -> list[DuplicateGroup]:
    """Merge byte copies and near-duplicate pairs into groups, each reported once, worst first.

    Args:
        records: the dataset's :class:`~transferlab.data.dataset.ImageRecord` list (N,).
        content_of_row: (N,) int index of each record's distinct content (same bytes, same index).
        pairs: near-duplicate pairs between contents (:func:`near_duplicate_pairs`).
        label_conflicts: the dataset's byte copies under two labels (left out of ``records``).

    Returns:
        Groups with ids ``d1``, ``d2``, ... in severity order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    contents = int(content_of_row.max()) + 1 if len(content_of_row) else 0
    graph = coo_matrix((np.ones(len(pairs.a)), (pairs.a, pairs.b)), shape=(contents, contents))
    _, component = connected_components(graph, directed=False)
    rows_of: dict[int, list[int]] = {}
    for row, content in enumerate(content_of_row.tolist()):
        rows_of.setdefault(int(component[content]), []).append(row)
    edge_similarity: dict[int, float] = {}
    edge_distance: dict[int, int] = {}
    for a, s, d in zip(pairs.a, pairs.similarity, pairs.distance):
        c = int(component[a])
        edge_similarity[c] = min(edge_similarity.get(c, 1.0), s)
        edge_distance[c] = max(edge_distance.get(c, 0), d)

    order = {"train": 0, "val": 1, "test": 2}
    groups = []
    for c, rows in rows_of.items():
        if len(rows) < 2:
            continue
        members = [Member(records[r].path, records[r].label, records[r].split, records[r].sha256, r) for r in rows]
        members.sort(key=lambda m: (order.get(m.split, 3), m.path))
        exact = len({m.sha256 for m in members}) == 1
        groups.append(DuplicateGroup(members, "exact" if exact else "near", edge_similarity.get(c, 1.0),
                                     edge_distance.get(c, 0)))
    for conflict in label_conflicts:  # same bytes, two labels: load_dataset kept none of them
        by_path = dict(zip(conflict["paths"], conflict.get("path_labels", [None] * len(conflict["paths"]))))
        members = [Member(p, label or "?", None, conflict["sha256"]) for p, label in by_path.items()]
        groups.append(DuplicateGroup(members, "exact"))
    groups.sort(key=DuplicateGroup.severity)
    for i, group in enumerate(groups, 1):
        group.id = f"d{i}"
    return groups
