"""``transferlab.train``: a folder of labeled images in, a run directory with a classifier out.

The run is three steps, each a function of its own so that other orchestrations (model
selection, automatic strategies) can reuse them:

1. :func:`prepare_run`: load and split the data, resolve the backbone and resize, write the run's
   first files (``splits.csv``, ``labels.txt``, ``config.json`` with status "running");
2. :func:`fit_run`: bottleneck features of every image through the frozen backbone (via the
   on-disk cache), a head fitted on them, then optionally fine-tuning of the top of the backbone;
3. :func:`finish_run`: evaluation on the test split, ``model.keras``, ``history.csv``, figures,
   ``report.html``, status "complete".

The layout of the run directory is :mod:`transferlab.rundir`'s.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from transferlab import __version__
from transferlab.api.classifier import Classifier
from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.data.decode import ResizeConfig
from transferlab.errors import ConfigError, RunExistsError, TrainingInterrupted
from transferlab.features import SplitFeatures, extract_splits, resize_for
from transferlab.rundir import RunDir, RunMetadata
from transferlab.training.config import TrainConfig

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
            raise RunExistsError(f"Run directory {candidate} already exists. Choose another --name, "
                                 f"or continue it with --resume {candidate}.")
        candidate, n = runs / f"{base}-{n}", n + 1
    candidate.mkdir(parents=True)
    return candidate


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"transferlab": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "python": platform.python_version()}


def extra_callbacks(run_dir: Path, config: TrainConfig) -> list:
    """Optional callbacks (TensorBoard) named in the config."""
    from transferlab.training.callbacks import tensorboard_callback

    return [tensorboard_callback(run_dir)] if config.tensorboard else []


@dataclass
class PreparedRun:
    """Everything :func:`fit_run` needs, as :func:`prepare_run` leaves it."""

    run: RunDir
    data: str
    dataset: ImageDataset
    config: TrainConfig
    backbone: object  # keras.Model, raw pixels -> features
    info: object  # BackboneInfo
    resize: ResizeConfig
    metadata: RunMetadata
    state: dict | None = None  # the checkpoint's state when resuming
    warm: object = None  # WarmStart when starting from a saved model
    started: float = field(default_factory=time.perf_counter)


@dataclass
class FittedRun:
    """What :func:`fit_run` produced: the model, its histories, the features it used."""

    model: object  # keras.Model, raw pixels -> probabilities
    head: object
    features: dict[str, SplitFeatures]
    extraction: object  # ExtractionResult
    cache: object  # FeatureCache
    history: dict[str, list[float]]
    boundaries: list[int]
    head_seconds: float
    fine_seconds: float


def prepare_run(data: str | os.PathLike, dataset: ImageDataset, config: TrainConfig, run: RunDir,
                state: dict | None, from_model) -> PreparedRun:
    """Resolve backbone and resize and write the run's first files (status "running")."""
    from transferlab.backbones import check_fine_tunable, resolve_backbone
    from transferlab.training.warmstart import warm_start

    dataset.write_splits(run.splits)
    dataset.write_bad_files(run.bad_files)
    run.write_labels(dataset.class_names)
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
    resize = ResizeConfig(**warm.resize) if warm and warm.resize else resize_for(
        info, mode=config.resize_mode, interpolation=config.interpolation, crop_fraction=config.crop_fraction)
    logger.info("Backbone %s: %d px input, %d features from layer %s, preprocessing %s, resize %s",
                info.name, resize.size, info.feature_dim, info.feature_layer, info.preprocess, resize.mode)
    for name in config.ignored_settings():
        logger.warning("--%s has no effect without --strategy fine-tune; it is ignored.", name.replace("_", "-"))
    metadata = RunMetadata(
        status="running", config=config.to_dict(), class_names=dataset.class_names, resize=resize.to_dict(),
        backbone=info.to_dict(), warm_start=note or None, from_model=str(from_model) if from_model else None,
        data={"source": str(Path(data).resolve()), "layout": dataset.layout,
              "counts": {s: dataset.counts(s) for s in ("train", "val", "test")},
              "bad_files": len(dataset.bad_files)},
        versions=versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    run.write_metadata(metadata)
    return PreparedRun(run, str(data), dataset, config, backbone, info, resize, metadata, state, warm)


def _train_head(head, features: dict[str, SplitFeatures], config: TrainConfig, run_dir: Path, state: dict | None,
                show_progress: bool) -> dict[str, list[float]]:
    """The head fit with per-epoch checkpoints; continues a checkpointed head when resuming."""
    from transferlab.rundir import CHECKPOINT_DIR
    from transferlab.training.callbacks import EpochProgress
    from transferlab.training.checkpoint import EpochCheckpoint, ResumableEarlyStopping, stop_on_sigint
    from transferlab.training.head import fit_head

    train, val = features["train"], features["val"]
    early = ResumableEarlyStopping(run_dir, config.patience, (state or {}).get("early_stopping")) \
        if len(val) and config.patience > 0 else None
    checkpoint = EpochCheckpoint(run_dir, "head", config.seed, (state or {}).get("history"), early_stopping=early,
                                 min_interval_s=HEAD_CHECKPOINT_INTERVAL_S)
    with stop_on_sigint(checkpoint):
        fit_head(head, train.x, train.y, val.x, val.y, epochs=config.epochs, batch_size=config.batch_size,
                 learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                 weight_decay=config.weight_decay, class_weight=config.class_weight, patience=config.patience, seed=config.seed,
                 callbacks=[checkpoint, EpochProgress("Training head", enabled=show_progress),
                            *extra_callbacks(run_dir, config)], early_stopping=early,
                 initial_epoch=(state or {}).get("epochs_done", 0),
                 restore_state=run_dir / CHECKPOINT_DIR / "state.npz" if state else None)
    return checkpoint.history


def _fine_tune_phase(model, features: dict[str, SplitFeatures], resize: ResizeConfig, config: TrainConfig,
                     run_dir: Path, state: dict | None, class_names: list[str], head_history: dict,
                     show_progress: bool) -> tuple[dict[str, list[float]], bool]:
    """Unfreeze the top of the backbone and train on augmented images."""
    from transferlab.rundir import CHECKPOINT_DIR
    from transferlab.training.callbacks import EpochProgress
    from transferlab.training.checkpoint import EpochCheckpoint, ResumableEarlyStopping, stop_on_sigint
    from transferlab.training.finetune import fine_tune, schedule_callbacks

    train_records, val_records = features["train"].records, features["val"].records
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


def fit_run(prep: PreparedRun, show_progress: bool) -> FittedRun:
    """Features through the cache, the head on them, then (strategy "fine-tune") the top of the backbone."""
    from transferlab._keras import keras
    from transferlab.training.checkpoint import load_weights, read_state, save_weights, write_json_atomic
    from transferlab.training.finetune import find_base, set_trainable_top
    from transferlab.training.head import assemble_classifier, build_head

    config, run, state, warm = prep.config, prep.run, prep.state, prep.warm
    features, extraction, cache = extract_splits(prep.dataset, prep.backbone, prep.info, prep.resize,
                                                 cache_dir=config.cache_dir, engine=config.engine,
                                                 show_progress=show_progress)
    # ---- the head on cached features (rebuilt from the config, then checkpoints loaded)
    keras.utils.set_random_seed(config.seed)  # before building: initial weights are seeded too
    if warm is not None and warm.head is not None:
        head = warm.head
    else:
        hidden = 0 if config.head == "logistic" else config.hidden_units  # the probe is one Dense layer
        head = build_head(prep.info.feature_dim, len(prep.dataset.class_names), hidden_units=hidden,
                          dropout=config.dropout)
        if warm is not None and warm.hidden_weights is not None:
            head.get_layer("hidden").set_weights(warm.hidden_weights)
    head_done = state is not None and (state["phase"] == "fine-tune" or state.get("complete", False))
    head_start = time.perf_counter()
    if head_done:
        head_history = state["head_history"]
        load_weights(head, run.checkpoint / "head.npz")
    elif config.head == "logistic":  # the linear probe: one L-BFGS fit on the training split, no epochs
        from transferlab.training.probe import fit_logistic_head

        head = fit_logistic_head(features["train"].x, features["train"].y, len(prep.dataset.class_names),
                                 c=config.logistic_c, class_weight=config.class_weight)
        head_history = {}
        save_weights(head, run.checkpoint / "head.npz")
        state = {"phase": "head", "complete": True, "epochs_done": 0, "seed": config.seed,
                 "history": head_history, "head_history": head_history}
        write_json_atomic(run.checkpoint / "state.json", state)
    else:
        head_history = _train_head(head, features, config, run.path, state, show_progress)
        # Mark the head complete (with the restored best head) so a resume never refits it.
        save_weights(head, run.checkpoint / "head.npz")
        state = {"phase": "head", "complete": True, "epochs_done": len(head_history.get("loss", [])),
                 "seed": config.seed, "history": head_history, "head_history": head_history}
        write_json_atomic(run.checkpoint / "state.json", state)
    head_seconds = time.perf_counter() - head_start
    logger.info("Head trained: %d epochs in %.1f s", len(head_history.get("loss", [])), head_seconds)

    # ---- optional: fine-tune the top of the backbone on images
    model = assemble_classifier(prep.backbone, head)
    history, boundaries, fine_seconds = dict(head_history), [], 0.0
    if config.strategy == "fine-tune":
        fine_start = time.perf_counter()
        unfrozen = set_trainable_top(find_base(model), config.unfreeze, config.unfreeze_from)
        logger.info("Fine-tuning %d layer(s) of the backbone (BatchNorm stays frozen): %s%s", len(unfrozen),
                    ", ".join(unfrozen[:8]), " ..." if len(unfrozen) > 8 else "")
        fine_state = state if state["phase"] == "fine-tune" else None
        fine_history, improved = _fine_tune_phase(model, features, prep.resize, config, run.path, fine_state,
                                                  prep.dataset.class_names, head_history, show_progress)
        prep.metadata.fine_tune = {"unfrozen_layers": unfrozen, "improved_validation_loss": improved}
        write_json_atomic(run.checkpoint / "state.json",
                          {**read_state(run.path), "complete": True, "head_history": head_history})
        find_base(model).trainable = False
        boundaries = [len(head_history.get("loss", []))]
        for key in set(history) | set(fine_history):
            history[key] = head_history.get(key, [float("nan")] * boundaries[0]) + fine_history.get(key, [])
        fine_seconds = time.perf_counter() - fine_start
    return FittedRun(model, head, features, extraction, cache, history, boundaries, head_seconds, fine_seconds)


def finish_run(prep: PreparedRun, fit: FittedRun) -> Classifier:
    """Evaluate on the test split (validation when there is none), save the model, write the report."""
    from transferlab.evaluation.artifacts import write_evaluation
    from transferlab.evaluation.figures import FigureJob, draw_figures
    from transferlab.evaluation.metrics import classification_report, format_summary
    from transferlab.evaluation.reporting import write_report_safely
    from transferlab.rundir import TRAINING_CURVES_FILE, write_history
    from transferlab.runtimes.keras import KerasRuntime
    from transferlab.training.head import predict_head

    config, run, metadata, class_names = prep.config, prep.run, prep.metadata, prep.dataset.class_names
    clf = Classifier(KerasRuntime(fit.model), class_names, prep.resize, run_dir=run.path,
                     metadata=metadata.to_dict())
    if config.strategy != "fine-tune":  # frozen backbone: Grad-CAM's feature maps can be cached too
        from transferlab.evaluation.gradcam import FeatureMapCache

        clf.feature_map_cache = FeatureMapCache(fit.cache.root, fit.cache.parts)
    eval_split = "test" if len(fit.features["test"]) else "val"
    evaluated = fit.features[eval_split]
    y_eval, eval_records = evaluated.y, evaluated.records
    write_history(run.history, fit.history, fit.boundaries)
    # The pictures are drawn by a helper process while this one saves the model and computes Grad-CAM.
    curves = [FigureJob("plot_training_curves", str(run / TRAINING_CURVES_FILE),
                        {"history": fit.history, "phase_boundaries": fit.boundaries})] if fit.history else []
    metrics = None
    if len(eval_records):
        if config.strategy == "fine-tune":  # the backbone changed: cached features no longer apply
            probs, errors = clf.predict_files([r.path for r in eval_records])
            readable = np.array([i not in errors for i in range(len(eval_records))], dtype=bool)
            y_eval, probs = y_eval[readable], probs[readable]
            eval_records = [r for r, keep in zip(eval_records, readable) if keep]
        else:
            probs = predict_head(fit.head, evaluated.x)
        metrics = classification_report(y_eval, probs, class_names)
        metrics["split"] = eval_split
        if eval_split == "val":
            metrics["note"] = "no test split: metrics are on the validation split that drove early stopping"
        figures = write_evaluation(run.path, metrics, [r.path for r in eval_records], [r.label for r in eval_records],
                                   probs, class_names, extra_figures=curves, background=True)
    else:
        figures = draw_figures(curves, background=True)
    fit.model.save(run.model)

    extraction = fit.extraction
    metadata.status = "complete"
    metadata.feature_cache = {"directory": str(fit.cache.directory), "hits": extraction.hits,
                              "misses": extraction.misses, "engine": extraction.engine,
                              "extract_seconds": round(extraction.seconds, 3)}
    metadata.timing = {"total_seconds": round(time.perf_counter() - prep.started, 3),
                       "head_seconds": round(fit.head_seconds, 3), "fine_tune_seconds": round(fit.fine_seconds, 3)}
    run.write_metadata(metadata)
    clf.metadata = {**metadata.to_dict(), "metrics": metrics}
    write_report_safely(run.path, clf, max_gallery=config.max_gallery, figures=figures)
    if metrics:
        logger.info("\n%s", format_summary(metrics))
    return clf


def _run(data, dataset: ImageDataset, config: TrainConfig, run: RunDir, state: dict | None, show_progress: bool,
         from_model, extras: dict | None = None) -> Classifier:
    prep = prepare_run(data, dataset, config, run, state, from_model)
    if extras:
        prep.metadata.extras.update(extras)
        run.write_metadata(prep.metadata)
    try:
        fit = fit_run(prep, show_progress)
    except (TrainingInterrupted, KeyboardInterrupt):
        run.set_status("interrupted")  # config.json says so; `--resume` continues from the checkpoint
        raise
    return finish_run(prep, fit)


def train(data: str | os.PathLike, config: TrainConfig | None = None, *, show_progress: bool = True,
          from_model: str | os.PathLike | None = None, extra_files: dict[str, bytes] | None = None,
          extras: dict | None = None, **settings) -> Classifier:
    """Train a classifier on a labeled image folder (or CSV) and write a run directory.

    Args:
        data: folder of class subfolders, pre-split folder, or CSV of path,label.
        config: a :class:`TrainConfig`; keyword ``settings`` override its fields
            (``train("photos/", backbone="mobilenet_v2", epochs=30)``).
        from_model: start from a saved model (``runs/old`` or a ``.keras`` file): same classes
            continue its head, other classes get a new classifier on its backbone.
        extra_files: file name -> bytes written into the run directory first (e.g. the
            leaderboard or trials of the search that chose these settings; report.html shows them).
        extras: results of the stage that chose the settings, kept under ``extras`` in config.json.

    Returns:
        The trained :class:`~transferlab.Classifier`; ``clf.run_dir`` is the run directory
        and ``clf.metadata["metrics"]`` the evaluation report.

    Raises:
        TrainingInterrupted: after Ctrl-C; the run resumes with :func:`resume`.
    """
    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    if not dataset.split("train"):
        raise ConfigError("The training split is empty: add images or lower --val-fraction/--test-fraction.")
    run = RunDir(new_run_dir(config.runs_dir, config.name, Path(data).stem))
    logger.info("Run directory: %s", run.path)
    for file_name, content in (extra_files or {}).items():
        (run.path / Path(file_name).name).write_bytes(content)
    try:
        return _run(data, dataset, config, run, None, show_progress, from_model, extras)
    except Exception:
        # Failed before anything resumable existed (e.g. backbone weights unavailable): leave no
        # half-made run directory behind. A run with config.json is kept for --resume.
        if not run.is_run():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def resume(run_dir: str | os.PathLike, *, show_progress: bool = True) -> Classifier:
    """Continue an interrupted run from its last checkpoint, up to the planned epochs."""
    from transferlab.training.checkpoint import read_state

    run = RunDir(run_dir)
    meta = run.read_metadata()
    if meta.status == "complete":
        raise ConfigError(f"Run {run.path} is already complete; nothing to resume.")
    config = TrainConfig.from_dict(meta.config)
    data = meta.data["source"]
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    state = read_state(run.path)
    logger.info("Resuming %s: %s", run.path, f"{state['phase']} phase after epoch {state['epochs_done']}"
                if state else "no epoch completed yet")
    return _run(data, dataset, config, run, state, show_progress, meta.from_model)
