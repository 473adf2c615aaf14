"""Benchmark: feature extraction vs fine-tuning (default backbone) on the real photo sets.

For each dataset (hymenoptera_data: its own train/val split; masonry_cracks: the seeded hash
split) and each strategy setting, one `transferlab.train` in a fresh process: test accuracy
(validation accuracy where the set has no test split), wall time, peak memory (max RSS).
The feature cache is warmed first so every row pays the same (zero) extraction cost.

Usage: python benchmarks/bench_finetune.py [--out benchmarks/results/finetune.json] [--quick]
Prints a table and writes JSON. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parents[1] / "shared" / "datasets"

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import transferlab
    settings = json.loads(sys.argv[2])
    t = time.perf_counter()
    clf = transferlab.train(sys.argv[1], show_progress=False, **settings)
    m = clf.metadata["metrics"]
    print(json.dumps({"accuracy": m["accuracy"], "split": m["split"], "macro_f1": m["macro"]["f1"],
                      "train_seconds": time.perf_counter() - t,
                      "timing": clf.metadata["timing"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

SETTINGS = {
    "feature-extraction": {},
    "fine-tune top-20, lr 1e-4": {"strategy": "fine-tune", "unfreeze": "20", "fine_tune_lr": 1e-4},
    "fine-tune top-20, lr 3e-4": {"strategy": "fine-tune", "unfreeze": "20", "fine_tune_lr": 3e-4},
    "fine-tune all layers, lr 1e-4": {"strategy": "fine-tune", "unfreeze": "all", "fine_tune_lr": 1e-4},
}


def run_one(data: Path, settings: dict, work: Path, name: str, child: str = CHILD) -> dict:
    """Train once in a fresh process (``child``: the script, printing a JSON line last); its result and wall time."""
    settings = {"runs_dir": str(work / "runs"), "cache_dir": str(work / "cache"), "name": name, **settings}
    shutil.rmtree(work / "runs" / name, ignore_errors=True)  # a --work folder reused: the row is run again
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", child, str(data), json.dumps(settings)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"training failed ({name}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "finetune.json"))
    parser.add_argument("--quick", action="store_true", help="only feature extraction and the default fine-tune")
    args = parser.parse_args()
    settings = dict(list(SETTINGS.items())[:2]) if args.quick else SETTINGS
    work = Path(tempfile.mkdtemp(prefix="tl-ft-"))
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": []}
    for dataset in ("hymenoptera_data", "masonry_cracks"):
        data = DATASETS / dataset
        run_one(data, {"epochs": 1}, work, f"{dataset}-warmup")  # fills the feature cache
        for i, (label, extra) in enumerate(settings.items()):
            row = run_one(data, extra, work, f"{dataset}-{i}")
            row.update({"dataset": dataset, "setting": label})
            results["runs"].append(row)
            print(f"{dataset:18} {label:28} acc {row['accuracy']:.4f} ({row['split']})  "
                  f"wall {row['wall_seconds']:6.1f} s  peak {row['peak_rss_mb']:6.0f} MB", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
