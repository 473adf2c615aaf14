"""Benchmark: feature extraction on Ray (one local node) against the in-process path, same images.

Measured, in one process, on real photos (default: hymenoptera_data + masonry_cracks) with the
default backbone EfficientNet-Lite0 at 224 px:

1. CPU cost per image, one core: decode + resize (the backbone's centre crop), and the backbone
   under ONNX Runtime at batch 16 with 1 and with all threads;
2. the in-process path (``transferlab.features.fill_cache``) into an empty cache: images/s;
3. Ray (``transferlab.distributed.fill_cache_ray``) on a local one-node cluster of all CPUs into
   an empty cache;
4. both paths on a quarter of the images and on all of them: the line seconds = fixed + N / rate
   through the two runs gives each path's throughput (rate) and fixed cost per run, so Ray's
   added time per run (start-up, scheduling) and added cost per image come apart;
5. that the Ray-filled cache holds byte-for-byte the in-process entries.

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
    from transferlab.features import feature_cache_for, fill_cache, find_missing, resize_for

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

    def fit(points: list[dict]) -> tuple[float, float]:
        """(fixed seconds per run, images/s) of the line seconds = fixed + images / rate through two runs."""
        (n1, t1), (n2, t2) = [(q["images"], q["seconds"]) for q in points]
        per_image = (t2 - t1) / (n2 - n1)
        return t1 - n1 * per_image, 1.0 / per_image

    sizes = [max(32, len(paths) // 4), len(paths)]
    in_process, reference = [], None
    for n in sizes:
        reference = fresh(f"in-process-{n}")
        r = fill_cache(paths[:n], keys[:n], model, resize, reference, show_progress=False)
        in_process.append({"images": n, "seconds": round(r.seconds, 2), "images_per_second": round(r.images_per_second, 1)})
        print(f"in-process: {json.dumps(in_process[-1])}", flush=True)

    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    init_seconds = time.perf_counter() - t
    # A first, cold run (worker processes not started yet) is what a fresh cluster costs once;
    # the measured runs below find the workers warm, as every later run of a session does.
    t = time.perf_counter()
    fill_cache_ray(paths[-32:], keys[-32:], model, resize, fresh("ray-cold"), show_progress=False)
    cold_seconds = time.perf_counter() - t
    ray_runs, cache = [], None
    for n in sizes:
        cache = fresh(f"ray-{n}")
        r = fill_cache_ray(paths[:n], keys[:n], model, resize, cache, show_progress=False)
        ray_runs.append({"images": n, "seconds": round(r.seconds, 2), "images_per_second": round(r.images_per_second, 1),
                         "first_results_after_seconds": round(r.startup_seconds, 2), "actors": r.workers,
                         "failed": len(r.failed)})
        print(f"ray: {json.dumps(ray_runs[-1])}", flush=True)
    ray.shutdown()
    same = sum((cache.directory / p.relative_to(reference.directory)).read_bytes() == p.read_bytes()
               for p in reference.directory.rglob("*.feat"))

    # The driver's "what is missing" check over a full cache: reads and verifies every entry.
    t = time.perf_counter()
    find_missing(paths, keys, feature_cache_for(info, resize, reference.root), int(model.output_shape[-1]))
    check_us = 1e6 * (time.perf_counter() - t) / len(paths)

    ip_fixed, ip_rate = fit(in_process)
    ray_fixed, ray_rate = fit(ray_runs)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__, "load_average_before": load_before},
        "data": [str(d) for d in args.data], "images": len(paths), "backbone": "efficientnet_lite0",
        "cpu_costs": costs,
        "in_process_runs": in_process,
        "ray_init_seconds_local_cluster": round(init_seconds, 2),
        "ray_first_cold_run_seconds_32_images": round(cold_seconds, 2),
        "ray_runs": ray_runs,
        "in_process_fit": {"fixed_seconds": round(ip_fixed, 2), "images_per_second": round(ip_rate, 1)},
        "ray_fit": {"fixed_seconds": round(ray_fixed, 2), "images_per_second": round(ray_rate, 1)},
        "ratio_ray_to_in_process_throughput": round(ray_rate / ip_rate, 3),
        "ratio_ray_to_in_process_end_to_end_full_set": round(ray_runs[-1]["images_per_second"]
                                                             / in_process[-1]["images_per_second"], 3),
        "ray_added_seconds_per_run": round(ray_fixed - ip_fixed, 2),
        "ray_added_ms_per_image": round(1000 / ray_rate - 1000 / ip_rate, 2),
        "cache_check_us_per_entry_all_hits": round(check_us, 1),
        "entries_byte_identical": f"{same}/{len(set(keys))}",
        "load_average_after": load_average(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
