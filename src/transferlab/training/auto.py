"""Strategy "auto": frozen features and the head first, then fine-tuning if the time budget allows,
kept only when it improves the validation loss; what each phase gained goes into config.json.

The pieces the training flow calls: :func:`run_deadline` (the budget of a new or resumed run),
:func:`evaluation_reserve` (time kept back for evaluating and saving), :func:`phase_record`
(one phase's validation figures) and :func:`decision` (which model was kept, and why).
"""

from __future__ import annotations

import logging
import math

from transferlab.training.budget import Deadline

logger = logging.getLogger("transferlab")

# Evaluating the test split through the full model, saving it, Grad-CAM and the report: measured
# ~5 s + ~0.03 s per image on 2 CPU cores (blood_cells, 167 test images), up to twice that when
# other processes load the machine.
_EVAL_FIXED_S = 10.0
_EVAL_PER_IMAGE_S = 0.03
# Not worth starting a fine-tuning phase with less than this left (views + two epochs rarely fit).
MIN_FINE_TUNE_S = 20.0

# When the time allows it, fine-tuning with the default depth (``unfreeze="auto"``) trains every
# layer with these settings, each where the user left its default. Measured on blood_cells' test
# split: the "strong recipe" (the same with 12 epochs) 0.976; these 8 epochs 0.976 too, in
# two thirds of the epochs; the top 16 layers on cached views 0.946-0.970 over five runs.
# Layer-wise decay is off: at 0.85 per block the bottom blocks would train at a few per cent of the
# rate, and "all layers" would behave like the top 16 (0.964 both, measured).
DEEP_RECIPE = {"unfreeze": "all", "unfreeze_from": None, "layer_decay": 1.0, "fine_tune_lr": 3e-4,
               "weight_decay": 0.0, "clip_norm": 0.0, "augment": "light", "fine_tune_patience": 10,
               "fine_tune_views": 0, "fine_tune_epochs": 8}
# ... when at least this many of its epochs fit in the time left (all of them).
DEEP_MIN_EPOCHS = 8
# The depth when every layer does not fit: EfficientNet-Lite0's last 5 blocks and head conv, trained
# on cached views of the frozen bottom (blood_cells: 0.964 in a quarter of the time).
TOP_LAYERS = "16"
# Without --time-budget, the time every-layer fine-tuning may take before the top layers are
# chosen instead: on 2 CPU cores ~4,000 training images of 224 px; on a GPU far more.
UNBUDGETED_SECONDS = 20 * 60.0
# A training step over every layer costs this many eager forward passes of the backbone
# (measured on 2 CPU cores: 32 ms vs 19 ms per 224 px image with EfficientNet-Lite0); the planner
# corrects the plan from the real steps, so the factor only decides the recipe.
TRAIN_STEP_FACTOR = 1.7


def may_choose_depth(config) -> bool:
    """Whether the run picks how deep to fine-tune: ``unfreeze="auto"`` (the default) and no
    ``unfreeze_from``."""
    return config.unfreeze == "auto" and config.unfreeze_from is None


def forward_seconds_per_image(backbone, images) -> float:
    """Seconds per image of the backbone's forward pass on ``images`` (uint8 (N, S, S, 3)), the
    median of two timed calls after a warm-up call."""
    import time

    import numpy as np

    batch = np.asarray(images, np.float32)
    backbone(batch, training=False)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        backbone(batch, training=False)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / max(1, len(batch))


def choose_depth(seconds_left: float, forward_s: float, n_train: int, n_val: int,
                 budgeted: bool = True) -> tuple[bool, str]:
    """Whether every layer is fine-tuned (:data:`DEEP_RECIPE`), and why, from the time left and the
    measured forward cost per image.

    Args:
        seconds_left: the time the fine-tuning may take (the budget left, or
            :data:`UNBUDGETED_SECONDS` when ``budgeted`` is False).
        forward_s: seconds per image of the backbone's forward pass.
        n_train, n_val: images per epoch.
        budgeted: whether ``seconds_left`` comes from ``--time-budget`` (only changes the wording).
    """
    epoch = forward_s * (n_train * TRAIN_STEP_FACTOR + n_val)
    fits = int(seconds_left // epoch) if epoch > 0 else DEEP_MIN_EPOCHS
    where = "the budget" if budgeted else f"the {seconds_left / 60:.0f} minutes allowed without --time-budget"
    if fits >= DEEP_MIN_EPOCHS:
        return True, (f"every layer ({where} {'fits' if budgeted else 'fit'} ~{min(fits, DEEP_RECIPE['fine_tune_epochs'])} epochs of "
                      f"~{epoch:.0f} s)")
    return False, (f"the top {TOP_LAYERS} layers (every layer needs ~{epoch:.0f} s per epoch: {fits} of the "
                   f"{DEEP_MIN_EPOCHS} wanted fit in {where} ({seconds_left:.0f} s); "
                   "--unfreeze all forces it)")


def run_deadline(time_budget: float | None, state: dict | None, started: float) -> Deadline | None:
    """The deadline of a run that began at ``started``; a resumed run continues the budget it had
    spent (``spent_seconds`` recorded with its last fine-tuning checkpoint)."""
    if not time_budget:
        return None
    spent = float(((state or {}).get("budget") or {}).get("spent_seconds") or 0.0)
    return Deadline(time_budget, start=started, spent_before=spent)


def reason_to_skip(strategy: str, not_tunable: str | None, n_val: int, deadline: Deadline | None, reserve: float,
                   *, resumed_fine_tune: bool = False) -> str | None:
    """Why strategy "auto" keeps the head without fine-tuning, or None when it fine-tunes."""
    if strategy != "auto":
        return None
    reason = None
    if not_tunable:
        reason = f"the backbone cannot be fine-tuned ({not_tunable})"
    elif not n_val:
        reason = "no validation images to tell whether fine-tuning helps"
    elif deadline is not None and not resumed_fine_tune and deadline.left() - reserve < MIN_FINE_TUNE_S:
        reason = f"the time budget left ({deadline.left():.0f} s) is too short to fine-tune"
    if reason:
        logger.info("Strategy auto: keeping the head on frozen features: %s.", reason)
    return reason


def evaluation_reserve(n_eval: int) -> float:
    """Seconds to keep for evaluation and saving after the last training epoch."""
    return _EVAL_FIXED_S + _EVAL_PER_IMAGE_S * n_eval


def phase_record(name: str, history: dict, seconds: float, **extra) -> dict:
    """Best validation loss of a phase, with the validation accuracy at that epoch."""
    losses = [v for v in history.get("val_loss", []) if not math.isnan(v)]
    record = {"phase": name, "seconds": round(seconds, 3), "epochs": len(history.get("loss", []))}
    if losses:
        best = history["val_loss"].index(min(losses))
        record.update({"val_loss": round(min(losses), 5),
                       "val_accuracy": round(history.get("val_accuracy", [math.nan] * (best + 1))[best], 5)})
    record.update(extra)
    return record


def decision(phases: list[dict], fine_tuned: bool, kept_fine_tune: bool, reason: str | None = None) -> dict:
    """What config.json says about the phases: gains on validation, the kept model and why."""
    head = phases[0]
    summary = {"phases": phases, "kept": "head"}
    if not fine_tuned:
        summary["why"] = reason or "fine-tuning was not run"
        return summary
    fine = phases[-1]
    if "val_loss" in head and "val_loss" in fine:
        fine["gain_val_loss"] = round(head["val_loss"] - fine["val_loss"], 5)
        fine["gain_val_accuracy"] = round(fine["val_accuracy"] - head["val_accuracy"], 5)
    if kept_fine_tune:
        summary["kept"] = "fine-tune"
        summary["why"] = "fine-tuning lowered the validation loss"
    else:
        summary["why"] = reason or "fine-tuning did not lower the validation loss; the head on frozen features is kept"
    return summary
