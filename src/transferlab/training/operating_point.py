"""The decision rule saved with a model: an operating point for "good vs defect" and a reject option.

*Operating point.* The user names the defect-free class (``good_class``) and the share of
defective images that must be caught (``target_recall``, e.g. 0.95). On the validation split the
threshold on P(good) is one at which at least that share of the not-good images has
``P(good) <= threshold`` with the fewest good images below it (scikit-learn's ``roc_curve`` on the
score -P(good)), placed midway to the next P(good) of the split (:func:`choose_threshold`). At prediction time an image is *defective* when ``P(good) <= threshold``, and gets
the most probable not-good class; otherwise it is good.

*Reject option.* With ``uncertain_below`` set, a prediction whose top probability is below it
comes back as "uncertain", for a person to look at.

The rule is stored in ``config.json`` ``extras["operating_point"]``, in the export's
``model_card.json`` ``"decision"``, and applied by :class:`transferlab.inference.Predictor`.
NumPy only at import time: ONNX/TFLite prediction imports this without TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from transferlab.errors import ConfigError, closest_name_hint

UNCERTAIN = "uncertain"
EXTRAS_KEY = "operating_point"


@dataclass
class DecisionRule:
    """How probabilities become an answer, beyond the plain argmax.

    Attributes:
        good_class: the defect-free class, or None (no operating point, only the reject option).
        threshold: P(good) at or below which an image is called defective.
        target_recall: the share of defective validation images that had to be caught.
        uncertain_below: top probability below which the answer is "uncertain" (None: never).
        chosen_on: the split the threshold was chosen on ("val").
        validation: :func:`decision_figures` on that split at this rule.
    """

    good_class: str | None = None
    threshold: float | None = None
    target_recall: float | None = None
    uncertain_below: float | None = None
    chosen_on: str | None = None
    validation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DecisionRule":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "DecisionRule | None":
        """The rule a run's ``config.json`` (``extras``) or an export's ``model_card.json`` (``decision``) holds."""
        metadata = metadata or {}
        data = (metadata.get("extras") or {}).get(EXTRAS_KEY) or (metadata.get("model_card") or {}).get("decision")
        return cls.from_dict(data) if data else None

    @property
    def active(self) -> bool:
        return self.threshold is not None or self.uncertain_below is not None

    def describe(self) -> str:
        """One line: what the rule does."""
        parts = []
        if self.threshold is not None:
            parts.append(f"'{self.good_class}' only when P({self.good_class}) > {self.threshold:.4g} "
                         f"(target: catch {self.target_recall:.0%} of the others, chosen on {self.chosen_on})")
        if self.uncertain_below is not None:
            parts.append(f"'{UNCERTAIN}' when the top probability is below {self.uncertain_below:g}")
        return "; ".join(parts) or "argmax"


def good_index(class_names: Sequence[str], good_class: str) -> int:
    """Index of ``good_class`` in ``class_names``; a :class:`ConfigError` naming the classes otherwise."""
    names = list(class_names)
    if good_class not in names:
        raise ConfigError(f"good_class {good_class!r} is not one of the classes: {', '.join(names)}."
                          f"{closest_name_hint(good_class, names)} Pass the defect-free class's folder name to "
                          "--good-class.")
    return names.index(good_class)


def choose_threshold(p_good: np.ndarray, is_defect: np.ndarray, target_recall: float) -> float:
    """A threshold t with ``mean(p_good[is_defect] <= t) >= target_recall`` and the fewest false alarms.

    The lowest such t is the P(good) of a defective image, s; any t up to (not including) the
    next higher P(good) of the split, s', calls the same images defective. t is put midway,
    (s + s') / 2: the same figures on this split, and a margin for new images whose P(good)
    lies just above s (at s itself, test recall fell ~6 points below the target on masonry_cracks).

    Args:
        p_good: (N,) float P(good) of each image.
        is_defect: (N,) bool, True for images whose true class is not the good one.
        target_recall: in (0, 1].

    Returns:
        t in [0, 1].

    Raises:
        ConfigError: no defective image, or no good one, to choose on.
    """
    from sklearn.metrics import roc_curve

    is_defect = np.asarray(is_defect, bool)
    if not is_defect.any() or is_defect.all():
        raise ConfigError("Choosing an operating point needs both good and defective images in the validation "
                          f"split (it has {int(is_defect.sum())} defective of {len(is_defect)}). Raise "
                          "--val-fraction or add images.")
    # Score -P(good): "defect when score >= s" is "P(good) <= -s", exactly (negation is exact).
    _, tpr, thresholds = roc_curve(is_defect, -np.asarray(p_good, np.float64), drop_intermediate=False)
    i = int(np.argmax(tpr >= target_recall - 1e-12))
    lowest = float(-thresholds[i])
    above = np.asarray(p_good, np.float64)
    above = above[above > lowest]
    return float((lowest + above.min()) / 2) if len(above) else lowest


def decide(probs: np.ndarray, class_names: Sequence[str], rule: DecisionRule | None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``rule`` to probabilities.

    Args:
        probs: (N, C) float probabilities.
        rule: the decision rule, or None (argmax).

    Returns:
        (labels (N,) int64 class indices, uncertain (N,) bool). An uncertain image keeps its label
        (what the rule would have said) so that nothing is lost.
    """
    probs = np.asarray(probs, np.float64)
    labels = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    uncertain = np.zeros(len(probs), bool)
    if rule is None:
        return labels.astype(np.int64), uncertain
    if rule.threshold is not None:
        g = good_index(class_names, rule.good_class)
        others = probs.copy()
        others[:, g] = -np.inf
        defect = probs[:, g] <= rule.threshold
        labels = np.where(defect, others.argmax(axis=1), g)
    if rule.uncertain_below is not None:
        uncertain = probs.max(axis=1) < rule.uncertain_below
    return labels.astype(np.int64), uncertain


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def decision_figures(probs: np.ndarray, y_true: np.ndarray, class_names: Sequence[str],
                     rule: DecisionRule) -> dict:
    """What the rule does on labeled images: the figures at the operating point.

    Args:
        probs: (N, C) probabilities; y_true: (N,) int true class indices.

    Returns:
        A JSON-ready dict: ``images``; ``uncertain`` and ``uncertain_share`` (routed to a person);
        ``accuracy_decided`` (accuracy on the rest); with an operating point also ``defective``,
        ``good``, ``defect_recall`` (defective images called defective, uncertain ones included
        as the rule labels them), ``defect_precision``, ``good_recall``, ``false_alarm_rate``
        (good images called defective), ``missed`` (defective called good and not routed to a
        person) and ``caught_or_routed`` (share of defective images either called defective or
        uncertain).
    """
    y = np.asarray(y_true, np.int64)
    labels, uncertain = decide(probs, class_names, rule)
    decided = ~uncertain
    out: dict = {"images": int(len(y)), "uncertain": int(uncertain.sum()),
                 "uncertain_share": _ratio(int(uncertain.sum()), len(y)),
                 "accuracy_decided": _ratio(int((labels[decided] == y[decided]).sum()), int(decided.sum()))}
    if rule.threshold is not None:
        g = good_index(class_names, rule.good_class)
        is_defect, called_defect = y != g, labels != g
        tp, fn = int((is_defect & called_defect).sum()), int((is_defect & ~called_defect).sum())
        fp, tn = int((~is_defect & called_defect).sum()), int((~is_defect & ~called_defect).sum())
        out.update({"threshold": rule.threshold, "target_recall": rule.target_recall,
                    "defective": tp + fn, "good": fp + tn,
                    "defect_recall": _ratio(tp, tp + fn), "defect_precision": _ratio(tp, tp + fp),
                    "good_recall": _ratio(tn, tn + fp), "false_alarm_rate": _ratio(fp, tn + fp),
                    "missed": int((is_defect & ~called_defect & decided).sum()),
                    "caught_or_routed": _ratio(int((is_defect & (called_defect | uncertain)).sum()), tp + fn)})
    return out


def select_rule(probs: np.ndarray, y_true: np.ndarray, class_names: Sequence[str], *, good_class: str | None,
                target_recall: float | None, uncertain_below: float | None, split: str = "val") -> DecisionRule:
    """Choose the operating point on one split's probabilities (N, C) and labels (N,), and say what it does there."""
    rule = DecisionRule(good_class=good_class, target_recall=target_recall, uncertain_below=uncertain_below,
                        chosen_on=split if good_class else None)
    if good_class is not None:
        g = good_index(class_names, good_class)
        p = np.asarray(probs, np.float64)
        rule.threshold = choose_threshold(p[:, g], np.asarray(y_true) != g, target_recall or 0.95)
        if not math.isfinite(rule.threshold):
            rule.threshold = 1.0
    rule.validation = decision_figures(probs, y_true, class_names, rule)
    return rule


def format_figures(figures: dict, split: str) -> str:
    """The console lines for :func:`decision_figures` on ``split``."""
    lines = []
    if "threshold" in figures:
        lines.append(f"operating point ({split} split): defects caught {figures['defect_recall']:.1%} "
                     f"(target {figures['target_recall']:.0%}), false alarms {figures['false_alarm_rate']:.1%} of "
                     f"good, defect precision {figures['defect_precision'] or 0:.1%}  [threshold P(good) <= "
                     f"{figures['threshold']:.4g}; {figures['defective']} defective, {figures['good']} good]")
    if figures.get("uncertain"):
        lines.append(f"uncertain: {figures['uncertain']} of {figures['images']} ({figures['uncertain_share']:.1%}) "
                     f"routed to a person; accuracy on the rest {figures['accuracy_decided'] or 0:.1%}")
    return "\n".join(lines)
