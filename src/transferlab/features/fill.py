"""Fill the feature cache for many images without holding their features in memory.

:func:`extract_features` returns the features of every image it is given, an (N, D) array:
right for training, too big for a million images. :func:`fill_cache` only makes sure the cache
holds an entry for every distinct image content, in chunks, so memory stays at one chunk
whatever N is. Training afterwards reads the features back as cache hits. The same job on a
Ray cluster is :func:`transferlab.distributed.fill_cache_ray`; both return a :class:`FillResult`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from transferlab.data.decode import ResizeConfig
from transferlab.features.cache import FeatureCache
from transferlab.features.extract import extract_features
from transferlab.progress import progress_bar

logger = logging.getLogger("transferlab")

# Distinct images per call of extract_features: bounds memory (8192 x 1280 float32 = 42 MB for
# EfficientNet-Lite0) while the per-call cost (loading the ONNX session, ~0.3 s) stays under 1%.
CHUNK = 8192


@dataclass
class FillResult:
    """What filling the cache did. Counts are of distinct image contents (SHA-256), not of paths.

    Attributes:
        images: paths asked for (a content present under two paths counts twice here).
        distinct: distinct contents among them.
        hits: distinct contents already in the cache (checksum verified).
        misses: distinct contents computed and written now.
        failed: ``{path: reason}`` of images that could not be read (nothing was written for them).
        seconds: wall time computing the misses (for Ray: from connecting to the last result).
        engine: what ran the backbone ("onnx", "keras"; "none" when nothing was missing).
        backend: "in-process" or "ray".
        cache_dir: the cache folder of this backbone setting.
        corrupt_entries: entries that failed their checksum and were recomputed.
        workers: backbone actors (Ray) or 1 (in-process).
        nodes: Ray nodes the work could use (1 in-process).
        startup_seconds: Ray only: connecting, starting actors and the first batch's round trip.
    """

    images: int
    distinct: int
    hits: int
    misses: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "none"
    backend: str = "in-process"
    cache_dir: str = ""
    corrupt_entries: int = 0
    workers: int = 1
    nodes: int = 1
    startup_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Computed images per second of wall time (NaN when nothing was computed)."""
        return self.misses / self.seconds if self.misses and self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)
                if self.misses and self.seconds > 0 else None}


def find_missing(paths: Sequence[str], keys: Sequence[str], cache: FeatureCache, dim: int,
                 chunk: int = CHUNK) -> tuple[list[str], list[str], int, int]:
    """The distinct contents the cache lacks (or holds corrupt), one path for each.

    Args:
        paths, keys: image files and their SHA-256 content hashes (N,).
        dim: feature length D; an entry of another length counts as missing.

    Returns:
        ``(paths to compute, their keys, distinct count, hits)``; verified in chunks of
        ``chunk`` entries, so memory stays at one (chunk, D) buffer.
    """
    if len(paths) != len(keys):
        raise ValueError("paths and keys must have the same length.")
    first: dict[str, str] = {}
    for path, key in zip(paths, keys):
        first.setdefault(key, path)
    distinct = list(first)
    buffer = np.empty((min(chunk, len(distinct)), dim), np.float32)
    todo: list[str] = []
    for start in range(0, len(distinct), chunk):
        part = distinct[start:start + chunk]
        todo += [part[i] for i in cache.gather(part, buffer[:len(part)])]
    return [first[k] for k in todo], todo, len(distinct), len(distinct) - len(todo)


def fill_cache(paths: Sequence[str], keys: Sequence[str], model, resize: ResizeConfig, cache: FeatureCache, *,
               engine: str = "auto", batch_size: int | None = None, show_progress: bool = True,
               chunk: int = CHUNK) -> FillResult:
    """Compute and cache the features of every image the cache lacks, in this process.

    Args:
        paths: image files (N,).
        keys: their content hashes, SHA-256 hex (N,).
        model: the backbone, raw pixels (B, S, S, 3) -> (B, D) features.
        resize: decode/resize settings (part of ``cache``'s fingerprint).
        cache: the feature cache of this backbone setting.
        engine: "auto", "onnx" or "keras", as for :func:`~transferlab.features.extract.extract_features`.
        batch_size: backbone batch (default: the engine's best on CPU).
        chunk: distinct images per extraction call (bounds memory).

    Returns:
        A :class:`FillResult`; unreadable images are in ``failed`` and not cached.
    """
    dim = int(model.output_shape[-1])
    corrupt_before = cache.corrupt_entries
    todo_paths, todo_keys, distinct, hits = find_missing(paths, keys, cache, dim, chunk)
    result = FillResult(images=len(paths), distinct=distinct, hits=hits, cache_dir=str(cache.directory))
    if not todo_paths:
        result.corrupt_entries = cache.corrupt_entries - corrupt_before
        return result
    start = time.perf_counter()
    buffer = np.empty((min(chunk, len(todo_paths)), dim), np.float32)
    with progress_bar(total=len(todo_paths), desc="Extracting features", unit="img", enabled=show_progress) as bar:
        for first in range(0, len(todo_paths), chunk):
            part_paths, part_keys = todo_paths[first:first + chunk], todo_keys[first:first + chunk]
            part = extract_features(part_paths, part_keys, model, resize, cache, engine=engine, batch_size=batch_size,
                                    out=buffer[:len(part_paths)], progress=bar)
            result.hits += part.hits  # written by another process since find_missing looked
            result.misses += part.misses - len(part.failed)
            result.failed.update({part_paths[i]: "could not be read (see the log)" for i in part.failed})
            if part.engine != "none":
                result.engine = part.engine
    result.seconds = time.perf_counter() - start
    result.corrupt_entries = cache.corrupt_entries - corrupt_before
    return result
