"""What an audit found: :class:`AuditResult`, row-aligned arrays and the duplicate groups."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.audit.duplicates import DuplicateGroup
from transferlab.audit.labels import LabelIssues
from transferlab.data.dataset import ImageDataset, ImageRecord


@dataclass
class AuditResult:
    """What the audit found; row ``i`` of every array is ``records[i]``.

    Attributes:
        dataset: the checked dataset (its ``bad_files`` were not audited: they do not decode).
        records: the audited images (those whose features could be computed).
        features: (N, D) float32 bottleneck features.
        labels: confident-learning verdict per image (:class:`~transferlab.audit.labels.LabelIssues`).
        duplicates: duplicate groups, worst first (:class:`~transferlab.audit.duplicates.DuplicateGroup`).
        outlier_score: (N,) float32 robust z-score (higher: further from everything).
        is_outlier: (N,) bool.
        out_dir: where audit.html, audit.csv and audit.json were written (None if not written).
        timing: seconds per stage.
    """

    dataset: ImageDataset
    records: list[ImageRecord]
    features: np.ndarray
    labels: LabelIssues
    duplicates: list[DuplicateGroup]
    outlier_score: np.ndarray
    is_outlier: np.ndarray
    backbone: str = ""
    out_dir: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def label_issue_rows(self) -> list[int]:
        """Rows of the likely label errors, likeliest first."""
        return self.labels.ranking().tolist()

    def outlier_rows(self) -> list[int]:
        """Rows of the outliers, most unusual first."""
        rows = np.flatnonzero(self.is_outlier)
        return rows[np.argsort(-self.outlier_score[rows], kind="stable")].tolist()

    def per_class_counts(self) -> dict[str, dict[str, int]]:
        """Per class: images audited, likely label errors (by given label), duplicate files, outliers."""
        names = self.class_names
        images = Counter(r.label for r in self.records)
        issues = Counter(names[self.labels.given[r]] for r in self.label_issue_rows())
        outliers = Counter(self.records[r].label for r in self.outlier_rows())
        duplicates = Counter(m.label for g in self.duplicates for m in g.members)
        return {n: {"images": images[n], "label_issues": issues[n], "duplicates": duplicates[n],
                    "outliers": outliers[n]} for n in names}

    def summary(self, top: int = 20) -> dict:
        """Counts and the ``top`` worst findings of each kind, JSON-serialisable (``audit.json``, ``--json``)."""
        names, issues = self.class_names, self.labels
        label_rows = self.label_issue_rows()
        noise = [{"given": names[i], "true": names[j], "images": round(float(issues.noise_matrix[i, j]), 1)}
                 for i in range(len(names)) for j in range(len(names))
                 if i != j and issues.noise_matrix[i, j] >= 0.5]
        groups = self.duplicates
        return {
            "data": self.dataset.root,
            "layout": self.dataset.layout,
            "backbone": self.backbone,
            "images": len(self.records),
            "bad_files": len(self.dataset.bad_files),
            "per_class": self.per_class_counts(),
            "label_issues": {
                "count": len(label_rows),
                "estimated_errors": noise,
                "thresholds": {n: round(float(t), 4) for n, t in zip(names, issues.thresholds)},
                "top": [{"path": self.records[r].path, "given_label": names[issues.given[r]],
                         "suggested_label": names[issues.suggested[r]], "score": round(float(issues.score[r]), 4)}
                        for r in label_rows[:top]],
            },
            "duplicates": {
                "groups": len(groups),
                "files": sum(len(g.members) for g in groups),
                "exact_groups": sum(g.kind == "exact" for g in groups),
                "near_groups": sum(g.kind == "near" for g in groups),
                "cross_split_groups": sum(g.crosses_splits for g in groups),
                "two_label_groups": sum(g.two_labels for g in groups),
                "list": [g.to_dict() for g in groups],
            },
            "outliers": {
                "count": int(self.is_outlier.sum()),
                "top": [{"path": self.records[r].path, "label": self.records[r].label,
                         "score": round(float(self.outlier_score[r]), 3)} for r in self.outlier_rows()[:top]],
            },
            "settings": self.settings,
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }
