"""``RUN/report.html``: one self-contained page about a run, to open in any browser.

Images are embedded as base64 ``data:`` URIs and the CSS is inline: no JavaScript, no network,
so the file can be mailed or attached to a ticket. Sections (each with a stable ``id``):
``summary``, ``operating-point`` (when the model has a decision rule), ``per-class``, ``confusion``, ``confused-pairs``, ``mistakes`` (misclassified images of
the evaluated split, worst first, with Grad-CAM overlays), ``curves``, ``data``, ``settings``.
Every file of the run is optional: what is missing is said in its section.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferlab import rundir
from transferlab.errors import MissingFileError
from transferlab.evaluation.html import (
    CSS,
    escape,
    fmt_value,
    img_array,
    img_file,
    kv_grid,
    muted,
    section,
    table,
    thumbnail,
)
from transferlab.rundir import REPORT_FILE

if TYPE_CHECKING:
    from transferlab.evaluation.figures import PendingFigures

logger = logging.getLogger("transferlab")

__all__ = ["write_report", "REPORT_FILE"]

_MAX_BAD_FILES = 200



# ------------------------------------------------------------------ reading the run
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_history(path: Path) -> tuple[dict[str, list[float]], list[int]]:
    """Per-epoch values, and the epochs after which the ``phase`` column changes (head -> fine-tune)."""
    history: dict[str, list[float]] = {}
    rows = _read_csv(path)
    phases = [row.get("phase") for row in rows]
    boundaries = [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
    for row in rows:
        for key, value in row.items():
            if key in (None, "epoch", "phase") or value in (None, ""):
                continue
            try:
                history.setdefault(key, []).append(float(value))
            except ValueError:
                pass
    return history, boundaries


def _read_bad_files(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            file, _, reason = line.partition("\t")
            rows.append((file, reason))
    return rows


def _class_names(run: Path, config: dict | None, metrics: dict | None, predictions: list[dict]) -> list[str]:
    if metrics and metrics.get("class_names"):
        return list(metrics["class_names"])
    if (run / rundir.LABELS_FILE).is_file():
        return rundir.read_labels(run / rundir.LABELS_FILE)
    if config and config.get("class_names"):
        return list(config["class_names"])
    return [k[2:] for k in (predictions[0] if predictions else {}) if k.startswith("p_")]


def _metrics_from_predictions(predictions: list[dict], names: list[str]) -> dict | None:
    """metrics.json is missing but predictions.csv is there: recompute the report from it."""
    from transferlab.evaluation.metrics import classification_report

    index = {n: i for i, n in enumerate(names)}
    try:
        y = np.array([index[r["label"]] for r in predictions])
        p = np.array([[float(r[f"p_{n}"]) for n in names] for r in predictions])
        return classification_report(y, p, names)
    except (KeyError, ValueError) as exc:
        logger.warning("cannot compute metrics from predictions.csv: %s", exc)
        return None


# ------------------------------------------------------------------ sections
def _summary(config: dict | None, metrics: dict | None) -> str:
    from transferlab.evaluation.metrics import is_imbalanced_report

    cards = []
    imbalanced = bool(metrics) and is_imbalanced_report(metrics)
    if imbalanced:  # accuracy looks fine while a rare class is missed: lead with what shows it
        rarest = min(metrics["per_class"].items(), key=lambda kv: (kv[1]["support"] == 0, kv[1]["recall"]))
        cards += [(f"{metrics['macro']['f1']:.3f}", "macro F1"),
                  (f"{metrics['macro']['recall']:.1%}", "balanced accuracy (mean recall)"),
                  (f"{rarest[1]['recall']:.1%}", f"lowest recall: {rarest[0]}"),
                  (f"{metrics['accuracy']:.1%}", "accuracy"), (f"{metrics['loss']:.3f}", "loss"),
                  (str(metrics["num_samples"]), f"{metrics.get('split', 'evaluated')} images")]
    elif metrics:
        cards += [(f"{metrics['accuracy']:.1%}", "accuracy"), (f"{metrics['macro']['f1']:.3f}", "macro F1"),
                  (f"{metrics['loss']:.3f}", "loss"), (str(metrics["num_samples"]), f"{metrics.get('split', 'evaluated')} images")]
        for k, v in (metrics.get("top_k_accuracy") or {}).items():
            cards.append((f"{v:.1%}", k.replace("_", "-") + " accuracy"))
    if config:
        backbone = (config.get("backbone") or {}).get("name") or (config.get("config") or {}).get("backbone")
        if backbone:
            cards.append((Path(str(backbone)).name, "backbone"))
        if config.get("class_names"):
            cards.append((str(len(config["class_names"])), "classes"))
        seconds = (config.get("timing") or {}).get("total_seconds")
        if seconds is not None:
            cards.append((f"{seconds:.1f} s", "training time"))
    body = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards)
    note = f'<p class="note">{escape(metrics["note"])}</p>' if metrics and metrics.get("note") else ""
    if imbalanced:
        note += ('<p class="note">The classes are imbalanced: accuracy is dominated by the large classes. '
                 "Read macro F1 and each class's recall (per-class table below).</p>")
    imbalance = ((config or {}).get("extras") or {}).get("imbalance")
    if imbalance and imbalance.get("reason"):
        note += muted("Class weighting: " + imbalance["reason"] + ".")
    return section("summary", "Summary", (f'<div class="cards">{body}</div>' if body else muted("Nothing to summarise yet.")) + note)


def _settings(config: dict | None) -> str:
    if not config:
        return section("settings", "Settings", muted("No config.json in this run."))
    parts = []
    if isinstance(config.get("config"), dict):
        parts.append("<h3>Training settings</h3>" + _training_settings(config["config"]))
    if isinstance(config.get("backbone"), dict):
        parts.append("<h3>Backbone</h3>" + kv_grid(config["backbone"]))
    strategy = (config.get("extras") or {}).get("strategy")
    strategy = strategy if isinstance(strategy, dict) else None
    if strategy and strategy.get("phases"):
        rows = [[escape(p.get("phase"))] + [fmt_value(p.get(k, "")) for k in
                                         ("epochs", "seconds", "val_loss", "val_accuracy", "gain_val_accuracy")]
                for p in strategy["phases"]]
        parts.append(f"<h3>Strategy {escape(strategy.get('name'))}: kept the {escape(strategy.get('kept'))} model</h3>"
                     f"<p>{escape(strategy.get('why'))}</p>"
                     + table(["phase", "epochs", "seconds", "val loss", "val accuracy", "val accuracy gained"], rows))
    extra = {k: config[k] for k in ("resize", "feature_cache", "timing", "versions", "created") if k in config}
    if extra:
        parts.append("<h3>Input, cache, timing, versions</h3>" + kv_grid(extra))
    known = {"config", "backbone", "data", "class_names", "metrics", *extra}
    rest = {k: v for k, v in config.items() if k not in known}
    if rest:
        parts.append("<h3>Other</h3>" + kv_grid(rest))
    return section("settings", "Settings", "".join(parts))


def _training_settings(settings: dict) -> str:
    """The settings that applied, and a note naming those given but unused by the strategy."""
    from transferlab.training.config import TrainConfig

    try:
        config = TrainConfig.from_dict(settings)
    except (TypeError, ValueError):  # a config.json of another version: show it as it is
        return kv_grid(settings)
    ignored = config.ignored_settings()
    note = muted("Given but not used (they apply only with strategy fine-tune or auto): "
                  + ", ".join(ignored) + ".") if ignored else ""
    return kv_grid(config.applied_dict()) + note


def _data(run: Path, config: dict | None, names: list[str]) -> str:
    data = (config or {}).get("data") or {}
    counts: dict[str, dict[str, int]] = data.get("counts") or {}
    if not counts:
        for row in _read_csv(run / rundir.SPLITS_FILE):
            split = counts.setdefault(row.get("split", "?"), {})
            split[row.get("label", "?")] = split.get(row.get("label", "?"), 0) + 1
    parts = []
    if data.get("source"):
        parts.append(f"<p>Source: <code>{escape(data['source'])}</code> ({escape(data.get('layout', '?'))} layout)</p>")
    splits = [s for s in ("train", "val", "test") if s in counts] + [s for s in counts if s not in ("train", "val", "test")]
    if splits:
        classes = list(names) + sorted({c for s in splits for c in counts[s]} - set(names))
        rows = [[escape(c)] + [str(counts[s].get(c, 0)) for s in splits] + [str(sum(counts[s].get(c, 0) for s in splits))]
                for c in classes]
        rows.append(["total"] + [str(sum(counts[s].values())) for s in splits]
                    + [str(sum(sum(counts[s].values()) for s in splits))])
        parts.append("<h3>Images per class and split</h3>"
                     + table(["class"] + splits + ["total"], rows, row_class=[""] * len(classes) + ["avg"]))
    else:
        parts.append(muted("No class counts (config.json and splits.csv missing)."))
    bad = _read_bad_files(run / rundir.BAD_FILES_FILE)
    parts.append(f"<h3>Bad files skipped ({len(bad)})</h3>")
    if bad:
        rows = [[f"<code>{escape(p)}</code>", escape(r)] for p, r in bad[:_MAX_BAD_FILES]]
        parts.append(table(["file", "reason"], rows, numeric_from=9))
        if len(bad) > _MAX_BAD_FILES:
            parts.append(muted(f"... and {len(bad) - _MAX_BAD_FILES} more in bad_files.txt"))
    else:
        parts.append(muted("No bad files: every image could be read."))
    return section("data", "Data", "".join(parts))


def _fresh(picture: Path, source: Path) -> bool:
    """True if ``picture`` exists and is not older than the data it shows (reuse, don't redraw)."""
    return picture.is_file() and (not source.exists() or picture.stat().st_mtime >= source.stat().st_mtime)


def _curves(run: Path, tmp: Path, config: dict | None = None) -> str:
    from transferlab.evaluation.plots import plot_training_curves

    smoothing = ((config or {}).get("config") or {}).get("label_smoothing") or 0.0
    # Why the curves' loss and the summary's differ, and what the stars are.
    note = muted("The star marks each phase's epoch with the lowest validation loss: the weights early stopping "
                  "kept." + (f" The curves' loss is the training loss with label smoothing {smoothing:g}; the "
                             "summary's loss is the plain log-loss of the evaluated split, so it is lower."
                             if smoothing else ""))
    if _fresh(run / rundir.TRAINING_CURVES_FILE, run / rundir.HISTORY_FILE):
        return section("curves", "Training curves",
                        img_file(run / rundir.TRAINING_CURVES_FILE, "training curves") + note)
    history, boundaries = _read_history(run / rundir.HISTORY_FILE)
    try:
        if history:
            figure = plot_training_curves(history, tmp / "curves.png", phase_boundaries=boundaries)
            return section("curves", "Training curves", img_file(figure, "training curves") + note)
    except ValueError as exc:
        logger.warning("cannot plot history.csv: %s", exc)
    if (run / rundir.TRAINING_CURVES_FILE).is_file():
        return section("curves", "Training curves",
                        img_file(run / rundir.TRAINING_CURVES_FILE, "training curves") + note)
    return section("curves", "Training curves", muted("No training history in this run."))


def _confusion(metrics: dict | None, names: list[str], tmp: Path, run: Path | None = None) -> str:
    from transferlab.evaluation.plots import plot_confusion_matrix

    if not metrics:
        return section("confusion", "Confusion matrix", muted("No evaluation results in this run."))
    cm = np.array(metrics["confusion_matrix"])
    split = metrics.get("split")
    suffix = f" ({split} split)" if split else ""
    # The trainer already drew both matrices; redraw only what is missing or stale.
    source = run / rundir.METRICS_FILE if run else tmp / "none"
    counts = run / rundir.CONFUSION_FILE if run and _fresh(run / rundir.CONFUSION_FILE, source) else \
        plot_confusion_matrix(cm, names, tmp / "cm.png", title="Counts" + suffix)
    normed = run / rundir.CONFUSION_NORMALIZED_FILE if run and _fresh(run / rundir.CONFUSION_NORMALIZED_FILE, source) \
        else plot_confusion_matrix(cm, names, tmp / "cm_norm.png", normalize=True, title="Row-normalized" + suffix)
    wide = " wide" if len(names) > 12 else ""  # big matrices get the full width each
    body = (f'<div class="figs{wide}">{img_file(counts, "confusion matrix, counts")}'
            f'{img_file(normed, "confusion matrix, row-normalized")}</div>'
            + muted("Rows: true class; columns: predicted class. Row-normalized: each row divided by its "
                     "total, so the diagonal is each class's recall."))
    return section("confusion", "Confusion matrix", body)


_DECISION_ROWS = (("defect_recall", "defective images caught (recall)", True),
                  ("caught_or_routed", "defective caught or routed to a person", True),
                  ("defect_precision", "precision of the defective call", True),
                  ("false_alarm_rate", "false alarms (share of good called defective)", True),
                  ("good_recall", "good images passed", True), ("missed", "defective images missed", False),
                  ("uncertain_share", "routed to a person (uncertain)", True),
                  ("accuracy_decided", "accuracy on the images not routed", True),
                  ("defective", "defective images", False), ("good", "good images", False),
                  ("images", "images", False))


def _operating_point(run: Path, metrics: dict | None) -> str:
    """The decision rule saved with the model, its figures on validation and on the evaluated split,
    and the precision-recall curve with the point marked."""
    op = (metrics or {}).get("operating_point")
    if not op:
        return ""
    rule = op.get("rule") or {}
    columns = [(f"{rule.get('chosen_on')} (chosen on)", rule.get("validation") or {})] if rule.get("chosen_on") else []
    columns.append((f"{op.get('split', 'evaluated')}", op))

    def cell(figures: dict, key: str, share: bool) -> str:
        value = figures.get(key)
        return "&mdash;" if value is None else (f"{value:.1%}" if share else str(value))

    rows = [[escape(label)] + [cell(f, key, share) for _, f in columns] for key, label, share in _DECISION_ROWS
            if any(f.get(key) is not None for _, f in columns)]
    parts = []
    if rule.get("threshold") is not None:
        parts.append(f"<p>An image is called <b>defective</b> (not <code>{escape(rule['good_class'])}</code>) when "
                     f"P({escape(rule['good_class'])}) &le; <b>{rule['threshold']:.4g}</b>, the lowest threshold that "
                     f"caught {rule['target_recall']:.0%} of the defective images of the {escape(rule['chosen_on'])} "
                     "split. <code>predict</code> applies it; exports carry it in model_card.json "
                     "(<code>decision</code>).</p>")
    if rule.get("uncertain_below") is not None:
        parts.append(f"<p>Predictions whose top probability is below {rule['uncertain_below']:g} come back as "
                     "<b>uncertain</b>, for a person to check.</p>")
    parts.append(table(["figure"] + [name for name, _ in columns], rows))
    if (run / rundir.PRECISION_RECALL_FILE).is_file():
        parts.append(img_file(run / rundir.PRECISION_RECALL_FILE, "precision-recall curve with the operating point"))
    return section("operating-point", "Operating point", "".join(parts))


def _per_class(metrics: dict | None) -> str:
    if not metrics:
        return section("per-class", "Per-class precision, recall, F1", muted("No evaluation results in this run."))
    rows, classes = [], []
    for name, m in metrics["per_class"].items():
        rows.append([escape(name), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])])
        classes.append("")
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        rows.append([f"{avg} avg", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                     str(metrics["num_samples"])])
        classes.append("avg")
    body = table(["class", "precision", "recall", "F1", "support"], rows, row_class=classes)
    return section("per-class", "Per-class precision, recall, F1", body)


def _confused_pairs(metrics: dict | None) -> str:
    title = "Most confused class pairs"
    if not metrics:
        return section("confused-pairs", title, muted("No evaluation results in this run."))
    pairs = metrics.get("most_confused") or []
    if not pairs:
        return section("confused-pairs", title, muted("No confusions: every image got its true class."))
    support = {n: m["support"] for n, m in metrics["per_class"].items()}
    rows = [[escape(p["true"]), escape(p["predicted"]), str(p["count"]),
             f"{p['count'] / support[p['true']]:.1%}" if support.get(p["true"]) else "&mdash;"] for p in pairs]
    return section("confused-pairs", title, table(["true class", "predicted as", "images", "share of true class"],
                                                     rows, numeric_from=2))


def mistakes_to_show(predictions: list[dict], max_gallery: int) -> tuple[list[dict], int]:
    """The misclassified rows of ``predictions.csv`` the gallery shows, most confident first, and how many
    are wrong in all."""
    wrong = [r for r in predictions if r.get("label") != r.get("predicted")]
    wrong.sort(key=_confidence, reverse=True)
    return wrong[:max(0, max_gallery)], len(wrong)


def _confidence(row: dict) -> float:
    try:
        return float(row.get("confidence") or 0)
    except ValueError:
        return 0.0


def _mistakes(predictions: list[dict], metrics: dict | None, max_gallery: int,
              overlays: dict[str, np.ndarray], note: str) -> str:
    title = "Misclassified images"
    if not predictions:
        return section("mistakes", title, muted("No predictions.csv in this run: nothing to show."))
    shown, wrong = mistakes_to_show(predictions, max_gallery)
    split = (metrics or {}).get("split", "evaluated")
    if not wrong:
        return section("mistakes", title, f'<p class="note">No mistakes: all {len(predictions)} images of the '
                                           f'{escape(split)} split were classified correctly.</p>')
    overlays = {i: overlays[row["path"]] for i, row in enumerate(shown) if row["path"] in overlays}
    cards = []
    for i, row in enumerate(shown):
        thumb = thumbnail(row["path"])
        pics = img_array(thumb, f"image {i + 1}") if thumb is not None else '<div class="missing">image not found</div>'
        if i in overlays:
            pics += img_array(overlays[i], f"Grad-CAM {i + 1}")
        cards.append(
            f'<div class="mistake"><div class="pics">{pics}</div>'
            f'<div>true <span class="true">{escape(row["label"])}</span> &rarr; predicted '
            f'<span class="pred">{escape(row["predicted"])}</span> ({_confidence(row):.1%})</div>'
            f'<div class="path" title="{escape(row["path"])}">{escape(Path(row["path"]).name)}</div></div>')
    head = (f"<p>{wrong} of {len(predictions)} images of the {escape(split)} split are misclassified; "
            f"showing {len(shown)}, most confident mistakes first."
            + (" Right of each image: Grad-CAM for the predicted class on the image as the model sees it "
               "(after resize/crop); red marks what drove the prediction."
               if overlays else "") + "</p>")
    if note:
        head += f'<p class="note">{escape(note)}</p>'
    return section("mistakes", title, head + f'<div class="gallery">{"".join(cards)}</div>')


def _num(value, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "&mdash;" if value in (None, "") else escape(value)


def leaderboard_table(rows: list[dict]) -> str:
    """A model-selection leaderboard (rows as in ``leaderboard.csv``, values may be strings), best first."""
    body = []
    for r in rows:
        speed = _num(r.get("extract_img_per_s"), 1) if r.get("extract_img_per_s") not in (None, "") else "cached"
        body.append([escape(r.get("rank", "")), escape(r.get("backbone", "")), escape(r.get("head", "")),
                     f"{_num(r.get('cv_accuracy'))} &plusmn; {_num(r.get('cv_accuracy_std'), 3)}",
                     _num(r.get("cv_macro_f1")), _num(r.get("cv_log_loss")), speed, _num(r.get("latency_ms"), 1),
                     _num(r.get("size_mb"), 1), escape(r.get("vs_default") or "")])
    return table(["#", "backbone", "head", "CV accuracy", "macro-F1", "log-loss", "extract img/s", "ms/img", "MB",
                   "vs default"],
                  body, numeric_from=3, row_class=["avg" if i == 0 else "" for i in range(len(body))])


def _selection(run: Path) -> str:
    """How this run's settings were chosen: a leaderboard (compare) and/or a search (--tune), when present."""
    parts = []
    board = _read_csv(run / "leaderboard.csv")
    if board:
        parts.append("<h3>Leaderboard (cross-validated on the train and validation images)</h3>"
                     + leaderboard_table(board[:30]))
        why = (_read_json(run / "leaderboard.json") or {}).get("winner", {}) or {}
        if why.get("why"):
            parts.append(muted(f"Why the winner: {why['why']}."))
        if (run / "accuracy_cost.png").is_file():
            parts.append(img_file(run / "accuracy_cost.png", "accuracy against cost"))
    tuning = _read_json(run / "tuning.json")
    trials = _read_csv(run / "trials.csv")
    if tuning or trials:
        parts.append("<h3>Hyperparameter search</h3>")
        if tuning:
            parts.append(kv_grid({k: v for k, v in tuning.items() if k != "trials"}))
        if (run / "search.png").is_file():
            parts.append(img_file(run / "search.png", "score by trial"))
        if trials:
            parts.append(muted(f"{len(trials)} trials in trials.csv."))
    if not parts:
        return ""
    parts.append(muted("The test split was not used to choose: the settings below were picked on the folds, and "
                        "the test results above are their first look at it."))
    return section("selection", "How the model was chosen", "".join(parts))


# ------------------------------------------------------------------ entry point
def write_report(run_dir: str | os.PathLike, *, max_gallery: int = 48,
                 overlays: dict[str, np.ndarray] | None = None, overlay_note: str = "",
                 out: str | os.PathLike | None = None, figures: PendingFigures | None = None) -> Path:
    """Write ``RUN/report.html`` (one self-contained file) from the run's files and return its path.

    This only writes HTML: it loads no model. Grad-CAM overlays are computed by the caller
    (:func:`transferlab.evaluation.reporting.write_run_report` does both).

    Args:
        run_dir: a run directory (any of config.json, metrics.json, predictions.csv, history.csv,
            bad_files.txt, splits.csv may be missing).
        max_gallery: at most this many misclassified images, most confident first
            (:func:`mistakes_to_show`).
        overlays: Grad-CAM overlays (uint8 (160, 160, 3)) by image path, shown beside the images.
        overlay_note: why there are no overlays, when there is a reason worth saying.
        out: output file; default ``RUN/report.html``.
        figures: the run's pictures, still being drawn (see
            :func:`~transferlab.evaluation.figures.draw_figures`): they are waited for before reading.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise MissingFileError(f"No run directory {run}.")
    config = _read_json(run / rundir.CONFIG_FILE)
    metrics = _read_json(run / rundir.METRICS_FILE)
    predictions = _read_csv(run / rundir.PREDICTIONS_FILE)
    names = _class_names(run, config, metrics, predictions)
    if metrics is None and predictions and len(names) >= 2:
        metrics = _metrics_from_predictions(predictions, names)
    if metrics:
        names = list(metrics.get("class_names") or metrics["per_class"])
    mistakes = _mistakes(predictions, metrics, max_gallery, overlays or {}, overlay_note)
    if figures is not None:
        figures.wait()
    with tempfile.TemporaryDirectory(prefix="transferlab-report-") as tmp:
        sections = [  # results first, then how they were obtained
            _summary(config, metrics), _selection(run), _operating_point(run, metrics), _per_class(metrics), _confusion(metrics, names, Path(tmp), run),
            _confused_pairs(metrics), mistakes, _curves(run, Path(tmp), config), _data(run, config, names), _settings(config),
        ]
    created = (config or {}).get("created", "")
    has_point = bool((metrics or {}).get("operating_point"))
    nav = " &middot; ".join(f'<a href="#{s}" style="color:#bcccdc">{t}</a>' for s, t in (
        *((("operating-point", "operating point"),) if has_point else ()), ("per-class", "per class"), ("confusion", "confusion matrix"), ("confused-pairs", "confused pairs"),
        ("mistakes", "mistakes"), ("curves", "training curves"), ("data", "data"), ("settings", "settings")))
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>transferlab report: {escape(run.name)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Run {escape(run.name)}</h1><p>{escape(run.resolve())}"
            f"{' &middot; ' + escape(created) if created else ''}</p><p>{nav}</p></header>"
            f"<main>{''.join(sections)}</main></body></html>\n")
    target = Path(out) if out else run / REPORT_FILE
    target.write_text(page, encoding="utf-8")
    return target
