"""Model selection end to end: ``transferlab compare`` and ``transferlab train --backbone auto / --tune``.

    board = transferlab.compare("photos/")                 # leaderboard + compare.html written
    board = transferlab.compare("photos/", save_best=True)  # ... and the winner trained: board.run_dir
    clf = transferlab.train_selected("photos/", backbone="auto", tune=100)

The choosing happens in :mod:`transferlab.selection` on the train and validation images only;
this module adds the run directories: it writes the comparison's files and trains the chosen
settings with :func:`transferlab.api.training.train`, whose run keeps the leaderboard and the
search (``leaderboard.csv``, ``trials.csv``, ``tuning.json`` and their plots) beside its
report, and their summaries under ``extras`` in ``config.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from transferlab.api.classifier import Classifier
from transferlab.training.config import TrainConfig

logger = logging.getLogger("transferlab")

AUTO = "auto"


def compare(data: str | os.PathLike, backbones: str | Sequence[str] | None = "available", *, folds: int = 5,
            save_best: bool = False, out_dir: str | os.PathLike | None = None, config: TrainConfig | None = None,
            show_progress: bool = True, **settings):
    """Rank backbones x head families by cross-validation; write the leaderboard; optionally train the winner.

    Args:
        data: labeled folder, pre-split folder or CSV.
        backbones: ``"available"`` (default), ``"all"``, a comma-separated string or a list.
        folds: k of the stratified k-fold CV over the train + validation images (default 5).
        save_best: train the winner into a normal run directory (``board.run_dir``) whose
            report.html shows the leaderboard; the test score is then that run's.
        out_dir: folder for leaderboard.csv/json, accuracy_cost.png and compare.html (default
            ``<runs_dir>/compare-<data>-<time>``).
        config, settings: the :class:`TrainConfig` (split, seed, cache, head defaults) and overrides.

    Returns:
        The :class:`~transferlab.selection.compare.Leaderboard`.
    """
    from transferlab.api.rundirs import new_run_dir
    from transferlab.api.training import train
    from transferlab.selection.compare import compare as rank
    from transferlab.selection.compare import selection_files

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    board = rank(data, backbones, folds=folds, config=config, score_test=not save_best, show_progress=show_progress)
    if save_best:
        clf = train(data, board.winner_config, show_progress=show_progress, extra_files=selection_files(board),
                    extras={"selection": _extras(board)})
        board.run_dir = clf.run_dir
        board.test = clf.metadata.get("metrics")
    board.write(out_dir or new_run_dir(config.runs_dir, None, f"compare-{Path(data).stem}"))
    return board


def _extras(board) -> dict:
    summary = board.to_dict()
    return {"winner": summary["winner"], "cv_estimate": summary["cv_estimate"], "folds": summary["folds"],
            "skipped": summary["skipped"], "timing": summary["timing"], "candidates": len(summary["leaderboard"])}


def train_selected(data: str | os.PathLike, config: TrainConfig | None = None, *, backbone: str | None = None,
                   tune: int | bool | None = None, tune_time: str | float | None = None, folds: int = 5,
                   backbones: str | Sequence[str] | None = "available", show_progress: bool = True,
                   overwrite: bool = False, **settings) -> Classifier:
    """``train`` with the backbone and/or the head's settings chosen on the folds first.

    Args:
        data: labeled folder, pre-split folder or CSV.
        config, settings: the :class:`TrainConfig` and overrides (its backbone unless ``"auto"``).
        backbone: ``"auto"``: compare ``backbones`` x head families and train the winner.
        tune: Optuna trials over the head's settings (True: 100); with ``backbone="auto"`` on the
            winning backbone. tune_time: a time limit instead of / besides the trials ("2m").
        folds: k of the stratified k-fold CV.
        overwrite: replace an existing run of the same name (checked before the search starts).

    Returns:
        The trained :class:`~transferlab.Classifier`. Its ``config.json`` holds the chosen settings as
        ordinary settings (so ``train`` with them reproduces the run); the run directory keeps
        ``leaderboard.csv`` and/or ``trials.csv`` + ``tuning.json``, which report.html shows.
    """
    from transferlab.api.rundirs import check_run_name
    from transferlab.api.training import train
    from transferlab.selection.compare import compare as rank
    from transferlab.selection.compare import selection_files
    from transferlab.selection.tune import tune as search

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    if backbone is not None and backbone != AUTO:
        config = config.replace(backbone=backbone)
    check_run_name(config, overwrite)  # a taken name fails now, not after the search
    files: dict[str, bytes] = {}
    extras: dict = {}
    if backbone == AUTO or config.backbone == AUTO:
        board = rank(data, backbones, folds=folds, config=config.replace(backbone=TrainConfig().backbone),
                     score_test=False, show_progress=show_progress)
        config = board.winner_config
        files.update(selection_files(board))
        extras["selection"] = _extras(board)
        logger.info("Chosen on %d folds: %s + %s (CV accuracy %.4f)", board.folds, board.winner["backbone"],
                    board.winner["head"], board.winner["cv_accuracy"])
    trials = 100 if tune is True else (int(tune) if tune else None)
    if trials or tune_time:
        result = search(data, trials=trials, timeout=tune_time, folds=folds, config=config,
                        show_progress=show_progress)
        config = result.best_config
        files.update(result.files())
        extras["tuning"] = result.summary()
        logger.info("Best of %d trials: %s (CV accuracy %.4f +- %.4f)", len(result.trials), result.best.label(),
                    result.cv_accuracy, result.cv_accuracy_std)
    return train(data, config, show_progress=show_progress, extra_files=files, extras=extras, overwrite=overwrite)
