"""The default head or a challenger? The one-standard-error rule on paired fold scores.

A search over many head settings picks, among them, the one whose cross-validated accuracy is
highest; with 100 trials the maximum of noisy estimates is biased upwards, and on easy data
(every candidate near 100%) the "best" is decided by one image of one fold, or by log-loss
alone. Such a pick is no better than the default that ``train`` fits, and can be worse on the
test split. So the default head is always a candidate, and a challenger replaces it only when
it is better by more than one standard error (Breiman et al.'s one-standard-error rule, here
on the per-fold differences, since every candidate is scored on the same folds):

    d_i = accuracy_challenger(fold i) - accuracy_default(fold i),  i = 1..k
    margin = mean(d),  SE = std(d, ddof=1) / sqrt(k)
    the challenger wins  iff  margin > SE  (and margin > 0)

Ties, and gains within one standard error, go to the default. A consequence worth knowing: a
challenger that is better on one fold only and equal on the others never wins (its margin is
exactly one SE), however large that one fold's gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Float noise: a one-fold gain has margin == SE exactly, which rounding must not tip either way.
_TOLERANCE = 1e-9
RULE = "one standard error of the paired fold differences"


@dataclass(frozen=True)
class Verdict:
    """How a challenger fared against the default head.

    Attributes:
        wins: True when the challenger replaces the default.
        margin: mean over folds of (challenger - default) accuracy.
        standard_error: the standard error of those per-fold differences (ddof 1).
        reason: one sentence for the leaderboard, the trials and the console.
    """

    wins: bool
    margin: float
    standard_error: float
    reason: str


def versus_default(default_accuracy, challenger_accuracy, default_label: str = "default",
                   challenger_label: str = "challenger") -> Verdict:
    """The one-standard-error verdict of a challenger against the default head.

    Args:
        default_accuracy: (k,) per-fold accuracies of the default head.
        challenger_accuracy: (k,) per-fold accuracies of the challenger, on the same folds.
        default_label, challenger_label: names for the reason.

    Returns:
        A :class:`Verdict`.

    Raises:
        ValueError: the two are not scored on the same number of folds (at least 2).
    """
    a = np.asarray(default_accuracy, np.float64)
    b = np.asarray(challenger_accuracy, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"Need per-fold scores on the same >= 2 folds, got shapes {a.shape} and {b.shape}.")
    diff = b - a
    margin = float(diff.mean())
    margin = 0.0 if abs(margin) < _TOLERANCE else margin  # equal scores: a tie, not "-0.0000"
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    wins = margin > 0 and margin > se + _TOLERANCE
    figures = f"{margin:+.4f} CV accuracy (SE {se:.4f}, {len(diff)} folds)"
    if wins:
        reason = f"{challenger_label} beats the default {default_label} by {figures}: more than one standard error"
    else:
        reason = (f"kept the default {default_label}: the best challenger {challenger_label} is {figures}, "
                  "not more than one standard error better")
    return Verdict(wins, margin, se, reason)


__all__ = ["RULE", "Verdict", "versus_default"]
