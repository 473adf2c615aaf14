"""Evaluate a classifier on labeled data: metrics, per-image results and, on request, report.html."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from transferlab import rundir
from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.errors import ConfigError
from transferlab.evaluation.artifacts import write_evaluation
from transferlab.evaluation.metrics import classification_report
from transferlab.evaluation.reporting import write_report_safely

logger = logging.getLogger("transferlab")


def evaluate_predictor(clf, data: str | os.PathLike | ImageDataset, *, batch_size: int = 32,
                       split: str | None = None, show_progress: bool = True,
                       out_dir: str | os.PathLike | None = None) -> dict:
    """Accuracy, loss, per-class precision/recall/F1 and confusion matrix of ``clf`` on labeled data.

    Args:
        clf: a :class:`~transferlab.inference.Predictor` (any runtime).
        data: a labeled folder/CSV (every split is used unless ``split`` names one) or an
            :class:`~transferlab.data.ImageDataset`.
        split: "train", "val" or "test": only that split of ``data``.
        out_dir: also write metrics.json, predictions.csv, confusion matrices and report.html
            (mistakes gallery, with Grad-CAM for Keras models) there.

    Returns:
        The :func:`~transferlab.evaluation.metrics.classification_report` dict, plus
        ``skipped_files`` (unreadable images), ``data`` and ``split``.
    """
    dataset = data if isinstance(data, ImageDataset) else load_dataset(data, show_progress=show_progress)
    records = dataset.split(split) if split else dataset.records
    unknown = sorted({r.label for r in records} - set(clf.class_names))
    if unknown:
        raise ConfigError(f"The data has classes the model does not know: {', '.join(unknown)}. "
                          f"Model classes: {', '.join(clf.class_names)}.")
    index = {name: i for i, name in enumerate(clf.class_names)}
    paths = [r.path for r in records]
    labels = np.array([index[r.label] for r in records])
    probs, errors = clf.predict_files(paths, batch_size=batch_size, show_progress=show_progress, desc="Evaluating")
    keep = np.array([i not in errors for i in range(len(paths))], dtype=bool)
    report = classification_report(labels[keep], probs[keep], clf.class_names)
    report["skipped_files"] = [paths[i] for i in np.flatnonzero(~keep)]
    report["data"] = str(dataset.root)
    if split:
        report["split"] = split
    if out_dir is not None:
        out = Path(out_dir)
        kept = [r for r, k in zip(records, keep) if k]
        figures = write_evaluation(out, report, [r.path for r in kept], [r.label for r in kept], probs[keep],
                                   clf.class_names, background=True)
        rundir.write_labels(out / rundir.LABELS_FILE, clf.class_names)
        write_report_safely(out, clf, figures=figures)
    return report
