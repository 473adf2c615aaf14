"""Phase 1 of training: run each image once through the frozen backbone, through the cache.

Only images whose features are not cached are decoded and run. Decoding and resizing happen
in a thread pool a few batches ahead of the backbone (:mod:`transferlab.data.loader`), so the
network never waits on JPEG decoding. The backbone runs under ONNX Runtime when that is
available and its features match Keras within 1e-4 on the first batch (about 2x
``model.predict`` on 2 CPU cores), else under a traced ``tf.function``. The ONNX file and the
result of that parity check are kept in the cache folder: the conversion and the check run
once per backbone setting, not once per run.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from transferlab._atomic import DiskFullError, atomic_write_bytes
from transferlab.data.decode import ResizeConfig
from transferlab.data.loader import background_pool, iter_file_batches
from transferlab.errors import ConfigError
from transferlab.features.cache import CacheDirError, FeatureCache, cache_writes
from transferlab.progress import eta_clock, format_duration, plural, progress_bar
from transferlab.runtimes.exported import OnnxRuntime
from transferlab.runtimes.keras import KerasRuntime

logger = logging.getLogger("transferlab")

ENGINES = ("auto", "onnx", "keras")
PARITY_TOLERANCE = 1e-4
# Measured on 2 CPU cores: ONNX Runtime throughput peaks at small batches (8-16) and drops
# at 64; the Keras path prefers larger ones.
_ONNX_BATCH = 16
_KERAS_BATCH = 32
_WRITES_AHEAD = 4  # batches of features waiting to be written to the cache


@dataclass
class ExtractionResult:
    """Features of the requested images, row-aligned with the input; ``failed`` rows are zero."""

    features: np.ndarray  # (N, D) float32
    hits: int = 0
    misses: int = 0
    engine: str = "none"
    seconds: float = 0.0
    failed: list[int] = field(default_factory=list)
    parity_max_abs_diff: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.misses / self.seconds if self.seconds > 0 else float("nan")


class OnnxEngine(OnnxRuntime):
    """The backbone converted to ONNX (converted once per fingerprint, kept in the cache folder)."""

    def __init__(self, model, cache: FeatureCache, input_size: int):
        from transferlab.runtimes.onnx_convert import keras_to_onnx

        path = cache.directory / "backbone.onnx"
        self.parity_path = cache.directory / "backbone.onnx.parity.json"
        self._cache_root = cache.root
        if not path.exists():
            logger.info("Converting the backbone to ONNX (once per backbone setting) ...")
            with cache_writes(cache.root):  # a full or read-only cache is the user's to fix: say so
                keras_to_onnx(model, path, input_size=input_size)
                self.parity_path.unlink(missing_ok=True)
        super().__init__(path)

    def recorded_parity(self) -> float | None:
        """Max abs difference to Keras measured when this ONNX file was first used, if any."""
        try:
            return float(json.loads(self.parity_path.read_text())["max_abs_diff"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def record_parity(self, diff: float) -> None:
        with cache_writes(self._cache_root):
            atomic_write_bytes(self.parity_path,
                               json.dumps({"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}).encode())

    def check_parity(self, reference: np.ndarray, features: np.ndarray) -> float:
        """Record and return the max abs difference of ONNX ``features`` to Keras' ``reference`` (B, D)."""
        diff = float(np.max(np.abs(reference - features)))
        self.record_parity(diff)
        return diff


def onnx_backbone(model, cache: FeatureCache, resize: ResizeConfig, probe_paths: Sequence[str]) -> OnnxEngine | None:
    """The backbone under ONNX Runtime if its features match Keras, for extraction outside this process.

    Converts once per backbone setting (``backbone.onnx`` in the cache folder) and, the first
    time, compares ONNX with Keras on the decodable images among ``probe_paths`` (a batch's
    worth), as :func:`extract_features` does on its first batch.

    Returns:
        The engine, or None when the ONNX features differ from Keras by more than
        :data:`PARITY_TOLERANCE` (then the backbone must run under Keras).

    Raises:
        ImportError or a conversion error: the backbone cannot be converted.
    """
    runner = OnnxEngine(model, cache, resize.size)
    diff = runner.recorded_parity()
    if diff is None:
        for _, images, _ in iter_file_batches(list(probe_paths), resize, max(1, len(probe_paths))):
            if len(images):
                pixels = images.astype(np.float32)
                diff = runner.check_parity(KerasRuntime(model)(pixels), runner(pixels))
    return runner if diff is not None and diff <= PARITY_TOLERANCE else None


def _make_engine(kind: str, model, cache: FeatureCache, input_size: int):
    if kind == "keras":
        return KerasRuntime(model)
    try:
        return OnnxEngine(model, cache, input_size)
    except (DiskFullError, CacheDirError):
        raise  # the feature cache could not be written either: stop and say where, not run slower
    except Exception as exc:  # noqa: BLE001 - any conversion failure falls back to Keras
        if kind == "onnx":
            raise
        # A warning, not an info line: Keras extraction is about half as fast, the user should know why.
        logger.warning("ONNX Runtime not used for extraction (%s: %s); using Keras (slower).", type(exc).__name__,
                       exc)
        return KerasRuntime(model)


RATE_FILE = "rate.json"


def _announce(count: int, cache: FeatureCache) -> None:
    """What extraction will cost, before it starts: the images, and the time at the rate measured
    last time with this backbone setting (the progress line measures it anew after a few seconds)."""
    try:
        rate = float(json.loads((cache.directory / RATE_FILE).read_text())["images_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        rate = 0.0
    if rate > 0:
        seconds = count / rate
        logger.info("Extracting features of %s: about %s at the %.1f img/s measured last time with this "
                    "backbone (ETA %s); Ctrl-C keeps what is done.", plural(count, "image"),
                    format_duration(seconds), rate, eta_clock(seconds))
    else:
        logger.info("Extracting features of %s (once: they are cached); Ctrl-C keeps what is done.",
                    plural(count, "image"))


def _record_rate(cache: FeatureCache, images: int, seconds: float) -> None:
    if images < 16 or seconds <= 0:  # too few to be a rate
        return
    try:
        atomic_write_bytes(cache.directory / RATE_FILE,
                           json.dumps({"images_per_second": round(images / seconds, 2)}).encode())
    except OSError:  # only an estimate for next time: never fail the extraction for it
        pass


def extract_features(
    paths: Sequence[str],
    keys: Sequence[str],
    model,
    resize: ResizeConfig,
    cache: FeatureCache,
    *,
    engine: str = "auto",
    batch_size: int | None = None,
    out: np.ndarray | None = None,
    show_progress: bool = True,
    desc: str = "Extracting features",
    transform: Callable[[np.ndarray, list[str]], np.ndarray] | None = None,
    parity_tolerance: float = PARITY_TOLERANCE,
    progress=None,
) -> ExtractionResult:
    """Return features for every image, computing only what the cache lacks.

    Args:
        paths: image files (N,).
        keys: content hashes (SHA-256 hex) of those files (N,); identical keys are computed once.
        model: backbone mapping (B, S, S, 3) raw pixels to (B, D) features.
        resize: decode/resize settings (part of the cache fingerprint).
        cache: the feature cache for this backbone setting.
        engine: "auto" (ONNX Runtime if it matches Keras, else Keras), "onnx" or "keras".
        out: optional preallocated (N, D) float32 array, e.g. a ``numpy.memmap``.
        transform: ``transform(images uint8 (B, S, S, 3), keys of those rows) -> float32 images``
            applied before the model, e.g. the seeded augmentation of a cached view (the keys
            then name the view, so the cache never mixes views).
        parity_tolerance: largest absolute difference to Keras accepted from ONNX Runtime.
        progress: an open :func:`~transferlab.progress.progress_bar` to advance instead of opening
            one (a caller extracting in chunks shows one bar for all of them).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if len(paths) != len(keys):
        raise ValueError("paths and keys must have the same length.")
    dim = int(model.output_shape[-1])
    features = out if out is not None else np.zeros((len(paths), dim), dtype=np.float32)
    missing_rows = cache.gather(keys, features)
    result = ExtractionResult(features=features, hits=len(paths) - len(missing_rows))

    # Unique missing contents, each computed once, then copied to every row that needs it.
    rows_by_key: dict[str, list[int]] = {}
    for row in missing_rows:
        rows_by_key.setdefault(keys[row], []).append(row)
    todo = list(rows_by_key)
    result.misses = len(missing_rows)
    if cache.corrupt_entries:
        logger.warning("Feature cache: %d corrupt entr%s found and recomputed.", cache.corrupt_entries,
                       "y" if cache.corrupt_entries == 1 else "ies")
    logger.info("Feature cache: %d hit%s, %d miss%s (%s)", result.hits, "" if result.hits == 1 else "s",
                result.misses, "" if result.misses == 1 else "es", cache.directory)
    if not todo:
        return result
    _announce(len(todo), cache)

    start = time.perf_counter()
    runner = _make_engine(engine, model, cache, resize.size)
    ready = time.perf_counter()
    if runner.name == "onnx":
        result.parity_max_abs_diff = runner.recorded_parity()
        if result.parity_max_abs_diff is not None and result.parity_max_abs_diff > parity_tolerance:
            runner = KerasRuntime(model)  # this backbone's ONNX was found inexact before
    batch_size = batch_size or (_ONNX_BATCH if runner.name == "onnx" else _KERAS_BATCH)
    todo_paths = [paths[rows_by_key[key][0]] for key in todo]
    done: set[int] = set()

    def store(keys_: list[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys_, vectors):
            cache.put(key, vector)

    # Cache writes (file system calls) go to a low-priority thread so the backbone never waits on them.
    bar_context = progress_bar(total=len(todo), desc=desc, unit="img", enabled=show_progress) if progress is None \
        else nullcontext(progress)
    with bar_context as bar, background_pool(1) as writer:
        writes: deque[Future] = deque()
        for index, images, errors in iter_file_batches(todo_paths, resize, batch_size):
            for i, reason in errors.items():  # a file broke since it was checked: leave its row missing
                logger.warning("skipped %s: %s", todo_paths[i], reason)
            if index:
                inputs = images.astype(np.float32) if transform is None else \
                    np.asarray(transform(images, [todo[i] for i in index]), np.float32)
                batch_features = runner(inputs)
                if runner.name == "onnx" and result.parity_max_abs_diff is None:
                    reference = KerasRuntime(model)(inputs)
                    diff = runner.check_parity(reference, batch_features)
                    result.parity_max_abs_diff = diff
                    if diff > parity_tolerance:
                        logger.info("ONNX features differ from Keras by %.2e (> %.0e); using Keras.", diff,
                                    parity_tolerance)
                        runner, batch_features = KerasRuntime(model), reference
                writes.append(writer.submit(store, [todo[i] for i in index], batch_features))
                while len(writes) > _WRITES_AHEAD:  # bounded: a memory-mapped `out` stays the only copy
                    writes.popleft().result()
                for i, vector in zip(index, batch_features):
                    features[rows_by_key[todo[i]]] = vector
                    done.add(i)
            bar.update(len(index) + len(errors))
        while writes:
            writes.popleft().result()  # a failed cache write fails the extraction, as before
    result.engine = runner.name
    result.seconds = time.perf_counter() - start
    _record_rate(cache, len(done), time.perf_counter() - ready)
    result.failed = sorted(row for i, key in enumerate(todo) if i not in done for row in rows_by_key[key])
    return result
