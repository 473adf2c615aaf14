"""Pictures and the HTML page of a comparison or a search, in report.html's style.

``compare.html`` is one self-contained page (inline CSS, images as data URIs) with the
leaderboard, the skipped backbones, the winner's CV estimate beside its test score, and a plot
of accuracy against cost. The plots are also kept as PNG files so that a run trained from a
comparison or a search shows them in its own report.html.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# ``board`` below is a transferlab.selection.compare.Leaderboard (not imported: compare imports this module).
Leaderboard = Any

COMPARE_PAGE = "compare.html"
ACCURACY_COST_PNG = "accuracy_cost.png"
SEARCH_PNG = "search.png"
_DPI = 120


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def accuracy_cost_png(board: Leaderboard) -> bytes:
    """Cross-validated accuracy (mean +- std over folds) against per-image latency, one colour per backbone.

    Returns:
        PNG bytes. Each head is a point; the best head of each backbone is labelled.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    backbones = list(dict.fromkeys(r["backbone"] for r in board.rows))
    markers = {"softmax": "o", "mlp": "s", "logistic": "^"}
    for i, name in enumerate(backbones):
        color = f"C{i % 10}"
        rows = [r for r in board.rows if r["backbone"] == name]
        for r in rows:
            ax.errorbar(r["latency_ms"], r["cv_accuracy"], yerr=r["cv_accuracy_std"], fmt=markers.get(r["family"], "o"),
                        color=color, capsize=3, markersize=7, alpha=0.9)
        best = min(rows, key=lambda r: r["rank"])
        ax.annotate(f"{name}\n{best['head']}", (best["latency_ms"], best["cv_accuracy"]), textcoords="offset points",
                    xytext=(8, 4), fontsize=8, color=color)
    for family, marker in markers.items():  # legend of the head families, in grey
        ax.plot([], [], marker, color="grey", label=family)
    ax.set_xlabel("Per-image latency of the backbone, batch of 1 (ms)")
    ax.set_ylabel(f"{board.folds}-fold CV accuracy (train+val)")
    ax.set_title("Accuracy against cost")
    ax.grid(True, alpha=0.3)
    ax.legend(title="head", fontsize=8)
    return _png(fig)


def search_png(scores: Sequence[float | None], states: Sequence[str], title: str = "Search") -> bytes:
    """Score per trial (pruned trials hollow) and the best so far.

    Args:
        scores: CV accuracy per trial (for pruned trials: the last score before pruning; None if none).
        states: ``"complete"`` / ``"pruned"`` / other per trial.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(1, len(scores) + 1)
    done = [(i, s) for i, (s, st) in enumerate(zip(scores, states)) if s is not None and st == "complete"]
    pruned = [(i, s) for i, (s, st) in enumerate(zip(scores, states)) if s is not None and st == "pruned"]
    if done:
        ax.plot([x[i] for i, _ in done], [s for _, s in done], "o", color="C0", label="complete")
        best = np.maximum.accumulate([s if st == "complete" and s is not None else -np.inf
                                      for s, st in zip(scores, states)])
        ax.step(x, np.where(np.isfinite(best), best, np.nan), where="post", color="C1", label="best so far")
    if pruned:
        ax.plot([x[i] for i, _ in pruned], [s for _, s in pruned], "o", mfc="none", color="grey", label="pruned")
    ax.set_xlabel("Trial")
    ax.set_ylabel("CV accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def write_compare_page(board: Leaderboard, out_dir: str | os.PathLike) -> Path:
    """Write ``accuracy_cost.png`` and the self-contained ``compare.html`` into ``out_dir``."""
    from transferlab.evaluation.html import CSS, escape, img_tag, kv_grid, muted, section, table
    from transferlab.evaluation.report import leaderboard_table

    out = Path(out_dir)
    png = accuracy_cost_png(board)
    (out / ACCURACY_COST_PNG).write_bytes(png)
    w, test = board.winner, board.test
    cards = [(f"{w['cv_accuracy']:.1%}", f"CV accuracy ({board.folds}-fold, train+val)"),
             (f"{w['cv_accuracy_std']:.3f}", "std over folds")]
    if test:
        cards.append((f"{test['accuracy']:.1%}", f"test accuracy ({test['num_samples']} images, scored once)"))
    cards += [(w["backbone"], "backbone"), (w["head"], "head"),
              (f"{board.timing['extract_seconds']:.1f} s", "extraction"),
              (f"{board.timing['search_seconds']:.1f} s", "search")]
    summary = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards)
    note = ('<p class="note">The test split was not read while choosing: the CV estimate comes from the train and '
            'validation images only; the winner was then fitted as <code>train</code> fits it and scored on the test '
            'split once. The gap between the two says how far to trust the estimate.</p>')
    if w.get("why"):
        note += f'<p class="note">Why this winner: {escape(w["why"])}. The default (what <code>train</code> fits) ' \
                'is replaced only by a model better by more than one standard error of the per-fold differences.</p>'
    sections = [section("summary", "Winner", f'<div class="cards">{summary}</div>' + note),
                section("leaderboard", "Leaderboard", leaderboard_table(board.rows)
                         + muted("CV accuracy: mean +- standard deviation over folds of the held-out accuracy; "
                                  "macro-F1 and log-loss are means over folds. ms/img: the backbone on one image. "
                                  "MB: float32 weights of the backbone.")),
                section("cost", "Accuracy against cost", img_tag(png, "image/png", "accuracy against cost"))]
    if board.skipped:
        sections.append(section("skipped", "Skipped backbones",
                                 table(["backbone", "reason"], [[escape(s["backbone"]), escape(s["reason"])]
                                                                 for s in board.skipped], numeric_from=9)))
    settings = {"winner settings": board.results[0].settings.__dict__ if board.results else {},
                "timing": board.timing, "data": board.data, "seed": board.seed}
    if board.run_dir:
        settings["run directory"] = str(board.run_dir)
    sections.append(section("settings", "Settings", kv_grid(settings)))
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>transferlab compare: {escape(Path(board.data).name)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Compare {escape(Path(board.data).name)}</h1><p>{escape(board.data)}</p></header>"
            f"<main>{''.join(sections)}</main></body></html>\n")
    target = out / COMPARE_PAGE
    target.write_text(page, encoding="utf-8")
    return target
