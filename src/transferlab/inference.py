"""Classify images with a trained model: the ``Classifier`` object and ``load``.

A classifier is a model (any supported format) plus what it needs to be used correctly: the
class names in output order and the resize its backbone was trained with. Images are decoded
and resized by the same code as in training (:mod:`transferlab.data.decode`), in parallel
threads, batch by batch, so folders of any size stream through in bounded memory.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from transferlab.data.decode import ImageDecodeError, resize_image
from transferlab.data.pipeline import ResizeConfig
from transferlab.data.sources import is_hidden
from transferlab.progress import progress_bar

logger = logging.getLogger("transferlab")

RUN_CONFIG = "config.json"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.keras"


@dataclass
class Prediction:
    """The answer for one image: best label and probability, the top-k, or the error."""

    source: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["top_k"] = [{"label": label, "probability": p} for label, p in self.top_k]
        return data


# ------------------------------------------------------------------ inputs
def expand_paths(items: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Files, folders (searched recursively, hidden files skipped) and globs -> sorted file list."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    files: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not is_hidden(d))
                files.extend(os.path.join(root, n) for n in sorted(names) if not is_hidden(n))
        elif path.exists():
            files.append(text)
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"No file matches the pattern {text!r}.")
            files.extend(m for m in matches if os.path.isfile(m))
        else:
            raise FileNotFoundError(f"No such file or folder: {text}")
    return files


def _as_uint8_batch(images: np.ndarray, resize: ResizeConfig) -> np.ndarray:
    """Arrays (H, W, 3) or (N, H, W, 3) in 0..255 -> uint8 (N, S, S, 3), resized like files."""
    from PIL import Image

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"Expected RGB images of shape (N, H, W, 3) or (H, W, 3), got {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    size = resize.size
    if arr.shape[1:3] == (size, size):
        return arr
    return np.stack([resize_image(Image.fromarray(a), (size, size), mode=resize.mode,
                                  interpolation=resize.interpolation, crop_fraction=resize.crop_fraction)
                     for a in arr])


def iter_file_batches(paths: Sequence[str], resize: ResizeConfig, batch_size: int,
                      workers: int | None = None) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """Yield ``(indices, uint8 images, {index: error})`` per batch; bad files never stop the stream."""
    def load(i: int):
        try:
            return i, resize.load(paths[i]), None
        except ImageDecodeError as exc:
            return i, None, exc.reason

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for start in range(0, len(paths), batch_size):
            results = list(pool.map(load, range(start, min(start + batch_size, len(paths)))))
            good = [(i, img) for i, img, err in results if err is None]
            errors = {i: err for i, _, err in results if err is not None}
            images = np.stack([img for _, img in good]) if good else np.zeros((0, resize.size, resize.size, 3), np.uint8)
            yield [i for i, _ in good], images, errors


# ------------------------------------------------------------------ runtimes
class KerasRuntime:
    """Runs a Keras model (raw 0..255 float input -> probabilities) under a traced function."""

    name = "keras"

    def __init__(self, model):
        from transferlab._tf import import_tf

        tf = import_tf()
        self.model = model
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @property
    def input_size(self) -> int | None:
        shape = self.model.input_shape
        return shape[1] if shape[1] == shape[2] else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(images.astype(np.float32)), dtype=np.float32)


# ------------------------------------------------------------------ classifier
class Classifier:
    """A trained image classifier: ``predict`` on files, folders, globs or arrays.

    Attributes:
        class_names: labels in output order.
        resize: how images are resized before the model (the training setting).
        run_dir: the run directory it came from, if any.
    """

    def __init__(self, runtime, class_names: Sequence[str], resize: ResizeConfig,
                 run_dir: str | os.PathLike | None = None, metadata: dict | None = None):
        self.runtime = runtime
        self.class_names = list(class_names)
        self.resize = resize
        self.run_dir = Path(run_dir) if run_dir else None
        self.metadata = metadata or {}

    @property
    def model(self):
        """The underlying Keras model (Keras runtime only)."""
        return getattr(self.runtime, "model", None)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        return f"Classifier(classes={self.class_names}, input={self.resize.size}px, runtime={self.runtime.name}{where})"

    def predict_proba(self, images, *, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, C) for arrays (N, H, W, 3) / (H, W, 3) or paths; any unreadable file raises."""
        if isinstance(images, np.ndarray):
            batch = _as_uint8_batch(images, self.resize)
            return np.concatenate([self.runtime(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)])
        paths = expand_paths(images)
        out = np.zeros((len(paths), len(self.class_names)), np.float32)
        for indices, batch, errors in iter_file_batches(paths, self.resize, batch_size):
            if errors:
                i, reason = next(iter(errors.items()))
                raise ImageDecodeError(paths[i], reason)
            out[indices] = self.runtime(batch)
        return out

    def predict(self, images, *, top_k: int = 1, batch_size: int = 32,
                show_progress: bool = False) -> list[Prediction]:
        """Classify files, folders, globs or arrays; unreadable files get a Prediction with ``error``."""
        top_k = max(1, min(top_k, len(self.class_names)))
        if isinstance(images, np.ndarray):
            probs = self.predict_proba(images, batch_size=batch_size)
            return [self._prediction(f"array[{i}]", p, top_k) for i, p in enumerate(probs)]
        paths = expand_paths(images)
        results: list[Prediction | None] = [None] * len(paths)
        with progress_bar(total=len(paths), desc="Predicting", unit="img", enabled=show_progress) as bar:
            for indices, batch, errors in iter_file_batches(paths, self.resize, batch_size):
                for i, reason in errors.items():
                    logger.warning("cannot read %s: %s", paths[i], reason)
                    results[i] = Prediction(paths[i], error=reason)
                if indices:
                    for i, p in zip(indices, self.runtime(batch)):
                        results[i] = self._prediction(paths[i], p, top_k)
                bar.update(len(indices) + len(errors))
        return [r for r in results if r is not None]

    def _prediction(self, source: str, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs)[:top_k]
        ranked = [(self.class_names[j], float(probs[j])) for j in order]
        return Prediction(source, ranked[0][0], ranked[0][1], ranked)

    def evaluate(self, data, *, batch_size: int = 32, split: str | None = None,
                 show_progress: bool = True) -> dict:
        """Accuracy, loss, per-class precision/recall/F1 and confusion matrix on labeled data.

        Args:
            data: a labeled folder/CSV (every split is used unless ``split`` names one) or an
                :class:`~transferlab.data.ImageDataset`.
        """
        from transferlab.data.dataset import ImageDataset, load_dataset
        from transferlab.evaluation.metrics import classification_report

        dataset = data if isinstance(data, ImageDataset) else load_dataset(data, show_progress=show_progress)
        records = dataset.split(split) if split else dataset.records
        unknown = sorted({r.label for r in records} - set(self.class_names))
        if unknown:
            raise ValueError(f"The data has classes the model does not know: {', '.join(unknown)}. "
                             f"Model classes: {', '.join(self.class_names)}.")
        index = {name: i for i, name in enumerate(self.class_names)}
        paths = [r.path for r in records]
        labels = np.array([index[r.label] for r in records])
        probs = np.zeros((len(paths), len(self.class_names)), np.float32)
        keep = np.zeros(len(paths), bool)
        with progress_bar(total=len(paths), desc="Evaluating", unit="img", enabled=show_progress) as bar:
            for indices, batch, errors in iter_file_batches(paths, self.resize, batch_size):
                if indices:
                    probs[indices] = self.runtime(batch)
                    keep[indices] = True
                bar.update(len(indices) + len(errors))
        report = classification_report(labels[keep], probs[keep], self.class_names)
        report["skipped_files"] = [paths[i] for i in np.flatnonzero(~keep)]
        return report


# ------------------------------------------------------------------ loading
def _read_labels(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(path: str | os.PathLike, *, safe_mode: bool = True) -> Classifier:
    """Load a classifier from a run directory or a ``.keras`` model file.

    ``safe_mode`` stays on unless you trust the file: loading a model can run code from it.
    Class names and the resize setting come from the run's ``config.json``/``labels.txt``
    next to the model.
    """
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.exists():
        raise FileNotFoundError(f"No model at {model_path}. Pass a run directory (runs/NAME) or a .keras file.")
    metadata = {}
    if (run_dir / RUN_CONFIG).exists():
        metadata = json.loads((run_dir / RUN_CONFIG).read_text(encoding="utf-8"))

    import keras

    from transferlab._tf import import_tf

    import_tf()
    model = keras.models.load_model(model_path, compile=False, safe_mode=safe_mode)
    runtime = KerasRuntime(model)
    num_classes = int(model.output_shape[-1])
    if (run_dir / LABELS_FILE).exists():
        class_names = _read_labels(run_dir / LABELS_FILE)
    else:
        class_names = metadata.get("class_names") or [f"class_{i}" for i in range(num_classes)]
        if "class_names" not in metadata:
            logger.warning("No labels.txt next to %s: classes are named class_0..class_%d.", model_path, num_classes - 1)
    if len(class_names) != num_classes:
        raise ValueError(f"{run_dir / LABELS_FILE} lists {len(class_names)} classes but the model outputs {num_classes}.")
    if "resize" in metadata:
        resize = ResizeConfig(**metadata["resize"])
    else:
        resize = ResizeConfig(size=runtime.input_size or 224)
    return Classifier(runtime, class_names, resize, run_dir=run_dir, metadata=metadata)
