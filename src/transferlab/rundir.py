"""The run directory: its file names, and the readers and writers of its small files.

Every module that reads or writes a run (training, evaluation, the report, export, loading a
model) takes the layout from here, so a file name is written once. TensorFlow-free.

Layout of ``runs/<name>/``::

    model.keras            raw 0..255 RGB (N, S, S, 3) -> class probabilities; plain Keras loads it
    labels.txt             class names in output order, one per line
    config.json            RunMetadata: status, every setting, backbone, resize, data, versions
    splits.csv             path,label,split,sha256 of every image used
    bad_files.txt          skipped files with reasons
    history.csv            per-epoch loss/accuracy (train and validation)
    metrics.json           evaluation report on the test split (validation split when no test)
    predictions.csv        per-image label, prediction and probabilities on that split
    confusion_matrix.png, confusion_matrix_normalized.png, training_curves.png
    precision_recall.png   with --good-class: the operating point on the precision-recall curve
    report.html            all of the above on one page, with the mistakes and Grad-CAM
    checkpoint/            the last epoch's weights, optimizer state and counters (resume)
    evaluations/<name>/    later `transferlab evaluate` results
    export/                `transferlab export`: model files, labels.txt, model_card.json, parity.json
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab._atomic import atomic_write_bytes
from transferlab.errors import MissingFileError, ModelFormatError

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.keras"
SPLITS_FILE = "splits.csv"
BAD_FILES_FILE = "bad_files.txt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.html"
TRAINING_CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_matrix.png"
CONFUSION_NORMALIZED_FILE = "confusion_matrix_normalized.png"
PRECISION_RECALL_FILE = "precision_recall.png"
CHECKPOINT_DIR = "checkpoint"
EVALUATIONS_DIR = "evaluations"
EXPORT_DIR = "export"
MODEL_CARD_FILE = "model_card.json"
PARITY_FILE = "parity.json"

STATUSES = ("running", "interrupted", "failed", "complete")


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a ``labels.txt`` (one per line, blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_labels(path: str | os.PathLike, class_names: list[str]) -> Path:
    """Write ``labels.txt`` (atomically: a reader never sees half a list)."""
    return atomic_write_bytes(path, ("\n".join(class_names) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike | None) -> dict:
    """A JSON file as a dict; ``{}`` for None or a missing file."""
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (objects that JSON lacks become strings)."""
    return atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode("utf-8"))


def write_history(path: str | os.PathLike, history: dict[str, list[float]], boundaries: list[int] = ()) -> Path:
    """``history.csv``: one row per epoch, a ``phase`` column (head, then fine-tune after ``boundaries[0]``)."""
    keys = sorted(k for k in history if k != "learning_rate") + (["learning_rate"] if "learning_rate" in history else [])
    epochs = max((len(v) for v in history.values()), default=0)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "phase"] + keys)
        for e in range(epochs):
            phase = "fine-tune" if boundaries and e >= boundaries[0] else "head"
            writer.writerow([e + 1, phase] + [history[k][e] if e < len(history[k]) else "" for k in keys])
    return Path(path)


@dataclass
class RunMetadata:
    """What ``config.json`` holds: how a run was made and where it stands.

    ``config`` is the :class:`~transferlab.training.config.TrainConfig` as a dict (kept as a
    dict here so that this module stays below the training stage). Old run directories, written
    before ``schema_version`` existed, load as version 1.
    """

    SCHEMA_VERSION = 1

    status: str
    config: dict[str, Any]
    class_names: list[str]
    resize: dict[str, Any]
    backbone: dict[str, Any]
    data: dict[str, Any]
    versions: dict[str, str]
    created: str
    warm_start: str | None = None
    from_model: str | None = None
    fine_tune: dict[str, Any] | None = None
    feature_cache: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    # Results of optional stages (model selection, tuning, operating point ...), each under its own key.
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ModelFormatError(f"config.json: status must be one of {', '.join(STATUSES)}, got {self.status!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> "RunMetadata":
        """Build from ``config.json``'s contents; unknown keys are an error, naming the file."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFormatError(f"{source} has unknown key(s) {', '.join(unknown)}: written by a newer "
                                   "transferlab? Upgrade transferlab to read it.")
        version = data.get("schema_version", 1)
        if version > cls.SCHEMA_VERSION:
            raise ModelFormatError(f"{source} is schema version {version}; this transferlab reads up to "
                                   f"{cls.SCHEMA_VERSION}. Upgrade transferlab.")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ModelFormatError(f"{source} lacks {', '.join(missing)}: it is not a transferlab run's config.")
        return cls(**data)


@dataclass(frozen=True)
class RunDir:
    """A run directory's paths and its small files. Creating one touches no file."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / CONFIG_FILE)
    labels = property(lambda self: self.path / LABELS_FILE)
    model = property(lambda self: self.path / MODEL_FILE)
    splits = property(lambda self: self.path / SPLITS_FILE)
    bad_files = property(lambda self: self.path / BAD_FILES_FILE)
    history = property(lambda self: self.path / HISTORY_FILE)
    metrics = property(lambda self: self.path / METRICS_FILE)
    predictions = property(lambda self: self.path / PREDICTIONS_FILE)
    report = property(lambda self: self.path / REPORT_FILE)
    checkpoint = property(lambda self: self.path / CHECKPOINT_DIR)
    evaluations = property(lambda self: self.path / EVALUATIONS_DIR)
    export = property(lambda self: self.path / EXPORT_DIR)

    def is_run(self) -> bool:
        """True when the folder was written by ``transferlab train`` (it has a config.json)."""
        return self.config.is_file()

    def read_metadata(self) -> RunMetadata:
        """``config.json`` as :class:`RunMetadata`.

        Raises:
            MissingFileError: the folder is not a run directory.
            ModelFormatError: the file is not a transferlab run's config.
        """
        if not self.is_run():
            raise MissingFileError(f"{self.path} is not a run directory (no {CONFIG_FILE}). Pass a folder "
                                   "written by `transferlab train` (runs/NAME).")
        return RunMetadata.from_dict(read_json(self.config), source=str(self.config))

    def write_metadata(self, metadata: RunMetadata) -> Path:
        return write_json(self.config, metadata.to_dict())

    def set_status(self, status: str) -> None:
        """Rewrite ``config.json`` with a new status (e.g. "interrupted"), if the run has one."""
        if self.is_run():
            metadata = self.read_metadata()
            metadata.status = status
            metadata.__post_init__()
            self.write_metadata(metadata)

    def read_labels(self) -> list[str]:
        return read_labels(self.labels)

    def write_labels(self, class_names: list[str]) -> Path:
        return write_labels(self.labels, class_names)


# ------------------------------------------------------------------ listing runs
RUN_SUMMARY_FIELDS = ("name", "status", "created", "data", "backbone", "strategy", "split", "images", "accuracy",
                      "macro_f1", "seconds")


def summarize_run(path: str | os.PathLike) -> dict[str, Any]:
    """One run directory as a row of :data:`RUN_SUMMARY_FIELDS` (metrics None until it is complete).

    ``strategy`` is the model that was kept ("feature-extraction", "fine-tune", or for strategy
    auto "auto: fine-tune" / "auto: head"); ``split`` the split the metrics are on.
    """
    run = RunDir(path)
    meta = run.read_metadata()
    metrics = read_json(run.metrics)
    strategy = meta.config.get("strategy")
    kept = (meta.extras.get("strategy") or {}).get("kept") if isinstance(meta.extras.get("strategy"), dict) else None
    if strategy == "auto" and kept:
        strategy = f"auto: {kept}"
    return {"name": run.path.name, "status": meta.status, "created": meta.created,
            "data": meta.data.get("source"), "backbone": meta.backbone.get("name"), "strategy": strategy,
            "split": metrics.get("split"), "images": metrics.get("num_samples"), "accuracy": metrics.get("accuracy"),
            "macro_f1": (metrics.get("macro") or {}).get("f1"),
            "seconds": (meta.timing or {}).get("total_seconds"), "path": str(run.path)}


def list_runs(runs_dir: str | os.PathLike = "runs") -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Summaries of the run directories in ``runs_dir``, oldest first.

    Returns:
        ``(rows, unreadable)``: a :func:`summarize_run` row per run, and ``(folder, reason)`` for
        folders with a config.json that cannot be read (folders without one are not runs).

    Raises:
        MissingFileError: ``runs_dir`` does not exist.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise MissingFileError(f"No runs folder {root}: train first (transferlab train DATA --runs-dir {root}), "
                               "or pass the folder that holds your runs with --runs-dir.")
    rows, unreadable = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and RunDir(p).is_run()):
        try:
            rows.append(summarize_run(folder))
        except (OSError, ValueError) as exc:  # a half-written or foreign config.json: list, don't fail
            unreadable.append((folder, str(exc)))
    rows.sort(key=lambda row: row["created"] or "")
    return rows, unreadable
