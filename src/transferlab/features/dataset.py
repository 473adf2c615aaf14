"""Features of a whole dataset for one backbone: the step training, model selection and the audit share.

    splits, result, cache = extract_splits(dataset, backbone, info, resize)
    splits["train"].x      # float32 (N, D) features, row-aligned with splits["train"].records
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from transferlab._paths import default_cache_dir
from transferlab.data.dataset import ImageDataset, ImageRecord
from transferlab.data.decode import ResizeConfig
from transferlab.features.cache import FeatureCache
from transferlab.features.extract import ExtractionResult, extract_features

logger = logging.getLogger("transferlab")

SPLITS = ("train", "val", "test")


def resize_for(info, *, size: int | None = None, mode: str | None = None, interpolation: str | None = None,
               crop_fraction: float | None = None) -> ResizeConfig:
    """The backbone's own evaluation resize (``info``: a BackboneInfo), with any part overridden."""
    return ResizeConfig(
        size=size or info.input_size,
        mode=mode or info.resize_mode,
        interpolation=interpolation or info.interpolation,
        crop_fraction=crop_fraction if crop_fraction is not None else info.crop_fraction,
    )


def feature_fingerprint(info, resize: ResizeConfig) -> dict:
    """Everything that changes a feature vector (the cache key besides the image bytes)."""
    from transferlab.backbones import weights_fingerprint

    parts = {
        "backbone": info.name,
        "weights": weights_fingerprint(info),
        "feature_layer": info.feature_layer,
        "input_size": resize.size,
        "resize": resize.to_dict(),
        "preprocess": info.preprocess,
    }
    # Only tiled builds add the key: the features (and cache folders) of untiled ones stay as they were.
    if getattr(info, "tiling", None):
        parts["tiling"] = dict(info.tiling)
    return parts


def feature_cache_for(info, resize: ResizeConfig, cache_dir: str | os.PathLike | None = None) -> FeatureCache:
    """The feature cache of this backbone setting under ``cache_dir`` (default: the user cache dir)."""
    return FeatureCache(cache_dir or default_cache_dir(), feature_fingerprint(info, resize))


@dataclass
class SplitFeatures:
    """One split's features: ``x`` float32 (N, D), ``y`` int64 (N,) class indices, and the records."""

    x: np.ndarray
    y: np.ndarray
    records: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.records)


def extract_splits(dataset: ImageDataset, backbone, info, resize: ResizeConfig, *,
                   cache_dir: str | os.PathLike | None = None, engine: str = "auto",
                   show_progress: bool = True, splits: Sequence[str] = SPLITS,
                   desc: str = "Extracting features") -> tuple[dict[str, SplitFeatures], ExtractionResult, FeatureCache]:
    """Features of every record of ``dataset``, through the feature cache, per split.

    Args:
        dataset: a loaded, split dataset.
        backbone: the Keras backbone, raw pixels (N, S, S, 3) -> (N, D).
        info: its :class:`~transferlab.backbones.BackboneInfo` (part of the cache fingerprint).
        resize: how images are resized (part of the cache fingerprint).
        cache_dir: the cache's root (default: user cache dir or ``$TRANSFERLAB_CACHE_DIR``).
        engine: "auto", "onnx" or "keras" (see :func:`~transferlab.features.extract.extract_features`).
        splits: which splits to extract (default all three); model selection asks for
            ("train", "val") so that the test images are not even read while it chooses.
        desc: the progress bar's label.

    Returns:
        ``({split: SplitFeatures}, extraction result, cache)`` for the requested splits. Images that could not
        be read any more are left out of their split (and logged).
    """
    cache = feature_cache_for(info, resize, cache_dir)
    names = tuple(splits)
    splits = {s: dataset.split(s) for s in names}
    records = [r for s in names for r in splits[s]]
    result = extract_features([r.path for r in records], [r.sha256 for r in records], backbone, resize, cache,
                              engine=engine, show_progress=show_progress, desc=desc)
    failed = set(result.failed)
    for row in sorted(failed):
        logger.warning("skipped %s: could not be read during feature extraction", records[row].path)
    out, start = {}, 0
    index = dataset.class_to_index
    for s in names:
        rows = [i for i in range(start, start + len(splits[s])) if i not in failed]
        out[s] = SplitFeatures(result.features[rows], np.array([index[records[i].label] for i in rows], dtype=np.int64),
                               [records[i] for i in rows])
        start += len(splits[s])
    return out, result, cache
