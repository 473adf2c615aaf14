"""Features stage: the content-addressed bottleneck cache and extraction through it.

    from transferlab.features import extract_splits
    splits, result, cache = extract_splits(dataset, backbone, info, resize)
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

__all__ = [
    "ENGINES", "ExtractionResult", "FeatureCache", "SplitFeatures", "extract_features", "extract_splits",
    "feature_cache_for", "feature_fingerprint", "resize_for",
]
