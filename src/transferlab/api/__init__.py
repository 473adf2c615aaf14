"""The one-call functions of transferlab (what the CLI commands call).

    clf = transferlab.train("photos/")                   # -> Classifier, run dir written
    clf = transferlab.load("runs/photos-20261126-101500")
    clf.predict(["a.jpg", "folder/"], top_k=3)
    transferlab.evaluate("runs/NAME", "other_labeled_folder/")
    transferlab.extract("photos/", ray="auto")           # fill the feature cache on a Ray cluster

Training imports TensorFlow; loading, predicting and evaluating an ONNX/TFLite model do not, so
:func:`train` and :func:`resume` are imported only when called.
"""

from __future__ import annotations

import os
from typing import Iterable

from transferlab.api.classifier import Classifier, load
from transferlab.inference import Prediction

__all__ = ["Classifier", "compare", "evaluate", "extract", "load", "predict", "resume", "train"]


def extract(data: str | os.PathLike, config=None, **kwargs):
    """Fill the feature cache for a dataset (optionally on Ray); see :func:`transferlab.api.extract.extract`."""
    from transferlab.api.extract import extract as _extract

    return _extract(data, config, **kwargs)


def train(data: str | os.PathLike, config=None, **kwargs) -> Classifier:
    """Train a classifier; see :func:`transferlab.api.training.train`.

    ``backbone="auto"`` compares the available backbones and head families first, and
    ``tune=TRIALS`` / ``tune_time="2m"`` searches the head's settings first: see
    :func:`transferlab.api.selection.train_selected`.
    """
    backbone = kwargs.get("backbone", getattr(config, "backbone", None))
    if backbone == "auto" or kwargs.get("tune") or kwargs.get("tune_time"):
        from transferlab.api.selection import train_selected

        return train_selected(data, config, **kwargs)
    from transferlab.api.training import train as _train

    return _train(data, config, **kwargs)


def compare(data: str | os.PathLike, backbones="available", **kwargs):
    """Cross-validated leaderboard of backbones x heads; see :func:`transferlab.api.selection.compare`."""
    from transferlab.api.selection import compare as _compare

    return _compare(data, backbones, **kwargs)


def resume(run_dir: str | os.PathLike, **kwargs) -> Classifier:
    """Continue an interrupted run; see :func:`transferlab.api.training.resume`."""
    from transferlab.api.training import resume as _resume

    return _resume(run_dir, **kwargs)


def evaluate(model: str | os.PathLike | Classifier, data: str | os.PathLike, *, safe_mode: bool = True,
             **kwargs) -> dict:
    """Evaluation report of a model (run dir, model file or Classifier) on a labeled folder/CSV."""
    clf = model if isinstance(model, Classifier) else load(model, safe_mode=safe_mode)
    return clf.evaluate(data, **kwargs)


def predict(model: str | os.PathLike | Classifier, inputs: str | os.PathLike | Iterable, *, safe_mode: bool = True,
            **kwargs) -> list[Prediction]:
    """Classify files, folders, globs, arrays or PIL images with a model (run dir, model file or Classifier).

    See :meth:`transferlab.inference.Predictor.predict_proba` for the accepted inputs and pixel values.
    """
    clf = model if isinstance(model, Classifier) else load(model, safe_mode=safe_mode)
    return clf.predict(inputs, **kwargs)
