"""``transferlab train``: the CLI layer over :func:`transferlab.api.train` and :func:`transferlab.api.resume`.

Its ``--options`` are generated from :class:`~transferlab.training.config.TrainConfig`'s field
declarations: the default, the choices and the help text live there only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Collection

from transferlab.cli._common import ExitCode, add_command
from transferlab.training.config import TrainConfig, cli_settings, field_type


def _parse_value(kind: type, text: str):
    if text.lower() == "none":
        return None
    return kind(text)


def add_train_options(parser: argparse.ArgumentParser, only: Collection[str] | None = None,
                      exclude: Collection[str] = ()) -> None:
    """One ``--option`` per CLI setting of :class:`TrainConfig` (those named in ``only``, if given, but not those
    in ``exclude``), defaulting to "not given"."""
    defaults = TrainConfig()
    for f in cli_settings():
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        kind = field_type(f)
        meta = f.metadata
        default = getattr(defaults, f.name)
        text = meta["help"] + (f" (default {default})" if default is not None else "")
        parser.add_argument(meta.get("flag") or "--" + f.name.replace("_", "-"), dest=f.name, default=None,
                            type=meta.get("parse") or ((lambda value, kind=kind: _parse_value(kind, value))
                                                       if kind is not str else str),
                            choices=meta.get("choices"), help=text,
                            metavar=None if meta.get("choices") else f.name.upper())


def add_ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|local|ADDRESS",
                        help="extract features on a Ray cluster (transferlab[ray]): alone or 'auto' for the running "
                             "cluster (RAY_ADDRESS, `ray start`) else a local one, 'local', or HOST:PORT; the cache "
                             "dir must be shared by every node")


def given_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig settings given on the command line."""
    return {f.name: getattr(args, f.name) for f in cli_settings() if getattr(args, f.name, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from transferlab.evaluation.figures import prestart_helper

    prestart_helper()  # the figure helper starts up on another core while TensorFlow is imported
    from transferlab.api import resume, train
    from transferlab.evaluation.metrics import is_imbalanced_report
    from transferlab.training.checkpoint import TrainingInterrupted
    from transferlab.training.operating_point import format_figures

    settings = given_settings(args)
    if str(settings.get("weights", "")).lower() == "none":
        settings["weights"] = None
    settings["unsafe"] = args.unsafe
    if args.no_augment:
        settings["augment"] = None
    if args.tensorboard:
        settings["tensorboard"] = True
    if args.ray:
        from transferlab.distributed import import_ray

        import_ray()  # says what to install before any work
        settings["ray"] = args.ray
    try:
        if args.resume:
            if args.data or len(settings) > 1:
                print("error: --resume continues a run with its own data and settings; pass only --resume RUN",
                      file=sys.stderr)
                return ExitCode.USAGE
            clf = resume(args.resume, show_progress=not args.quiet)
        elif not args.data:
            print("error: give the data folder (or --resume RUN)", file=sys.stderr)
            return ExitCode.USAGE
        elif settings.get("backbone") == "auto" or args.tune or args.tune_time:
            if args.from_model:
                print("error: --from continues a given model; it does not combine with --backbone auto or --tune",
                      file=sys.stderr)
                return ExitCode.USAGE
            from transferlab.api.selection import train_selected

            clf = train_selected(args.data, TrainConfig(**settings), tune=args.tune, tune_time=args.tune_time,
                                 folds=args.folds, show_progress=not args.quiet, overwrite=args.overwrite)
        else:
            clf = train(args.data, TrainConfig(**settings), show_progress=not args.quiet, from_model=args.from_model,
                        overwrite=args.overwrite)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    metrics = clf.metadata.get("metrics")
    if metrics:
        # Without a test split the figures are on validation images, which chose the epoch: say so.
        split_name = "Test" if metrics["split"] == "test" else "Validation"
        where = f"({metrics['split']} split, {metrics['num_samples']} images)"
        if metrics["split"] != "test":
            where += " (no test split: these images drove early stopping, so the figure is optimistic)"
        if is_imbalanced_report(metrics):  # accuracy hides a missed rare class: lead with what shows it
            print(f"{split_name} macro F1: {metrics['macro']['f1']:.4f}, balanced accuracy "
                  f"{metrics['macro']['recall']:.4f} {where}; accuracy {metrics['accuracy']:.4f}")
            print("Per-class recall: " + ", ".join(f"{c} {v['recall']:.3f}" for c, v in metrics["per_class"].items()))
        else:
            print(f"{split_name} accuracy: {metrics['accuracy']:.4f} {where}")
            print("Per-class F1: " + ", ".join(f"{c} {v['f1']:.3f}" for c, v in metrics["per_class"].items()))
        if metrics.get("operating_point"):
            print(format_figures(metrics["operating_point"], metrics["split"]))
    print(f"Run directory: {clf.run_dir}")
    print(f"Model: {clf.model_path}")
    return ExitCode.OK


def register(subparsers) -> None:
    """Add ``train``."""
    p = add_command(subparsers, "train", help="train a classifier on a labeled image folder or CSV")
    p.add_argument("data", nargs="?", help="folder of class subfolders, pre-split folder (train/val/test) or CSV")
    add_train_options(p)  # --backbone auto: compare the available backbones and heads first (transferlab compare)
    p.add_argument("--no-augment", action="store_true", help="fine-tune without flip/brightness/contrast/zoom")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to RUN/tensorboard")
    add_ray_option(p)
    p.add_argument("--from", dest="from_model", metavar="MODEL",
                   help="start from a saved model (run dir or .keras): same classes continue, new classes get a "
                        "new head")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run of the same --name (its model and report are deleted)")
    p.add_argument("--tune", nargs="?", type=int, const=100, default=None, metavar="TRIALS",
                   help="first search the head's settings with Optuna on cached features (default 100 trials; "
                        "needs transferlab[tune]); the best go into config.json, every trial into trials.csv")
    p.add_argument("--tune-time", metavar="DURATION", help="time limit of the search, e.g. 90s, 2m, 1h")
    p.add_argument("--folds", type=int, default=5,
                   help="cross-validation folds for --tune and --backbone auto (default 5)")
    p.add_argument("--unsafe", action="store_true",
                   help="allow Lambda layers in a personal model (runs code from the file)")
    p.set_defaults(func=_cmd_train)
