"""``transferlab runs``: the run directories of a runs folder, with their settings and metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.cli._common import ExitCode, add_command, print_json

SORT_KEYS = ("created", "accuracy", "macro_f1", "name")


def _cmd_runs(args: argparse.Namespace) -> int:
    from transferlab.rundir import list_runs

    rows, unreadable = list_runs(args.runs_dir)
    if args.sort in ("accuracy", "macro_f1"):  # best first; runs without metrics last
        rows.sort(key=lambda r: (r[args.sort] is None, -(r[args.sort] or 0.0)))
    elif args.sort == "name":
        rows.sort(key=lambda r: r["name"])
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"No runs in {args.runs_dir}.")
    else:
        print(_table(rows))
    for folder, reason in unreadable:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    return ExitCode.OK


def _table(rows: list[dict]) -> str:
    header = ["name", "status", "created", "data", "backbone", "strategy", "accuracy", "macro F1", "on", "time"]
    lines = [[r["name"], r["status"], (r["created"] or "")[:16].replace("T", " "), Path(r["data"] or "").name,
              Path(str(r["backbone"] or "")).name, r["strategy"] or "",
              _number(r["accuracy"]), _number(r["macro_f1"]),
              f"{r['split']} ({r['images']})" if r["split"] else "",
              f"{r['seconds']:.0f} s" if r["seconds"] is not None else ""] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *lines])


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}"


def register(subparsers) -> None:
    """Add ``runs``."""
    p = add_command(subparsers, "runs", help="list the runs of a runs folder with their metrics")
    p.add_argument("--runs-dir", default="runs", help="folder that holds the run directories (default ./runs)")
    p.add_argument("--sort", choices=SORT_KEYS, default="created",
                   help="order: created (oldest first, default), accuracy or macro_f1 (best first), name")
    p.add_argument("--json", action="store_true", help="print a JSON list (with each run's path)")
    p.set_defaults(func=_cmd_runs)
