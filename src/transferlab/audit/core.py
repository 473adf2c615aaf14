"""``transferlab.audit``: likely label errors, duplicates, split leakage and outliers of a dataset.

Everything is computed from the bottleneck features that training caches (same backbone, same
resize, same cache): after ``transferlab train`` the audit extracts nothing, and after an audit
training extracts nothing. Images are opened only for the perceptual hash of near-duplicate
candidates and for the thumbnails of ``audit.html``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from transferlab.audit.defaults import (
    DEFAULT_FOLDS,
    DEFAULT_MAX_HASH_DISTANCE,
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_NEIGHBOURS,
    DEFAULT_OUTLIER_THRESHOLD,
)
from transferlab.audit.duplicates import DuplicateGroup, group_duplicates, near_duplicate_pairs
from transferlab.audit.labels import LabelIssues, find_label_issues
from transferlab.audit.neighbours import nearest_neighbours
from transferlab.audit.outliers import Outliers, find_outliers
from transferlab.data.dataset import ImageDataset, ImageRecord, load_dataset

logger = logging.getLogger("transferlab")


@dataclass
class AuditResult:
    """What the audit found; row ``i`` of every array is ``records[i]``.

    Attributes:
        dataset: the checked dataset (its ``bad_files`` were not audited: they do not decode).
        records: the audited images (those whose features could be computed).
        features: (N, D) float32 bottleneck features.
        labels: confident-learning verdict per image (:class:`~transferlab.audit.labels.LabelIssues`).
        duplicates: duplicate groups, worst first (:class:`~transferlab.audit.duplicates.DuplicateGroup`).
        outlier_score: (N,) float32 robust z-score (higher: further from everything).
        is_outlier: (N,) bool.
        out_dir: where audit.html, audit.csv and audit.json were written (None if not written).
        timing: seconds per stage.
    """

    dataset: ImageDataset
    records: list[ImageRecord]
    features: np.ndarray
    labels: LabelIssues
    duplicates: list[DuplicateGroup]
    outlier_score: np.ndarray
    is_outlier: np.ndarray
    backbone: str = ""
    out_dir: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def label_issue_rows(self) -> list[int]:
        """Rows of the likely label errors, likeliest first."""
        return self.labels.ranking().tolist()

    def outlier_rows(self) -> list[int]:
        """Rows of the outliers, most unusual first."""
        rows = np.flatnonzero(self.is_outlier)
        return rows[np.argsort(-self.outlier_score[rows], kind="stable")].tolist()

    def summary(self) -> dict:
        """JSON-serialisable counts and the worst findings (what ``--json`` prints)."""
        from transferlab.audit.report import summary

        return summary(self)


def dataset_features(dataset: ImageDataset, config, *, show_progress: bool = True):
    """Bottleneck features of every record, through the feature cache training uses.

    Args:
        dataset: a loaded dataset.
        config: a :class:`~transferlab.training.config.TrainConfig` (backbone, resize, engine,
            cache_dir): the same settings give the same cache entries as ``transferlab train``.

    Returns:
        ``(features (N, D) float32, rows kept (indices into dataset.records), backbone info)``.
    """
    from transferlab._paths import default_cache_dir
    from transferlab.backbones import resolve_backbone
    from transferlab.features.cache import FeatureCache
    from transferlab.features.extract import extract_features
    from transferlab.training.trainer import feature_fingerprint, resize_for

    backbone, info = resolve_backbone(config.backbone, weights=config.weights, input_size=config.image_size,
                                      feature_layer=config.feature_layer, preprocess=config.preprocess,
                                      unsafe=config.unsafe)
    resize = resize_for(config, info)
    cache = FeatureCache(config.cache_dir or default_cache_dir(), feature_fingerprint(info, resize))
    records = dataset.records
    result = extract_features([r.path for r in records], [r.sha256 for r in records], backbone, resize, cache,
                              engine=config.engine, show_progress=show_progress)
    failed = set(result.failed)
    kept = [i for i in range(len(records)) if i not in failed]
    return result.features[kept], kept, info


def analyse(dataset: ImageDataset, records: list[ImageRecord], features: np.ndarray, *, folds: int = DEFAULT_FOLDS,
            seed: int = 0, min_similarity: float = DEFAULT_MIN_SIMILARITY,
            max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE,
            outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD, workers: int | None = None) -> AuditResult:
    """The audit of given features (what :func:`audit` runs once the features are there).

    Args:
        dataset: the loaded dataset (its classes, label conflicts and root are used).
        records: the records to audit (N,), e.g. ``dataset.records``.
        features: (N, D) float features of those records, row-aligned (any embedding works).
        folds, min_similarity, max_hash_distance, outlier_threshold: see :func:`audit`.
        seed: seed of the k-fold shuffling.
        workers: threads decoding images for the perceptual hash (default: all CPUs).

    Returns:
        :class:`AuditResult` (not written anywhere).
    """
    timing: dict[str, float] = {}
    index = dataset.class_to_index
    labels = np.array([index[r.label] for r in records], dtype=np.int64)

    tick = time.perf_counter()
    issues = find_label_issues(features, labels, len(dataset.class_names), folds=folds, seed=seed)
    timing["label_issues"] = time.perf_counter() - tick

    # Byte copies share one content row: neighbours, hashes and outlier scores are per content.
    tick = time.perf_counter()
    _, first_row, content_of_row = np.unique([r.sha256 for r in records], return_index=True, return_inverse=True)
    content_of_row = content_of_row.ravel()
    content_features = features[first_row]
    neighbours = nearest_neighbours(content_features, DEFAULT_NEIGHBOURS)
    timing["neighbours"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pairs = near_duplicate_pairs(neighbours, [records[r].path for r in first_row], min_similarity=min_similarity,
                                 max_hash_distance=max_hash_distance, workers=workers or os.cpu_count() or 1)
    groups = group_duplicates(records, content_of_row, pairs, dataset.label_conflicts)
    timing["duplicates"] = time.perf_counter() - tick

    tick = time.perf_counter()
    outliers: Outliers = find_outliers(content_features, labels[first_row], neighbours, threshold=outlier_threshold)
    timing["outliers"] = time.perf_counter() - tick

    return AuditResult(
        dataset=dataset, records=list(records), features=features, labels=issues, duplicates=groups,
        outlier_score=outliers.score[content_of_row], is_outlier=outliers.is_outlier[content_of_row], timing=timing,
        settings={"folds": folds, "min_similarity": min_similarity, "max_hash_distance": max_hash_distance,
                  "outlier_threshold": outlier_threshold, "seed": seed},
    )


def audit(data: str | os.PathLike, *, out: str | os.PathLike | None = None, config=None,
          folds: int = DEFAULT_FOLDS, min_similarity: float = DEFAULT_MIN_SIMILARITY,
          max_hash_distance: int = DEFAULT_MAX_HASH_DISTANCE, outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
          write: bool = True, max_gallery: int = 60, show_progress: bool = True, **settings) -> AuditResult:
    """Audit a labeled image folder (or CSV): label errors, duplicates, leakage, outliers.

    Args:
        data: folder of class subfolders, pre-split folder, or CSV of path,label[,split].
        out: folder for ``audit.html``, ``audit.csv`` and ``audit.json`` (created; existing audit
            files in it are replaced). Default ``audits/<data name>-<timestamp>``.
        config: a :class:`~transferlab.training.config.TrainConfig`; keyword ``settings``
            override its fields (``backbone=``, ``cache_dir=``, ``seed=``, ``val_fraction=``...).
            Use the settings you train with: the splits and the cached features are then the same.
        folds: k of the stratified k-fold giving out-of-fold probabilities (default 5).
        min_similarity: cosine feature similarity above which a pair is a near-duplicate
            candidate (default 0.75).
        max_hash_distance: most differing bits of 64 in the perceptual hash of a near-duplicate
            pair (default 10).
        outlier_threshold: robust z-score from which an image is an outlier (default 3.5).
        write: write the report files (False: only return the result).
        max_gallery: at most this many thumbnails per section of ``audit.html``.

    Returns:
        :class:`AuditResult`; ``result.out_dir`` holds the files.

    Raises:
        DatasetError: the dataset has fewer than two classes with images.
        ValueError: a class has fewer than two images (no out-of-fold estimate is possible).
    """
    from transferlab.training.config import TrainConfig

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    timing: dict[str, float] = {}
    start = time.perf_counter()
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    timing["load_dataset"] = time.perf_counter() - start

    tick = time.perf_counter()
    features, kept, info = dataset_features(dataset, config, show_progress=show_progress)
    timing["features"] = time.perf_counter() - tick
    result = analyse(dataset, [dataset.records[i] for i in kept], features, folds=folds, seed=config.seed,
                     min_similarity=min_similarity, max_hash_distance=max_hash_distance,
                     outlier_threshold=outlier_threshold)
    result.backbone = info.name
    result.timing = {**timing, **result.timing}
    result.settings.update(backbone=info.name, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    if write:
        from transferlab.audit.report import write_audit

        tick = time.perf_counter()
        target = Path(out) if out else Path("audits") / f"{Path(data).stem}-{datetime.now():%Y%m%d-%H%M%S}"
        result.out_dir = write_audit(result, target, max_gallery=max_gallery)
        result.timing["report"] = time.perf_counter() - tick
    result.timing["total"] = time.perf_counter() - start
    return result
