"""``transferlab inspect``, ``sample`` and ``backbones``: look at data and at what can be trained on."""

from __future__ import annotations

import argparse

from transferlab.cli._common import ExitCode, add_cache_dir, add_command, print_json


def add_split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split rule (default 42)")
    parser.add_argument("--workers", type=int, default=None, help="threads for checking files (default: all CPUs)")


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
    lines.append(f"Image sizes: width {size['min_width']}..{size['max_width']}, "
                 f"height {size['min_height']}..{size['max_height']}")
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
                             seed=args.seed, workers=args.workers, show_progress=not args.json,
                             recheck=args.recheck, cache_dir=args.cache_dir)
    if args.bad_files_out:
        with open(args.bad_files_out, "w", encoding="utf-8") as fh:
            fh.writelines(f"{b['path']}\t{b['reason']}\n" for b in report["bad_files"])
    if args.json:
        print_json(report)
    else:
        print(format_inspection(report))
    return ExitCode.PROBLEMS if report["problems"] else ExitCode.OK


def _cmd_sample(args: argparse.Namespace) -> int:
    from transferlab.data.sample import make_sample_dataset

    out = make_sample_dataset(args.out, images_per_class=args.images_per_class, image_size=args.size, seed=args.seed)
    print(f"Sample dataset in {out}")
    return ExitCode.OK


def _cmd_backbones(args: argparse.Namespace) -> int:
    from transferlab.backbones import list_backbones

    infos = list_backbones()
    if args.json:
        print_json([i.to_dict() for i in infos])
        return ExitCode.OK
    print(f"{'name':<20} {'input':>5} {'features':>8} {'params':>8} {'top-1':>6}  {'preprocess':<10} offline")
    for i in infos:
        top1 = f"{i.imagenet_top1:.1f}" if i.imagenet_top1 else "-"
        params = f"{i.params / 1e6:.1f}M" if i.params else "-"
        print(f"{i.name:<20} {i.input_size:>5} {i.feature_dim:>8} {params:>8} {top1:>6}  {i.preprocess:<10} "
              f"{'yes' if i.weights_available else 'no (downloads on first use)'}")
    return ExitCode.OK


def register(subparsers) -> None:
    """Add ``inspect``, ``sample`` and ``backbones``."""
    p = add_command(subparsers, "inspect", help="check every file of a dataset and print class counts and bad files")
    p.add_argument("data", help="folder of class subfolders, pre-split folder (train/val/test) or CSV of path,label")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bad-files-out", metavar="FILE", help="also write the bad files (path<TAB>reason) to FILE")
    p.add_argument("--recheck", action="store_true",
                   help="decode every file again, even those unchanged since their last check")
    add_cache_dir(p)
    add_split_args(p)
    p.set_defaults(func=_cmd_inspect)

    p = add_command(subparsers, "sample", help="write the bundled synthetic inspection dataset")
    p.add_argument("out", help="output folder")
    p.add_argument("--images-per-class", type=int, default=60)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)

    p = add_command(subparsers, "backbones", help="list the pretrained backbones and whether their weights are here")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=_cmd_backbones)
