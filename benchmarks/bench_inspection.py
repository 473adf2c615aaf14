"""Benchmark: inspection-style data. Today's defaults vs the new ones, and the operating point on test.

Datasets (built as CSVs of path,label in a temporary folder; the images stay in ../shared):

- ``masonry``: masonry_cracks as it is (Negative 340 / Positive 349), good class Negative;
- ``masonry-cut``: Positive (the cracks) cut to a tenth (every 10th file by name), good class Negative;
- ``blood-cut``: blood_cells with eosinophil cut to a tenth, good class neutrophil (the largest),
  i.e. "catch 95 % of the cells that are not neutrophils".

For each dataset and seed (the seed also draws the hash split): ``class_weight="none"`` (today's
default) and the new default ``"auto"``, the latter with ``good_class=... target_recall=0.95``.
The operating point does not change the argmax metrics (macro-F1, recall per class), so the two
columns compare the class weighting alone; its figures are on the test split at the threshold
chosen on validation. ``--variants`` adds resize variants (new defaults, other input handling).

Usage: python benchmarks/bench_inspection.py [--seeds 42 1 2] [--val 0.2 --test 0.2]
       [--variants squash pad size300] [--out benchmarks/results/inspection.json]
Prints a table and writes JSON. Not a test: numbers depend on the split and the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets"
DATASETS = {  # name: (folder, class cut to a tenth or None, good class)
    "masonry": ("masonry_cracks", None, "Negative"),
    "masonry-cut": ("masonry_cracks", "Positive", "Negative"),
    "blood-cut": ("blood_cells", "eosinophil", "neutrophil"),
}
VARIANTS = {"default": {}, "squash": {"resize_mode": "squash"}, "pad": {"resize_mode": "pad"},
            "size300": {"image_size": 300}}


def write_subset(folder: Path, cut: str | None, out: Path) -> Path:
    """A labels CSV of every image of ``folder``'s class subfolders, ``cut`` keeping every 10th file."""
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if f.is_file())
        if class_dir.name == cut:
            files = files[::10]
        rows += [(str(f.resolve()), class_dir.name) for f in files]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return out


def summarise(clf, rare: str | None) -> dict:
    m = clf.metadata["metrics"]
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "balanced_accuracy": m["macro"]["recall"],
           "recall": {c: v["recall"] for c, v in m["per_class"].items()},
           "rare_recall": m["per_class"][rare]["recall"] if rare else None,
           "rare_support": m["per_class"][rare]["support"] if rare else None,
           "imbalance": clf.metadata.get("extras", {}).get("imbalance")}
    op = m.get("operating_point")
    if op:
        out["operating_point"] = {"val": op["rule"]["validation"], "test": {k: op.get(k) for k in (
            "threshold", "defect_recall", "defect_precision", "false_alarm_rate", "defective", "good")}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--val", type=float, default=0.2)
    parser.add_argument("--test", type=float, default=0.2)
    parser.add_argument("--variants", nargs="*", default=[], choices=[v for v in VARIANTS if v != "default"])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "inspection.json"))
    args = parser.parse_args()

    import transferlab

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-inspection-") as tmp:
        for name in args.datasets:
            folder, cut, good = DATASETS[name]
            data = write_subset(SHARED / folder, cut, Path(tmp) / f"{name}.csv")
            runs = [("today", "default", {"class_weight": "none"})]
            runs += [("new", variant, {"class_weight": "auto", "good_class": good, "target_recall": 0.95,
                                       **VARIANTS[variant]}) for variant in ["default", *args.variants]]
            for seed in args.seeds:
                for defaults, variant, settings in runs:
                    start = time.perf_counter()
                    clf = transferlab.train(data, show_progress=False, seed=seed, val_fraction=args.val,
                                            test_fraction=args.test, runs_dir=str(Path(tmp) / "runs"),
                                            cache_dir=args.cache_dir, max_gallery=0, **settings)
                    row = {"dataset": name, "seed": seed, "defaults": defaults, "variant": variant,
                           "settings": settings, "seconds": round(time.perf_counter() - start, 1),
                           **summarise(clf, cut)}
                    results.append(row)
                    op = row.get("operating_point") or {}
                    print(f"{name:<12} seed {seed:<3} {defaults:<5} {variant:<8} macro-F1 {row['macro_f1']:.3f} "
                          f"acc {row['accuracy']:.3f} rare recall {row['rare_recall'] if cut else '-'} "
                          f"op val/test recall {op.get('val', {}).get('defect_recall')}/"
                          f"{op.get('test', {}).get('defect_recall')}  ({row['seconds']} s)", flush=True)
    table = {}
    for row in results:
        table.setdefault((row["dataset"], row["defaults"], row["variant"]), []).append(row)
    print("\nmedians over seeds", args.seeds, f"(test split, val {args.val} / test {args.test})")
    summary = []
    for (name, defaults, variant), rows in table.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("accuracy", "macro_f1", "balanced_accuracy")}
        rare = [r["rare_recall"] for r in rows if r["rare_recall"] is not None]
        ops = [r["operating_point"] for r in rows if r.get("operating_point")]
        entry = {"dataset": name, "defaults": defaults, "variant": variant, **med,
                 "rare_recall": statistics.median(rare) if rare else None,
                 "op_val_recall": statistics.median(o["val"]["defect_recall"] for o in ops) if ops else None,
                 "op_test_recall": statistics.median(o["test"]["defect_recall"] for o in ops) if ops else None,
                 "op_test_false_alarms": statistics.median(o["test"]["false_alarm_rate"] for o in ops) if ops else None}
        summary.append(entry)
        print(json.dumps(entry))
    write_results(args, summary, results)


def write_results(args: argparse.Namespace, summary: list[dict], results: list[dict]) -> None:
    """``args.out``: the arguments, the summary rows and every run (bench_tiling writes the same)."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
