"""Evaluate a classifier on labeled data: metrics, per-image results and, on request, report.html."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from transferlab import rundir
from transferlab._paths import display_path
from transferlab.data.dataset import ImageDataset, ImageRecord, load_dataset
from transferlab.errors import ConfigError, closest_name_hint
from transferlab.evaluation.artifacts import operating_point_outputs, write_evaluation
from transferlab.evaluation.metrics import classification_report
from transferlab.evaluation.reporting import write_report_safely

logger = logging.getLogger("transferlab")


SPLITS = ("train", "val", "test")


def training_hashes(run_dir: str | os.PathLike | None) -> set[str]:
    """SHA-256 of the images a run trained on (its ``splits.csv``, split "train"); empty if unknown."""
    path = rundir.RunDir(run_dir).splits if run_dir else None
    if path is None or not path.is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["sha256"] for row in csv.DictReader(fh) if row.get("split") == "train" and row.get("sha256")}


def select_records(dataset: ImageDataset, split: str | None, seen: set[str]) -> tuple[list[ImageRecord], int]:
    """The records to evaluate and how many of them (before leaving any out) the model trained on.

    ``split``: None leaves out the images in ``seen`` (the run's training images), "all" keeps
    every image, "train"/"val"/"test" keeps that split of the data (seen images included).
    """
    if split not in (None, "all", *SPLITS):
        raise ConfigError(f"Unknown split {split!r}: choose all, train, val or test (or none: held-out images).")
    if split in SPLITS:
        if not dataset.has_split(split):
            present = [s for s in SPLITS if dataset.has_split(s)]
            other = "val" if "val" in present else "all"  # records exist, so some split is present
            raise ConfigError(f"This dataset ({display_path(dataset.root)}) has no {split} split (its splits: "
                              f"{', '.join(present)}); use --split {other} (split={other!r}).")
        records = dataset.split(split)
    else:
        records = dataset.records
    n_seen = sum(r.sha256 in seen for r in records)
    if split is None and n_seen:
        if n_seen == len(records):
            raise ConfigError(f"All {n_seen} images of {display_path(dataset.root)} were used to train this model, "
                              "so they say nothing about new images: evaluate other data, or pass --split all "
                              "(split='all') to evaluate them anyway.")
        records = [r for r in records if r.sha256 not in seen]
    return records, n_seen


def evaluate_predictor(clf, data: str | os.PathLike | ImageDataset, *, batch_size: int = 32,
                       split: str | None = None, show_progress: bool = True,
                       out_dir: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | None = None) -> dict:
    """Accuracy, loss, per-class precision/recall/F1 and confusion matrix of ``clf`` on labeled data.

    Images the model was trained on (by content: the SHA-256 in its run's ``splits.csv``) would
    flatter every figure, so by default they are left out: on the training data itself only the
    held-out images (the run's validation and test images, and any new ones) are evaluated.

    Args:
        clf: a :class:`~transferlab.inference.Predictor` (any runtime).
        data: a labeled folder/CSV or an :class:`~transferlab.data.ImageDataset`. One class is
            enough (evaluating a folder of "all of these are defects" is valid).
        split: None (default): every image of ``data`` except the model's training images.
            "all": every image, training images included. "train", "val" or "test": only that
            split of ``data`` (its own split: the folders of a pre-split dataset, the CSV's
            ``split`` column, or the hash split of class folders with the default fractions),
            training images included; ConfigError when ``data`` has no such split.
        out_dir: also write metrics.json, predictions.csv, confusion matrices and report.html
            (mistakes gallery, with Grad-CAM for Keras models) there.
        cache_dir: where file checks are remembered (default: ``$TRANSFERLAB_CACHE_DIR`` or the
            user cache directory).

    Returns:
        The :func:`~transferlab.evaluation.metrics.classification_report` dict, plus
        ``skipped_files`` (unreadable images), ``data``, ``split`` (when train/val/test),
        ``seen_in_training`` (how many images of the selected data the model trained on) and
        ``seen_in_training_included`` (whether they are in the figures).
    """
    if isinstance(data, ImageDataset):
        dataset = data
    else:
        # strict=False: a single class is fine for evaluation; only training needs two.
        dataset = load_dataset(data, show_progress=show_progress, strict=False, cache_dir=cache_dir)
    if not dataset.records:
        raise ConfigError(f"{display_path(dataset.root)} has no usable image to evaluate"
                          + (f" ({len(dataset.bad_files)} unreadable file(s))." if dataset.bad_files else "."))
    records, n_seen = select_records(dataset, split, training_hashes(clf.run_dir))
    unknown = sorted({r.label for r in records} - set(clf.class_names))
    if unknown:
        hints = "".join(closest_name_hint(name, clf.class_names) for name in unknown[:3])
        raise ConfigError(f"The data has classes the model does not know: {', '.join(unknown)}.{hints} "
                          f"Model classes: {', '.join(clf.class_names)}.")
    index = {name: i for i, name in enumerate(clf.class_names)}
    paths = [r.path for r in records]
    labels = np.array([index[r.label] for r in records])
    probs, errors = clf.predict_files(paths, batch_size=batch_size, show_progress=show_progress, desc="Evaluating")
    keep = np.array([i not in errors for i in range(len(paths))], dtype=bool)
    report = classification_report(labels[keep], probs[keep], clf.class_names)
    report["skipped_files"] = [display_path(paths[i]) for i in np.flatnonzero(~keep)]
    report["data"] = str(dataset.root)
    if split in SPLITS:  # "all" is not a split of the data: figures are titled as for the default
        report["split"] = split
    report["seen_in_training"] = n_seen
    report["seen_in_training_included"] = split is not None
    if n_seen and split is None:
        logger.info("left out %d image(s) the model was trained on; evaluated %d held-out image(s)",
                    n_seen, len(records))
    jobs = []
    decision = getattr(clf, "decision", None)
    if decision is not None and decision.active and keep.any():  # the figures at the saved operating point
        report["operating_point"], jobs = operating_point_outputs(out_dir or ".", decision, probs[keep], labels[keep],
                                                                  clf.class_names, report.get("split", "evaluated"))
    if out_dir is not None:
        out = Path(out_dir)
        kept = [r for r, k in zip(records, keep) if k]
        figures = write_evaluation(out, report, [r.path for r in kept], [r.label for r in kept], probs[keep],
                                   clf.class_names, extra_figures=jobs, background=True)
        rundir.write_labels(out / rundir.LABELS_FILE, clf.class_names)
        write_report_safely(out, clf, figures=figures)
    return report
