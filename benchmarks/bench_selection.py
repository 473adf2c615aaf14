"""Benchmark: the head search on cached features (issue 14's target: 100 trials x 5-fold CV on 2,000 images <= 60 s).

The features are SYNTHETIC, of the realistic shape of EfficientNet-Lite's pooled features
(2,000 x 1,280 float32, non-negative, 8 classes with a class signal in the noise): the search's
cost depends on the shape, not on where the numbers came from, and extraction is measured
separately (``bench_train.py``, and the per-set figures in the README).

Measured in one process, in this order:

1. ``reference``: one default head fitted the way ``train`` fits it (Keras ``fit_head``, 80/20
   split, early stopping) -- the unit "one training run of the head" on this machine now;
2. ``compare``: the three default candidates of ``transferlab compare`` (softmax, mlp(256),
   logistic probe with C chosen on the folds), 5-fold CV;
3. ``search``: ``transferlab.selection.tune.search`` with 100 trials, 5 folds (Optuna TPE, seeded,
   median pruning every 10 epochs).

On a shared CPU the absolute seconds vary with the other load; the ratio search / reference is
the steadier figure. Usage: python benchmarks/bench_selection.py [--trials 100] [--n 2000]
[--dim 1280] [--classes 8] [--out benchmarks/results/selection.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def synthetic_features(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative (post-ReLU, like pooled CNN features) class clusters: about 85-95% separable."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, n)
    x = np.maximum(0.0, 0.12 * centers[labels] + rng.normal(size=(n, dim)))
    return x.astype(np.float32), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--out", default=str(HERE / "results" / "selection.json"))
    args = parser.parse_args()

    from transferlab.selection.folds import make_folds
    from transferlab.selection.heads import cross_validate, default_candidates
    from transferlab.selection.tune import search
    from transferlab.training.head import build_head, fit_head, predict_head

    x, y = synthetic_features(args.n, args.dim, args.classes)
    load_before = os.getloadavg()

    start = time.perf_counter()
    cut = int(0.8 * len(y))
    head = build_head(args.dim, args.classes)
    fit_head(head, x[:cut], y[:cut], x[cut:], y[cut:], epochs=100, batch_size=32, learning_rate=1e-3,
             label_smoothing=0.1, patience=10, seed=0)
    reference = {"seconds": time.perf_counter() - start,
                 "val_accuracy": float(np.mean(predict_head(head, x[cut:]).argmax(1) == y[cut:]))}
    print(f"reference: one default head via fit_head: {reference['seconds']:.1f} s "
          f"(val accuracy {reference['val_accuracy']:.3f})")

    folds = make_folds(y, args.classes, args.folds, seed=0)
    compare = []
    for candidate in default_candidates():
        result = cross_validate(x, folds, candidate, seed=0)
        compare.append({"head": result.settings.label(), "seconds": result.seconds,
                        "cv_accuracy": result.mean_accuracy})
        print(f"compare candidate {result.settings.label():<20} {result.seconds:6.1f} s  "
              f"CV accuracy {result.mean_accuracy:.4f}")

    start = time.perf_counter()
    best, result, trials, _ = search(x, y, args.classes, trials=args.trials, folds=args.folds, seed=0,
                                     show_progress=False)
    seconds = time.perf_counter() - start
    states = Counter(t["state"] for t in trials)
    by_family: dict[str, list[float]] = {}
    for t in trials:
        by_family.setdefault(t["params"]["family"], []).append(t.get("seconds", 0.0))
    per_family = {f: {"trials": len(s), "median_seconds": statistics.median(s), "total_seconds": sum(s)}
                  for f, s in by_family.items()}
    search_figures = {"trials": len(trials), "folds": args.folds, "seconds": seconds,
                      "seconds_per_trial": seconds / max(1, len(trials)), "states": dict(states),
                      "per_family": per_family, "best_head": best.label(), "best_cv_accuracy": result.mean_accuracy,
                      "ratio_to_reference": seconds / reference["seconds"], "target_seconds": 60,
                      "slowest_trials": sorted(({k: t.get(k) for k in ("number", "head", "state", "seconds", "best_epoch",
                                                                       "cv_accuracy")} | {"params": t["params"]}
                                                for t in trials), key=lambda t: -(t["seconds"] or 0))[:5]}
    print(f"search: {len(trials)} trials x {args.folds}-fold CV on {args.n} x {args.dim} features in {seconds:.1f} s "
          f"({dict(states)}); best {best.label()} CV accuracy {result.mean_accuracy:.4f}")
    for family, figures in per_family.items():
        print(f"  {family:<9} {figures['trials']:>3} trials, median {figures['median_seconds']:.2f} s, "
              f"total {figures['total_seconds']:.1f} s")
    print(f"  = {search_figures['ratio_to_reference']:.1f} x one default head fit on this machine now")

    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "load_average_before": load_before, "load_average_after": os.getloadavg()},
           "features": {"kind": "synthetic", "n": args.n, "dim": args.dim, "classes": args.classes},
           "reference": reference, "compare": compare, "search": search_figures}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
