"""``transferlab audit``: the CLI layer over :func:`transferlab.audit.audit` and :func:`transferlab.audit.write_clean`.

    transferlab audit DATA [--backbone NAME] [--out DIR] [--json] [--write-clean CSV]

The feature settings (``--backbone``, ``--image-size``, ``--cache-dir``, the split fractions and
seed, ...) are train's own options: the same values find the features ``train`` cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transferlab.audit.defaults import (
    DEFAULT_FOLDS,
    DEFAULT_MAX_HASH_DISTANCE,
    DEFAULT_MIN_SIMILARITY,
    DEFAULT_OUTLIER_THRESHOLD,
    DUPLICATE_FIXES,
    LABEL_FIXES,
    OUTLIER_FIXES,
)
from transferlab.cli._common import ExitCode, add_command, add_unsafe, print_json
from transferlab.cli.train import add_train_options

# The settings of `train` that decide the features and the splits.
FEATURE_SETTINGS = ("backbone", "weights", "feature_layer", "preprocess", "image_size", "resize_mode",
                    "interpolation", "crop_fraction", "val_fraction", "test_fraction", "seed", "engine", "cache_dir")


def format_summary(s: dict) -> str:
    """The audit's findings in a few lines."""
    d = s["duplicates"]
    lines = [f"Audited {s['images']} images of {s['data']} ({s['backbone']} features)",
             f"  likely label errors: {s['label_issues']['count']}",
             f"  duplicate groups:    {d['groups']} ({d['files']} files; {d['cross_split_groups']} across splits, "
             f"{d['two_label_groups']} with two labels)",
             f"  outliers:            {s['outliers']['count']}"]
    for kind, top in (("label error", s["label_issues"]["top"][:3]), ("outlier", s["outliers"]["top"][:3])):
        for item in top:
            extra = (f"{item['given_label']} -> {item['suggested_label']}" if "given_label" in item
                     else item["label"])
            lines.append(f"    {kind}: {item['path']} ({extra}, score {item['score']:.2f})")
    if s["bad_files"]:
        lines.append(f"  unreadable files (not audited; see `transferlab inspect`): {s['bad_files']}")
    return "\n".join(lines)


def _cmd_audit(args: argparse.Namespace) -> int:
    from transferlab.audit import audit, write_clean
    from transferlab.training.config import TrainConfig

    settings = {name: getattr(args, name) for name in FEATURE_SETTINGS if getattr(args, name, None) is not None}
    if str(settings.get("weights", "")).lower() == "none":
        settings["weights"] = None
    config = TrainConfig(**settings, unsafe=args.unsafe)
    result = audit(args.data, out=args.out, config=config, folds=args.folds, min_similarity=args.min_similarity,
                   max_hash_distance=args.max_hash_distance, outlier_threshold=args.outlier_threshold,
                   max_gallery=args.max_gallery, show_progress=not (args.quiet or args.json))
    summary = result.summary()
    if args.write_clean:
        summary["clean"] = write_clean(result, args.write_clean, labels=args.fix_labels, duplicates=args.fix_duplicates,
                                       outliers=args.fix_outliers)
    if args.json:
        print_json(summary)
        return ExitCode.OK
    print(format_summary(summary))
    print(f"Report: {Path(result.out_dir) / 'audit.html'} (audit.csv and audit.json beside it)")
    if args.write_clean:
        c = summary["clean"]
        print(f"Clean CSV: {c['path']} ({c['written']} images, {c['relabelled']} relabelled, dropped "
              + ", ".join(f"{n} {k}" for k, n in c["dropped"].items()) + f"); train on it: transferlab train {c['path']}")
    return ExitCode.OK


def register(subparsers) -> None:
    """Add ``audit`` to the ``transferlab`` sub-command parsers."""
    p = add_command(subparsers, "audit", help="find likely label errors, duplicates, split leakage and outliers "
                                            "from the cached features")
    p.add_argument("data", help="folder of class subfolders, pre-split folder (train/val/test) or CSV of path,label")
    p.add_argument("--out", help="folder for audit.html, audit.csv, audit.json (default ./audits/<data>-<time>)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--write-clean", metavar="CSV",
                   help="also write a path,label,split CSV with the fixes applied, for `transferlab train CSV`")
    p.add_argument("--fix-labels", choices=LABEL_FIXES, default="relabel",
                   help="in the clean CSV, likely label errors get the suggested label (default), are dropped or kept")
    p.add_argument("--fix-duplicates", choices=DUPLICATE_FIXES, default="keep-one",
                   help="in the clean CSV, keep one file per duplicate group (default; groups with two labels are "
                        "dropped) or keep all")
    p.add_argument("--fix-outliers", choices=OUTLIER_FIXES, default="drop",
                   help="in the clean CSV, drop outliers (default) or keep them")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"k of the k-fold (default {DEFAULT_FOLDS})")
    p.add_argument("--min-similarity", type=float, default=DEFAULT_MIN_SIMILARITY,
                   help=f"feature similarity of near-duplicate candidates (default {DEFAULT_MIN_SIMILARITY})")
    p.add_argument("--max-hash-distance", type=int, default=DEFAULT_MAX_HASH_DISTANCE,
                   help=f"most perceptual-hash bits (of 64) a near-duplicate differs in (default "
                        f"{DEFAULT_MAX_HASH_DISTANCE})")
    p.add_argument("--outlier-threshold", type=float, default=DEFAULT_OUTLIER_THRESHOLD,
                   help=f"robust z-score from which an image is an outlier (default {DEFAULT_OUTLIER_THRESHOLD})")
    p.add_argument("--max-gallery", type=int, default=60, help="most thumbnails per section of audit.html (default 60)")
    add_train_options(p, only=FEATURE_SETTINGS)
    add_unsafe(p)
    p.set_defaults(func=_cmd_audit)
