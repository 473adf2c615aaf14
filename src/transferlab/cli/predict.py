"""``transferlab predict``: classify image files, folders or globs with any exported format."""

from __future__ import annotations

import argparse
import csv
import sys

from transferlab.cli._common import ExitCode, add_command, add_unsafe, print_json


def _cmd_predict(args: argparse.Namespace) -> int:
    from transferlab.inference import load

    clf = load(args.model, safe_mode=not args.unsafe)  # prediction alone: no TensorFlow for ONNX/TFLite
    predictions = clf.predict(args.paths, top_k=args.top_k, batch_size=args.batch_size,
                              show_progress=not args.quiet and args.format == "table")
    if args.format == "json":
        print_json([p.to_dict() for p in predictions])
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "label", "probability", "top_k", "error"])
        for p in predictions:
            top = ";".join(f"{label}:{prob:.4f}" for label, prob in p.top_k)
            writer.writerow([p.source, p.label or "", f"{p.probability:.6f}" if p.probability is not None else "",
                             top, p.error or ""])
    else:
        width = max([len(p.source) for p in predictions] + [4])
        for p in predictions:
            if p.error:
                print(f"{p.source:<{width}}  ERROR: {p.error}")
            else:
                rest = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top_k)
                print(f"{p.source:<{width}}  {rest}")
    return ExitCode.PROBLEMS if any(p.error for p in predictions) else ExitCode.OK


def register(subparsers) -> None:
    """Add ``predict``."""
    p = add_command(subparsers, "predict", help="classify image files, folders or globs")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--top-k", type=int, default=1, help="how many classes to show per image (default 1)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=int, default=32)
    add_unsafe(p)
    p.set_defaults(func=_cmd_predict)
