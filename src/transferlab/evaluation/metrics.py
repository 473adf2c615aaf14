"""Classification metrics as a JSON-serialisable report, plus a console summary.

All numbers come from scikit-learn; this module only validates inputs, fixes the label set to
``range(C)`` (so absent classes still get a row and column) and converts to plain Python types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

__all__ = ["classification_report", "format_summary", "is_imbalanced_report"]

_EPS = 1e-7  # Keras' default epsilon, so the loss matches model.evaluate()
_MAX_CONFUSED = 10


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Summarise predictions against true labels.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,)
        Integer class indices in ``[0, n_classes)``.
    probabilities : ndarray of shape (n_samples, n_classes)
        Predicted class probabilities (e.g. softmax outputs); the prediction is the argmax.
    class_names : sequence of str of length n_classes
        Names in class-index order.

    Returns
    -------
    dict
        Plain Python types only, ready for ``json.dump``:

        - ``accuracy``, ``loss`` (mean categorical cross-entropy, probabilities clipped at 1e-7),
          ``num_samples``, ``class_names``;
        - ``macro`` and ``weighted``: ``{"precision", "recall", "f1"}``;
        - ``per_class``: ``{name: {"precision", "recall", "f1", "support"}}``;
        - ``confusion_matrix``: list of rows, rows = true class, columns = predicted class;
        - ``most_confused``: up to 10 ``{"true", "predicted", "count"}`` off-diagonal pairs with
          nonzero count, most frequent first;
        - ``top_k_accuracy``: ``{"top_3", "top_5"}``, only when n_classes > 5.

    Raises
    ------
    ValueError
        If shapes disagree, labels are out of range or not integers, or probabilities are not a
        finite 2-D array.
    """
    y, p, names = _validate(y_true, probabilities, class_names)
    n_classes = len(names)
    labels = list(range(n_classes))
    y_pred = p.argmax(axis=1)

    prec, rec, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=labels, average=None, zero_division=0
    )
    averages = {
        avg: precision_recall_fscore_support(y, y_pred, labels=labels, average=avg, zero_division=0)
        for avg in ("macro", "weighted")
    }
    cm = confusion_matrix(y, y_pred, labels=labels)

    true_prob = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    report: dict[str, Any] = {
        "accuracy": float(np.mean(y_pred == y)),
        "loss": float(-np.mean(np.log(true_prob))),
        "num_samples": int(len(y)),
        "class_names": list(names),
        "macro": _prf(averages["macro"]),
        "weighted": _prf(averages["weighted"]),
        "per_class": {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.astype(int).tolist(),
        "most_confused": _most_confused(cm, names),
    }
    if n_classes > 5:
        # Only for C > 5: with k >= C top-k accuracy is trivially 1 and sklearn warns.
        report["top_k_accuracy"] = {
            f"top_{k}": float(top_k_accuracy_score(y, p, k=k, labels=labels)) for k in (3, 5)
        }
    return report


def is_imbalanced_report(report: dict[str, Any]) -> bool:
    """True when the evaluated images' classes are imbalanced (the training rule,
    :data:`~transferlab.training.imbalance.IMBALANCE_RATIO`, on their supports)."""
    from transferlab.training.imbalance import is_imbalanced

    return is_imbalanced([m["support"] for m in report["per_class"].values()])


def format_summary(report: dict[str, Any]) -> str:
    """Return a short console summary of a :func:`classification_report` result.

    When the evaluated classes are imbalanced it leads with macro-F1, balanced accuracy and
    each class's recall: there accuracy looks fine while a rare class is missed. The figures
    at a saved operating point (``report["operating_point"]``) follow. When the evaluated data
    held images the model was trained on (``report["seen_in_training"]``), a line says how many
    and whether they are in the figures.
    """
    lines = [f"samples: {report['num_samples']}"]
    if is_imbalanced_report(report):
        lines += [
            f"macro F1: {report['macro']['f1']:.4f}   balanced accuracy (mean recall): "
            f"{report['macro']['recall']:.4f}   [classes imbalanced: accuracy alone misleads]",
            "recall per class: " + ", ".join(f"{name} {m['recall']:.3f}" for name, m in report["per_class"].items()),
            f"accuracy: {report['accuracy']:.4f}   loss: {report['loss']:.4f}",
        ]
    else:
        lines.append(f"accuracy: {report['accuracy']:.4f}   loss: {report['loss']:.4f}   "
                     f"macro F1: {report['macro']['f1']:.4f}")
    seen = report.get("seen_in_training") or 0
    if seen and report.get("seen_in_training_included"):
        lines.append(f"warning: {seen} of these {report['num_samples']} images were used to train this model, so "
                     "the figures are optimistic; without --split only held-out images are evaluated")
    elif seen:
        lines.append(f"held-out images only: left out {seen} image(s) the model was trained on "
                     "(--split all includes them)")
    if report.get("operating_point"):
        from transferlab.training.operating_point import format_figures

        text = format_figures(report["operating_point"], report["operating_point"].get("split", "evaluated"))
        lines += text.splitlines()
    if "top_k_accuracy" in report:
        lines.append(
            "   ".join(
                f"{k.replace('_', '-')} accuracy: {v:.4f}"
                for k, v in report["top_k_accuracy"].items()
            )
        )
    per_class = report["per_class"]
    width = max([len("class"), *(len(name) for name in per_class)])
    header = f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}"
    lines += ["", header, "-" * len(header)]
    for name, m in per_class.items():
        lines.append(
            f"{name:<{width}}  {m['precision']:>9.4f}  {m['recall']:>9.4f}  "
            f"{m['f1']:>9.4f}  {m['support']:>7d}"
        )
    if report.get("most_confused"):
        top = report["most_confused"][:3]
        pairs = ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']})" for c in top)
        lines += ["", f"most confused (true -> predicted): {pairs}"]
    return "\n".join(lines)


def _validate(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = [str(n) for n in class_names]
    p = np.asarray(probabilities)
    if p.ndim != 2:
        raise ValueError(
            f"probabilities must be 2-D (n_samples, n_classes), got shape {p.shape}."
        )
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise ValueError(f"probabilities must be real numbers, got dtype {p.dtype}.")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values.")
    if p.shape[1] != len(names):
        raise ValueError(
            f"probabilities have {p.shape[1]} columns but {len(names)} class names were given."
        )
    if len(names) < 2:
        raise ValueError(f"Need at least 2 classes, got {len(names)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names contains duplicates: {names}.")

    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(
            f"y_true must be 1-D integer labels of shape (n_samples,), got shape {y.shape}."
        )
    if y.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_true has {y.shape[0]} samples but probabilities have {p.shape[0]} rows."
        )
    if y.shape[0] == 0:
        raise ValueError("Cannot evaluate on 0 samples.")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)  # float labels like 2.0 are common after np.concatenate
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}.")
    bad = (y < 0) | (y >= len(names))
    if bad.any():
        raise ValueError(
            f"y_true has labels outside [0, {len(names) - 1}]: {sorted(set(y[bad].tolist()))[:10]}."
        )
    return y.astype(np.int64), p, names


def _prf(values: tuple) -> dict[str, float]:
    precision, recall, f1, _ = values
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _most_confused(cm: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true_idx, pred_idx = np.nonzero(off)
    counts = off[true_idx, pred_idx]
    # Stable sort on -count keeps ties in (true, predicted) index order: deterministic output.
    order = np.argsort(-counts, kind="stable")[:_MAX_CONFUSED]
    return [
        {"true": names[true_idx[i]], "predicted": names[pred_idx[i]], "count": int(counts[i])}
        for i in order
    ]
