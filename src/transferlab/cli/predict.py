"""``transferlab predict``: classify image files, folders or globs with any exported format."""

from __future__ import annotations

import argparse
import csv
import sys

from transferlab.cli._common import ExitCode, add_command, add_unsafe, print_json


def _cmd_predict(args: argparse.Namespace) -> int:
    from transferlab._paths import display_path
    from transferlab.inference import load

    clf = load(args.model, safe_mode=not args.unsafe)  # prediction alone: no TensorFlow for ONNX/TFLite
    _apply_decision_options(clf, args)
    predictions = clf.predict(args.paths, top_k=args.top_k, batch_size=args.batch_size,
                              show_progress=not args.quiet and args.format == "table")
    for p in predictions:  # printed text: names that are not UTF-8 are shown escaped
        p.source = display_path(p.source)
    if args.format == "json":
        print_json([p.to_dict() for p in predictions])
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "label", "probability", "top_k", "error", "outcome"])
        for p in predictions:
            top = ";".join(f"{label}:{prob:.4f}" for label, prob in p.top_k)
            writer.writerow([p.source, p.label or "", f"{p.probability:.6f}" if p.probability is not None else "",
                             top, p.error or "", p.outcome or ""])
    else:
        width = max([len(p.source) for p in predictions] + [4])
        for p in predictions:
            if p.error:
                print(f"{p.source:<{width}}  ERROR: {p.error}")
            else:
                rest = "  ".join(f"{label} {prob:.3f}" for label, prob in p.top_k)
                if p.outcome != p.top_k[0][0]:  # the decision rule changed the answer: say it first
                    rest = f"-> {p.outcome}  ({rest})"
                print(f"{p.source:<{width}}  {rest}")
    _print_uncertain_share(predictions, clf)
    return ExitCode.PROBLEMS if any(p.error for p in predictions) else ExitCode.OK


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


def register(subparsers) -> None:
    """Add ``predict``."""
    p = add_command(subparsers, "predict", help="classify image files, folders or globs")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--top-k", type=int, default=1, help="how many classes to show per image (default 1)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--uncertain-below", type=_probability, metavar="P",
                   help="answer 'uncertain' when the top probability is below P (default: the run's setting)")
    p.add_argument("--argmax", action="store_true",
                   help="ignore the run's saved operating point and reject option: the most probable class")
    add_unsafe(p)
    p.set_defaults(func=_cmd_predict)
