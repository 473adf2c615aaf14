"""Benchmark: frozen features vs the old and new fine-tune defaults vs ``--strategy auto``.

Per dataset (``blood_cells``: its seeded 80/10/10 hash split, test accuracy; ``hymenoptera_data``:
its own train/val split, no test split, so validation accuracy; ``masonry_cracks``: 80/10/10,
test accuracy), one ``transferlab.train`` per setting in a fresh process: accuracy, wall time of
the process, the run's own timing, fine-tuning epoch times and what auto kept. The feature cache
is warmed first, so every row pays the same (zero) extraction cost, except where
``--cold`` asks for the frozen-bottom views to be recomputed.

``--epoch-times``: fine-tuning epoch time with and without the cached frozen bottom, for several
numbers of unfrozen layers (two epochs each, blood_cells), plus the disk used per image.

Usage: python benchmarks/bench_auto.py [--datasets blood_cells,...] [--settings frozen,auto-10m]
       [--epoch-times] [--out benchmarks/results/auto.json]
Prints a table and writes JSON (after every row, so a partial run keeps what it measured).
Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import textwrap
from pathlib import Path

import bench_finetune  # beside this script: its run_one trains in a fresh process

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("TRANSFERLAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import transferlab
    settings = json.loads(sys.argv[2])
    t = time.perf_counter()
    clf = transferlab.train(sys.argv[1], show_progress=False, **settings)
    m = clf.metadata["metrics"]
    print(json.dumps({"accuracy": m["accuracy"], "split": m["split"], "macro_f1": m["macro"]["f1"],
                      "train_seconds": time.perf_counter() - t, "timing": clf.metadata["timing"],
                      "fine_tune": clf.metadata.get("fine_tune"), "strategy": (clf.metadata.get("extras") or {}).get("strategy"),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

# The fine-tune defaults before this work: top 20 layers, 5 epochs, lr 1e-4 (head rate / 10),
# Adam, "light" augmentation, early stopping at the head's patience (10: never within 5 epochs).
OLD_FINE_TUNE = {"strategy": "fine-tune", "unfreeze": "20", "fine_tune_epochs": 5, "fine_tune_lr": 1e-4,
                 "augment": "light", "fine_tune_patience": 10, "weight_decay": 0.0, "layer_decay": 1.0,
                 "clip_norm": 0.0, "fine_tune_views": 0}
# The "strong recipe" (blood_cells 0.976 in 436 s there): the old settings with every layer
# unfrozen, 12 epochs at lr 3e-4.
STRONG_RECIPE = {**OLD_FINE_TUNE, "unfreeze": "all", "fine_tune_epochs": 12, "fine_tune_lr": 3e-4}
SETTINGS = {
    "frozen": {"strategy": "feature-extraction"},
    "old-default fine-tune": OLD_FINE_TUNE,
    "strong recipe": STRONG_RECIPE,
    # The default depth (--unfreeze auto): every layer with DEEP_RECIPE's 8 epochs when they fit in
    # 20 minutes (blood_cells), else the top 16 on cached views, as "top-16 fine-tune".
    "new-default fine-tune": {"strategy": "fine-tune"},
    "top-16 fine-tune": {"strategy": "fine-tune", "unfreeze": "16"},
    "new-recipe-all-layers": {"strategy": "fine-tune", "unfreeze": "all", "fine_tune_epochs": 12},
    "auto-10m": {"strategy": "auto", "time_budget": 600},
    # The every-layer recipe (training/auto.py DEEP_RECIPE) spelled out, and with fewer epochs.
    "deep-8": {"strategy": "fine-tune", "unfreeze": "all", "layer_decay": 1.0, "fine_tune_lr": 3e-4,
               "weight_decay": 0.0, "clip_norm": 0.0, "augment": "light", "fine_tune_patience": 10,
               "fine_tune_views": 0, "fine_tune_epochs": 8},
    "deep-6": {"strategy": "fine-tune", "unfreeze": "all", "layer_decay": 1.0, "fine_tune_lr": 3e-4,
               "weight_decay": 0.0, "clip_norm": 0.0, "augment": "light", "fine_tune_patience": 10,
               "fine_tune_views": 0, "fine_tune_epochs": 6},
}


def run_one(data: Path, settings: dict, work: Path, name: str) -> dict:
    return bench_finetune.run_one(data, settings, work, name, child=CHILD)


def epoch_times(work: Path, results: dict, out: Path) -> None:
    """Two fine-tuning epochs per row: streamed images vs cached frozen bottom (4 views)."""
    data = DATASETS / "blood_cells"
    for unfreeze in ("4", "16", "25"):
        for views in (0, 4):
            name = f"epochs-{unfreeze}-{views}"
            row = run_one(data, {"strategy": "fine-tune", "unfreeze": unfreeze, "fine_tune_epochs": 2,
                                 "fine_tune_views": views, "fine_tune_patience": 0, "epochs": 30}, work, name)
            fine = row["fine_tune"]
            cache = Path(work / "cache" / "features")
            disk = sum(f.stat().st_size for d in cache.iterdir() if (d / "fingerprint.json").exists()
                       and "frozen-bottom" in (d / "fingerprint.json").read_text()
                       and fine["cached_bottom"] and f'"{fine["cached_bottom"]}"' in (d / "fingerprint.json").read_text()
                       for f in d.rglob("*.feat")) if views else 0
            entry = {"unfreeze": unfreeze, "views": views, "cut": fine["cached_bottom"],
                     "epoch_seconds": fine["epoch_seconds"], "views_seconds": fine["views_seconds"],
                     "accuracy_after_2_epochs": row["accuracy"], "cache_disk_mb": round(disk / 2**20, 1),
                     "wall_seconds": row["wall_seconds"]}
            results["epoch_times"].append(entry)
            print(f"unfreeze {unfreeze:>3} views {views}  cut {str(fine['cached_bottom']):20} "
                  f"epochs {fine['epoch_seconds']} s  views {fine['views_seconds']} s  disk {entry['cache_disk_mb']} MB",
                  flush=True)
            out.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "auto.json"))
    parser.add_argument("--datasets", default="blood_cells,hymenoptera_data,masonry_cracks")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--epoch-times", action="store_true", help="only the cached-bottom epoch-time table")
    parser.add_argument("--work", help="work folder (default: a new temporary one); reuse it to keep caches")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tl-auto-"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": os.getloadavg()}, "runs": [], "epoch_times": []}
    if args.epoch_times:
        epoch_times(work, results, out)
        return
    for dataset in args.datasets.split(","):
        data = DATASETS / dataset
        run_one(data, {"epochs": 1}, work, f"{dataset}-warmup")  # fills the feature cache
        for label in args.settings.split(","):
            row = run_one(data, SETTINGS[label], work, f"{dataset}-{label}")
            row.update({"dataset": dataset, "setting": label, "load_average": os.getloadavg()[0]})
            results["runs"].append(row)
            kept = (row.get("strategy") or {}).get("kept", "")
            print(f"{dataset:18} {label:22} acc {row['accuracy']:.4f} ({row['split']})  "
                  f"wall {row['wall_seconds']:6.1f} s  {kept}", flush=True)
            out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
