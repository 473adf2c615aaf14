"""Benchmark: checking a 10,000-file dataset (time, images/s, peak memory) with 1 and all cores.

Generates N small JPEGs (default 10,000, ~320x240, 4 classes, a few bad files) in a temporary
folder, then runs `load_dataset` in a fresh process per setting and reports wall time, images/s
and peak RSS: every file decoded (``recheck=True``) with 1 thread and with all cores, then again
with the file-check cache those runs filled (no file changed, so none is decoded). Memory must
stay flat: the checker keeps a few numbers per file, never pixels.

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
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from transferlab.data import load_dataset
    t = time.perf_counter()
    recheck = sys.argv[4] == "recheck"
    ds = load_dataset(sys.argv[1], workers=int(sys.argv[2]), show_progress=False, cache_dir=sys.argv[3],
                      recheck=recheck)
    elapsed = time.perf_counter() - t
    print(json.dumps({"workers": int(sys.argv[2]), "check_cache": "ignored" if recheck else "used",
                      "seconds": elapsed, "files": len(ds.records) + len(ds.bad_files),
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
    from transferlab.data.check_cache import RACY_SECONDS

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        make_files(Path(tmp), args.files)
        time.sleep(RACY_SECONDS)  # verdicts on files younger than this are not remembered
        rows = []
        cores = os.cpu_count() or 1
        for workers, mode in ((1, "recheck"), (cores, "recheck"), (cores, "cached")):
            proc = subprocess.run([sys.executable, "-c", CHILD, tmp, str(workers), cache, mode], capture_output=True,
                                  text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"workers {workers}, check cache {row['check_cache']:7}: {row['files']} files in "
                  f"{row['seconds']:.2f} s ({row['images_per_s']:.0f} files/s), peak RSS {row['peak_rss_mb']:.0f} MB, "
                  f"{row['bad_files']} bad", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
