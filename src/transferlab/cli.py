"""Command line interface: a thin layer over the Python API (every command has a function).

    transferlab inspect DIR            check a dataset          -> transferlab.inspect()
    transferlab sample OUT             write the demo dataset   -> transferlab.make_sample_dataset()
    transferlab backbones              list pretrained networks -> transferlab.list_backbones()
    transferlab train DIR              train a classifier       -> transferlab.train()
    transferlab evaluate MODEL DIR     report on labeled data   -> transferlab.evaluate()
    transferlab predict MODEL PATHS    classify images          -> transferlab.load().predict()
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from transferlab import __version__
from transferlab.progress import set_quiet

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ---------------------------------------------------------------- inspect
def _add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split rule (default 42)")
    parser.add_argument("--workers", type=int, default=None, help="processes for checking files (default: all CPUs)")


def format_inspection(report: dict) -> str:
    """Human-readable inspection report."""
    lines = [f"Dataset {report['root']} ({report['layout']} layout)"]
    width = max([len(c) for c in report["classes"]] + [5])
    splits = list(report.get("splits", {}))
    header = f"  {'class':<{width}}  {'images':>7}" + "".join(f"  {s:>6}" for s in splits)
    lines.append(header)
    for name, count in report["classes"].items():
        row = f"  {name:<{width}}  {count:>7}" + "".join(f"  {report['splits'][s].get(name, 0):>6}" for s in splits)
        lines.append(row)
    lines.append(f"  {'total':<{width}}  {report['total']:>7}")
    ratio = report.get("imbalance_ratio")
    lines.append(f"Imbalance ratio (largest/smallest class): {ratio:.2f}" if ratio else "Imbalance ratio: n/a")
    size = report["image_size"]
    lines.append(f"Image sizes: width {size['min_width']}..{size['max_width']}, height {size['min_height']}..{size['max_height']}")
    bad = report["bad_files"]
    lines.append(f"Bad files skipped: {len(bad)}")
    lines.extend(f"  {b['path']}: {b['reason']}" for b in bad)
    for warning in report.get("warnings", []):
        lines.append(f"Warning: {warning}")
    for problem in report.get("problems", []):
        lines.append(f"Problem: {problem}")
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from transferlab.data.dataset import inspect_dataset

    report = inspect_dataset(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                             seed=args.seed, workers=args.workers, show_progress=not args.json)
    if args.bad_files_out:
        with open(args.bad_files_out, "w", encoding="utf-8") as fh:
            fh.writelines(f"{b['path']}\t{b['reason']}\n" for b in report["bad_files"])
    if args.json:
        _print_json(report)
    else:
        print(format_inspection(report))
    return EXIT_PROBLEMS if report["problems"] else EXIT_OK


# ---------------------------------------------------------------- sample
def _cmd_sample(args: argparse.Namespace) -> int:
    from transferlab.data.sample import make_sample_dataset

    out = make_sample_dataset(args.out, images_per_class=args.images_per_class, image_size=args.size, seed=args.seed)
    print(f"Sample dataset in {out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning for image classification.")
    parser.add_argument("--version", action="version", version=f"transferlab {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="check every file of a dataset and print class counts and bad files")
    p.add_argument("data", help="folder of class subfolders, pre-split folder (train/val/test) or CSV of path,label")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bad-files-out", metavar="FILE", help="also write the bad files (path<TAB>reason) to FILE")
    _add_split_args(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("sample", help="write the bundled synthetic inspection dataset")
    p.add_argument("out", help="output folder")
    p.add_argument("--images-per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Later stages register their sub-commands here (kept in their own CLI modules).
_EXTRA_COMMANDS: list = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from transferlab.data.sources import DatasetError

    try:
        return args.func(args)
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
