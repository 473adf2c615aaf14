"""Benchmark: small defects on large images. Whole-image resizes vs tiling, on mosaics of real photos.

The set is built at run time in a temporary folder from ``masonry_cracks`` (227 px patches of
masonry walls): each image is a ``--grid`` x ``--grid`` mosaic (default 4 x 4, 896 px) of
``Negative`` patches (seeded draws, each flipped/turned at random), and in the ``crack`` class one
patch at a random position is a ``Positive`` one (each Positive patch used once). A crack then
covers 1/16 of the image: the default resize (224 px centre crop, 0.875) keeps the crack at a
quarter of its size, or cuts it off when it sits in the border ring.

Variants (EfficientNet-Lite0, frozen features + the default head; test split of a seeded hash
split, repeated over ``--seeds``; features are cached, so the extra seeds only refit the head):

- ``whole``: the default resize (tiles 1); ``squash``: the whole mosaic squashed to 224 px;
- ``size448``: the backbone at 448 px (4x the pixels, untiled);
- ``tiles2`` / ``tiles4``: 2 x 2 / 4 x 4 tiles of 224 px, 25% overlap, max over tiles; ``tiles4-mean``
  and ``tiles4-maxmean``: the other poolings (``tiles4-mean`` only with ``--variants``); ``auto``:
  ``tiles="auto"`` (its choice is recorded); ``*-probe``: the same features with ``head="logistic"``.

Extraction seconds are those of the first seed (every image a cache miss, except for ``auto``,
whose candidates are partly cached by then), the backbone's one-off ONNX conversion included.

Usage: python benchmarks/bench_tiling.py [--per-class 150] [--seeds 42 1 2] [--variants whole tiles2 ...]
       [--out benchmarks/results/tiling.json]
Prints a table and writes JSON. Not a test: numbers depend on the split and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import bench_inspection  # beside this script: the results file is written as there

HERE = Path(__file__).resolve().parent
MASONRY = HERE.parents[1] / "shared" / "datasets" / "masonry_cracks"
PATCH = 224
VARIANTS = {
    "whole": {},
    "squash": {"resize_mode": "squash"},
    "tiles2": {"tiles": 2},
    "tiles4": {"tiles": 4},
    "size448": {"image_size": 448},
    "auto": {"tiles": "auto"},
    "tiles4-maxmean": {"tiles": 4, "tile_pool": "max+mean"},
    "tiles4-mean": {"tiles": 4, "tile_pool": "mean"},
    # The linear probe on the same (cached) features.
    "whole-probe": {"head": "logistic"},
    "tiles2-probe": {"tiles": 2, "head": "logistic"},
    "tiles4-probe": {"tiles": 4, "head": "logistic"},
    "tiles4-maxmean-probe": {"tiles": 4, "tile_pool": "max+mean", "head": "logistic"},
    "size448-probe": {"image_size": 448, "head": "logistic"},
    "auto-probe": {"tiles": "auto", "head": "logistic"},
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "tiles4-mean"]  # --variants adds it (one more 4x4 extraction)


def _patch(path: Path, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        left = (img.width - PATCH) // 2
        top = (img.height - PATCH) // 2
        arr = np.asarray(img.crop((left, top, left + PATCH, top + PATCH)))
    arr = np.rot90(arr, int(rng.integers(4)))
    return arr[:, ::-1] if rng.integers(2) else arr


def build_mosaics(out: Path, per_class: int, grid: int, seed: int) -> Path:
    """``out/{clean,crack}/*.jpg``: ``per_class`` mosaics each; returns ``out``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    negatives = sorted((MASONRY / "Negative").glob("*.jpg"))
    positives = sorted((MASONRY / "Positive").glob("*.jpg"))
    if len(positives) < per_class:
        raise SystemExit(f"--per-class {per_class}: only {len(positives)} Positive patches to place")
    cracks = [positives[i] for i in rng.permutation(len(positives))[:per_class]]
    for label in ("clean", "crack"):
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cells = [_patch(negatives[j], rng) for j in rng.integers(len(negatives), size=grid * grid)]
            if label == "crack":
                cells[int(rng.integers(grid * grid))] = _patch(cracks[i], rng)
            rows = [np.concatenate(cells[r * grid:(r + 1) * grid], axis=1) for r in range(grid)]
            Image.fromarray(np.concatenate(rows, axis=0)).save(out / label / f"{label}_{i:03d}.jpg", quality=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--grid", type=int, default=4, help="patches per side of a mosaic")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--val", type=float, default=0.2)
    parser.add_argument("--test", type=float, default=0.2)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--cache-dir", default=None, help="feature cache kept between invocations (default: "
                                                          "a temporary one; the mosaics are the same bytes each time)")
    parser.add_argument("--out", default=str(HERE / "results" / "tiling.json"))
    args = parser.parse_args()

    import transferlab

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tiling-") as tmp:
        start = time.perf_counter()
        data = build_mosaics(Path(tmp) / "mosaics", args.per_class, args.grid, args.data_seed)
        print(f"built {2 * args.per_class} mosaics of {args.grid * PATCH} px in {time.perf_counter() - start:.1f} s",
              flush=True)
        for seed in args.seeds:
            for variant in args.variants:
                settings = VARIANTS[variant]
                start = time.perf_counter()
                clf = transferlab.train(data, show_progress=False, seed=seed, val_fraction=args.val,
                                        test_fraction=args.test, runs_dir=str(Path(tmp) / "runs"),
                                        cache_dir=args.cache_dir or str(Path(tmp) / "cache"), max_gallery=0, name=f"{variant}-{seed}",
                                        **settings)
                m, meta = clf.metadata["metrics"], clf.metadata
                row = {"seed": seed, "variant": variant, "settings": settings, "accuracy": m["accuracy"],
                       "macro_f1": m["macro"]["f1"], "crack_recall": m["per_class"]["crack"]["recall"],
                       "input_size": meta["resize"]["size"], "extract_seconds": meta["feature_cache"]["extract_seconds"],
                       "extracted": meta["feature_cache"]["misses"], "seconds": round(time.perf_counter() - start, 1),
                       "tiles_choice": meta.get("extras", {}).get("tiles")}
                results.append(row)
                print(f"seed {seed:<3} {variant:<15} {row['input_size']:>4} px  acc {row['accuracy']:.3f}  "
                      f"macro-F1 {row['macro_f1']:.3f}  crack recall {row['crack_recall']:.3f}  "
                      f"extract {row['extract_seconds']:.1f} s ({row['extracted']} images)  total {row['seconds']} s"
                      + (f"  chosen tiles {row['tiles_choice']['chosen']}" if row["tiles_choice"] else ""), flush=True)
    summary = []
    print("\nmedians over seeds", args.seeds, f"(test split, val {args.val} / test {args.test})")
    for variant in args.variants:
        rows = [r for r in results if r["variant"] == variant]
        first = next(r for r in rows if r["seed"] == args.seeds[0])
        entry = {"variant": variant, "settings": VARIANTS[variant], "input_size": first["input_size"],
                 **{k: round(statistics.median(r[k] for r in rows), 4) for k in ("accuracy", "macro_f1", "crack_recall")},
                 "mean_macro_f1": round(statistics.mean(r["macro_f1"] for r in rows), 4),  # the README's figures
                 "min_macro_f1": round(min(r["macro_f1"] for r in rows), 4),
                 "extract_seconds_first_seed": first["extract_seconds"],
                 "images_per_second": round(first["extracted"] / first["extract_seconds"], 2)
                 if first["extract_seconds"] else None,
                 "auto_choices": [r["tiles_choice"]["chosen"] for r in rows if r["tiles_choice"]] or None}
        summary.append(entry)
        print(json.dumps(entry))
    bench_inspection.write_results(args, summary, results)


if __name__ == "__main__":
    main()
