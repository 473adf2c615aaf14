"""Benchmark: every export format of an EfficientNet-Lite0 classifier on hymenoptera_data.

Trains the default backbone on the dataset (into a temporary runs dir, or reuses --run), exports
every format, then measures each in its own fresh process:

* start-to-first-prediction: from launching ``python`` to the first image classified
  (imports, model load, decode, one prediction): what an edge device's cold start costs;
* single-image latency p50/p95 (one preprocessed uint8 image per call, after warm-up);
* batch throughput (images/s, batches of 32 preprocessed images);
* file size, accuracy on the val split, and whether TensorFlow got imported.

Usage: python benchmarks/bench_export.py [--data DIR] [--run RUN_DIR] [--out benchmarks/results/export.json]
Prints a table and writes JSON. Not a test: numbers depend on the machine and its load.
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
DEFAULT_DATA = HERE.parents[1] / "shared" / "datasets" / "hymenoptera_data"

# Runs in a fresh process per format: argv = model, first image, JSON file of (path, label) pairs.
CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from transferlab.inference import load
    model, first, items = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
    clf = load(model)
    clf.predict([first])
    print("FIRST", flush=True)  # the parent times process start -> this line
    runtime = clf.runtime
    images = np.stack([clf.resize.load(p) for p, _ in items[:32]])
    one = images[:1]
    for _ in range(5):
        runtime(one)
    lat = []
    for _ in range(100):
        t = time.perf_counter(); runtime(one); lat.append(time.perf_counter() - t)
    runtime(images)
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < 5.0 or n < 3:
        runtime(images); n += 1
    throughput = n * len(images) / (time.perf_counter() - t)
    probs = clf.predict_proba([p for p, _ in items])
    acc = float(np.mean([clf.class_names[i] == label for i, (_, label) in zip(probs.argmax(1), items)]))
    print(json.dumps({"latency_p50_ms": 1000 * float(np.percentile(lat, 50)),
                      "latency_p95_ms": 1000 * float(np.percentile(lat, 95)),
                      "batch32_images_per_s": throughput, "accuracy": acc, "images": len(items),
                      "runtime": runtime.name, "imports_tensorflow": "tensorflow" in sys.modules}))
""")


def _measure(model: Path, first: str, items_file: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(model), first, str(items_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_s = None
    lines = []
    for line in proc.stdout:
        if line.startswith("FIRST") and first_s is None:
            first_s = time.perf_counter() - start
        lines.append(line)
    stderr = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"measuring {model} failed:\n{stderr[-3000:]}")
    result = json.loads([line for line in lines if line.startswith("{")][-1])
    return {"start_to_first_prediction_s": first_s, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--run", help="an existing run directory to export (skips training)")
    parser.add_argument("--out", default=str(HERE / "results" / "export.json"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import transferlab
    from transferlab.export.exporter import FILES, FORMATS, export_run

    work = Path(tempfile.mkdtemp(prefix="tl-bench-export-"))
    try:
        if args.run:
            run_dir = Path(args.run)
        else:
            t = time.perf_counter()
            clf = transferlab.train(args.data, runs_dir=str(work / "runs"), cache_dir=str(work / "cache"), name="bench",
                                    show_progress=False)
            run_dir = clf.run_dir
            print(f"trained {run_dir} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        summary = export_run(run_dir, show_progress=False)
        print(f"exported every format in {time.perf_counter() - t:.1f} s")

        config = json.loads((run_dir / "config.json").read_text())
        source = Path(config["data"]["source"])
        import csv

        with open(run_dir / "splits.csv", newline="") as fh:
            items = [(str(source / r["path"]), r["label"]) for r in csv.DictReader(fh)
                     if r["split"] == summary["split"]]
        items_file = work / "items.json"
        items_file.write_text(json.dumps(items))

        results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform()},
                   "data": args.data, "split": summary["split"], "images": len(items),
                   "backbone": config["backbone"]["name"], "keras_accuracy": summary["keras_accuracy"], "formats": {}}
        for fmt in FORMATS:
            entry = summary["formats"][fmt]
            measured = _measure(run_dir / "export" / FILES[fmt], items[0][0], items_file)
            results["formats"][fmt] = {"file": entry["file"], "bytes": entry["bytes"],
                                       "max_abs_diff": entry["max_abs_diff"], "top1_agreement": entry["top1_agreement"],
                                       **measured}
            print(f"measured {fmt}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{results['backbone']} on {results['images']} {results['split']} images "
          f"(Keras accuracy {results['keras_accuracy']:.4f}); {os.cpu_count()} CPUs, approximate")
    print(f"{'format':<12} {'size MB':>8} {'start->1st s':>12} {'p50 ms':>7} {'p95 ms':>7} {'batch img/s':>11} "
          f"{'accuracy':>8} {'max|diff|':>9} {'top-1 agr':>9} {'TF?':>4}")
    for fmt, r in results["formats"].items():
        print(f"{fmt:<12} {r['bytes'] / 1e6:>8.2f} {r['start_to_first_prediction_s']:>12.2f} "
              f"{r['latency_p50_ms']:>7.1f} "
              f"{r['latency_p95_ms']:>7.1f} {r['batch32_images_per_s']:>11.1f} {r['accuracy']:>8.4f} "
              f"{r['max_abs_diff']:>9.1e} {r['top1_agreement']:>9.2%} {'yes' if r['imports_tensorflow'] else 'no':>4}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
