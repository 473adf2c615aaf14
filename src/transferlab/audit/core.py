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
from transferlab.audit.duplicates import group_duplicates, near_duplicate_pairs
from transferlab.audit.labels import find_label_issues
from transferlab.audit.neighbours import nearest_neighbours
from transferlab.audit.outliers import Outliers, find_outliers
from transferlab.audit.resolved import cached_features, remember
from transferlab.audit.result import AuditResult
from transferlab.data.dataset import ImageDataset, ImageRecord, load_dataset

logger = logging.getLogger("transferlab")


def dataset_features(dataset: ImageDataset, config, *, show_progress: bool = True):
    """Bottleneck features of every record, through the feature cache training uses.

    Args:
        dataset: a loaded dataset.
        config: a :class:`~transferlab.training.config.TrainConfig` (backbone, resize, engine,
            cache_dir): the same settings give the same cache entries as ``transferlab train``.

    Returns:
        ``(features (N, D) float32, records (N,) whose features could be computed, backbone name)``.
        When every image is in the cache under settings resolved before
        (:mod:`~transferlab.audit.resolved`), the backbone is not even built.
    """
    cached = cached_features(dataset.records, config)
    if cached is not None:
        return cached[0], list(dataset.records), cached[1]

    from transferlab.backbones import resolve_backbone
    from transferlab.features import extract_splits, resize_for
    from transferlab.features.dataset import SPLITS, feature_fingerprint

    backbone, info = resolve_backbone(config.backbone, weights=config.weights, input_size=config.image_size,
                                      feature_layer=config.feature_layer, preprocess=config.preprocess,
                                      unsafe=config.unsafe)
    resize = resize_for(info, mode=config.resize_mode, interpolation=config.interpolation,
                        crop_fraction=config.crop_fraction)
    splits, _, _ = extract_splits(dataset, backbone, info, resize, cache_dir=config.cache_dir, engine=config.engine,
                                  show_progress=show_progress)
    remember(config, info, feature_fingerprint(info, resize))
    records = [r for s in SPLITS for r in splits[s].records]
    features = np.concatenate([splits[s].x for s in SPLITS]) if records else np.zeros((0, info.feature_dim), np.float32)
    return features, records, info.name


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
        DatasetError: fewer than two classes with images, or a class with fewer than two images
            (no out-of-fold estimate is possible).
    """
    from transferlab.training.config import TrainConfig

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    timing: dict[str, float] = {}
    start = time.perf_counter()
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    timing["load_dataset"] = time.perf_counter() - start

    tick = time.perf_counter()
    features, records, backbone_name = dataset_features(dataset, config, show_progress=show_progress)
    timing["features"] = time.perf_counter() - tick
    result = analyse(dataset, records, features, folds=folds, seed=config.seed,
                     min_similarity=min_similarity, max_hash_distance=max_hash_distance,
                     outlier_threshold=outlier_threshold)
    result.backbone = backbone_name
    result.timing = {**timing, **result.timing}
    result.settings.update(backbone=backbone_name, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    if write:
        from transferlab.audit.report import write_audit

        tick = time.perf_counter()
        target = Path(out) if out else Path("audits") / f"{Path(data).stem}-{datetime.now():%Y%m%d-%H%M%S}"
        result.out_dir = write_audit(result, target, max_gallery=max_gallery)
        result.timing["report"] = time.perf_counter() - tick
    result.timing["total"] = time.perf_counter() - start
    return result
