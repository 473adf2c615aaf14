"""``transferlab evaluate``, ``report`` and ``explain``: how good a model is, and why."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from transferlab.cli._common import ExitCode, add_cache_dir, add_command, add_unsafe, print_json


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from transferlab.evaluation.figures import prestart_helper

    prestart_helper()  # for the report's figures; it starts up while the model loads
    from transferlab.api import load
    from transferlab.evaluation.metrics import format_summary
    from transferlab.rundir import RunDir

    clf = load(args.model, safe_mode=not args.unsafe)
    out = args.out
    if out is None and clf.run_dir is not None and RunDir(clf.run_dir).is_run():
        out = RunDir(clf.run_dir).evaluations / f"{Path(args.data).stem}-{datetime.now():%Y%m%d-%H%M%S}"
    report = clf.evaluate(args.data, split=args.split, show_progress=not (args.quiet or args.json), out_dir=out,
                          cache_dir=args.cache_dir)
    if args.json:
        print_json(report)
    else:
        print(format_summary(report))
        if out is not None:
            print(f"Report: {Path(out) / 'report.html'}")
    return ExitCode.OK


def _cmd_report(args: argparse.Namespace) -> int:
    from transferlab.evaluation.reporting import write_run_report

    path = write_run_report(args.run, max_gallery=args.max_gallery, gradcam=not args.no_gradcam)
    print(f"Report: {path}")
    return ExitCode.OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from transferlab.api import load
    from transferlab.evaluation.gradcam import explain

    clf = load(args.model, safe_mode=not args.unsafe)
    written = explain(clf, args.images, args.out, class_name=args.class_name)
    for path in written:
        print(path)
    if not written:
        print("No image could be read.")
        return ExitCode.PROBLEMS
    return ExitCode.OK


def register(subparsers) -> None:
    """Add ``evaluate``, ``report`` and ``explain``."""
    p = add_command(subparsers, "evaluate", help="evaluation report of a model on a labeled folder")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("data", help="labeled folder or CSV")
    p.add_argument("--split", choices=["all", "train", "val", "test"],
                   help="'all': every image, the model's training images included; train/val/test: only that split "
                        "of the data (default: every image the model was not trained on)")
    p.add_argument("--out", help="folder for metrics.json, predictions.csv and report.html "
                                 "(default for a run: RUN/evaluations/<data>-<time>)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_cache_dir(p)
    add_unsafe(p)
    p.set_defaults(func=_cmd_evaluate)

    p = add_command(subparsers, "report", help="write RUN/report.html: settings, data, curves, metrics, mistakes")
    p.add_argument("run", help="run directory")
    p.add_argument("--max-gallery", type=int, default=48, help="most misclassified images shown (default 48)")
    p.add_argument("--no-gradcam", action="store_true", help="no Grad-CAM overlays in the gallery")
    p.set_defaults(func=_cmd_report)

    p = add_command(subparsers, "explain", help="Grad-CAM heatmaps: where the model looked, as PNG overlays")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", default="gradcam", help="output folder (default ./gradcam)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: the predicted one)")
    add_unsafe(p)
    p.set_defaults(func=_cmd_explain)
