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
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from transferlab import __version__
from transferlab._atomic import DiskFullError, disk_full_guard
from transferlab.api.choices import check_decision_settings, choose_operating_point, choose_resize, resolve_class_weight
from transferlab.api.classifier import Classifier
from transferlab.api.finetune_phase import choose_depth, extra_callbacks, fine_tune_phase
from transferlab.api.rundirs import check_run_name, new_run_dir
from transferlab.data.dataset import ImageDataset, load_dataset
from transferlab.data.decode import ResizeConfig
from transferlab.errors import ConfigError, TrainingInterrupted
from transferlab.features import SplitFeatures, extract_splits
from transferlab.progress import plural
from transferlab.rundir import RunDir, RunMetadata
from transferlab.training.config import TrainConfig
from transferlab.training.operating_point import EXTRAS_KEY as OPERATING_POINT_KEY
from transferlab.training.runlock import run_lock

logger = logging.getLogger("transferlab")

# Head epochs take milliseconds: checkpoint the head at most this often (and after its last epoch).
HEAD_CHECKPOINT_INTERVAL_S = 5.0


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"transferlab": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "python": platform.python_version()}


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
    not_tunable: str | None = None  # strategy auto: why this backbone cannot be fine-tuned


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
    backbone_changed: bool = False  # fine-tuned weights kept: cached features no longer apply
    deadline: object = None  # training.budget.Deadline of a time-budgeted run


def prepare_run(data: str | os.PathLike, dataset: ImageDataset, config: TrainConfig, run: RunDir,
                state: dict | None, from_model, started: float | None = None) -> PreparedRun:
    """Resolve backbone and resize and write the run's first files (status "running")."""
    from transferlab.api.choices import build_backbone, fine_tune_blocker, run_resize
    from transferlab.backbones.trusted import trust_record
    from transferlab.training.warmstart import warm_start

    dataset.write_splits(run.splits)
    dataset.write_bad_files(run.bad_files)
    run.write_labels(dataset.class_names)
    warm, note = None, ""
    if from_model:
        if config.tiles != "1":
            raise ConfigError(f"--from keeps the starting model's backbone and its input: drop --tiles {config.tiles}.")
        warm = warm_start(from_model, dataset.class_names, hidden_units=config.hidden_units, unsafe=config.unsafe)
        backbone, info, note = warm.backbone, warm.info, warm.note
        logger.info(note)
    else:
        backbone, info = build_backbone(config)
    not_tunable = fine_tune_blocker(config, info)
    resize = ResizeConfig(**warm.resize) if warm and warm.resize else run_resize(config, info)
    logger.info("Backbone %s: %d px input, %d features from layer %s, preprocessing %s, resize %s",
                info.name, resize.size, info.feature_dim, info.feature_layer, info.preprocess, resize.mode)
    for name in config.ignored_settings():
        logger.warning("--%s has no effect without --strategy fine-tune; it is ignored.", name.replace("_", "-"))
    metadata = RunMetadata(
        status="running", config=config.to_dict(), class_names=dataset.class_names, resize=resize.to_dict(),
        # A SavedModel backbone's content hash: the run then reloads it without --unsafe.
        backbone={**info.to_dict(), **trust_record(info)}, warm_start=note or None, from_model=str(from_model) if from_model else None,
        data={"source": str(Path(data).resolve()), "layout": dataset.layout,
              "counts": {s: dataset.counts(s) for s in ("train", "val", "test")},
              "bad_files": len(dataset.bad_files)},
        versions=versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    check_decision_settings(config, dataset)
    run.write_metadata(metadata)
    return PreparedRun(run, str(data), dataset, config, backbone, info, resize, metadata, state, warm,
                       started=started or time.perf_counter(), not_tunable=not_tunable)


def _train_head(head, features: dict[str, SplitFeatures], config: TrainConfig, run_dir: Path, state: dict | None,
                show_progress: bool) -> dict[str, list[float]]:
    """The head fit with per-epoch checkpoints; continues a checkpointed head when resuming."""
    from transferlab.training.callbacks import EpochProgress
    from transferlab.training.checkpoint import EpochCheckpoint, ResumableEarlyStopping, checkpoint_file, stop_on_sigint
    from transferlab.training.head import fit_head

    train, val = features["train"], features["val"]
    early = ResumableEarlyStopping(run_dir, config.patience, (state or {}).get("early_stopping")) \
        if len(val) and config.patience > 0 else None
    checkpoint = EpochCheckpoint(run_dir, "head", config.seed, (state or {}).get("history"), early_stopping=early,
                                 min_interval_s=HEAD_CHECKPOINT_INTERVAL_S)
    with stop_on_sigint(checkpoint):
        fit_head(head, train.x, train.y, val.x, val.y, epochs=config.epochs, batch_size=config.batch_size,
                 learning_rate=config.learning_rate, label_smoothing=config.label_smoothing,
                 weight_decay=config.head_weight_decay, class_weight=config.class_weight, patience=config.patience, seed=config.seed,
                 callbacks=[checkpoint, EpochProgress("Training head", enabled=show_progress),
                            *extra_callbacks(run_dir, config)], early_stopping=early,
                 initial_epoch=(state or {}).get("epochs_done", 0),
                 restore_state=checkpoint_file(run_dir, "state", state) if state else None)
    return checkpoint.history


def fit_run(prep: PreparedRun, show_progress: bool) -> FittedRun:
    """Features through the cache, the head on them, then (strategy "fine-tune") the top of the backbone."""
    from transferlab._keras import keras
    from transferlab.api.choices import choose_tiles
    from transferlab.training import auto
    from transferlab.training.checkpoint import (
        checkpoint_file,
        commit_checkpoint,
        load_weights,
        read_state,
        weight_arrays,
        write_json_atomic,
    )
    from transferlab.training.finetune import find_base, freeze_all, set_trainable_top
    from transferlab.training.head import assemble_classifier, build_head

    if prep.config.tiles == "auto":  # first: the resize then fits the chosen backbone's input
        choose_tiles(prep, show_progress)
    if prep.config.resize_mode == "auto":
        prep.resize, prep.metadata.extras["resize"] = choose_resize(prep, show_progress)
        prep.metadata.resize = prep.resize.to_dict()
    config, run, state, warm = prep.config, prep.run, prep.state, prep.warm
    deadline = auto.run_deadline(config.time_budget, state, prep.started) \
        if config.strategy != "feature-extraction" else None
    if deadline is not None:
        logger.info("Time budget %.0f s: the run ends by %s (ETA).", config.time_budget, deadline.eta())
    if config.ray:  # phase 1 on the cluster; extract_splits below then reads only cache hits
        from transferlab.api.extract import fill_dataset_cache

        filled = fill_dataset_cache(prep.dataset, prep.backbone, prep.info, prep.resize, cache_dir=config.cache_dir,
                                    engine=config.engine, ray=config.ray, show_progress=show_progress)
        prep.metadata.extras["ray_extraction"] = {**filled.to_dict(), "failed": len(filled.failed)}
    features, extraction, cache = extract_splits(prep.dataset, prep.backbone, prep.info, prep.resize,
                                                 cache_dir=config.cache_dir, engine=config.engine,
                                                 show_progress=show_progress)
    config, imbalance = resolve_class_weight(config, features, len(prep.dataset.class_names))
    prep.metadata.extras["imbalance"] = imbalance.to_dict()
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
        load_weights(head, checkpoint_file(run.path, "head", state))
    elif config.head == "logistic":  # the linear probe: one L-BFGS fit on the training split, no epochs
        from transferlab.training.probe import fit_logistic_head

        head = fit_logistic_head(features["train"].x, features["train"].y, len(prep.dataset.class_names),
                                 c=config.logistic_c, class_weight=config.class_weight)
        head_history = {}
        state = commit_checkpoint(run.path, {"phase": "head", "complete": True, "epochs_done": 0, "seed": config.seed,
                                             "history": head_history, "head_history": head_history},
                                  {"head": weight_arrays(head)})
    else:
        head_history = _train_head(head, features, config, run.path, state, show_progress)
        # Mark the head complete (with the restored best head) so a resume never refits it: one commit.
        state = commit_checkpoint(run.path, {"phase": "head", "complete": True,
                                             "epochs_done": len(head_history.get("loss", [])), "seed": config.seed,
                                             "history": head_history, "head_history": head_history},
                                  {"head": weight_arrays(head)})
    head_seconds = time.perf_counter() - head_start
    logger.info("Head trained: %s in %.1f s", plural(len(head_history.get("loss", [])), "epoch"), head_seconds)

    # ---- optional: fine-tune the top of the backbone on images
    model = assemble_classifier(prep.backbone, head)
    history, boundaries, fine_seconds = dict(head_history), [], 0.0
    phases = [auto.phase_record("frozen features + head", head_history, extraction.seconds + head_seconds)]
    reserve = auto.evaluation_reserve(len(features["test"]) or len(features["val"]))
    skip = auto.reason_to_skip(config.strategy, prep.not_tunable, len(features["val"]), deadline, reserve,
                               resumed_fine_tune=state.get("phase") == "fine-tune")
    fine_tuned = improved = False
    if config.strategy == "fine-tune" or (config.strategy == "auto" and not skip):
        fine_tuned = True
        fine_start = time.perf_counter()
        fine_state = state if state["phase"] == "fine-tune" else None
        record = dict((fine_state or {}).get("budget") or {})
        if auto.may_choose_depth(config):
            config = choose_depth(prep.backbone, prep.resize, config, features,
                                  None if deadline is None else deadline.left() - reserve, record)
        unfrozen = set_trainable_top(find_base(model), config.unfreeze, config.unfreeze_from)
        logger.info("Fine-tuning %d layer(s) of the backbone (BatchNorm stays frozen): %s%s", len(unfrozen),
                    ", ".join(unfrozen[:8]), " ..." if len(unfrozen) > 8 else "")
        views_source = None
        if config.fine_tune_views:
            from transferlab.training.cached_top import cut_below

            cut = cut_below(find_base(model), unfrozen)
            views_source = {"cut": cut, "fingerprint": cache.parts, "cache_root": cache.root} if cut else None
        budget = None if deadline is None else {"deadline": deadline, "reserve": reserve}
        fine_history, improved, details = fine_tune_phase(model, features, prep.resize, config, run.path,
                                                           fine_state, prep.dataset.class_names, head_history,
                                                           show_progress, views_source, budget, record)
        prep.metadata.fine_tune = {"unfrozen_layers": unfrozen, "improved_validation_loss": improved,
                                   "cached_bottom": views_source["cut"] if views_source else None, **details}
        phases.append(auto.phase_record("fine-tune", fine_history, time.perf_counter() - fine_start,
                                        kept=improved, unfrozen_layers=len(unfrozen)))
        write_json_atomic(run.checkpoint / "state.json",
                          {**read_state(run.path), "complete": True, "head_history": head_history})
        freeze_all(model, config.label_smoothing)
        boundaries = [len(head_history.get("loss", []))]
        for key in set(history) | set(fine_history):
            history[key] = head_history.get(key, [float("nan")] * boundaries[0]) + fine_history.get(key, [])
        fine_seconds = time.perf_counter() - fine_start
    prep.metadata.extras["strategy"] = {"name": config.strategy, "time_budget_seconds": config.time_budget,
                                        **auto.decision(phases, fine_tuned, improved, skip)}
    if fine_tuned and "depth" in record:
        prep.metadata.extras["strategy"]["depth"] = record["depth"]
    return FittedRun(model, head, features, extraction, cache, history, boundaries, head_seconds, fine_seconds,
                     backbone_changed=fine_tuned and improved, deadline=deadline)


def finish_run(prep: PreparedRun, fit: FittedRun) -> Classifier:
    """Evaluate on the test split (validation when there is none), save the model, write the report."""
    from transferlab._atomic import atomic_write
    from transferlab.evaluation.artifacts import write_evaluation
    from transferlab.evaluation.figures import FigureJob, draw_figures
    from transferlab.evaluation.metrics import classification_report, format_summary
    from transferlab.evaluation.reporting import write_report_safely
    from transferlab.rundir import TRAINING_CURVES_FILE, write_history
    from transferlab.runtimes.keras import KerasRuntime
    from transferlab.training import auto
    from transferlab.training.head import predict_head

    config, run, metadata, class_names = prep.config, prep.run, prep.metadata, prep.dataset.class_names
    clf = Classifier(KerasRuntime(fit.model), class_names, prep.resize, run_dir=run.path,
                     metadata=metadata.to_dict())
    if not fit.backbone_changed:  # frozen backbone: Grad-CAM's feature maps can be cached too
        from transferlab.evaluation.gradcam import FeatureMapCache

        clf.feature_map_cache = FeatureMapCache(fit.cache.root, fit.cache.parts)
    rule, validation = choose_operating_point(config, fit.features["val"], class_names, fit.head, clf,
                                              backbone_changed=fit.backbone_changed)
    if rule is not None:
        metadata.extras[OPERATING_POINT_KEY] = rule.to_dict()
    eval_split = "test" if len(fit.features["test"]) else "val"
    evaluated = fit.features[eval_split]
    y_eval, eval_records = evaluated.y, evaluated.records
    write_history(run.history, fit.history, fit.boundaries)
    # The pictures are drawn by a helper process while this one saves the model and computes Grad-CAM.
    curves = [FigureJob("plot_training_curves", str(run / TRAINING_CURVES_FILE),
                        {"history": fit.history, "phase_boundaries": fit.boundaries})] if fit.history else []
    metrics = None
    if len(eval_records):
        if fit.backbone_changed:  # cached features no longer apply
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
        extra = list(curves)
        if rule is not None:
            from transferlab.evaluation.artifacts import operating_point_outputs

            metrics["operating_point"], jobs = operating_point_outputs(run.path, rule, probs, y_eval, class_names,
                                                                       eval_split, validation)
            extra += jobs
        figures = write_evaluation(run.path, metrics, [r.path for r in eval_records], [r.label for r in eval_records],
                                   probs, class_names, extra_figures=extra, background=True)
    else:
        figures = draw_figures(curves, background=True)
    atomic_write(run.model, fit.model.save, keep_suffix=True)  # never half a model.keras

    extraction = fit.extraction
    metadata.status = "complete"
    metadata.feature_cache = {"directory": str(fit.cache.directory), "hits": extraction.hits,
                              "misses": extraction.misses, "engine": extraction.engine,
                              "extract_seconds": round(extraction.seconds, 3)}
    metadata.timing = {"total_seconds": round(time.perf_counter() - prep.started, 3),
                       "head_seconds": round(fit.head_seconds, 3), "fine_tune_seconds": round(fit.fine_seconds, 3)}
    run.write_metadata(metadata)
    clf.metadata = {**metadata.to_dict(), "metrics": metrics}
    gallery, deadline = config.max_gallery, fit.deadline
    if deadline is not None and deadline.left() < auto.evaluation_reserve(0) / 2:
        logger.info("Time budget: report without the gallery of mistakes (Grad-CAM) to end in time.")
        gallery = 0
    write_report_safely(run.path, clf, max_gallery=gallery, figures=figures)
    if deadline is not None:  # the budget's account includes the report
        metadata.timing["budget_spent_seconds"] = round(deadline.spent(), 3)
        run.write_metadata(metadata)
        clf.metadata = {**metadata.to_dict(), "metrics": metrics}
    if metrics:
        logger.info("\n%s", format_summary(metrics))
    return clf


def _run(data, dataset: ImageDataset, config: TrainConfig, run: RunDir, state: dict | None, show_progress: bool,
         from_model, started: float | None = None, extras: dict | None = None) -> Classifier:
    prep = prepare_run(data, dataset, config, run, state, from_model, started)
    logger.info("Run directory: %s", run.path)  # only now: a run that fails to start leaves no folder
    if extras:
        prep.metadata.extras.update(extras)
        run.write_metadata(prep.metadata)
    fitted = False
    try:
        fit = fit_run(prep, show_progress)
        _log_audit_hint(prep, fit)
        if prep.warm is None:  # an audit with these settings then finds the features without the backbone
            from transferlab.audit.resolved import remember
            from transferlab.features.dataset import feature_fingerprint

            remember(prep.config, prep.info, feature_fingerprint(prep.info, prep.resize))
        fitted = True
        return finish_run(prep, fit)
    except TrainingInterrupted:
        run.set_status("interrupted")  # config.json says so; `--resume` continues from the checkpoint
        raise
    except KeyboardInterrupt:
        # Ctrl-C outside an epoch loop (feature extraction, evaluation) or a second Ctrl-C: the same
        # message as in the epochs, naming what is kept and the resume command.
        run.set_status("interrupted")
        raise _interrupted(run, fitted) from None


def _interrupted(run: RunDir, fitted: bool) -> TrainingInterrupted:
    from transferlab.training.checkpoint import read_state

    state = read_state(run.path)
    if state is None:
        return TrainingInterrupted(run.path, "feature extraction")
    if fitted:
        return TrainingInterrupted(run.path, "evaluation", checkpoint_dir=run.checkpoint)
    return TrainingInterrupted(run.path, state["phase"], state["epochs_done"], run.checkpoint)


def _log_audit_hint(prep: PreparedRun, fit: FittedRun) -> None:
    """One line pointing at ``transferlab audit`` when the features show many label errors or copies.

    A hint only: whatever goes wrong here is logged at debug level and never fails the run.
    """
    from transferlab.audit.hint import dataset_warnings, training_hint
    from transferlab.training.head import predict_head

    try:
        held_out = np.concatenate([fit.features["val"].x, fit.features["test"].x])
        # After fine-tuning the head sits on a changed backbone: the cached features no longer fit it.
        probs = predict_head(fit.head, held_out) if len(held_out) and prep.config.strategy != "fine-tune" else None
        hint = training_hint(dataset_warnings(fit.features, probs), prep.data)
    except Exception as exc:  # noqa: BLE001
        logger.debug("no audit hint: %s: %s", type(exc).__name__, exc)
        return
    if hint:
        logger.info(hint)


def train(data: str | os.PathLike, config: TrainConfig | None = None, *, show_progress: bool = True,
          from_model: str | os.PathLike | None = None, extra_files: dict[str, bytes] | None = None,
          extras: dict | None = None, overwrite: bool = False, **settings) -> Classifier:
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
        overwrite: replace an existing run of the same ``name`` (default False: that is an error
            which says whether to ``--resume`` it or pick another name).

    Returns:
        The trained :class:`~transferlab.Classifier`; ``clf.run_dir`` is the run directory
        and ``clf.metadata["metrics"]`` the evaluation report.

    Raises:
        TrainingInterrupted: after Ctrl-C; the run resumes with :func:`resume`.
    """
    from transferlab.backbones import check_backbone_name

    started = time.perf_counter()  # a time budget counts from here, data checks included
    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    if from_model is None:  # a typo fails now, not after every image has been checked
        check_backbone_name(config.backbone)
    check_run_name(config, overwrite)
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    if not dataset.split("train"):
        raise ConfigError("The training split is empty: add images or lower --val-fraction/--test-fraction.")
    run = RunDir(new_run_dir(config.runs_dir, config.name, Path(data).stem, overwrite=overwrite))
    for file_name, content in (extra_files or {}).items():
        (run.path / Path(file_name).name).write_bytes(content)
    try:
        with run_lock(run.path), disk_full_guard(run.path):
            return _run(data, dataset, config, run, None, show_progress, from_model, started, extras)
    except KeyboardInterrupt:  # before config.json existed: nothing to resume, nothing left behind
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    except Exception as exc:
        # Failed before anything resumable existed (e.g. backbone weights unavailable): leave no
        # half-made run directory behind. A run with config.json is kept for --resume.
        kept = run.is_run()
        if not kept:
            shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(exc, DiskFullError):
            raise exc.with_hint(_after_full_disk(run.path, kept)) from exc
        raise


def _after_full_disk(run_dir: Path, kept: bool) -> str:
    if kept:  # config.json and checkpoints are written atomically: what is there can be trusted
        return f"the run is kept: once there is space, continue it with transferlab train --resume {run_dir}"
    return "nothing was kept: run the same command again once there is space"


def resume(run_dir: str | os.PathLike, *, show_progress: bool = True) -> Classifier:
    """Continue an interrupted run from its last checkpoint, up to the planned epochs."""
    from transferlab.training.checkpoint import read_state

    started = time.perf_counter()
    run = RunDir(run_dir)
    meta = run.read_metadata()
    if meta.status == "complete":
        raise ConfigError(f"Run {run.path} is already complete; nothing to resume.")
    config = TrainConfig.from_dict(meta.config)
    data = meta.data["source"]
    with run_lock(run.path):  # before anything is read: a run still training is not resumed under it
        dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                               seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
        state = read_state(run.path)
        logger.info("Resuming %s: %s", run.path, f"{state['phase']} phase after epoch {state['epochs_done']}"
                    if state else "no epoch completed yet")
        try:
            with disk_full_guard(run.path):
                return _run(data, dataset, config, run, state, show_progress, meta.from_model, started)
        except DiskFullError as exc:
            raise exc.with_hint(_after_full_disk(run.path, True)) from exc
