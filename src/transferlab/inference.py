"""Predict with a trained model: the ``Predictor`` object and ``load``.

A classifier is a model (any supported format) plus what it needs to be used correctly: the
class names in output order and the resize its backbone was trained with. Images are decoded
and resized by the same code as in training (:mod:`transferlab.data.decode`), in parallel
threads, batch by batch, so folders of any size stream through in bounded memory.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from transferlab.data.decode import ImageDecodeError, ResizeConfig, resize_image
from transferlab.data.loader import iter_file_batches
from transferlab.data.sources import walk_files
from transferlab.errors import ConfigError, MissingFileError, ModelFormatError
from transferlab.progress import progress_bar
from transferlab.rundir import CONFIG_FILE, LABELS_FILE, MODEL_CARD_FILE, MODEL_FILE, read_json, read_labels
from transferlab.runtimes.base import as_dtype

logger = logging.getLogger("transferlab")



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
            files.extend(str(f) for f in walk_files(path))
        elif path.exists():
            files.append(text)
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MissingFileError(f"No file matches the pattern {text!r}.")
            files.extend(m for m in matches if os.path.isfile(m))
        else:
            raise MissingFileError(f"No such file or folder: {text}")
    return files


def _as_uint8_batch(images: np.ndarray, resize: ResizeConfig) -> np.ndarray:
    """Arrays (H, W, 3) or (N, H, W, 3) in 0..255 -> uint8 (N, S, S, 3), resized like files."""
    from PIL import Image

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ConfigError(f"Expected RGB images of shape (N, H, W, 3) or (H, W, 3), got {arr.shape}.")
    arr = as_dtype(arr, np.uint8)
    size = resize.size
    if arr.shape[1:3] == (size, size):
        return arr
    return np.stack([resize_image(Image.fromarray(a), (size, size), mode=resize.mode,
                                  interpolation=resize.interpolation, crop_fraction=resize.crop_fraction)
                     for a in arr])


# ------------------------------------------------------------------ classifier
class Predictor:
    """A trained image classifier that predicts: on files, folders, globs or arrays.

    :class:`transferlab.Classifier` adds evaluation, reports, Grad-CAM and export on top.

    Attributes:
        class_names: labels in output order.
        resize: how images are resized before the model (the training setting).
        run_dir: the run directory it came from, if any.
        feature_map_cache: where Grad-CAM keeps the backbone's feature maps of explained images
            (a :class:`~transferlab.evaluation.gradcam.FeatureMapCache`); set by training when
            the backbone is frozen, None otherwise.
    """

    def __init__(self, runtime, class_names: Sequence[str], resize: ResizeConfig,
                 run_dir: str | os.PathLike | None = None, metadata: dict | None = None):
        self.runtime = runtime
        self.class_names = list(class_names)
        self.resize = resize
        self.run_dir = Path(run_dir) if run_dir else None
        self.metadata = metadata or {}
        self.feature_map_cache = None

    @property
    def model(self):
        """The underlying Keras model (Keras runtime only)."""
        return getattr(self.runtime, "model", None)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir else ""
        return f"{type(self).__name__}(classes={self.class_names}, input={self.resize.size}px, runtime={self.runtime.name}{where})"

    def predict_files(self, paths: Sequence[str], *, batch_size: int = 32, show_progress: bool = False,
                      desc: str = "Predicting") -> tuple[np.ndarray, dict[int, str]]:
        """Probabilities (N, C) for image files, and ``{index: reason}`` for the unreadable ones
        (their rows stay zero). Files are decoded ahead of the model, batch by batch."""
        probs = np.zeros((len(paths), len(self.class_names)), np.float32)
        errors: dict[int, str] = {}
        with progress_bar(total=len(paths), desc=desc, unit="img", enabled=show_progress) as bar:
            for indices, batch, batch_errors in iter_file_batches(paths, self.resize, batch_size):
                if indices:
                    probs[indices] = self.runtime(batch)
                errors.update(batch_errors)
                bar.update(len(indices) + len(batch_errors))
        return probs, errors

    def predict_proba(self, images, *, batch_size: int = 32) -> np.ndarray:
        """Probabilities (N, C) for arrays (N, H, W, 3) / (H, W, 3) or paths; any unreadable file raises."""
        if isinstance(images, np.ndarray):
            batch = _as_uint8_batch(images, self.resize)
            return np.concatenate([self.runtime(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)])
        paths = expand_paths(images)
        probs, errors = self.predict_files(paths, batch_size=batch_size)
        if errors:
            i = min(errors)
            raise ImageDecodeError(paths[i], errors[i])
        return probs

    def predict(self, images, *, top_k: int = 1, batch_size: int = 32,
                show_progress: bool = False) -> list[Prediction]:
        """Classify files, folders, globs or arrays; unreadable files get a Prediction with ``error``."""
        top_k = max(1, min(top_k, len(self.class_names)))
        if isinstance(images, np.ndarray):
            probs = self.predict_proba(images, batch_size=batch_size)
            return [self._prediction(f"array[{i}]", p, top_k) for i, p in enumerate(probs)]
        paths = expand_paths(images)
        probs, errors = self.predict_files(paths, batch_size=batch_size, show_progress=show_progress)
        for i, reason in sorted(errors.items()):
            logger.warning("cannot read %s: %s", paths[i], reason)
        return [Prediction(path, error=errors[i]) if i in errors else self._prediction(path, probs[i], top_k)
                for i, path in enumerate(paths)]

    def _prediction(self, source: str, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs)[:top_k]
        ranked = [(self.class_names[j], float(probs[j])) for j in order]
        return Prediction(source, ranked[0][0], ranked[0][1], ranked)

# ------------------------------------------------------------------ loading
KERAS_SUFFIXES = (".keras", ".h5")


def locate_model(path: str | os.PathLike) -> tuple[Path, str]:
    """``(model path, format)`` for a run/export folder, a SavedModel folder or a model file.

    Formats: ``keras``, ``savedmodel``, ``onnx``, ``tflite``.
    """
    path = Path(path)
    what = ("Pass a run directory (runs/NAME), its export/ folder, a SavedModel folder, "
            "or a .keras, .onnx or .tflite file.")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return path, "savedmodel"
        if (path / MODEL_FILE).exists():
            return path / MODEL_FILE, "keras"
        raise MissingFileError(f"No model in {path} (no {MODEL_FILE}, no saved_model.pb). {what}")
    if not path.exists():
        raise MissingFileError(f"No such model: {path}. {what}")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return path, "keras"
    if suffix in (".onnx", ".tflite"):
        return path, suffix[1:]
    raise ModelFormatError(f"Unknown model format {suffix or path.name!r}. {what}")


def _open_runtime(model_path: Path, fmt: str, safe_mode: bool):
    if fmt == "onnx":
        from transferlab.runtimes.exported import OnnxRuntime

        return OnnxRuntime(model_path)
    if fmt == "tflite":
        from transferlab.runtimes.exported import TFLiteRuntime

        return TFLiteRuntime(model_path)
    if fmt == "savedmodel":
        from transferlab.runtimes.exported import SavedModelRuntime

        return SavedModelRuntime(model_path)
    from transferlab._keras import keras
    from transferlab.runtimes.keras import KerasRuntime

    return KerasRuntime(keras.models.load_model(model_path, compile=False, safe_mode=safe_mode))


def _metadata_dirs(model_path: Path, fmt: str) -> list[Path]:
    """Folders that may describe the model, nearest first: its own, then the run above an export/."""
    folder = model_path if fmt == "savedmodel" else model_path.parent
    dirs = [folder] + ([folder.parent] if fmt == "savedmodel" else [])
    if dirs[-1].name == "export":
        dirs.append(dirs[-1].parent)
    return dirs


def load(path: str | os.PathLike, *, safe_mode: bool = True, cls: type[Predictor] | None = None) -> Predictor:
    """Load a classifier from any format transferlab writes.

    ``path`` is a run directory (its ``model.keras``), an ``export/`` folder, a ``.keras``/``.h5``
    file, a SavedModel folder, a ``.onnx`` file (ONNX Runtime) or a ``.tflite`` file (TFLite
    interpreter). ONNX and TFLite models load without importing TensorFlow.

    Class names and the resize come from the files next to the model, nearest first:
    ``labels.txt``, ``model_card.json`` (export folder), then the run's ``config.json``.
    ``safe_mode`` (Keras files only) stays on unless you trust the file: loading can run code from it.
    ``cls`` is the class to return (default :class:`Predictor`; :func:`transferlab.load` asks for
    :class:`transferlab.Classifier`).
    """
    model_path, fmt = locate_model(path)
    runtime = _open_runtime(model_path, fmt, safe_mode)
    dirs = _metadata_dirs(model_path, fmt)

    def nearest(name: str) -> Path | None:
        return next((d / name for d in dirs if (d / name).is_file()), None)

    labels_path, config_path = nearest(LABELS_FILE), nearest(CONFIG_FILE)
    card, metadata = read_json(nearest(MODEL_CARD_FILE)), read_json(config_path)
    if card:
        metadata["model_card"] = card
    num_classes = getattr(runtime, "num_classes", None)
    if labels_path:
        class_names = read_labels(labels_path)
    elif card.get("classes") or metadata.get("class_names"):
        class_names = card.get("classes") or metadata["class_names"]
    else:
        if not num_classes:
            raise ModelFormatError(f"Cannot tell how many classes {model_path} has: put its labels.txt next to it.")
        class_names = [f"class_{i}" for i in range(num_classes)]
        logger.warning("No labels.txt next to %s: classes are named class_0..class_%d.", model_path, num_classes - 1)
    if num_classes and len(class_names) != num_classes:
        raise ModelFormatError(f"{labels_path or 'The metadata'} lists {len(class_names)} classes but {model_path} "
                         f"outputs {num_classes}.")
    resize_dict = card.get("input", {}).get("resize") or metadata.get("resize")
    resize = ResizeConfig(**resize_dict) if resize_dict else ResizeConfig(size=runtime.input_size or 224)
    run_dir = config_path.parent if config_path else dirs[0]
    return (cls or Predictor)(runtime, class_names, resize, run_dir=run_dir, metadata=metadata)
