"""Benchmark: checking a 10,000-file dataset (time, images/s, peak memory) with 1 and all cores.

Generates N small JPEGs (default 10,000, ~320x240, 4 classes, a few bad files) in a temporary
folder, then runs `load_dataset` in a fresh process per worker count and reports wall time,
images/s and peak RSS. Memory must stay flat: the checker keeps a few numbers per file, never
pixels.

Usage: python benchmarks/bench_validate.py [--files 10000] [--out benchmarks/results/validate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from transferlab.data import load_dataset
    t = time.perf_counter()
    ds = load_dataset(sys.argv[1], workers=int(sys.argv[2]), show_progress=False)
    elapsed = time.perf_counter() - t
    print(json.dumps({"workers": int(sys.argv[2]), "seconds": elapsed, "files": len(ds.records) + len(ds.bad_files),
                      "bad_files": len(ds.bad_files),
                      "images_per_s": (len(ds.records) + len(ds.bad_files)) / elapsed,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def make_files(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    for i in range(count):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        img = np.roll(base, i * 7, axis=1)
        img[0, 0] = [i % 256, (i // 256) % 256, 0]  # distinct bytes per file (no duplicates)
        Image.fromarray(img).save(folder / f"img_{i:05d}.jpg", quality=85)
    (root / "class_0" / "empty.jpg").write_bytes(b"")
    (root / "class_1" / "notes.txt").write_text("not an image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--out", default=str(HERE / "results" / "validate.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_files(Path(tmp), args.files)
        rows = []
        for workers in (1, os.cpu_count() or 1):
            proc = subprocess.run([sys.executable, "-c", CHILD, tmp, str(workers)], capture_output=True, text=True,
                                  check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"workers {workers}: {row['files']} files in {row['seconds']:.1f} s "
                  f"({row['images_per_s']:.0f} files/s), peak RSS {row['peak_rss_mb']:.0f} MB, "
                  f"{row['bad_files']} bad", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
