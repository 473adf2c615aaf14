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
