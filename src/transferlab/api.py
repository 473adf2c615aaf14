"""The one-call functions of transferlab (what the CLI commands call).

    clf = transferlab.train("photos/")                   # -> Classifier, run dir written
    clf = transferlab.load("runs/photos-20261126-101500")
    clf.predict(["a.jpg", "folder/"], top_k=3)
    transferlab.evaluate("runs/NAME", "other_labeled_folder/")
"""

from __future__ import annotations

import os
from typing import Iterable

from transferlab.inference import Classifier, Prediction, load
from transferlab.training.trainer import resume, train

__all__ = ["Classifier", "evaluate", "load", "predict", "resume", "train"]


def evaluate(model: str | os.PathLike | Classifier, data: str | os.PathLike, **kwargs) -> dict:
    """Evaluation report of a model (run dir, model file or Classifier) on a labeled folder/CSV."""
    clf = model if isinstance(model, Classifier) else load(model)
    return clf.evaluate(data, **kwargs)


def predict(model: str | os.PathLike | Classifier, inputs: str | os.PathLike | Iterable, **kwargs) -> list[Prediction]:
    """Classify files, folders, globs or arrays with a model (run dir, model file or Classifier)."""
    clf = model if isinstance(model, Classifier) else load(model)
    return clf.predict(inputs, **kwargs)
