"""Evaluation plots written straight to PNG.

Figures are built with :class:`matplotlib.figure.Figure` and saved with ``fig.savefig``, never
through pyplot: that needs no GUI backend, does not switch a backend that the caller's pyplot may
already use, and leaves no figures registered in pyplot's global state to leak memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_confusion_matrix", "plot_precision_recall", "plot_training_curves"]

_DPI = 120
# Beyond this many classes per-cell numbers cannot be read at any sensible figure size.
_MAX_ANNOTATED_CLASSES = 40


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    normalize: bool = False,
    title: str | None = None,
) -> Path:
    """Save a confusion matrix heatmap as an image.

    Parameters
    ----------
    matrix : array-like of shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted classes (as in
        ``classification_report(...)["confusion_matrix"]``).
    class_names : sequence of str of length n_classes
        Axis labels in class-index order.
    path : str or PathLike
        Output file; the format follows the suffix (``.png``). Parent folders are created.
    normalize : bool, default False
        Show each row divided by its total (per-class recall on the diagonal). Rows with no
        samples are shown as zeros.
    title : str, optional
        Figure title; defaults to "Confusion matrix" (plus "(row-normalized)").

    Notes
    -----
    The figure grows with the number of classes. Cells carry their value as text up to 40
    classes; beyond that the numbers would be unreadable and only the colours are drawn.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    cm = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"matrix must have shape ({n}, {n}) for {n} class names, got {cm.shape}.")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        # A class absent from the evaluation set has an all-zero row: show zeros, not NaN.
        values = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    else:
        values = cm

    cell = 0.55 if n <= 20 else 0.4  # inches per class
    side = float(np.clip(cell * n + 2.5, 4.5, 30.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar_label = "fraction of true class" if normalize else "count"
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=bar_label)

    fontsize = 10 if n <= 10 else 8 if n <= 20 else 7
    ticks, labels = np.arange(n), list(class_names)
    # Rotated, right-anchored x labels: long class names neither overlap nor drift off their cell.
    ax.set_xticks(
        ticks, labels=labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize
    )
    ax.set_yticks(ticks, labels=labels, fontsize=fontsize)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    if title is None:
        title = "Confusion matrix" + (" (row-normalized)" if normalize else "")
    ax.set_title(title)

    if n <= _MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                # White text on dark cells, dark text on light ones, so every number stays legible.
                colour = "white" if v > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    return _save(fig, path)


def plot_training_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    phase_boundaries: Sequence[int] = (),
) -> Path:
    """Save loss and accuracy curves per epoch, training vs validation.

    Parameters
    ----------
    history : mapping of str to sequence of float
        Per-epoch values as in ``keras.callbacks.History.history``: ``loss``, ``val_loss`` and an
        accuracy metric (``accuracy``, ``sparse_categorical_accuracy``, ``acc``, ...) with its
        ``val_`` counterpart. Other metrics are ignored.
    path : str or PathLike
        Output file; parent folders are created.
    phase_boundaries : sequence of int, default ()
        Number of epochs completed when each new phase began (e.g. ``[5]`` when fine-tuning
        started after 5 head-only epochs). Drawn as dashed lines between epoch b and b + 1.
        The epoch of each phase with the lowest validation loss (what early stopping kept) is
        marked with a star.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    panels = [("loss", "Loss")]
    acc_key = _accuracy_key(history)
    if acc_key is not None:
        panels.append((acc_key, "Accuracy"))
    panels = [(k, label) for k, label in panels if k in history or f"val_{k}" in history]
    if not panels:
        raise ValueError(
            f"history has neither loss nor accuracy values (keys: {sorted(history)})."
        )

    fig = Figure(figsize=(5.5 * len(panels), 4.2), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels):
        for name, legend in ((key, "train"), (f"val_{key}", "validation")):
            values = history.get(name)
            if values is None or len(values) == 0:
                continue
            epochs = np.arange(1, len(values) + 1)
            # Markers keep single-epoch runs visible (a 1-point line draws nothing).
            ax.plot(epochs, np.asarray(values, dtype=np.float64), marker="o", markersize=3,
                    label=legend)
        for k, b in enumerate(phase_boundaries):
            ax.axvline(b + 0.5, color="grey", linestyle="--", linewidth=1,
                       label="phase change" if k == 0 else None)
        for k, epoch in enumerate(kept_epochs(history, phase_boundaries)):
            values = history.get(f"val_{key}") or history.get(key)
            if values is not None and epoch < len(values) and np.isfinite(values[epoch]):
                ax.plot(epoch + 1, values[epoch], marker="*", markersize=13, color="black", linestyle="none",
                        label="kept (best validation loss)" if k == 0 else None, zorder=5)
        ax.set_title(label)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, path)


def kept_epochs(history: Mapping[str, Sequence[float]], phase_boundaries: Sequence[int] = ()) -> list[int]:
    """0-based epoch of the lowest validation loss in each phase: the weights early stopping restored."""
    losses = np.asarray(history.get("val_loss") or [], dtype=np.float64)
    edges = [0, *phase_boundaries, len(losses)]
    kept = []
    for start, end in zip(edges[:-1], edges[1:]):
        segment = losses[start:end]
        if len(segment) and np.isfinite(segment).any():
            kept.append(start + int(np.nanargmin(segment)))
    return kept


def plot_precision_recall(
    curves: Mapping[str, Mapping[str, Sequence]],
    path: str | os.PathLike[str],
    *,
    threshold: float,
    target_recall: float | None = None,
    good_class: str = "good",
) -> Path:
    """Save the precision-recall curve of "defective" (not ``good_class``) with the operating point marked.

    Parameters
    ----------
    curves : mapping of split name to {"p_good": (N,) floats, "is_defect": (N,) bools}
        One curve per split (e.g. "validation", where the threshold was chosen, and "test").
    path : str or PathLike
        Output file; parent folders are created.
    threshold : float
        The operating point: an image is called defective when P(good) <= threshold.
    target_recall : float, optional
        Drawn as a dashed vertical line.
    good_class : str
        The defect-free class's name, for the labels.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from sklearn.metrics import precision_recall_curve

    fig = Figure(figsize=(6.0, 4.6), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    for k, (name, data) in enumerate(curves.items()):
        p_good = np.asarray(data["p_good"], dtype=np.float64)
        is_defect = np.asarray(data["is_defect"], dtype=bool)
        if not is_defect.any() or is_defect.all():
            continue
        precision, recall, _ = precision_recall_curve(is_defect, -p_good)
        line, = ax.plot(recall, precision, drawstyle="steps-post", label=name)
        called = p_good <= threshold
        tp = int((called & is_defect).sum())
        at_recall, at_precision = tp / int(is_defect.sum()), tp / max(int(called.sum()), 1)
        ax.plot([at_recall], [at_precision], marker="o", markersize=8, color=line.get_color(),
                label=f"{name} at threshold: recall {at_recall:.2f}, precision {at_precision:.2f}")
    if target_recall is not None:
        ax.axvline(target_recall, color="grey", linestyle="--", linewidth=1, label=f"target recall {target_recall:g}")
    ax.set_xlim(0.0, 1.02)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"recall of not-{good_class} (share of defective images caught)")
    ax.set_ylabel("precision of the defective call")
    ax.set_title(f"Operating point: defective when P({good_class}) <= {threshold:.4g}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def _accuracy_key(history: Mapping[str, Sequence[float]]) -> str | None:
    # Keras names the metric after what was compiled: "accuracy", "sparse_categorical_accuracy",
    # "categorical_accuracy", or "acc" in older code. Prefer the plain name.
    train_keys = [k[4:] if k.startswith("val_") else k for k in history]
    for key in ("accuracy", "acc"):
        if key in train_keys:
            return key
    for key in train_keys:
        if key.endswith("accuracy") and "top_k" not in key:
            return key
    return None


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight" on top of the constrained layout: with a fixed-aspect image plus a
    # colorbar, constrained layout alone can push the y-axis label just past the canvas edge.
    fig.savefig(out, dpi=_DPI, bbox_inches="tight", pad_inches=0.15)
    return out

