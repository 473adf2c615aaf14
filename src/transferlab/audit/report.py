"""What an audit hands the user: ``audit.html``, ``audit.csv``, ``audit.json`` and a clean CSV.

* ``audit.html``: one self-contained page in the style of ``report.html`` (its CSS and HTML
  helpers are reused from :mod:`transferlab.evaluation.report`), with thumbnails: likely label
  errors worst first, duplicate groups side by side with their splits and labels, outliers, and
  the counts per class. No script, no network.
* ``audit.csv``: ``path,kind,score,given_label,suggested_label,group``; ``kind`` is ``label``,
  ``duplicate`` or ``outlier``, and the rows of each kind come worst first. ``score`` is
  ``1 - p(given label)`` for label rows, the group's lowest feature similarity for duplicate
  rows (1 for byte copies) and the robust z-score for outlier rows.
* ``audit.json``: :meth:`AuditResult.summary <transferlab.audit.result.AuditResult.summary>`.
* :func:`write_clean`: a ``path,label,split`` CSV with the fixes applied, which
  ``transferlab train`` reads as is. The user's image files are never moved, renamed or deleted.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

from transferlab._atomic import atomic_write, atomic_write_bytes
from transferlab.audit.defaults import DUPLICATE_FIXES, LABEL_FIXES, OUTLIER_FIXES
from transferlab.audit.result import AuditResult
from transferlab.errors import ConfigError
from transferlab.evaluation.html import CSS, escape, img_array, kv_grid, muted, section, table, thumbnail

__all__ = ["AUDIT_CSV", "AUDIT_HTML", "AUDIT_JSON", "write_audit", "write_clean"]

AUDIT_HTML, AUDIT_CSV, AUDIT_JSON = "audit.html", "audit.csv", "audit.json"
CSV_COLUMNS = ("path", "kind", "score", "given_label", "suggested_label", "group")

_EXTRA_CSS = """
.group{border:1px solid #e4e7eb;border-radius:6px;padding:8px;margin:0 0 12px;background:#fafbfc;font-size:13px}
.group .pics{display:flex;flex-wrap:wrap;gap:8px}.group figure{margin:0;width:160px}
.group img,.group .missing{width:160px;height:160px;object-fit:contain;background:#e4e7eb;border-radius:4px}
.group .missing{display:flex;align-items:center;justify-content:center;color:#627d98}
.group figcaption{font-size:12px}.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;
margin-left:6px;background:#d9e2ec;color:#243b53}.badge.bad{background:#fde2e1;color:#b42318}
"""


# ------------------------------------------------------------------ rows
def csv_rows(result: AuditResult) -> list[dict]:
    """The rows of ``audit.csv``: label issues, then duplicates, then outliers, each worst first."""
    names, records, issues = result.class_names, result.records, result.labels
    rows = [{"path": records[r].path, "kind": "label", "score": round(float(issues.score[r]), 4),
             "given_label": names[issues.given[r]], "suggested_label": names[issues.suggested[r]], "group": ""}
            for r in result.label_issue_rows()]
    for group in result.duplicates:
        rows += [{"path": m.path, "kind": "duplicate", "score": round(group.similarity, 4), "given_label": m.label,
                  "suggested_label": "", "group": group.id} for m in group.members]
    rows += [{"path": records[r].path, "kind": "outlier", "score": round(float(result.outlier_score[r]), 3),
              "given_label": records[r].label, "suggested_label": "", "group": ""} for r in result.outlier_rows()]
    return rows


# ------------------------------------------------------------------ HTML
def _thumb_html(path: str, alt: str) -> str:
    thumb = thumbnail(path)
    return img_array(thumb, alt) if thumb is not None else '<div class="missing">image not found</div>'


def _card(path: str, alt: str, caption: str) -> str:
    return (f'<div class="mistake"><div class="pics">{_thumb_html(path, alt)}</div><div>{caption}</div>'
            f'<div class="path" title="{escape(path)}">{escape(Path(path).name)}</div></div>')


def _summary_section(s: dict) -> str:
    d = s["duplicates"]
    cards = [(s["images"], "images audited"), (s["label_issues"]["count"], "likely label errors"),
             (d["groups"], "duplicate groups"), (d["cross_split_groups"], "groups across splits"),
             (d["two_label_groups"], "groups with two labels"), (s["outliers"]["count"], "outliers"),
             (s["bad_files"], "unreadable files"), (s["backbone"], "backbone")]
    body = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards)
    return section("summary", "Summary", f'<div class="cards">{body}</div>'
                    + muted("Nothing was changed: review the findings, then fix the files yourself or train on the "
                             "CSV that `transferlab audit --write-clean` writes."))


def _per_class_section(s: dict) -> str:
    rows = [[escape(n), str(c["images"]), str(c["label_issues"]), str(c["duplicates"]), str(c["outliers"])]
            for n, c in s["per_class"].items()]
    body = table(["class", "images", "likely label errors", "duplicate files", "outliers"], rows)
    if s["label_issues"]["estimated_errors"]:
        est = [[escape(e["given"]), escape(e["true"]), f"{e['images']:.1f}"] for e in s["label_issues"]["estimated_errors"]]
        body += ("<h3>Estimated mislabeled images per class pair</h3>" + table(["labelled as", "really", "images"], est,
                                                                                 numeric_from=2)
                 + muted("The confident joint of Northcutt et al. (2021), calibrated to the class counts."))
    return section("per-class", "Counts per class", body)


def _labels_section(result: AuditResult, max_gallery: int) -> str:
    rows = result.label_issue_rows()
    title = "Likely label errors"
    if not rows:
        return section("label-issues", title, '<p class="note">No likely label error: every image is, out of fold, '
                                               'at least as probable for its own class as the class threshold.</p>')
    names, issues = result.class_names, result.labels
    cards = [_card(result.records[r].path, f"label issue {i + 1}",
                   f'labelled <span class="pred">{escape(names[issues.given[r]])}</span> &rarr; looks like '
                   f'<span class="true">{escape(names[issues.suggested[r]])}</span> '
                   f'(p {issues.probabilities[r, issues.suggested[r]]:.0%}, score {issues.score[r]:.2f})')
             for i, r in enumerate(rows[:max_gallery])]
    head = (f"<p>{len(rows)} images are confidently another class than their label (out-of-fold probabilities of a "
            f"linear probe on the backbone features, {result.settings.get('folds')}-fold; confident learning, "
            f"Northcutt et al., JAIR 2021). Showing {len(cards)}, likeliest first; score = 1 - p(given label).</p>")
    return section("label-issues", title, head + f'<div class="gallery">{"".join(cards)}</div>')


def _duplicates_section(result: AuditResult, max_gallery: int) -> str:
    groups = result.duplicates
    title = "Duplicates and split leakage"
    if not groups:
        return section("duplicates", title, '<p class="note">No duplicates: no two images are byte copies or '
                                             'near copies (resized, re-encoded, slightly cropped) of each other.</p>')
    parts = []
    for group in groups[:max_gallery]:
        badges = f'<span class="badge">{escape(group.kind)}</span>'
        if group.crosses_splits:
            badges += f'<span class="badge bad">leakage: {escape(", ".join(group.splits))}</span>'
        if group.two_labels:
            badges += f'<span class="badge bad">two labels: {escape(", ".join(group.labels))}</span>'
        detail = "" if group.kind == "exact" else f" &middot; feature similarity &ge; {group.similarity:.2f}, " \
                                                  f"hash distance &le; {group.hash_distance}"
        figures = "".join(
            f"<figure>{_thumb_html(m.path, f'{group.id} copy {i + 1}')}<figcaption><b>{escape(m.label)}</b> &middot; "
            f"{escape(m.split or 'left out')}<div class=\"path\" title=\"{escape(m.path)}\">{escape(Path(m.path).name)}</div>"
            f"</figcaption></figure>" for i, m in enumerate(group.members))
        parts.append(f'<div class="group" id="{escape(group.id)}"><div><b>{escape(group.id)}</b>{badges}{detail}</div>'
                     f'<div class="pics">{figures}</div></div>')
    head = (f"<p>{len(groups)} groups ({sum(len(g.members) for g in groups)} files); showing {len(parts)}, label "
            f"conflicts and groups across splits first. A picture in train and in test makes test accuracy look "
            f"better than it is.</p>")
    return section("duplicates", title, head + "".join(parts))


def _outliers_section(result: AuditResult, max_gallery: int) -> str:
    rows = result.outlier_rows()
    title = "Outliers"
    if not rows:
        return section("outliers", title, '<p class="note">No outliers: every image is about as close to the rest '
                                           'as usual.</p>')
    cards = [_card(result.records[r].path, f"outlier {i + 1}",
                   f'<span class="true">{escape(result.records[r].label)}</span> &middot; score '
                   f'{result.outlier_score[r]:.1f}') for i, r in enumerate(rows[:max_gallery])]
    head = (f"<p>{len(rows)} images lie far from every other image (placeholders, wrong domain, blank frames); "
            f"score = robust z-score of their similarity to their nearest neighbours. Showing {len(cards)}.</p>")
    return section("outliers", title, head + f'<div class="gallery">{"".join(cards)}</div>')


def render_html(result: AuditResult, s: dict, max_gallery: int = 60) -> str:
    """The page of ``audit.html`` as a string."""
    sections = [_summary_section(s), _labels_section(result, max_gallery), _duplicates_section(result, max_gallery),
                _outliers_section(result, max_gallery), _per_class_section(s),
                section("settings", "Settings", kv_grid({**s["settings"], "timing (s)": s["timing"]}))]
    nav = " &middot; ".join(f'<a href="#{i}" style="color:#bcccdc">{t}</a>' for i, t in (
        ("label-issues", "label errors"), ("duplicates", "duplicates"), ("outliers", "outliers"),
        ("per-class", "per class"), ("settings", "settings")))
    name = Path(result.dataset.root).name
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>transferlab audit: {escape(name)}</title><style>{CSS}{_EXTRA_CSS}</style></head><body>"
            f"<header><h1>Audit of {escape(name)}</h1><p>{escape(result.dataset.root)} ({escape(result.dataset.layout)} layout)"
            f"</p><p>{nav}</p></header><main>{''.join(sections)}</main></body></html>\n")


# ------------------------------------------------------------------ files
def write_audit(result: AuditResult, out_dir: str | os.PathLike, *, max_gallery: int = 60) -> Path:
    """Write ``audit.html``, ``audit.csv`` and ``audit.json`` into ``out_dir`` (created) and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    s = result.summary()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(result))
    atomic_write_bytes(out / AUDIT_CSV, buffer.getvalue().encode("utf-8"))
    atomic_write_bytes(out / AUDIT_JSON, json.dumps(s, indent=2).encode("utf-8"))
    atomic_write_bytes(out / AUDIT_HTML, render_html(result, s, max_gallery).encode("utf-8"))
    return out


def write_clean(result: AuditResult, path: str | os.PathLike, *, labels: str = "relabel",
                duplicates: str = "keep-one", outliers: str = "drop") -> dict:
    """Write a ``path,label,split`` CSV of the dataset with the audit's fixes applied.

    ``transferlab train CSV`` reads it as is: paths are relative to the CSV's folder when the
    images lie below it (absolute otherwise), and every image keeps the split it had in the audit (so the test split stays the same). Images are
    not touched; only the CSV is written.

    Args:
        result: an :class:`~transferlab.audit.core.AuditResult`.
        path: the CSV to write (replaced atomically; it may not be the audited CSV itself).
        labels: likely label errors: "relabel" (to the suggested label, default), "drop" or "keep".
        duplicates: "keep-one" (default: keep the first file of each group, train before val
            before test, and drop the others; a group with two labels is dropped whole, as
            byte copies under two labels already are) or "keep".
        outliers: "drop" (default) or "keep".

    Returns:
        Counts: ``{"path", "written", "relabelled", "dropped": {"label", "duplicate", "outlier"}}``.

    Raises:
        ConfigError: an unknown choice, or ``path`` is the audited CSV.
    """
    for name, value, allowed in (("labels", labels, LABEL_FIXES), ("duplicates", duplicates, DUPLICATE_FIXES),
                                 ("outliers", outliers, OUTLIER_FIXES)):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}.")
    target = Path(path).resolve()
    if target == Path(result.dataset.root).resolve():
        raise ConfigError(f"{path} is the audited CSV; write the clean CSV to another file so the original is kept.")
    names, issues = result.class_names, result.labels
    drop: dict[int, str] = {}
    if outliers == "drop":
        drop.update({r: "outlier" for r in result.outlier_rows()})
    if duplicates == "keep-one":
        for group in result.duplicates:
            rows = [m.row for m in group.members if m.row is not None]
            for row in (rows if group.two_labels else rows[1:]):
                drop.setdefault(row, "duplicate")
    relabel: dict[int, str] = {}
    for r in result.label_issue_rows():
        if labels == "drop":
            drop.setdefault(r, "label")
        elif labels == "relabel" and r not in drop:
            relabel[r] = names[issues.suggested[r]]
    base = target.parent

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["path", "label", "split"])
            for row, record in enumerate(result.records):
                if row not in drop:
                    writer.writerow([_relative(record.path, base), relabel.get(row, record.label), record.split])

    atomic_write(target, write)
    dropped = Counter(drop.values())
    return {"path": str(target), "written": len(result.records) - len(drop), "relabelled": len(relabel),
            "dropped": {k: dropped.get(k, 0) for k in ("label", "duplicate", "outlier")}}


def _relative(file: str, base: Path) -> str:
    """``file`` relative to ``base`` when it lies below it, else absolute (POSIX form either way)."""
    path = Path(file)
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
