"""The fine-tuning phase of a training run, and the depth it chooses when ``unfreeze="auto"`` (the default).

:func:`fine_tune_phase` unfreezes nothing itself: :func:`transferlab.api.training.fit_run` sets
the trainable layers, then calls it with the model, the split features and the callbacks'
settings (checkpoints, early stopping, time budget).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from transferlab.data.decode import ResizeConfig
from transferlab.features import SplitFeatures
from transferlab.training.config import TrainConfig

logger = logging.getLogger("transferlab")

__all__ = ["choose_depth", "extra_callbacks", "fine_tune_phase"]


def extra_callbacks(run_dir: Path, config: TrainConfig) -> list:
    """Optional callbacks (TensorBoard) named in the config."""
    from transferlab.training.callbacks import tensorboard_callback

    return [tensorboard_callback(run_dir)] if config.tensorboard else []


def choose_depth(backbone, resize: ResizeConfig, config: TrainConfig, features: dict[str, SplitFeatures],
                 seconds_left: float | None, record: dict) -> TrainConfig:
    """``unfreeze="auto"``: fine-tune every layer when the time allows it, else the top layers.

    Args:
        seconds_left: what the time budget leaves for fine-tuning; None (no budget):
            :data:`~transferlab.training.auto.UNBUDGETED_SECONDS`.
        record: receives the choice (``record["depth"]``), saved with every fine-tuning checkpoint,
            so a resumed run continues the recipe it started instead of choosing again.

    Returns:
        The config with the chosen depth and, for every layer, :data:`~transferlab.training.auto.DEEP_RECIPE`'s
        settings where the user left the default.
    """
    from transferlab.training import auto

    if "depth" not in record:
        train_records = features["train"].records
        # One fine-tuning batch: the per-image cost depends on the batch size (eager calls of 8 images
        # cost ~1.5x more per image than 16), and the step factor was measured at this size.
        sample = np.stack([resize.load(r.path) for r in train_records[:config.fine_tune_batch_size]])
        deep, why = auto.choose_depth(auto.UNBUDGETED_SECONDS if seconds_left is None else seconds_left,
                                      auto.forward_seconds_per_image(backbone, sample),
                                      len(train_records), len(features["val"]), budgeted=seconds_left is not None)
        record["depth"] = {"all_layers": deep, "why": why}
        logger.info("Fine-tuning %s.", why)
    if record["depth"]["all_layers"]:  # the recipe's settings, where the user left the default
        defaults = TrainConfig()
        return config.replace(**{k: v for k, v in auto.DEEP_RECIPE.items()
                                 if getattr(config, k) == getattr(defaults, k)})
    return config.replace(unfreeze=auto.TOP_LAYERS)


def fine_tune_phase(model, features: dict[str, SplitFeatures], resize: ResizeConfig, config: TrainConfig,
                     run_dir: Path, state: dict | None, class_names: list[str], head_history: dict,
                     show_progress: bool, views_source: dict | None = None, budget: dict | None = None,
                     record: dict | None = None):
    """Unfreeze the top of the backbone and train on augmented images.

    ``views_source`` (``{"cut", "fingerprint", "cache_root"}``): train only the top, on cached
    views of the frozen bottom (:mod:`transferlab.training.cached_top`).
    ``budget`` (``{"deadline", "reserve"}``): fit the epochs to the time left
    (:class:`~transferlab.training.budget.BudgetPlanner`). ``record`` (the depth chosen, the
    views, the plan) is kept with every checkpoint, so a resumed run continues what it began.

    Returns:
        ``(history, improved, details)``; ``details``: views cached, epoch times, the plan.
    """
    from transferlab.data.augment import resolve_augment
    from transferlab.training.budget import BudgetPlanner, EpochTimer, FittedCosine
    from transferlab.training.callbacks import CostEstimate, EpochProgress
    from transferlab.training.checkpoint import EpochCheckpoint, ResumableEarlyStopping, checkpoint_file, stop_on_sigint
    from transferlab.training.finetune import fine_tune, fine_tune_rate, schedule_callbacks, steps_for

    train_records, val_records = features["train"].records, features["val"].records
    record = {} if record is None else record
    views = None
    if views_source is not None:
        from transferlab.training.cached_top import compute_views, split_classifier

        bottom, _, shape = split_classifier(model, views_source["cut"])
        # Under a budget the views may take at most a third of the time left: the epochs need the rest.
        max_seconds = None if budget is None or "views" in record else \
            (budget["deadline"].left() - budget["reserve"]) / 3.0
        views = compute_views(bottom, views_source["cut"], shape,
                              ([r.path for r in train_records], [r.sha256 for r in train_records]),
                              ([r.path for r in val_records], [r.sha256 for r in val_records]), resize,
                              resolve_augment(config.augment), views=int(record.get("views") or config.fine_tune_views),
                              seed=config.seed, cache_root=views_source["cache_root"],
                              fingerprint=views_source["fingerprint"], engine=config.engine,
                              show_progress=show_progress, max_seconds=max_seconds)
        record["views"] = int(views.train.shape[0])
    index = {name: i for i, name in enumerate(class_names)}
    early = ResumableEarlyStopping(run_dir, config.fine_tune_patience, (state or {}).get("early_stopping")) \
        if val_records and config.fine_tune_patience > 0 else None
    plateau = next(iter(schedule_callbacks(config.schedule, config.patience)), None)
    checkpoint = EpochCheckpoint(run_dir, "fine-tune", config.seed, (state or {}).get("history"),
                                 early_stopping=early, plateau=plateau, plateau_state=(state or {}).get("plateau"),
                                 # "budget" is the key older checkpoints use; it holds the record with or without one
                                 extra_state={"head_history": head_history, "budget": record})
    timer, learning_rate, planner = EpochTimer(), None, None
    if budget is not None:
        steps = steps_for(len(train_records), config.fine_tune_batch_size)
        planned = record.get("planned_epochs")
        if config.schedule == "cosine":
            learning_rate = FittedCosine(fine_tune_rate(config),
                                         (planned or config.fine_tune_epochs) * steps, config.warmup_epochs * steps)
        planner = BudgetPlanner(budget["deadline"], steps_per_epoch=steps, max_epochs=config.fine_tune_epochs,
                                reserve_seconds=budget["reserve"], schedule=learning_rate, planned_epochs=planned,
                                val_fraction=len(val_records) / max(1, len(train_records)), timer=timer,
                                record=record)
    # Order matters: the timer and the planner write the logs and the record that the checkpoint saves.
    # The planner of a budgeted run says what it plans; otherwise the estimate says what it will cost.
    estimate = planner or CostEstimate("Fine-tuning", val_fraction=len(val_records) / max(1, len(train_records)))
    callbacks = [timer, estimate] + [c for c in (early, plateau) if c is not None] + [
        checkpoint, EpochProgress("Fine-tuning", enabled=show_progress), *extra_callbacks(run_dir, config)]
    with stop_on_sigint(checkpoint):
        fine_tune(model, ([r.path for r in train_records], [index[r.label] for r in train_records]),
                  ([r.path for r in val_records], [index[r.label] for r in val_records]), resize, config,
                  num_classes=len(class_names), callbacks=callbacks,
                  initial_epoch=(state or {}).get("epochs_done", 0),
                  restore_state=checkpoint_file(run_dir, "state", state) if state else None, guard=early,
                  views=views, learning_rate=learning_rate)
    improved = not (early is not None and early.kept_baseline) and not (planner is not None and planner.gave_up)
    if not improved and early is not None:
        logger.info("Fine-tuning did not improve the validation loss (best %.4f): keeping the weights it started "
                    "from.", early.best)
    details = {"views": record.get("views"), "views_seconds": round(views.seconds, 3) if views is not None else None,
               "epoch_seconds": [round(t, 3) for t in timer.seconds]}
    if planner is not None:
        details.update({"planned_epochs": record.get("planned_epochs"), "gave_up": planner.gave_up,
                        "estimated_epoch_seconds": record.get("estimated_epoch_seconds")})
    return checkpoint.history, improved, details
