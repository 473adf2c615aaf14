"""Benchmark: `transferlab train` (cold and warm feature cache) against a plain Keras script.

On hymenoptera_data (train on train/, report on val/), default backbone EfficientNet-Lite0:

1. accuracy and wall time of `transferlab train` with an empty cache, then with a warm one
   (median of --warm-runs runs: on a shared 2-core machine single runs vary by +-0.5 s);
2. the plain Keras way (frozen base inside a keras.Model, new softmax Dense, model.fit for 10
   epochs, the base recomputed every epoch): accuracy, wall time, fit time;
3. feature-extraction throughput (images/s): our extractor (decode threads + ONNX Runtime + cache
   writes) vs Keras `model.predict` over the same images, backbone and batch size, fed by the same
   decode/resize as ours (the strict comparison), and for reference fed by
   `keras.utils.image_dataset_from_directory` (the everyday Keras pipeline).

Usage: python benchmarks/bench_train.py [--data DIR] [--out benchmarks/results/train.json]
Prints a table and writes JSON. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "datasets" / "hymenoptera_data"

PLAIN_KERAS = textwrap.dedent("""
    # The seeds' way: frozen base inside a keras.Model, new softmax head, fit 10 epochs on images.
    import json, sys, time
    t0 = time.perf_counter()
    import keras
    from transferlab.backbones import load_backbone
    data = sys.argv[1]
    keras.utils.set_random_seed(0)
    train = keras.utils.image_dataset_from_directory(data + "/train", image_size=(224, 224), batch_size=32, seed=0)
    val = keras.utils.image_dataset_from_directory(data + "/val", image_size=(224, 224), batch_size=32, shuffle=False)
    base = load_backbone("efficientnet_lite0")  # raw pixels -> pooled features, preprocessing inside
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t1 = time.perf_counter()
    model.fit(train, validation_data=val, epochs=10, verbose=0)
    t2 = time.perf_counter()
    loss, acc = model.evaluate(val, verbose=0)
    print(json.dumps({"accuracy": acc, "fit_seconds": t2 - t1, "script_seconds": time.perf_counter() - t0}))
""")

THROUGHPUT = textwrap.dedent("""
    import json, statistics, sys, tempfile, time
    import numpy as np
    from transferlab.backbones import resolve_backbone
    from transferlab.data import load_dataset
    from transferlab.data.pipeline import make_image_dataset
    from transferlab.features.cache import FeatureCache
    from transferlab.features.extract import extract_features
    from transferlab.features import feature_fingerprint, resize_for
    data, batch = sys.argv[1], 32
    REPEATS = 3
    ds = load_dataset(data, show_progress=False)
    paths, keys = [r.path for r in ds.records], [r.sha256 for r in ds.records]
    model, info = resolve_backbone("efficientnet_lite0")
    resize = resize_for(info)
    images = make_image_dataset(paths, None, resize, batch_size=batch)
    model.predict(images.take(1), verbose=0)  # warm-up: tracing is not throughput
    rates = []
    for _ in range(REPEATS):  # median of a few passes: single passes vary by +-7% here
        t = time.perf_counter(); model.predict(images, verbose=0); rates.append(len(paths) / (time.perf_counter() - t))
    out = {"images": len(paths), "batch_size": batch, "repeats": REPEATS,
           "keras_predict_images_per_s": statistics.median(rates), "keras_predict_images_per_s_all": rates}
    # For reference, the everyday Keras input pipeline (TensorFlow decode, bilinear squash resize).
    import os, keras
    folders = [os.path.join(data, s) for s in ("train", "val") if os.path.isdir(os.path.join(data, s))] or [data]
    everyday = None
    for folder in folders:
        part = keras.utils.image_dataset_from_directory(folder, labels=None, image_size=(224, 224), batch_size=batch,
                                                        shuffle=False, verbose=False)
        everyday = part if everyday is None else everyday.concatenate(part)
    model.predict(everyday.take(1), verbose=0)
    t = time.perf_counter(); n = len(model.predict(everyday, verbose=0))
    out["keras_image_dataset_from_directory_images_per_s"] = n / (time.perf_counter() - t)
    for engine in ("onnx", "keras"):
        with tempfile.TemporaryDirectory() as cache_dir:
            cache = FeatureCache(cache_dir, feature_fingerprint(info, resize))
            # convert/trace once on a few images, then time cold extractions of all of them
            extract_features(paths[:8], keys[:8], model, resize, cache, engine=engine, show_progress=False)
            rates = []
            for i in range(REPEATS if engine == "onnx" else 1):
                cache = FeatureCache(f"{cache_dir}/timed-{i}", feature_fingerprint(info, resize))
                if engine == "onnx":  # conversion and parity check happen once per backbone setting
                    import shutil
                    for name in ("backbone.onnx", "backbone.onnx.parity.json"):
                        shutil.copy(cache_dir + "/features/" + cache.fingerprint + "/" + name, cache.directory)
                t = time.perf_counter()
                r = extract_features(paths, keys, model, resize, cache, engine=engine, batch_size=batch,
                                     show_progress=False)
                rates.append(len(paths) / (time.perf_counter() - t))
            out[f"transferlab_{engine}_images_per_s"] = statistics.median(rates)
            out[f"transferlab_{engine}_images_per_s_all"] = rates
            out[f"transferlab_{engine}_engine_used"] = r.engine
    print(json.dumps(out))
""")


def _run(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(HERE / "results" / "train.json"))
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    cli = [sys.executable, "-m", "transferlab", "-q", "train", args.data, "--runs-dir", str(work / "runs"),
           "--cache-dir", str(work / "cache")]
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()}, "data": args.data}
    for label, runs in (("cold", 1), ("warm", args.warm_runs)):
        walls = []
        for i in range(runs):
            name = f"{label}-{i}"
            wall, _ = _run(cli + ["--name", name])
            walls.append(wall)
        # Every run trains the same model; report the last one's details and the median wall time.
        metrics = json.loads((work / "runs" / name / "metrics.json").read_text())
        config = json.loads((work / "runs" / name / "config.json").read_text())
        results[f"transferlab_{label}"] = {"wall_seconds": statistics.median(walls), "wall_seconds_all": walls,
                                           "accuracy": metrics["accuracy"], "split": metrics["split"],
                                           **config["feature_cache"], "head_seconds": config["timing"]["head_seconds"]}
    wall, out = _run([sys.executable, "-c", PLAIN_KERAS, args.data])
    results["plain_keras"] = {"wall_seconds": wall, **_last_json(out)}
    _, out = _run([sys.executable, "-c", THROUGHPUT, args.data])
    results["throughput"] = _last_json(out)
    shutil.rmtree(work, ignore_errors=True)

    plain = results["plain_keras"]
    cold, warm = results["transferlab_cold"], results["transferlab_warm"]
    tp = results["throughput"]
    print(f"{'':28} {'accuracy':>9} {'wall s':>8}")
    print(f"{'plain Keras (10 epochs)':28} {plain['accuracy']:9.4f} {plain['wall_seconds']:8.1f}  (fit {plain['fit_seconds']:.1f} s)")
    print(f"{'transferlab train, cold':28} {cold['accuracy']:9.4f} {cold['wall_seconds']:8.1f}  "
          f"({cold['wall_seconds'] / plain['wall_seconds']:.2f}x of plain; target <= 0.5)")
    print(f"{'transferlab train, warm':28} {warm['accuracy']:9.4f} {warm['wall_seconds']:8.1f}  "
          f"({warm['wall_seconds'] / plain['wall_seconds']:.3f}x of plain; target <= 0.1; median of "
          f"{', '.join(f'{w:.2f}' for w in warm['wall_seconds_all'])})")
    ours = tp["transferlab_onnx_images_per_s"]
    print(f"extraction images/s, batch {tp['batch_size']}: transferlab (ONNX Runtime) {ours:.1f}; Keras predict on "
          f"the same decoded inputs {tp['keras_predict_images_per_s']:.1f} ({ours / tp['keras_predict_images_per_s']:.2f}x, "
          f"target >= 1.5); Keras predict on image_dataset_from_directory "
          f"{tp['keras_image_dataset_from_directory_images_per_s']:.1f} "
          f"({ours / tp['keras_image_dataset_from_directory_images_per_s']:.2f}x); "
          f"transferlab Keras engine {tp['transferlab_keras_images_per_s']:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
