"""``transferlab compare``: the CLI layer over :func:`transferlab.api.selection.compare`."""

from __future__ import annotations

import argparse

from transferlab.cli._common import ExitCode, add_command, print_json
from transferlab.cli.train import add_train_options, given_settings


def _cmd_compare(args: argparse.Namespace) -> int:
    from transferlab.evaluation.figures import prestart_helper

    if args.save_best:
        prestart_helper()  # the winner's run draws figures
    from transferlab.api.selection import compare
    from transferlab.training.config import TrainConfig

    settings = given_settings(args)
    if str(settings.get("weights", "")).lower() == "none":
        settings["weights"] = None
    settings["unsafe"] = args.unsafe
    board = compare(args.data, args.backbones, folds=args.folds, save_best=args.save_best, out_dir=args.out,
                    config=TrainConfig(**settings), show_progress=not (args.quiet or args.json))
    if args.json:
        print_json(board.to_dict())
        return ExitCode.OK
    print(board.format_table())
    print(f"Leaderboard: {board.out_dir / 'leaderboard.csv'}")
    print(f"Page: {board.out_dir / 'compare.html'}")
    if board.run_dir:
        print(f"Winner trained: {board.run_dir} (report: {board.run_dir / 'report.html'})")
    return ExitCode.OK


def register(subparsers) -> None:
    """Add ``compare``."""
    p = add_command(subparsers, "compare",
                    help="rank backbones x heads by cross-validation on cached features; optionally train the winner")
    p.add_argument("data", help="folder of class subfolders, pre-split folder (train/val/test) or CSV")
    p.add_argument("--backbones", default="available",
                   help="comma-separated names/paths, 'available' (default: every built-in whose weights are here) "
                        "or 'all' (unavailable ones are listed as skipped)")
    p.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds (default 5)")
    p.add_argument("--save-best", action="store_true",
                   help="train the winner into a run directory whose report shows the leaderboard")
    p.add_argument("--out", metavar="DIR", help="folder for leaderboard.csv/json and compare.html "
                                                 "(default: RUNS_DIR/compare-<data>-<time>)")
    p.add_argument("--json", action="store_true", help="print the leaderboard as one JSON object")
    add_train_options(p, exclude=("backbone", "name"))
    p.add_argument("--unsafe", action="store_true",
                   help="allow Lambda layers in a personal model (runs code from the file)")
    p.set_defaults(func=_cmd_compare)
