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
    confusion_matrix.png, confusion_matrix_normalized.png, training_curves.png
    report.html            all of the above on one page, with the mistakes and Grad-CAM
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from transferlab import __version__
from transferlab._paths import default_cache_dir
from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.data.pipeline import ResizeConfig
from transferlab.evaluation.metrics import classification_report, format_summary
from transferlab.evaluation.artifacts import write_evaluation
from transferlab.evaluation.figures import FigureJob, PendingFigures, draw_figures
from transferlab.features.cache import FeatureCache
from transferlab.features.extract import extract_features
from transferlab.inference import LABELS_FILE, MODEL_FILE, RUN_CONFIG, Classifier, KerasRuntime
from transferlab.training.checkpoint import (
    CHECKPOINT_DIR,
    EpochCheckpoint,
    ResumableEarlyStopping,
    load_weights,
    read_state,
    save_weights,
    stop_on_sigint,
    write_json_atomic,
)
from transferlab.training.callbacks import EpochProgress
from transferlab.training.config import TrainConfig
from transferlab.training.head import build_head, fit_head, predict_head

logger = logging.getLogger("transferlab")

# Head epochs take milliseconds: checkpoint the head at most this often (and after its last epoch).
HEAD_CHECKPOINT_INTERVAL_S = 5.0


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


def _write_history(path: Path, history: dict[str, list[float]], boundaries: list[int] = ()) -> None:
    keys = sorted(k for k in history if k != "learning_rate") + (["learning_rate"] if "learning_rate" in history else [])
    epochs = max((len(v) for v in history.values()), default=0)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "phase"] + keys)
        for e in range(epochs):
            phase = "fine-tune" if boundaries and e >= boundaries[0] else "head"
            writer.writerow([e + 1, phase] + [history[k][e] if e < len(history[k]) else "" for k in keys])


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


def _train_head(head, arrays, config: TrainConfig, run_dir: Path, state: dict | None, show_progress: bool):
    """Phase 1 head fit with per-epoch checkpoints; continues a checkpointed head when resuming."""
    (x_train, y_train, _), (x_val, y_val, _) = arrays["train"], arrays["val"]
    early = ResumableEarlyStopping(run_dir, config.patience, (state or {}).get("early_stopping")) \
        if len(x_val) and config.patience > 0 else None
    checkpoint = EpochCheckpoint(run_dir, "head", config.seed, (state or {}).get("history"), early_stopping=early,
                                 min_interval_s=HEAD_CHECKPOINT_INTERVAL_S)
    with stop_on_sigint(checkpoint):
        fit_head(head, x_train, y_train, x_val, y_val, epochs=config.epochs, batch_size=config.batch_size,
                 learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                 weight_decay=config.weight_decay, class_weight=config.class_weight, patience=config.patience, seed=config.seed,
                 callbacks=[checkpoint, EpochProgress("Training head", enabled=show_progress),
                            *extra_callbacks(run_dir, config)], early_stopping=early,
                 initial_epoch=(state or {}).get("epochs_done", 0),
                 restore_state=run_dir / CHECKPOINT_DIR / "state.npz" if state else None)
    return checkpoint.history


def _fine_tune_phase(model, arrays, resize, config: TrainConfig, run_dir: Path, state: dict | None,
                     class_names: list[str], head_history: dict, show_progress: bool) -> tuple[dict[str, list[float]], bool]:
    """Phase 2: unfreeze the top of the backbone and train on augmented images."""
    from transferlab.training.finetune import fine_tune, schedule_callbacks

    train_records, val_records = arrays["train"][2], arrays["val"][2]
    index = {name: i for i, name in enumerate(class_names)}
    early = ResumableEarlyStopping(run_dir, config.patience, (state or {}).get("early_stopping")) \
        if val_records and config.patience > 0 else None
    plateau = next(iter(schedule_callbacks(config.schedule, config.patience)), None)
    checkpoint = EpochCheckpoint(run_dir, "fine-tune", config.seed, (state or {}).get("history"),
                                 early_stopping=early, plateau=plateau, plateau_state=(state or {}).get("plateau"),
                                 extra_state={"head_history": head_history})
    callbacks = [c for c in (early, plateau) if c is not None] + [
        checkpoint, EpochProgress("Fine-tuning", enabled=show_progress), *extra_callbacks(run_dir, config)]
    with stop_on_sigint(checkpoint):
        fine_tune(model, ([r.path for r in train_records], [index[r.label] for r in train_records]),
                  ([r.path for r in val_records], [index[r.label] for r in val_records]), resize, config,
                  num_classes=len(class_names), callbacks=callbacks,
                  initial_epoch=(state or {}).get("epochs_done", 0),
                  restore_state=run_dir / CHECKPOINT_DIR / "state.npz" if state else None, guard=early)
    improved = not (early is not None and early.kept_baseline)
    if not improved:
        logger.info("Fine-tuning did not improve the validation loss (best %.4f): keeping the weights it started "
                    "from.", early.best)
    return checkpoint.history, improved


def extra_callbacks(run_dir: Path, config: TrainConfig) -> list:
    """Optional callbacks (TensorBoard) named in the config."""
    from transferlab.training.callbacks import tensorboard_callback

    return [tensorboard_callback(run_dir)] if config.tensorboard else []


def _start_metadata(config: TrainConfig, data, dataset: ImageDataset, info, resize: ResizeConfig, note: str) -> dict:
    return {
        "status": "running",
        "config": config.to_dict(),
        "class_names": dataset.class_names,
        "resize": resize.to_dict(),
        "backbone": info.to_dict(),
        "warm_start": note or None,
        "data": {"source": str(Path(data).resolve()), "layout": dataset.layout,
                 "counts": {s: dataset.counts(s) for s in ("train", "val", "test")},
                 "bad_files": len(dataset.bad_files)},
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(data: str | os.PathLike, config: TrainConfig | None = None, *, show_progress: bool = True,
          from_model: str | os.PathLike | None = None, extra_files: dict[str, bytes] | None = None,
          **settings) -> Classifier:
    """Train a classifier on a labeled image folder (or CSV) and write a run directory.

    Args:
        data: folder of class subfolders, pre-split folder, or CSV of path,label.
        config: a :class:`TrainConfig`; keyword ``settings`` override its fields
            (``train("photos/", backbone="mobilenet_v2", epochs=30)``).
        from_model: start from a saved model (``runs/old`` or a ``.keras`` file): same classes
            continue its head, other classes get a new classifier on its backbone.
        extra_files: file name -> bytes, written into the run directory before training (e.g.
            the leaderboard or trials of the search that chose these settings; report.html
            shows them).

    Returns:
        The trained :class:`~transferlab.inference.Classifier`; ``clf.run_dir`` is the run directory
        and ``clf.metadata["metrics"]`` the evaluation report.

    Raises:
        TrainingInterrupted: after Ctrl-C; the run resumes with :func:`resume`.
    """
    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    if not dataset.split("train"):
        raise ValueError("The training split is empty: add images or lower --val-fraction/--test-fraction.")
    run_dir = new_run_dir(config.runs_dir, config.name, Path(data).stem)
    logger.info("Run directory: %s", run_dir)
    for file_name, content in (extra_files or {}).items():
        (run_dir / Path(file_name).name).write_bytes(content)
    try:
        return _run(data, dataset, config, run_dir, None, show_progress, from_model)
    except Exception:
        # Failed before anything resumable existed (e.g. backbone weights unavailable): leave no
        # half-made run directory behind. A run with config.json is kept for --resume.
        if not (run_dir / RUN_CONFIG).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume(run_dir: str | os.PathLike, *, show_progress: bool = True) -> Classifier:
    """Continue an interrupted run from its last checkpoint, up to the planned epochs."""
    run_dir = Path(run_dir)
    meta_path = run_dir / RUN_CONFIG
    if not meta_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {RUN_CONFIG}).")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("status") == "complete":
        raise ValueError(f"Run {run_dir} is already complete; nothing to resume.")
    config = TrainConfig.from_dict(meta["config"])
    data = meta["data"]["source"]
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    state = read_state(run_dir)
    logger.info("Resuming %s: %s", run_dir, f"{state['phase']} phase after epoch {state['epochs_done']}"
                if state else "no epoch completed yet")
    return _run(data, dataset, config, run_dir, state, show_progress, meta.get("from_model"))


def _run(data, dataset: ImageDataset, config: TrainConfig, run_dir: Path, state: dict | None,
         show_progress: bool, from_model) -> Classifier:
    import keras

    from transferlab.backbones import check_fine_tunable, resolve_backbone
    from transferlab.training.finetune import find_base, set_trainable_top
    from transferlab.training.warmstart import warm_start

    started = time.perf_counter()
    dataset.write_splits(run_dir / "splits.csv")
    dataset.write_bad_files(run_dir / "bad_files.txt")
    (run_dir / LABELS_FILE).write_text("\n".join(dataset.class_names) + "\n", encoding="utf-8")
    splits = {s: dataset.split(s) for s in ("train", "val", "test")}
    classes = len(dataset.class_names)

    warm, note = None, ""
    if from_model:
        warm = warm_start(from_model, dataset.class_names, hidden_units=config.hidden_units, unsafe=config.unsafe)
        backbone, info, note = warm.backbone, warm.info, warm.note
        logger.info(note)
    else:
        backbone, info = resolve_backbone(config.backbone, weights=config.weights, input_size=config.image_size,
                                          feature_layer=config.feature_layer, preprocess=config.preprocess,
                                          unsafe=config.unsafe)
    if config.strategy == "fine-tune":
        check_fine_tunable(info)
    resize = ResizeConfig(**warm.resize) if warm and warm.resize else resize_for(config, info)
    logger.info("Backbone %s: %d px input, %d features from layer %s, preprocessing %s, resize %s",
                info.name, resize.size, info.feature_dim, info.feature_layer, info.preprocess, resize.mode)
    metadata = _start_metadata(config, data, dataset, info, resize, note)
    metadata["from_model"] = str(from_model) if from_model else None
    (run_dir / RUN_CONFIG).write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")

    arrays, extraction, cache = _extract_all(dataset, splits, backbone, info, resize, config, show_progress)

    # ---- phase 1: the head on cached features (rebuilt from the config, then checkpoints loaded)
    ckpt = run_dir / CHECKPOINT_DIR
    keras.utils.set_random_seed(config.seed)  # before building: initial weights are seeded too
    if warm is not None and warm.head is not None:
        head = warm.head
    else:
        hidden = 0 if config.head == "logistic" else config.hidden_units  # the probe is one Dense layer
        head = build_head(info.feature_dim, classes, hidden_units=hidden, dropout=config.dropout)
        if warm is not None and warm.hidden_weights is not None:
            head.get_layer("hidden").set_weights(warm.hidden_weights)
    head_done = state is not None and (state["phase"] == "fine-tune" or state.get("complete", False))
    head_start = time.perf_counter()
    if head_done:
        head_history = state["head_history"]
        load_weights(head, ckpt / "head.npz")
    elif config.head == "logistic":  # the linear probe: one L-BFGS fit, nothing to checkpoint on the way
        from transferlab.training.probe import fit_logistic_head

        head = fit_logistic_head(arrays["train"][0], arrays["train"][1], classes, c=config.logistic_c,
                                 class_weight=config.class_weight)
        head_history = {}
        save_weights(head, ckpt / "head.npz")
        state = {"phase": "head", "complete": True, "epochs_done": 0, "seed": config.seed,
                 "history": head_history, "head_history": head_history}
        write_json_atomic(ckpt / "state.json", state)
    else:
        head_history = _train_head(head, arrays, config, run_dir, state, show_progress)
        # Mark phase 1 complete (with the restored best head) so a resume never refits it.
        save_weights(head, ckpt / "head.npz")
        state = {"phase": "head", "complete": True, "epochs_done": len(head_history.get("loss", [])),
                 "seed": config.seed, "history": head_history, "head_history": head_history}
        write_json_atomic(ckpt / "state.json", state)
    head_seconds = time.perf_counter() - head_start
    logger.info("Head trained: %d epochs in %.1f s", len(head_history.get("loss", [])), head_seconds)

    # ---- phase 2 (optional): fine-tune the top of the backbone on images
    model = assemble_classifier(backbone, head)
    history, boundaries, fine_seconds = dict(head_history), [], 0.0
    if config.strategy == "fine-tune":
        fine_start = time.perf_counter()
        unfrozen = set_trainable_top(find_base(model), config.unfreeze, config.unfreeze_from)
        logger.info("Fine-tuning %d layer(s) of the backbone (BatchNorm stays frozen): %s%s", len(unfrozen),
                    ", ".join(unfrozen[:8]), " ..." if len(unfrozen) > 8 else "")
        fine_state = state if state["phase"] == "fine-tune" else None
        fine_history, improved = _fine_tune_phase(model, arrays, resize, config, run_dir, fine_state,
                                                  dataset.class_names, head_history, show_progress)
        metadata["fine_tune"] = {"unfrozen_layers": unfrozen, "improved_validation_loss": improved}
        write_json_atomic(ckpt / "state.json", {**read_state(run_dir), "complete": True, "head_history": head_history})
        find_base(model).trainable = False
        boundaries = [len(head_history.get("loss", []))]
        for key in set(history) | set(fine_history):
            history[key] = head_history.get(key, [float("nan")] * boundaries[0]) + fine_history.get(key, [])
        fine_seconds = time.perf_counter() - fine_start
    # ---- evaluation on the test split (validation split when there is none); its pictures are
    # drawn by a helper process while this one saves the model and computes Grad-CAM.
    clf = Classifier(KerasRuntime(model), dataset.class_names, resize, run_dir=run_dir, metadata=metadata)
    if config.strategy != "fine-tune":  # frozen backbone: Grad-CAM's feature maps can be cached too
        from transferlab.evaluation.gradcam import FeatureMapCache

        clf.feature_map_cache = FeatureMapCache(cache.root, cache.parts)
    eval_split = "test" if len(arrays["test"][0]) else "val"
    x_eval, y_eval, eval_records = arrays[eval_split]
    _write_history(run_dir / "history.csv", history, boundaries)
    curves = [FigureJob("plot_training_curves", str(run_dir / "training_curves.png"),
                        {"history": history, "phase_boundaries": boundaries})] if history else []  # probe: no epochs
    metrics = None
    if len(eval_records):
        if config.strategy == "fine-tune":  # the backbone changed: cached features no longer apply
            probs, errors = clf.predict_files([r.path for r in eval_records])
            readable = np.array([i not in errors for i in range(len(eval_records))], dtype=bool)
            y_eval, probs = y_eval[readable], probs[readable]
            eval_records = [r for r, keep in zip(eval_records, readable) if keep]
        else:
            probs = predict_head(head, x_eval)
        metrics = classification_report(y_eval, probs, dataset.class_names)
        metrics["split"] = eval_split
        if eval_split == "val":
            metrics["note"] = "no test split: metrics are on the validation split that drove early stopping"
        figures = write_evaluation(run_dir, metrics, [r.path for r in eval_records], [r.label for r in eval_records],
                                   probs, dataset.class_names, extra_figures=curves, background=True)
    else:
        figures = draw_figures(curves, background=True)
    model.save(run_dir / MODEL_FILE)

    metadata.update({
        "status": "complete",
        "feature_cache": {"directory": str(cache.directory), "hits": extraction.hits, "misses": extraction.misses,
                          "engine": extraction.engine, "extract_seconds": round(extraction.seconds, 3)},
        "timing": {"total_seconds": round(time.perf_counter() - started, 3), "head_seconds": round(head_seconds, 3),
                   "fine_tune_seconds": round(fine_seconds, 3)},
    })
    (run_dir / RUN_CONFIG).write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")
    metadata["metrics"] = metrics
    _write_report_safely(run_dir, clf, config.max_gallery, figures)
    if metrics:
        logger.info("\n%s", format_summary(metrics))
    return clf


def _write_report_safely(run_dir: Path, clf, max_gallery: int, figures: PendingFigures) -> None:
    """report.html is a convenience: a problem writing it is logged, never fails the run."""
    from transferlab.evaluation.report import write_report

    try:
        path = write_report(run_dir, model=clf, max_gallery=max_gallery, figures=figures)
        logger.info("Report: %s", path)
    except Exception as exc:  # noqa: BLE001
        logger.warning("report.html not written: %s: %s", type(exc).__name__, exc)
    finally:
        figures.wait()  # the run's pictures are on disk whatever happened to the report
