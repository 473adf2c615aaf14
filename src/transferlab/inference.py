"""Predict with a trained model: the ``Predictor`` object and ``load``.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from transferlab.data.arrays import images_to_batch, is_image_input
from transferlab.data.decode import ImageDecodeError, ResizeConfig
from transferlab.data.files import describe, display_path
from transferlab.data.loader import iter_file_batches
from transferlab.data.sources import walk_entries
from transferlab.errors import ConfigError, MissingFileError, ModelFormatError
from transferlab.progress import progress_bar
from transferlab.rundir import CONFIG_FILE, LABELS_FILE, MODEL_CARD_FILE, MODEL_FILE, read_json, read_labels
from transferlab.training.operating_point import UNCERTAIN, DecisionRule, decide

logger = logging.getLogger("transferlab")


@dataclass
class Prediction:
    """The answer for one image: predicted class and its probability, the top-k, or the error.

    ``predicted`` is the class the model's decision rule gives (the argmax, or the operating
    point's answer when the run has one). ``outcome`` is what to act on: ``predicted``, or
    "uncertain" when the top probability is below the rule's ``uncertain_below`` (a person should
    look; ``predicted`` still holds the model's answer). None for unreadable files.

    The vocabulary is the run's ``predictions.csv``'s: ``label`` is a true class, ``predicted``
    the model's answer. ``label`` is kept here as a read-only alias of ``predicted`` for code
    written before the rename.
    """

    source: str
    predicted: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    outcome: str | None = None

    @property
    def label(self) -> str | None:
        """The predicted class (old name of :attr:`predicted`)."""
        return self.predicted

    def to_dict(self) -> dict:
        """``{"source", "predicted", "probability", "top_k": [{"class", "probability"}], "error", "outcome"}``."""
        data = asdict(self)
        data["top_k"] = [{"class": name, "probability": p} for name, p in self.top_k]
        return data


# ------------------------------------------------------------------ inputs
# Decoder verdicts (:mod:`transferlab.data.decode`) meaning "not an image file at all", not "a broken image".
NOT_IMAGE_REASONS = ("not an image", "unsupported image format")


def _expand(items) -> list[tuple[str, str | None, bool]]:
    """:func:`expand_entries` plus whether each path was named (a file or a glob match: True)
    or found inside a folder (False)."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    entries: list[tuple[str, str | None, bool]] = []
    for item in items:
        text = os.fspath(item)
        found = describe(text)
        if found.kind == "dir":
            entries.extend((str(f), problem, False) for f, problem in walk_entries(Path(text)))
        elif found.kind == "file" or os.path.lexists(text):
            entries.append((text, found.reason or None, True))
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MissingFileError(f"No file matches the pattern {display_path(text)!r}.")
            entries.extend((m, describe(m).reason or None, True) for m in matches if describe(m).kind != "dir")
        else:
            raise MissingFileError(f"No such file or folder: {display_path(text)}")
    return entries


def expand_entries(items: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files, folders (searched recursively, hidden files skipped) and globs -> ``(path, problem)``.

    ``problem`` is None for a regular file, else why the path cannot be read (a FIFO, a link
    that loops or points nowhere, ...: see :func:`transferlab.data.sources.walk_entries`); such
    paths are never opened. A named path that is not there raises FileNotFoundError.
    """
    return [(path, problem) for path, problem, _ in _expand(items)]


def expand_paths(items: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The readable regular files of :func:`expand_entries`, in order; the others are logged."""
    files = []
    for path, problem in expand_entries(items):
        if problem is None:
            files.append(path)
        else:
            logger.warning("skipped %s: %s", display_path(path), problem)
    return files


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
        # The operating point / reject option saved with the run or export (None: plain argmax).
        self.decision = DecisionRule.from_metadata(self.metadata)

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
        """Class probabilities (N, C), columns in :attr:`class_names` order.

        Args:
            images: paths (files, folders searched recursively, globs) or pixels:

                * a NumPy array (H, W, 3) or a batch (N, H, W, 3); grayscale (H, W) / (N, H, W) /
                  (..., 1) is expanded to RGB, RGBA (..., 4) composited over white, as for files.
                  A 3-D array whose last axis is 1, 3 or 4 is one image, otherwise a grayscale batch;
                * a PIL image, or a list of arrays and PIL images, of any sizes;
                * a list of paths. A list mixing paths and pixels is refused (ConfigError).

                Pixel values: uint8 0..255; other integers must lie in 0..255; floats are 0..1
                when every value of the input lies in [0, 1] (the NumPy/Keras ``x / 255``
                convention), else 0..255. Negative floats or values above 255 (normalised
                inputs) raise ConfigError. Every image is resized like a training file
                (:attr:`resize`), so any size works.
            batch_size: images per model call (default 32).

        Returns:
            float32 (N, C). An empty input gives an empty (0, C) array. Files found in folders
            that are not images at all (``notes.txt``) are skipped with a logged warning; any
            other unreadable file raises :class:`~transferlab.data.decode.ImageDecodeError`.
        """
        if is_image_input(images):
            batch = images_to_batch(images, self.resize)
            return self._run_batches(batch, batch_size)
        paths, probs, errors = self._predict_paths(images, batch_size, show_progress=False)
        if errors:
            i = min(errors)
            raise ImageDecodeError(paths[i], errors[i])
        return probs

    def _run_batches(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        parts = [self.runtime(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.class_names)), np.float32)

    def _predict_paths(self, images, batch_size: int,
                       show_progress: bool) -> tuple[list[str], np.ndarray, dict[int, str]]:
        """Expand, read and run paths: ``(paths, probabilities (N, C), {index: reason})``.

        Files found inside folders that are not images at all (see :data:`NOT_IMAGE_REASONS`)
        are left out with a logged warning, as training leaves them out; named files never are.
        """
        entries = _expand(images)
        readable = [i for i, (_, problem, _) in enumerate(entries) if problem is None]
        probs, read_errors = self.predict_files([entries[i][0] for i in readable], batch_size=batch_size,
                                                show_progress=show_progress)
        errors = {i: problem for i, (_, problem, _) in enumerate(entries) if problem is not None}
        errors.update({readable[j]: reason for j, reason in read_errors.items()})
        full = np.zeros((len(entries), len(self.class_names)), np.float32)
        full[readable] = probs
        skipped = {i for i, reason in errors.items() if not entries[i][2] and reason.startswith(NOT_IMAGE_REASONS)}
        for i in sorted(skipped):
            logger.warning("skipped %s: %s", display_path(entries[i][0]), errors[i])
        keep = [i for i in range(len(entries)) if i not in skipped]
        kept_errors = {k: errors[i] for k, i in enumerate(keep) if i in errors}
        return [entries[i][0] for i in keep], full[keep], kept_errors

    def predict(self, images, *, top_k: int = 1, batch_size: int = 32,
                show_progress: bool = False) -> list[Prediction]:
        """Classify images: one :class:`Prediction` per image, in input order.

        Args:
            images: paths, folders, globs, arrays or PIL images, as for :meth:`predict_proba`.
                Files inside folders that are not images at all (by content: ``notes.txt``,
                ``Thumbs.db``) are skipped with a logged warning, as in training; a file named
                explicitly that cannot be read gets a Prediction with ``error`` set.
            top_k: classes ranked in ``Prediction.top_k`` (default 1); at least 1 (ConfigError
                otherwise), more than the model's classes gives all of them.
            batch_size: images per model call (default 32).
            show_progress: a progress bar over the files.

        Returns:
            Predictions; ``source`` is the path, ``array[i]`` for arrays and PIL images.
        """
        top_k = self._check_top_k(top_k)
        if is_image_input(images):
            probs = self.predict_proba(images, batch_size=batch_size)
            return [self._prediction(f"array[{i}]", p, top_k) for i, p in enumerate(probs)]
        paths, probs, errors = self._predict_paths(images, batch_size, show_progress)
        for i, reason in sorted(errors.items()):
            logger.warning("cannot read %s: %s", display_path(paths[i]), reason)
        return [Prediction(path, error=errors[i]) if i in errors else self._prediction(path, probs[i], top_k)
                for i, path in enumerate(paths)]

    def predict_labels(self, images, *, batch_size: int = 32, outcome: bool = False) -> np.ndarray:
        """Predicted class names as a NumPy array of str (N,), as scikit-learn's ``predict`` gives.

        The same answers as :meth:`predict` (the run's decision rule applies); with
        ``outcome=True`` "uncertain" where the rule's reject option says a person should look.
        Inputs as for :meth:`predict_proba`; any unreadable file raises.
        """
        probs = self.predict_proba(images, batch_size=batch_size)
        if not len(probs):
            return np.array([], dtype=str)
        labels, uncertain = decide(probs, self.class_names, self.decision)
        names = np.array(self.class_names)[np.asarray(labels, dtype=int)]
        if outcome:
            names = np.where(np.asarray(uncertain, dtype=bool), UNCERTAIN, names)
        return names.astype(str)

    def _check_top_k(self, top_k: int) -> int:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError(f"top_k must be a whole number of at least 1, got {top_k!r}.")
        return min(int(top_k), len(self.class_names))

    def _prediction(self, source: str, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs)[:top_k]
        ranked = [(self.class_names[j], float(probs[j])) for j in order]
        labels, uncertain = decide(probs[None], self.class_names, self.decision)
        label = self.class_names[int(labels[0])]
        return Prediction(source, label, float(probs[int(labels[0])]), ranked,
                          outcome=UNCERTAIN if uncertain[0] else label)

# ------------------------------------------------------------------ loading
KERAS_SUFFIXES = (".keras", ".h5")


def _embedded(runtime, model_path: Path) -> tuple[list[str] | None, dict | None]:
    """Class names and resize written inside the model file (ONNX/TFLite metadata), if any."""
    from transferlab.runtimes.metadata import METADATA_CLASSES, METADATA_RESIZE

    found = getattr(runtime, "metadata", None) or {}
    try:
        classes = json.loads(found[METADATA_CLASSES]) if METADATA_CLASSES in found else None
        resize = json.loads(found[METADATA_RESIZE]) if METADATA_RESIZE in found else None
    except ValueError:
        logger.warning("%s has unreadable transferlab metadata: ignored.", model_path)
        return None, None
    return classes, resize


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


def _open_runtime(model_path: Path, fmt: str, safe_mode: bool, run_config: dict | None = None):
    if fmt == "onnx":
        from transferlab.runtimes.exported import OnnxRuntime

        return OnnxRuntime(model_path)
    if fmt == "tflite":
        from transferlab.runtimes.exported import TFLiteRuntime

        return TFLiteRuntime(model_path)
    if fmt == "savedmodel":
        from transferlab.runtimes.exported import SavedModelRuntime

        return SavedModelRuntime(model_path)
    from transferlab.backbones.trusted import load_run_model
    from transferlab.runtimes.keras import KerasRuntime

    # The run's own SavedModel backbone loads in safe mode when its content hash still matches.
    return KerasRuntime(load_run_model(model_path, safe_mode=safe_mode, run_config=run_config))


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
    A run trained on a SavedModel backbone loads in safe mode while that SavedModel is unchanged
    (content hash in the run's ``config.json``; see :mod:`transferlab.backbones.trusted`).
    ``cls`` is the class to return (default :class:`Predictor`; :func:`transferlab.load` asks for
    :class:`transferlab.Classifier`).
    """
    model_path, fmt = locate_model(path)
    dirs = _metadata_dirs(model_path, fmt)

    def nearest(name: str) -> Path | None:
        return next((d / name for d in dirs if (d / name).is_file()), None)

    labels_path, config_path = nearest(LABELS_FILE), nearest(CONFIG_FILE)
    card, metadata = read_json(nearest(MODEL_CARD_FILE)), read_json(config_path)
    runtime = _open_runtime(model_path, fmt, safe_mode, metadata)
    if card:
        metadata["model_card"] = card
    embedded_classes, embedded_resize = _embedded(runtime, model_path)
    num_classes = getattr(runtime, "num_classes", None)
    if embedded_classes:  # written into the file at export: travels with it, so it comes first
        class_names = embedded_classes
        if labels_path and read_labels(labels_path) != class_names:
            logger.warning("%s differs from the labels inside %s: using the model's own.", labels_path, model_path)
    elif labels_path:
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
    resize_dict = embedded_resize or card.get("input", {}).get("resize") or metadata.get("resize")
    if resize_dict:
        resize = ResizeConfig(**resize_dict)
    else:
        resize = ResizeConfig(size=runtime.input_size or 224)
        logger.warning("%s does not say how images were resized in training (no resize inside it, no "
                       "model_card.json or config.json beside it): assuming %s to %d px, which can change its "
                       "predictions. Re-export it with `transferlab export RUN`, or keep model_card.json beside it.",
                       model_path, resize.mode, resize.size)
    run_dir = config_path.parent if config_path else dirs[0]
    return (cls or Predictor)(runtime, class_names, resize, run_dir=run_dir, metadata=metadata)
