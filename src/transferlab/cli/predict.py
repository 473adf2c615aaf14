"""``transferlab predict``: classify image files, folders or globs with any exported format.

Output: a table, CSV or JSON on stdout, or in ``--out FILE``. The columns follow the run's
``predictions.csv``: ``predicted`` is the model's answer (``label`` there is the true class,
which ``predict`` does not know). ``--sort-into DIR`` also copies (``--link``: links) each image
into ``DIR/<outcome>/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from transferlab.cli._common import ExitCode, add_command, add_unsafe

CSV_COLUMNS = ["path", "predicted", "probability", "outcome", "top_k", "error"]


def _cmd_predict(args: argparse.Namespace) -> int:
    from transferlab._paths import display_path
    from transferlab.errors import ConfigError
    from transferlab.inference import load

    if args.link and not args.sort_into:
        raise ConfigError("--link says how --sort-into places the images: add --sort-into DIR.")
    fmt = args.format or _format_of(args.out)
    clf = load(args.model, safe_mode=not args.unsafe)  # prediction alone: no TensorFlow for ONNX/TFLite
    _apply_decision_options(clf, args)
    predictions = clf.predict(args.paths, top_k=args.top_k, batch_size=args.batch_size,
                              show_progress=not args.quiet and fmt == "table" and args.out is None)
    sources = [p.source for p in predictions]  # the real paths, for --sort-into
    for p in predictions:  # printed text: names that are not UTF-8 are shown escaped
        p.source = display_path(p.source)
    text = _render(predictions, fmt)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        print(f"{len(predictions)} prediction(s) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.sort_into:
        _sort_into(predictions, sources, Path(args.sort_into), link=args.link)
    _print_uncertain_share(predictions, clf)
    return ExitCode.PROBLEMS if any(p.error for p in predictions) else ExitCode.OK


def _format_of(out: str | None) -> str:
    """The format ``--out FILE`` implies when ``--format`` is not given: by its suffix."""
    suffix = Path(out).suffix.lower() if out else ""
    return {".csv": "csv", ".json": "json"}.get(suffix, "table")


def _render(predictions, fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps([p.to_dict() for p in predictions], indent=2, default=str) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")  # LF on every OS, like the run's own CSV files
        writer.writerow(CSV_COLUMNS)
        for p in predictions:
            top = ";".join(f"{name}:{prob:.4f}" for name, prob in p.top_k)
            writer.writerow([p.source, p.predicted or "", f"{p.probability:.6f}" if p.probability is not None else "",
                             p.outcome or "", top, p.error or ""])
        return buffer.getvalue()
    width = max([len(p.source) for p in predictions] + [4])
    lines = []
    for p in predictions:
        if p.error:
            lines.append(f"{p.source:<{width}}  ERROR: {p.error}")
        else:
            rest = "  ".join(f"{name} {prob:.3f}" for name, prob in p.top_k)
            if p.outcome != p.top_k[0][0]:  # the decision rule changed the answer: say it first
                rest = f"-> {p.outcome}  ({rest})"
            lines.append(f"{p.source:<{width}}  {rest}")
    return "".join(line + "\n" for line in lines)


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>-1<suffix>``, ``-2`` ... : the first that does not exist."""
    target = folder / name
    stem, suffix = os.path.splitext(name)
    n = 0
    while os.path.lexists(target):
        n += 1
        target = folder / f"{stem}-{n}{suffix}"
    return target


def _place(source: str, target: Path, link: bool) -> None:
    """Copy ``source`` to ``target``, or hard-link it (a symbolic link across file systems)."""
    if not link:
        shutil.copy2(source, target)
        return
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed there
        os.symlink(os.path.abspath(source), target)


def _sort_into(predictions, sources: list[str], root: Path, *, link: bool) -> None:
    """Put each readable image into ``root/<outcome>/`` (a class name, or "uncertain").

    Nothing is overwritten: a name already there gets a ``-1``, ``-2`` ... suffix.
    """
    counts: Counter[str] = Counter()
    for p, source in zip(predictions, sources):
        if p.error or not p.outcome:
            continue
        folder = root / p.outcome
        folder.mkdir(parents=True, exist_ok=True)
        _place(source, free_name(folder, os.path.basename(source)), link)
        counts[p.outcome] += 1
    verb = "linked" if link else "copied"
    summary = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "nothing"
    print(f"{verb} {sum(counts.values())} image(s) into {root}: {summary}", file=sys.stderr)


def _apply_decision_options(clf, args: argparse.Namespace) -> None:
    """``--argmax`` drops the saved decision rule; ``--uncertain-below`` sets the reject option."""
    from transferlab.training.operating_point import DecisionRule

    if args.argmax:
        clf.decision = None
    if args.uncertain_below is not None:
        clf.decision = clf.decision or DecisionRule()
        clf.decision.uncertain_below = args.uncertain_below


def _print_uncertain_share(predictions, clf) -> None:
    if clf.decision is not None and clf.decision.uncertain_below is not None and predictions:
        n = sum(p.outcome == "uncertain" for p in predictions)
        print(f"uncertain (top probability < {clf.decision.uncertain_below:g}): {n} of {len(predictions)} "
              f"({n / len(predictions):.1%}) for a person to check", file=sys.stderr)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


def _top_k(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def register(subparsers) -> None:
    """Add ``predict``."""
    p = add_command(subparsers, "predict", help="classify image files, folders or globs")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns (files in folders that are not "
                                            "images are skipped; a named one is an error)")
    p.add_argument("--top-k", type=_top_k, default=1,
                   help="how many classes to show per image (default 1; more than the classes shows all)")
    p.add_argument("--format", choices=["table", "csv", "json"], default=None,
                   help="output format (default: table, or by the suffix of --out: .csv, .json)")
    p.add_argument("--out", metavar="FILE", help="write the table/CSV/JSON to FILE instead of stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--uncertain-below", "--min-confidence", dest="uncertain_below", type=_probability, metavar="P",
                   help="answer 'uncertain' when the top probability is below P (default: the run's setting)")
    p.add_argument("--argmax", action="store_true",
                   help="ignore the run's saved operating point and reject option: the most probable class")
    p.add_argument("--sort-into", metavar="DIR",
                   help="also copy each image into DIR/<predicted class>/ (DIR/uncertain/ when uncertain); "
                        "existing files are never overwritten (a -1, -2 ... suffix is added)")
    p.add_argument("--link", action="store_true",
                   help="with --sort-into: hard-link instead of copying (a symbolic link across file systems)")
    add_unsafe(p)
    p.set_defaults(func=_cmd_predict)
