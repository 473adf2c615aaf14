"""Files that record an evaluation: metrics.json, predictions.csv and the confusion matrices.

Written by training (on its test split) and by ``transferlab evaluate`` (on any labeled data),
so that ``report.html`` reads the same files either way.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from transferlab.evaluation.plots import plot_confusion_matrix


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


def write_evaluation(out_dir: str | Path, report: dict, paths: Sequence[str], labels: Sequence[str],
                     probs: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write metrics.json, predictions.csv and both confusion matrices (counts, row-normalized)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_predictions(out / "predictions.csv", paths, labels, probs, class_names)
    matrix = np.array(report["confusion_matrix"])
    split = f" ({report['split']} split)" if report.get("split") else ""
    plot_confusion_matrix(matrix, list(class_names), out / "confusion_matrix.png", title=f"Counts{split}")
    plot_confusion_matrix(matrix, list(class_names), out / "confusion_matrix_normalized.png", normalize=True,
                          title=f"Row-normalized{split}")
    return out
