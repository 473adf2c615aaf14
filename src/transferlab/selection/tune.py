"""``transferlab train DATA --tune``: Optuna over the head's settings, on cached features.

Every trial is a head setting scored by stratified k-fold cross-validation over the train and
validation images (the test split is not read). The sampler is Optuna's TPE, seeded; the
first trials are the configured head and the default linear probe, so the search can only
match or beat them on the folds. The search then returns the default head (trial 0) unless its
best trial beats it by more than one standard error of the paired fold differences
(:mod:`transferlab.selection.choose`): on easy data the top of 100 near-equal trials is noise,
and ``trials.csv``/``tuning.json`` say why the returned head was chosen. Keras heads train every fold at once
(:class:`~transferlab.selection.heads.FoldTrainer`), in chunks of epochs: after each chunk the
fold-mean accuracy so far goes to Optuna's median pruner, which stops trials that trail the
median of earlier trials at the same epoch. (Folds are trained together rather than one after
another, so pruning acts across epochs of all folds rather than fold by fold.)

Optuna is an optional extra: ``pip install 'transferlab[tune]'``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.selection.choose import RULE
from transferlab.selection.errors import MissingExtraError, SelectionError
from transferlab.selection.folds import make_folds
from transferlab.selection.heads import CVResult, FoldTrainer, HeadSettings, cv_logistic

logger = logging.getLogger("transferlab")

TRIALS_CSV = "trials.csv"
TUNING_JSON = "tuning.json"
# Epochs between pruning checks of a Keras head. An MLP epoch on 2,000 x 1,280 features costs
# 0.2-0.6 s on the 2-core machine (arithmetic, not overhead): a hopeless trial should stop after
# 5 epochs, not 10.
PRUNE_EVERY = 5
BATCH_SIZES = (16, 32, 64, 128, 256)
# 512 hidden units cost twice 256 per epoch (the first layer is D x units per fold) and, on frozen
# features that a linear probe already separates, have not been seen to win: capped at 256.
HIDDEN_UNITS = (64, 128, 256)
MAX_EPOCHS = 200


def require_optuna():
    """Import Optuna, or say how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingExtraError("--tune needs Optuna, an optional extra: pip install 'transferlab[tune]' "
                                "(or pip install optuna).") from exc
    return optuna


def parse_duration(text: str | float | int | None) -> float | None:
    """``"90"``/``"90s"`` -> 90.0, ``"2m"`` -> 120.0, ``"1h"`` -> 3600.0, None -> None.

    Raises:
        SelectionError: not a positive duration.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(text).lower())
        if not match:
            raise SelectionError(f"--tune-time {text!r} is not a duration; write e.g. 90s, 2m or 1h.")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not seconds > 0:
        raise SelectionError(f"--tune-time must be positive, got {text!r}.")
    return seconds


def suggest(trial, base: HeadSettings) -> HeadSettings:
    """The search space: the head family, then that family's settings.

    Keras heads: learning rate (1e-4..3e-2, log), dropout (0..0.7), hidden units (mlp: 64..256),
    label smoothing (0..0.3), weight decay (1e-6..1e-2, log; AdamW), batch size (16..256),
    class weighting, epochs (20..200, log) and patience (3..30). Linear probe: C (1e-5..10, log)
    and class weighting.
    """
    family = trial.suggest_categorical("family", ["softmax", "mlp", "logistic"])
    class_weight = trial.suggest_categorical("class_weight", ["none", "balanced"])
    class_weight = None if class_weight == "none" else class_weight
    if family == "logistic":
        return HeadSettings(family="logistic", logistic_c=trial.suggest_float("logistic_c", 1e-5, 10.0, log=True),
                            class_weight=class_weight)
    return dataclasses.replace(
        base, family=family,
        hidden_units=trial.suggest_categorical("hidden_units", list(HIDDEN_UNITS)) if family == "mlp" else 0,
        learning_rate=trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.7),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.3),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
        class_weight=class_weight,
        epochs=trial.suggest_int("epochs", 20, MAX_EPOCHS, log=True),
        patience=trial.suggest_int("patience", 3, 30),
        logistic_c=None)


def _as_params(settings: HeadSettings) -> dict[str, Any]:
    """A head as Optuna parameters (to enqueue the configured head as the first trial)."""
    # The search's choices are "none" and "balanced"; TrainConfig's "auto" is tried as unweighted here.
    weighting = "balanced" if settings.class_weight == "balanced" else "none"
    params: dict[str, Any] = {"family": settings.family, "class_weight": weighting}
    if settings.family == "logistic":
        params["logistic_c"] = settings.logistic_c
        return params
    params.update({k: getattr(settings, k) for k in ("learning_rate", "dropout", "label_smoothing", "batch_size",
                                                    "epochs", "patience")})
    params["weight_decay"] = max(settings.weight_decay, 1e-6)
    if settings.family == "mlp":
        params["hidden_units"] = settings.hidden_units
    return params


@dataclass
class TuneResult:
    """The outcome of :func:`tune`.

    Attributes:
        best: the best trial's head; best_config: the ``TrainConfig`` that trains it.
        cv_accuracy, cv_accuracy_std, cv_log_loss: its cross-validated scores (train + val images).
        trials: one dict per trial (see :meth:`trials_csv`).
        extract_seconds, search_seconds: wall times of the feature extraction and of the search.
    """

    best: HeadSettings
    best_config: Any
    cv_accuracy: float
    cv_accuracy_std: float
    cv_log_loss: float
    trials: list[dict]
    extract_seconds: float
    search_seconds: float
    folds: int
    backbone: str
    best_result: CVResult | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (``tuning.json``)."""
        states = [t["state"] for t in self.trials]
        return {"backbone": self.backbone, "folds": self.folds, "best_head": self.best.label(),
                "best_settings": dataclasses.asdict(self.best), "cv_accuracy": self.cv_accuracy,
                "cv_accuracy_std": self.cv_accuracy_std, "cv_log_loss": self.cv_log_loss,
                "trials": len(self.trials), "complete": states.count("complete"), "pruned": states.count("pruned"),
                "extract_seconds": round(self.extract_seconds, 3), "search_seconds": round(self.search_seconds, 3),
                "sampler": "optuna TPE (seeded)", "pruner": f"median, every {PRUNE_EVERY} epochs",
                "selection_rule": f"the default head (trial 0) unless the best trial beats it by more than {RULE}",
                "why": next((t.get("why") for t in self.trials if t.get("selected")), None)}

    def trials_csv(self) -> str:
        keys = ["number", "state", "cv_accuracy", "cv_accuracy_std", "cv_log_loss", "best_epoch", "seconds", "head",
                "selected", "why"]
        params = sorted({k for t in self.trials for k in t["params"]})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(keys + params)
        for t in self.trials:
            writer.writerow([_fmt(t.get(k)) for k in keys] + [_fmt(t["params"].get(p)) for p in params])
        return buffer.getvalue()

    def files(self) -> dict[str, bytes]:
        """trials.csv, tuning.json and search.png, for the run directory."""
        from transferlab.selection.report import SEARCH_PNG, search_png

        return {TRIALS_CSV: self.trials_csv().encode("utf-8"),
                TUNING_JSON: json.dumps(self.summary(), indent=2, default=str).encode("utf-8"),
                SEARCH_PNG: search_png([t.get("cv_accuracy") for t in self.trials], [t["state"] for t in self.trials],
                                       title=f"Search on {Path(self.backbone).name}: CV accuracy by trial")}


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def search(features: np.ndarray, labels: np.ndarray, num_classes: int, *, trials: int | None = 100,
           timeout: float | None = None, folds: int = 5, seed: int = 42, base: HeadSettings | None = None,
           show_progress: bool = True) -> tuple[HeadSettings, CVResult, list[dict], float]:
    """Optuna TPE over head settings on given features (the part of :func:`tune` after extraction).

    Args:
        features: (n, D) float32 features of the selection rows; labels: (n,) int.
        trials: number of trials (None: until ``timeout``); timeout: seconds (None: no limit).
        folds: k of the stratified k-fold CV; seed: seeds the folds, the sampler and every head.
        base: the configured head, tried first (default: ``HeadSettings()``).

    Returns:
        (best head, its CVResult, one dict per trial, search seconds).
    """
    optuna = require_optuna()
    from transferlab.progress import progress_bar

    if trials is None and timeout is None:
        raise SelectionError("Give a number of trials or a time limit (--tune-time) for the search.")
    base = base or HeadSettings()
    split = make_folds(labels, num_classes, folds, seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=PRUNE_EVERY))
    # Pruning starts once these two have completed: the default's learning curve is the first
    # yardstick, so a diverged random trial (chance accuracy at epoch 5) stops there, not after
    # its patience runs out.
    study.enqueue_trial(_as_params(base))
    study.enqueue_trial(_as_params(HeadSettings(family="logistic", logistic_c=0.01)))
    records: list[dict] = []
    results: dict[int, CVResult] = {}

    def objective(trial) -> float:
        settings = suggest(trial, base)
        if trial.number == 0:
            # The enqueued default, exactly (its weight decay 0 is 1e-6 in the log-scale space):
            # if it is chosen, the tuned run is the default run.
            settings = base
        start = time.perf_counter()
        record = {"number": trial.number, "head": settings.label(), "params": dict(trial.params), "state": "running"}
        records.append(record)
        if settings.family == "logistic":
            result = cv_logistic(features, split, settings)
        else:
            trainer = FoldTrainer(features, split, settings, seed)
            while not trainer.advance(PRUNE_EVERY):
                record["cv_accuracy"] = trainer.score
                trial.report(trainer.score, trainer.epochs_done)
                if trial.should_prune():
                    record.update(state="pruned", best_epoch=trainer.epochs_done, seconds=time.perf_counter() - start)
                    raise optuna.TrialPruned()
            result = trainer.result()
        results[trial.number] = result
        record.update(state="complete", cv_accuracy=result.mean_accuracy, cv_accuracy_std=result.std_accuracy,
                      cv_log_loss=float(np.mean(result.log_loss)), best_epoch=result.epochs,
                      seconds=time.perf_counter() - start)
        return result.mean_accuracy

    start = time.perf_counter()
    with progress_bar(total=trials, desc="Tuning the head", unit="trial", enabled=show_progress) as bar:
        def tick(study_, frozen) -> None:
            bar.update(1)
            best = max((r["cv_accuracy"] for r in records if r["state"] == "complete"), default=float("nan"))
            bar.set_postfix_str(f"best CV accuracy {best:.4f}")

        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[tick])
    seconds = time.perf_counter() - start
    complete = [r for r in records if r["state"] == "complete"]
    if not complete:
        raise SelectionError("No trial of the search completed; give it more trials or time.")
    best_record = max(complete, key=lambda r: (round(r["cv_accuracy"], 9), -r["cv_log_loss"], -r["number"]))
    chosen = _one_se_choice(records, results, best_record)
    best = results[chosen["number"]]
    return best.settings, best, records, seconds


def _one_se_choice(records: list[dict], results: dict[int, CVResult], best_record: dict) -> dict:
    """The trial the search returns: the default (trial 0) unless the best beats it by one SE.

    Marks every record with ``selected`` (bool) and the chosen one with ``why``; see
    :mod:`transferlab.selection.choose`.
    """
    from transferlab.selection.choose import versus_default

    for r in records:
        r["selected"] = False
    default = next((r for r in records if r["number"] == 0 and r["state"] == "complete"), None)
    if default is None:  # the default did not run to the end (a time limit): nothing to anchor on
        chosen, why = best_record, "highest CV accuracy (the default head's trial did not complete)"
    elif best_record is default:
        chosen, why = default, "the default head has the highest CV accuracy"
    else:
        verdict = versus_default(results[0].accuracy, results[best_record["number"]].accuracy,
                                 f"{default['head']} (trial 0)", f"{best_record['head']} (trial {best_record['number']})")
        chosen, why = (best_record if verdict.wins else default), verdict.reason
    chosen.update(selected=True, why=why)
    return chosen


def tune(data: str | os.PathLike, *, trials: int | None = 100, timeout: float | str | None = None, folds: int = 5,
         config=None, show_progress: bool = True, **settings) -> TuneResult:
    """Search the head's settings for ``config.backbone`` on the train + validation images.

    Args:
        data: labeled folder, pre-split folder or CSV.
        trials: Optuna trials (default 100; None: until ``timeout``).
        timeout: time limit, seconds or ``"2m"``-style (None: none).
        folds: k of the stratified k-fold CV (default 5).
        config: the ``TrainConfig`` (backbone, split, seed, cache, and the head tried first);
            keyword ``settings`` override its fields.

    Returns:
        A :class:`TuneResult`; ``result.best_config`` trains the best head with ``transferlab.train``.

    Raises:
        MissingExtraError: Optuna is not installed.
    """
    require_optuna()
    from transferlab.data.dataset import load_dataset
    from transferlab.selection.compare import selection_features
    from transferlab.training.config import TrainConfig

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    seconds = parse_duration(timeout)
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    start = time.perf_counter()
    bf = selection_features(dataset, config.backbone, config, show_progress=show_progress)
    extract_seconds = time.perf_counter() - start
    base = HeadSettings.from_config(config) if config.head == "keras" else HeadSettings()
    best, result, records, search_seconds = search(
        bf.features, bf.labels, len(dataset.class_names), trials=trials, timeout=seconds, folds=folds,
        seed=config.seed, base=base, show_progress=show_progress)
    return TuneResult(best=best, best_config=config.replace(**best.config_changes()), cv_accuracy=result.mean_accuracy,
                      cv_accuracy_std=result.std_accuracy, cv_log_loss=float(np.mean(result.log_loss)),
                      trials=records, extract_seconds=extract_seconds, search_seconds=search_seconds,
                      folds=len(result.accuracy), backbone=bf.info.name, best_result=result)


__all__ = ["TuneResult", "parse_duration", "search", "suggest", "tune"]
