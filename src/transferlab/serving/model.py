"""The model behind ``transferlab serve``: which file to run, its name, decoding and answers.

Only ONNX and TFLite models are served, through :func:`transferlab.load` (ONNX Runtime or
LiteRT): a service process never imports TensorFlow, so it starts in about a second and stays
small. Request bytes are decoded and resized exactly as in training
(:mod:`transferlab.data.decode`), never opened as paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from transferlab.data.decode import ImageDecodeError
from transferlab.errors import ConfigError, MissingFileError, ModelFormatError

# Looked up in this order in a run's export/ folder (or an export folder itself).
SERVABLE_FILES = ("model.onnx", "model.tflite", "model_int8.tflite")
SERVABLE_SUFFIXES = (".onnx", ".tflite")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_model(path: str | os.PathLike) -> Path:
    """The model file to serve for a run directory, an export folder, a ``.onnx`` or a ``.tflite``.

    Raises:
        MissingFileError: nothing servable there (the message says how to export one).
        ModelFormatError: a file of another format (Keras, SavedModel would need TensorFlow).
    """
    p = Path(path)
    export_hint = "Export one with `transferlab export RUN --format onnx` (or tflite)."
    if p.is_dir():
        folder = p / "export" if (p / "export").is_dir() else p
        for name in SERVABLE_FILES:
            if (folder / name).is_file():
                return folder / name
        raise MissingFileError(f"No {', '.join(SERVABLE_FILES)} in {folder}. {export_hint}")
    if not p.exists():
        raise MissingFileError(f"No such model: {p}. Pass a run directory, its export/ folder, "
                                "or a .onnx or .tflite file.")
    if p.suffix.lower() not in SERVABLE_SUFFIXES:
        raise ModelFormatError(f"transferlab serve runs .onnx and .tflite models (ONNX Runtime / LiteRT, without "
                         f"TensorFlow), not {p.name!r}. {export_hint}")
    return p


def default_name(model_file: Path, card: dict | None = None) -> str:
    """The run directory's name for a file in RUN/export/, else the card's name, else the file stem."""
    folder = model_file.parent
    if folder.name == "export" and folder.parent.name:
        raw = folder.parent.name
    else:
        raw = (card or {}).get("name") or model_file.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(raw)).strip("-.") or "model"
    return name[:128]


def check_name(name: str) -> str:
    """``name`` if it can be a URL path segment (``/v1/models/NAME``); ConfigError otherwise."""
    if not _NAME.match(name):
        raise ConfigError(f"Model name {name!r} must be 1-128 letters, digits, '.', '_' or '-' "
                         "(it appears in /v1/models/NAME).")
    return name


class ServedModel:
    """A loaded classifier with what the service needs: name, decode, answers, metadata.

    Attributes:
        classifier: the :class:`~transferlab.inference.Predictor` (ONNX/TFLite runtime).
        name: the model's name in ``/v1/models/NAME``.
        path: the model file.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        from transferlab.inference import load

        self.path = resolve_model(path)
        self.classifier = load(self.path)
        self.card: dict = self.classifier.metadata.get("model_card", {})
        self.name = check_name(name) if name else default_name(self.path, self.card)
        self.class_names: list[str] = list(self.classifier.class_names)
        self.size: int = self.classifier.resize.size

    @property
    def runtime(self):
        """``runtime(uint8 (N, S, S, 3)) -> float32 (N, C)``."""
        return self.classifier.runtime

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> uint8 (S, S, 3), decoded and resized as in training.

        Raises:
            ImageDecodeError: not an image, truncated, empty, unsupported format.
        """
        if not isinstance(data, (bytes, bytearray)):
            # Only bytes from the request: a string here would be read as a path.
            raise TypeError(f"decode takes image bytes, not {type(data).__name__}")
        if not data:
            raise ImageDecodeError(None, "empty file (0 bytes)")
        return self.classifier.resize.load(bytes(data))

    def answers(self, probs: np.ndarray, top_k: int, sources: list[str | None]) -> list[dict]:
        """One ``{"label", "probability", "top_k": [{"label", "probability"}], "source"}`` per row."""
        k = max(1, min(top_k, len(self.class_names)))
        out = []
        for row, source in zip(probs, sources):
            order = np.argsort(-row, kind="stable")[:k]
            ranked = [{"label": self.class_names[j], "probability": float(row[j])} for j in order]
            out.append({"label": ranked[0]["label"], "probability": ranked[0]["probability"],
                        "top_k": ranked, "source": source})
        return out

    def metadata(self) -> dict:
        """Labels, the input contract a client must meet, and the model card (if any)."""
        resize = self.classifier.resize
        runtime = self.runtime
        return {
            "name": self.name,
            "file": self.path.name,
            "runtime": runtime.name,
            "classes": self.class_names,
            "num_classes": len(self.class_names),
            "input": {"name": "image", "dtype": getattr(runtime, "input_dtype", "uint8"),
                      "shape": [None, self.size, self.size, 3], "layout": "NHWC", "color": "RGB",
                      "resize": resize.to_dict(),
                      "note": "POST encoded images (JPEG, PNG, ...): the service decodes and resizes them. "
                              "TF Serving numeric instances must already be resized to this shape."},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(self.class_names)]},
            "model_card": self.card or None,
        }
