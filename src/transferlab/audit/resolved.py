"""Find a dataset's cached features without building the backbone (and so without TensorFlow).

The feature cache is keyed by a fingerprint of the *resolved* backbone (its weights' hash, layer,
input size, resize, preprocessing), which takes building the backbone to compute: importing
TensorFlow and constructing the network cost 5-25 s on a 2-core machine, against about 3 s for
the audit itself of a few hundred cached images. So ``train`` and ``audit`` remember here how
their settings resolved, in ``<cache root>/features/resolved.json``:

    settings (backbone, weights, input size, layer, preprocessing, resize overrides)
        -> fingerprint parts, feature size, the weights file's size and mtime

A later audit with the same settings reads the features straight from the cache. The entry is
used only while the weights file is unchanged (same size and modification time; the cache
itself is keyed by the weights' content hash) and only when every image is in the cache;
otherwise the backbone is built as usual. Losing an entry (two writers at once) only costs the
slow path once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from transferlab._atomic import atomic_write_bytes
from transferlab._paths import default_cache_dir
from transferlab.features.cache import FeatureCache

logger = logging.getLogger("transferlab")

INDEX_FILE = "resolved.json"
_SETTINGS = ("backbone", "weights", "image_size", "feature_layer", "preprocess", "resize_mode", "interpolation",
             "crop_fraction")


def _index_path(config) -> Path:
    return Path(config.cache_dir or default_cache_dir()).expanduser() / "features" / INDEX_FILE


def _key(config) -> str:
    settings = {name: getattr(config, name) for name in _SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _weights_stat(source: str | None) -> list | None:
    """(size, mtime_ns) of a weights file; None when there is no local file to watch."""
    if not source or not os.path.isfile(source):
        return None
    stat = os.stat(source)
    return [stat.st_size, stat.st_mtime_ns]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def remember(config, info, parts: dict) -> None:
    """Record how ``config``'s backbone settings resolved (``info``: BackboneInfo; ``parts``: the fingerprint).

    Only backbones whose weights are one local file (or none: random weights) are remembered:
    a directory's content cannot be watched cheaply.
    """
    stat = _weights_stat(info.weights_source)
    if stat is None and info.weights_source is not None:
        return
    if getattr(info, "tiling", None):  # the audit has no tiles setting: a tiled run's features are not its own
        return
    path = _index_path(config)
    index = _read(path)
    index[_key(config)] = {"parts": parts, "dim": int(info.feature_dim), "name": info.name,
                           "weights_source": info.weights_source, "weights_stat": stat}
    try:
        atomic_write_bytes(path, json.dumps(index, indent=1, sort_keys=True).encode("utf-8"))
    except OSError as exc:  # a read-only cache: nothing is lost but speed
        logger.debug("feature index not written: %s", exc)


def cached_features(records, config) -> tuple[np.ndarray, str] | None:
    """``(features (N, D) float32, backbone name)`` of ``records`` from the cache, or None.

    None when the settings were never resolved, the weights file changed, or any image is
    missing from the cache: the caller then builds the backbone.
    """
    entry = _read(_index_path(config)).get(_key(config))
    if not entry or _weights_stat(entry.get("weights_source")) != entry.get("weights_stat"):
        return None
    cache = FeatureCache(config.cache_dir or default_cache_dir(), entry["parts"])
    features = np.zeros((len(records), entry["dim"]), dtype=np.float32)
    if cache.gather([r.sha256 for r in records], features):
        return None
    logger.info("Feature cache: all %d images found (%s); the backbone is not loaded", len(records), cache.directory)
    return features, entry["name"]
