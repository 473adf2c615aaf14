"""``transferlab extract``: the CLI layer over :func:`transferlab.api.extract.extract`."""

from __future__ import annotations

import argparse
import math

from transferlab.cli._common import ExitCode, add_command, print_json
from transferlab.cli.train import add_ray_option, add_train_options
from transferlab.training.config import cli_settings

# The TrainConfig settings that decide which features are computed, and where they go.
EXTRACT_SETTINGS = ("backbone", "weights", "feature_layer", "preprocess", "image_size", "resize_mode",
                    "interpolation", "crop_fraction", "engine", "cache_dir")


def _cmd_extract(args: argparse.Namespace) -> int:
    if args.ray:
        from transferlab.distributed import import_ray

        import_ray()  # says what to install before TensorFlow is even imported
    from transferlab.api.extract import extract

    settings = {f.name: getattr(args, f.name) for f in cli_settings()
                if f.name in EXTRACT_SETTINGS and getattr(args, f.name) is not None}
    if str(settings.get("weights", "")).lower() == "none":
        settings["weights"] = None
    settings["unsafe"] = args.unsafe
    result = extract(args.data, ray=args.ray, actors=args.actors, actor_cpus=args.actor_cpus,
                     show_progress=not args.quiet, **settings)
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"Feature cache: {result.cache_dir}")
        print(f"{result.images} images ({result.distinct} distinct): {result.hits} already cached, "
              f"{result.misses} computed, {len(result.failed)} unreadable")
        if result.misses:
            rate = result.images_per_second
            where = (f"Ray, {result.workers} backbone actor(s) on {result.nodes} node(s), start-up "
                     f"{result.startup_seconds:.1f} s" if result.backend == "ray" else "in this process")
            print(f"Computed in {result.seconds:.1f} s: {rate:.1f} images/s ({result.engine}; {where})"
                  if not math.isnan(rate) else f"Computed in {result.seconds:.1f} s ({where})")
        for path, reason in list(result.failed.items())[:20]:
            print(f"  unreadable: {path}: {reason}")
    return ExitCode.PROBLEMS if result.failed else ExitCode.OK


def register(subparsers) -> None:
    """Add ``extract``."""
    p = add_command(subparsers, "extract", help="fill the feature cache for a dataset (optionally on a Ray cluster)")
    p.add_argument("data", help="folder of class subfolders, pre-split folder (train/val/test) or CSV")
    add_train_options(p, EXTRACT_SETTINGS)
    add_ray_option(p)
    p.add_argument("--actors", type=int, help="Ray: backbone actors (default: fit 3/4 of each node's CPUs)")
    p.add_argument("--actor-cpus", type=float, help="Ray: CPUs per backbone actor, = its ONNX Runtime threads "
                                                    "(rounded up)")
    p.add_argument("--unsafe", action="store_true",
                   help="allow Lambda layers in a personal model (runs code from the file)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_extract)
