"""Files that record an evaluation: metrics.json, predictions.csv and the confusion matrices.

Written by training (on its test split) and by ``transferlab evaluate`` (on any labeled data),
so that ``report.html`` reads the same files either way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from transferlab import rundir
from transferlab.evaluation.figures import FigureJob, PendingFigures, draw_figures


def write_predictions(path: Path, paths: Sequence[str], labels: Sequence[str], probs: np.ndarray,
                      class_names: Sequence[str]) -> Path:
    """Per-image results: ``path,label,predicted,confidence,p_<class>...``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "predicted", "confidence"] + [f"p_{c}" for c in class_names])
        for file, label, p in zip(paths, labels, probs):
            best = int(np.argmax(p))
            writer.writerow([file, label, class_names[best], f"{p[best]:.6f}"] + [f"{v:.6f}" for v in p])
    return path


def confusion_figures(out_dir: str | Path, report: dict, class_names: Sequence[str]) -> list[FigureJob]:
    """The two confusion matrix pictures of an evaluation: counts and row-normalized."""
    out = Path(out_dir)
    matrix = [[int(v) for v in row] for row in report["confusion_matrix"]]
    split = f" ({report['split']} split)" if report.get("split") else ""
    common = {"matrix": matrix, "class_names": list(class_names)}
    return [FigureJob("plot_confusion_matrix", str(out / rundir.CONFUSION_FILE), {**common, "title": f"Counts{split}"}),
            FigureJob("plot_confusion_matrix", str(out / rundir.CONFUSION_NORMALIZED_FILE),
                      {**common, "normalize": True, "title": f"Row-normalized{split}"})]


def write_evaluation(out_dir: str | Path, report: dict, paths: Sequence[str], labels: Sequence[str],
                     probs: np.ndarray, class_names: Sequence[str], *, extra_figures: Sequence[FigureJob] = (),
                     background: bool = False) -> PendingFigures:
    """Write metrics.json, predictions.csv and both confusion matrices (plus ``extra_figures``).

    With ``background=True`` the pictures are drawn by a helper process while the caller goes on
    (see :func:`~transferlab.evaluation.figures.draw_figures`); call ``wait()`` on the result
    before reading them. Otherwise they are on disk when this returns.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / rundir.METRICS_FILE, report)
    write_predictions(out / rundir.PREDICTIONS_FILE, paths, labels, probs, class_names)
    return draw_figures(confusion_figures(out, report, class_names) + list(extra_figures), background=background)
