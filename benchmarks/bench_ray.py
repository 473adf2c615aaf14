"""Benchmark: feature extraction on Ray (one local node) against the in-process path, same images.

Measured, in one process, on real photos (default: hymenoptera_data + masonry_cracks) with the
default backbone EfficientNet-Lite0 at 224 px:

1. CPU cost per image, one core: decode + resize (the backbone's centre crop), and the backbone
   under ONNX Runtime at batch 16 with 1 and with all threads;
2. the in-process path (``transferlab.features.fill_cache``) into an empty cache: images/s;
3. Ray (``transferlab.distributed.fill_cache_ray``) on a local one-node cluster of all CPUs into
   an empty cache, twice (the second run finds Ray's worker processes warm): images/s end to
   end, the steady rate after the first result, the start-up (connect, actors, first round trip)
   and Ray's added cost per image at the steady rate;
4. that the Ray-filled cache holds byte-for-byte the in-process entries.

The ratios compare runs of the same process minutes apart; on a shared machine the load average
(printed before and after) moves the absolute figures, so read the ratios.

Usage: python benchmarks/bench_ray.py [--data DIR ...] [--limit N] [--out benchmarks/results/ray.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets"
DEFAULT_DATA = [SHARED / "hymenoptera_data", SHARED / "masonry_cracks"]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_costs(paths, model, resize, cache) -> dict:
    """Per-image milliseconds of decode+resize (one thread) and of the backbone (ONNX Runtime, batch 16)."""
    import numpy as np

    from transferlab.features.extract import OnnxEngine
    from transferlab.runtimes.exported import OnnxRuntime

    sample = paths[:96]
    t = time.perf_counter()
    images = np.stack([resize.load(p) for p in sample]).astype(np.float32)
    decode_ms = 1000 * (time.perf_counter() - t) / len(sample)
    path = OnnxEngine(model, cache, resize.size).path  # converted once, as extraction does
    out = {"decode_resize_ms_per_image_1_thread": round(decode_ms, 2)}
    for threads in (1, os.cpu_count() or 1):
        runtime = OnnxRuntime(path, threads=threads)
        runtime(images[:16])  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            for start in range(0, len(images), 16):
                runtime(images[start:start + 16])
            times.append(1000 * (time.perf_counter() - t) / len(images))
        out[f"backbone_onnx_ms_per_image_{threads}_threads"] = round(statistics.median(times), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ray.json")
    args = parser.parse_args()

    load_before = load_average()
    print(f"load average before: {load_before} on {os.cpu_count()} CPUs", flush=True)
    import ray

    from transferlab.backbones import resolve_backbone
    from transferlab.data import load_dataset
    from transferlab.distributed import fill_cache_ray
    from transferlab.features import feature_cache_for, fill_cache, resize_for

    paths, keys = [], []
    for folder in args.data:
        ds = load_dataset(folder, show_progress=False)
        paths += [r.path for r in ds.records]
        keys += [r.sha256 for r in ds.records]
    if args.limit:
        paths, keys = paths[:args.limit], keys[:args.limit]
    model, info = resolve_backbone("efficientnet_lite0")
    resize = resize_for(info)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    warm = feature_cache_for(info, resize, root / "warm")  # holds the converted ONNX file and its parity check
    costs = cpu_costs(paths, model, resize, warm)
    print(json.dumps(costs), flush=True)

    def fresh(name: str):
        cache = feature_cache_for(info, resize, root / name)
        for src in warm.directory.glob("backbone.onnx*"):  # conversion is once per setting, not per run
            (cache.directory / src.name).write_bytes(src.read_bytes())
        return cache

    reference = fresh("in-process")
    in_process = fill_cache(paths, keys, model, resize, reference, show_progress=False)
    print(f"in-process: {in_process.misses} images in {in_process.seconds:.1f} s "
          f"({in_process.images_per_second:.1f} img/s)", flush=True)

    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    init_seconds = time.perf_counter() - t
    runs = []
    for i in range(2):
        cache = fresh(f"ray-{i}")
        r = fill_cache_ray(paths, keys, model, resize, cache, show_progress=False)
        first_batch = 16
        steady = (r.misses - first_batch) / max(1e-9, r.seconds - r.startup_seconds)
        runs.append({"seconds": round(r.seconds, 2), "startup_seconds": round(r.startup_seconds, 2),
                     "images_per_second": round(r.images_per_second, 1),
                     "steady_images_per_second": round(steady, 1), "actors": r.workers, "misses": r.misses,
                     "failed": len(r.failed)})
        print(f"ray run {i + 1}: {json.dumps(runs[-1])}", flush=True)
    ray.shutdown()
    same = sum((cache.directory / p.relative_to(reference.directory)).read_bytes() == p.read_bytes()
               for p in reference.directory.rglob("*.feat"))

    base = in_process.images_per_second
    warm_run = runs[-1]
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__, "load_average_before": load_before},
        "data": [str(d) for d in args.data], "images": len(paths), "backbone": "efficientnet_lite0",
        "cpu_costs": costs,
        "in_process": {"seconds": round(in_process.seconds, 2), "images_per_second": round(base, 1)},
        "ray_init_seconds": round(init_seconds, 2),
        "ray_runs": runs,
        "ratio_ray_to_in_process_end_to_end": round(warm_run["images_per_second"] / base, 3),
        "ratio_ray_to_in_process_steady": round(warm_run["steady_images_per_second"] / base, 3),
        "ray_added_seconds_per_run": round(warm_run["seconds"] - in_process.seconds, 2),
        "ray_added_ms_per_image_steady": round(1000 / warm_run["steady_images_per_second"] - 1000 / base, 2),
        "entries_byte_identical": f"{same}/{in_process.misses}",
        "load_average_after": load_average(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
