"""Features stage: the content-addressed bottleneck cache and extraction through it.

    from transferlab.features import extract_splits
    splits, result, cache = extract_splits(dataset, backbone, info, resize)
    fill_cache(paths, keys, backbone, resize, cache)     # cache only, memory bounded (FillResult)
"""

from transferlab.features.cache import FeatureCache
from transferlab.features.dataset import (
    SplitFeatures,
    extract_splits,
    feature_cache_for,
    feature_fingerprint,
    resize_for,
)
from transferlab.features.extract import ENGINES, ExtractionResult, extract_features
from transferlab.features.fill import FillResult, fill_cache, find_missing

__all__ = [
    "ENGINES", "ExtractionResult", "FeatureCache", "FillResult", "SplitFeatures", "extract_features", "extract_splits",
    "feature_cache_for", "feature_fingerprint", "fill_cache", "find_missing", "resize_for",
]
