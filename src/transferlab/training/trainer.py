"""``transferlab.train``: a folder of labeled images in, a run directory with a classifier out.

Two phases, as in ML.NET's Image Classification API: (1) bottleneck features of every image
through the frozen backbone, via the on-disk cache; (2) a head fitted on those features.
Fine-tuning (strategy "fine-tune") then trains the top of the backbone end to end on images.

Run directory (``runs/<name>/``)::

    model.keras            raw 0..255 RGB (N, S, S, 3) -> class probabilities; plain Keras loads it
    labels.txt             class names in output order
    config.json            every setting, the resolved backbone and resize, versions, data summary
    splits.csv             path,label,split,sha256 of every image used
    bad_files.txt          skipped files with reasons
    history.csv            per-epoch loss/accuracy (train and validation)
    metrics.json           evaluation report on the test split (validation split when no test)
    predictions.csv        per-image label, prediction and probabilities on that split
    confusion_matrix.png, training_curves.png
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from transferlab import __version__
from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.data.pipeline import ResizeConfig
from transferlab.evaluation.metrics import classification_report, format_summary
from transferlab.evaluation.plots import plot_confusion_matrix, plot_training_curves
from transferlab.features.cache import FeatureCache, default_cache_dir
from transferlab.features.extract import extract_features
from transferlab.inference import LABELS_FILE, MODEL_FILE, RUN_CONFIG, Classifier, KerasRuntime
from transferlab.training.config import TrainConfig
from transferlab.training.head import build_head, fit_head

logger = logging.getLogger("transferlab")


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, hint: str) -> Path:
    """Create ``runs_dir/name``; without a name, ``<hint>-<timestamp>``; never reuses a folder."""
    runs = Path(runs_dir)
    base = name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', hint).strip('-') or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"
    candidate, n = runs / base, 2
    while candidate.exists():
        if name:
            raise FileExistsError(f"Run directory {candidate} already exists. Choose another --name, "
                                  f"or continue it with --resume {candidate}.")
        candidate, n = runs / f"{base}-{n}", n + 1
    candidate.mkdir(parents=True)
    return candidate


def resize_for(config: TrainConfig, info) -> ResizeConfig:
    """The backbone's own evaluation resize unless the config overrides a part of it."""
    return ResizeConfig(
        size=info.input_size,
        mode=config.resize_mode or info.resize_mode,
        interpolation=config.interpolation or info.interpolation,
        crop_fraction=config.crop_fraction if config.crop_fraction is not None else info.crop_fraction,
    )


def feature_fingerprint(info, resize: ResizeConfig) -> dict:
    """Everything that changes a feature vector (the cache key besides the image bytes)."""
    from transferlab.backbones import weights_fingerprint

    return {
        "backbone": info.name,
        "weights": weights_fingerprint(info),
        "feature_layer": info.feature_layer,
        "input_size": resize.size,
        "resize": resize.to_dict(),
        "preprocess": info.preprocess,
    }


def assemble_classifier(backbone, head):
    """One Keras model: raw pixels -> backbone (preprocessing inside) -> head -> probabilities."""
    import keras

    size = backbone.input_shape[1]
    image = keras.Input((size, size, 3), name="image")
    probs = head(backbone(image))
    return keras.Model(image, probs, name="transferlab_classifier")


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"transferlab": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "python": platform.python_version()}


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = list(history)
    epochs = max((len(v) for v in history.values()), default=0)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch"] + keys)
        for e in range(epochs):
            writer.writerow([e + 1] + [history[k][e] if e < len(history[k]) else "" for k in keys])


def _extract_all(dataset: ImageDataset, splits: dict, backbone, info, resize, config, show_progress):
    cache = FeatureCache(config.cache_dir or default_cache_dir(), feature_fingerprint(info, resize))
    records = [r for s in ("train", "val", "test") for r in splits[s]]
    result = extract_features([r.path for r in records], [r.sha256 for r in records], backbone, resize, cache,
                              engine=config.engine, show_progress=show_progress)
    failed = set(result.failed)
    for row in sorted(failed):
        logger.warning("skipped %s: could not be read during feature extraction", records[row].path)
    arrays, start = {}, 0
    index = dataset.class_to_index
    for s in ("train", "val", "test"):
        rows = [i for i in range(start, start + len(splits[s])) if i not in failed]
        arrays[s] = (result.features[rows], np.array([index[records[i].label] for i in rows], dtype=np.int64),
                     [records[i] for i in rows])
        start += len(splits[s])
    return arrays, result, cache


def write_predictions(path: Path, records, labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> Path:
    """Per-image results of the evaluated split: ``path,label,predicted,confidence,p_<class>...``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "predicted", "confidence"] + [f"p_{c}" for c in class_names])
        for record, p in zip(records, probs):
            best = int(np.argmax(p))
            writer.writerow([record.path, record.label, class_names[best], f"{p[best]:.6f}"]
                            + [f"{v:.6f}" for v in p])
    return path


def train(data: str | os.PathLike, config: TrainConfig | None = None, *, show_progress: bool = True,
          **settings) -> Classifier:
    """Train a classifier on a labeled image folder (or CSV) and write a run directory.

    Args:
        data: folder of class subfolders, pre-split folder, or CSV of path,label.
        config: a :class:`TrainConfig`; keyword ``settings`` override its fields
            (``train("photos/", backbone="mobilenet_v2", epochs=30)``).

    Returns:
        The trained :class:`~transferlab.inference.Classifier`; ``clf.run_dir`` is the run directory
        and ``clf.metadata["metrics"]`` the evaluation report.
    """
    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    started = time.perf_counter()
    from transferlab.backbones import resolve_backbone

    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress)
    run_dir = new_run_dir(config.runs_dir, config.name, Path(data).stem)
    logger.info("Run directory: %s", run_dir)
    dataset.write_splits(run_dir / "splits.csv")
    dataset.write_bad_files(run_dir / "bad_files.txt")
    splits = {s: dataset.split(s) for s in ("train", "val", "test")}
    if not splits["train"]:
        raise ValueError("The training split is empty: add images or lower --val-fraction/--test-fraction.")

    backbone, info = resolve_backbone(config.backbone, weights=config.weights, input_size=config.image_size,
                                      feature_layer=config.feature_layer, preprocess=config.preprocess,
                                      unsafe=config.unsafe)
    resize = resize_for(config, info)
    logger.info("Backbone %s: %d px input, %d features from layer %s, preprocessing %s, resize %s",
                info.name, resize.size, info.feature_dim, info.feature_layer, info.preprocess, resize.mode)

    arrays, extraction, cache = _extract_all(dataset, splits, backbone, info, resize, config, show_progress)
    (x_train, y_train, _), (x_val, y_val, _), (x_test, y_test, _) = arrays["train"], arrays["val"], arrays["test"]

    import keras

    keras.utils.set_random_seed(config.seed)  # before building: initial weights are seeded too
    head = build_head(info.feature_dim, len(dataset.class_names), hidden_units=config.hidden_units,
                      dropout=config.dropout)
    head_start = time.perf_counter()
    history = fit_head(head, x_train, y_train, x_val, y_val, epochs=config.epochs, batch_size=config.batch_size,
                       learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                       class_weight=config.class_weight, patience=config.patience, seed=config.seed)
    head_seconds = time.perf_counter() - head_start
    logger.info("Head trained: %d epochs in %.1f s", len(history.get("loss", [])), head_seconds)

    eval_split = "test" if len(x_test) else "val"
    x_eval, y_eval, eval_records = arrays[eval_split]
    model = assemble_classifier(backbone, head)
    model.save(run_dir / MODEL_FILE)

    metrics = None
    if len(x_eval):
        probs = head.predict(x_eval, batch_size=256, verbose=0)
        metrics = classification_report(y_eval, probs, dataset.class_names)
        metrics["split"] = eval_split
        if eval_split == "val":
            metrics["note"] = "no test split: metrics are on the validation split that drove early stopping"
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        write_predictions(run_dir / "predictions.csv", eval_records, y_eval, probs, dataset.class_names)
        plot_confusion_matrix(np.array(metrics["confusion_matrix"]), dataset.class_names,
                              run_dir / "confusion_matrix.png", title=f"Confusion matrix ({eval_split} split)")
    _write_history(run_dir / "history.csv", history)
    plot_training_curves(history, run_dir / "training_curves.png")
    (run_dir / LABELS_FILE).write_text("\n".join(dataset.class_names) + "\n", encoding="utf-8")

    metadata = {
        "config": config.to_dict(),
        "class_names": dataset.class_names,
        "resize": resize.to_dict(),
        "backbone": info.to_dict(),
        "data": {"source": str(Path(data).resolve()), "layout": dataset.layout,
                 "counts": {s: dataset.counts(s) for s in ("train", "val", "test")},
                 "bad_files": len(dataset.bad_files)},
        "feature_cache": {"directory": str(cache.directory), "hits": extraction.hits,
                          "misses": extraction.misses, "engine": extraction.engine,
                          "extract_seconds": round(extraction.seconds, 3)},
        "timing": {"total_seconds": round(time.perf_counter() - started, 3), "head_seconds": round(head_seconds, 3)},
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / RUN_CONFIG).write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")
    metadata["metrics"] = metrics
    clf = Classifier(KerasRuntime(model), dataset.class_names, resize, run_dir=run_dir, metadata=metadata)
    if metrics:
        logger.info("\n%s", format_summary(metrics))
    return clf
