"""Benchmark: do cheap feature-level extras win on the folds? (issue 14: "measure; keep only what wins")

Per shared photo set, on the train+validation images (the test split is not read), 5-fold CV
of the default softmax head and of the linear probe on:

* ``lite0``: EfficientNet-Lite0's pooled features, as ``train`` uses them;
* ``lite0 + flip``: the mean of the features of the image and of its horizontal mirror
  (test-time augmentation folded into the cache: one more extraction per image);
* ``lite0 ++ lite1``: Lite0's and Lite1's features concatenated (two backbones per image).

Each extra is judged against plain ``lite0`` by the rule selection uses
(:func:`transferlab.selection.choose.versus_default`: the mean per-fold gain must exceed one
standard error of the per-fold differences). Prints a table and writes JSON.

Usage: python benchmarks/bench_feature_extras.py [--datasets hymenoptera_data,...] [--work DIR]
       [--out benchmarks/results/feature_extras.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("TRANSFERLAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))


def flipped_features(bf) -> tuple[np.ndarray, float]:
    """Features of the horizontally mirrored images, cached under their own keys."""
    from transferlab.features.extract import extract_features

    keys = [hashlib.sha256(f"{r.sha256}:hflip".encode()).hexdigest() for r in bf.records]
    start = time.perf_counter()
    result = extract_features([r.path for r in bf.records], keys, bf.model, bf.resize, bf.cache,
                              transform=lambda images, _: images[:, :, ::-1, :].astype(np.float32),
                              show_progress=False, desc="Extracting mirrored features")
    return result.features, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="hymenoptera_data,masonry_cracks,blood_cells")
    parser.add_argument("--work", help="cache folder (default: a new temporary one)")
    parser.add_argument("--out", default=str(HERE / "results" / "feature_extras.json"))
    args = parser.parse_args()

    from transferlab.data.dataset import load_dataset
    from transferlab.selection.choose import versus_default
    from transferlab.selection.compare import selection_features
    from transferlab.selection.folds import make_folds
    from transferlab.selection.heads import cross_validate, default_candidates
    from transferlab.training.config import TrainConfig

    config = TrainConfig(cache_dir=args.work or tempfile.mkdtemp(prefix="tl-extras-"))
    heads = [h for h in default_candidates(config) if h.family in ("softmax", "logistic")]
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": os.getloadavg()}, "datasets": {}}
    for name in args.datasets.split(","):
        dataset = load_dataset(DATASETS / name, show_progress=False, cache_dir=config.cache_dir)
        lite0 = selection_features(dataset, "efficientnet_lite0", config, show_progress=False)
        lite1 = selection_features(dataset, "efficientnet_lite1", config, show_progress=False)
        mirrored, flip_seconds = flipped_features(lite0)
        variants = {"lite0": lite0.features, "lite0 + flip": (lite0.features + mirrored) / 2.0,
                    "lite0 ++ lite1": np.concatenate([lite0.features, lite1.features], axis=1)}
        folds = make_folds(lite0.labels, len(dataset.class_names), 5, seed=42)
        rows = []
        for head in heads:
            base = None
            for variant, features in variants.items():
                cv = cross_validate(features, folds, head, seed=42)
                row = {"head": head.label(), "variant": variant, "cv_accuracy": cv.mean_accuracy,
                       "cv_accuracy_std": cv.std_accuracy, "per_fold": [float(a) for a in cv.accuracy]}
                if base is None:
                    base = cv
                else:
                    verdict = versus_default(base.accuracy, cv.accuracy, "lite0", variant)
                    row.update({"gain": verdict.margin, "se": verdict.standard_error, "wins": verdict.wins})
                rows.append(row)
                print(f"{name:18} {head.label():28} {variant:15} CV {cv.mean_accuracy:.4f} +- {cv.std_accuracy:.4f}"
                      + (f"  gain {row['gain']:+.4f} (SE {row['se']:.4f}) {'WINS' if row['wins'] else 'no'}"
                         if "gain" in row else ""), flush=True)
        results["datasets"][name] = {"images": int(len(lite0.labels)), "flip_extract_seconds": round(flip_seconds, 1),
                                     "rows": rows}
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
