"""Benchmark: `transferlab audit` at 20,000 images, on a few hundred cached ones, and how well it finds things.

Three parts (``--part``, default all):

* ``scale``: 20,000 generated images (160x160 JPEGs in 10 class folders, 5 % filed under a wrong
  class, 200 resized+re-encoded copies planted) with *synthetic* 1280-d features standing in for
  cached backbone features (no backbone is run: on this 2-core machine extracting 20,000 real
  features takes far longer than the audit; the audit itself is the same code). The features are
  made so that most images have a feature neighbour above the near-duplicate gate, so nearly
  every image is decoded for the perceptual hash: the slow case. Reports the time of each stage
  of :func:`transferlab.audit.core.analyse` and of writing the report, peak memory, and the
  precision/recall of the flipped labels and planted copies.
* ``cached``: ``transferlab audit`` on hymenoptera_data (398 photos) with its features already
  in the cache, as a command in a fresh process (median of 3; imports included) and as
  ``transferlab.audit()`` called again in one process (median of 3).
* ``quality``: on the real photos (EfficientNet-Lite0 features from the cache): precision and
  recall at k = number flipped when 5 % of the labels of hymenoptera_data / masonry_cracks are
  flipped (3 seeds), and near-duplicate precision/recall for copies of 20 photos each, resized
  to 50/80 %, re-encoded at JPEG quality 50/70, or cropped by 5/10 % per side.

Timings are noisy: the machine's 2 cores are shared with other work. Results go to
benchmarks/results/audit.json.

Usage: python benchmarks/bench_audit.py [--part scale|cached|quality|all] [--images 20000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets"
if not SHARED.is_dir():  # a worktree beside the main checkout
    SHARED = Path("/work/shared/datasets")


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    grid = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))


def _copy(src: Path, dst: Path, variant: str) -> None:
    with Image.open(src) as img:
        img = img.convert("RGB")
        w, h = img.size
        kind, value = variant[:-2], int(variant[-2:])
        if kind == "resize":
            img.resize((w * value // 100, h * value // 100), Image.BICUBIC).save(dst, quality=90)
        elif kind == "quality":
            img.save(dst, quality=value)
        else:  # crop value % per side
            f = value / 100
            img.crop((int(w * f), int(h * f), int(w * (1 - f)), int(h * (1 - f)))).save(dst, quality=90)


# ------------------------------------------------------------------ scale
def part_scale(n: int, tmp: Path) -> dict:
    from transferlab.audit.core import analyse
    from transferlab.audit.report import write_audit
    from transferlab.data.dataset import load_dataset

    classes, dim, copies = 10, 1280, 200
    rng = np.random.default_rng(0)
    root = tmp / "scale"
    true_label = np.arange(n) % classes
    given = true_label.copy()
    flipped = rng.choice(n, n // 20, replace=False)
    given[flipped] = (true_label[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    tick = time.perf_counter()
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_smooth(rng, 160)).save(root / f"class_{given[i]}" / f"img_{i:05d}.jpg", quality=85)
    originals = rng.choice(np.setdiff1d(np.arange(n), flipped), copies, replace=False)
    for j, i in enumerate(originals):
        _copy(root / f"class_{given[i]}" / f"img_{i:05d}.jpg", root / f"class_{given[i]}" / f"dup_{j:03d}_of_{i:05d}.jpg",
              "resize80")
    generate_s = time.perf_counter() - tick

    # Non-negative like pooled ReLU features; within-class cosine ~0.8, across classes ~0.6.
    shared = np.abs(rng.normal(size=dim))
    centres = np.abs(rng.normal(size=(classes, dim)))
    features = (shared + centres[true_label] + 0.9 * np.abs(rng.normal(size=(n, dim)))).astype(np.float32)

    timings = {}
    tick = time.perf_counter()
    dataset = load_dataset(root, show_progress=False, cache_dir=tmp / "cache", strict=False)
    timings["load_dataset_first_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    dataset = load_dataset(root, show_progress=False, cache_dir=tmp / "cache", strict=False)
    timings["load_dataset_checked_before_s"] = time.perf_counter() - tick

    rows = []
    for r in dataset.records:
        m = re.match(r"(?:img_(\d+)|dup_\d+_of_(\d+))\.jpg", Path(r.path).name)
        rows.append(int(m.group(1) or m.group(2)))
    x = features[rows]
    is_copy = np.array(["dup_" in r.path for r in dataset.records])
    x[is_copy] += 0.15 * np.abs(rng.normal(size=(int(is_copy.sum()), dim))).astype(np.float32)

    tick = time.perf_counter()
    result = analyse(dataset, dataset.records, x, seed=0)
    timings["analyse_s"] = time.perf_counter() - tick
    timings.update({f"analyse.{k}_s": v for k, v in result.timing.items()})
    tick = time.perf_counter()
    write_audit(result, tmp / "scale-audit")
    timings["write_report_s"] = time.perf_counter() - tick

    flipped_rows = {k for k, r in enumerate(dataset.records) if "img_" in r.path and rows[k] in set(flipped.tolist())}
    top = set(np.argsort(-result.labels.score)[:len(flipped_rows)].tolist())
    flagged = set(result.label_issue_rows())
    planted = {frozenset({f"img_{i:05d}.jpg", f"dup_{j:03d}_of_{i:05d}.jpg"}) for j, i in enumerate(originals)}
    found = {frozenset(Path(m.path).name for m in g.members) for g in result.duplicates}
    return {
        "images": len(dataset.records), "classes": classes, "feature_dim": dim, "features": "synthetic",
        "generate_images_s": generate_s, **timings,
        "audit_total_s": timings["load_dataset_checked_before_s"] + timings["analyse_s"] + timings["write_report_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "flipped": len(flipped_rows),
        "label_precision_recall_at_k": len(top & flipped_rows) / len(flipped_rows),
        "label_flagged": len(flagged),
        "label_flagged_precision": len(flagged & flipped_rows) / max(1, len(flagged)),
        "label_flagged_recall": len(flagged & flipped_rows) / len(flipped_rows),
        "planted_copies": copies, "duplicate_groups": len(result.duplicates),
        "duplicate_recall": len(planted & found) / len(planted),
        "duplicate_precision": len(planted & found) / max(1, len(found)),
    }


# ------------------------------------------------------------------ cached
def part_cached(tmp: Path) -> dict:
    data = SHARED / "hymenoptera_data"
    env = {**os.environ, "TRANSFERLAB_CACHE_DIR": str(tmp / "cache")}
    cmd = [sys.executable, "-c", "from transferlab.cli import entry_point; entry_point()", "-q", "audit", str(data),
           "--out", str(tmp / "cached-audit"), "--json"]
    tick = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    first = time.perf_counter() - tick
    warm = []
    for _ in range(3):
        tick = time.perf_counter()
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        warm.append(time.perf_counter() - tick)
    summary = json.loads(out)
    # In this process, imports paid once: what a notebook or a second call sees.
    import transferlab

    os.environ["TRANSFERLAB_CACHE_DIR"] = str(tmp / "cache")
    transferlab.audit(data, out=tmp / "in-process", show_progress=False)
    runs = [transferlab.audit(data, out=tmp / "in-process", show_progress=False).timing["total"] for _ in range(3)]
    return {"images": summary["images"], "command_first_run_s": first, "command_cached_s_median": statistics.median(warm),
            "command_cached_s_all": warm, "stages_of_last_run_s": summary["timing"],
            "in_process_cached_s_median": statistics.median(runs), "in_process_cached_s_all": runs}


# ------------------------------------------------------------------ quality
def _real(name: str, cache: Path):
    from transferlab.audit.core import dataset_features
    from transferlab.data.dataset import load_dataset
    from transferlab.training.config import TrainConfig

    dataset = load_dataset(SHARED / name, show_progress=False, cache_dir=cache)
    features, records, _ = dataset_features(dataset, TrainConfig(cache_dir=str(cache)), show_progress=False)
    return dataset, records, features


def part_quality(tmp: Path) -> dict:
    from transferlab.audit.core import analyse, dataset_features
    from transferlab.audit.labels import find_label_issues
    from transferlab.data.dataset import load_dataset
    from transferlab.training.config import TrainConfig

    cache = tmp / "cache"
    out: dict = {"labels": {}, "duplicates": {}}
    for name in ("hymenoptera_data", "masonry_cracks"):
        dataset, records, features = _real(name, cache)
        names = dataset.class_names
        y = np.array([names.index(r.label) for r in records])
        runs = []
        for seed in range(3):
            rng = np.random.default_rng(seed)
            k = round(0.05 * len(y))
            flip = rng.choice(len(y), k, replace=False)
            noisy = y.copy()
            noisy[flip] = (y[flip] + rng.integers(1, len(names), size=k)) % len(names)
            issues = find_label_issues(features, noisy, len(names), seed=seed)
            top = set(np.argsort(-issues.score)[:k].tolist())
            flagged = set(np.flatnonzero(issues.is_issue).tolist())
            runs.append({"k": k, "precision_recall_at_k": len(top & set(flip.tolist())) / k,
                         "flagged": len(flagged), "flagged_precision": len(flagged & set(flip.tolist())) / max(1, len(flagged)),
                         "flagged_recall": len(flagged & set(flip.tolist())) / k})
        out["labels"][name] = {"runs": runs, **{f"mean_{key}": float(np.mean([r[key] for r in runs]))
                                               for key in ("precision_recall_at_k", "flagged_precision", "flagged_recall")}}

        # planted copies of 20 photos, 6 kinds; the dataset = the real folder plus the copies (a CSV)
        rng = np.random.default_rng(0)
        picks = rng.choice(len(records), 20, replace=False)
        folder = tmp / f"copies-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        listing = [[r.path, r.label] for r in records]
        planted, same_picture, copies = set(), set(), set()
        for i in picks:
            family = [records[i].path]
            for variant in ("resize50", "resize80", "quality50", "quality70", "crop05", "crop10"):
                dst = folder / f"{variant}_{i}.jpg"
                _copy(Path(records[i].path), dst, variant)
                listing.append([str(dst), records[i].label])
                planted.add(frozenset({records[i].path, str(dst.resolve())}))
                family.append(str(dst.resolve()))
            copies |= set(family[1:])
            same_picture |= {frozenset({a, b}) for a in family for b in family if a < b}
        with open(folder / "all.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([["path", "label"], *listing])
        ds = load_dataset(folder / "all.csv", show_progress=False, cache_dir=cache)
        feats, kept_records, _ = dataset_features(ds, TrainConfig(cache_dir=str(cache)), show_progress=False)
        result = analyse(ds, kept_records, feats)
        reported = set()
        for g in result.duplicates:
            paths = sorted(m.path for m in g.members)
            reported |= {frozenset({a, b}) for a in paths for b in paths if a < b}
        judged = {p for p in reported if p & copies}  # pairs without a planted copy are the data's own
        out["duplicates"][name] = {
            "planted_pairs": len(planted), "recall": len(planted & reported) / len(planted),
            "reported_pairs_with_a_copy": len(judged),
            "precision": len(judged & same_picture) / max(1, len(judged)),
            "missed": sorted(Path(min(p, key=len)).name + " / " + Path(max(p, key=len)).name
                             for p in planted - reported),
            "pairs_in_the_data_itself": sorted(" / ".join(Path(x).name for x in sorted(p)) for p in reported - judged),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["scale", "cached", "quality", "all"], default="all")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--out", default=str(HERE / "results" / "audit.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        os.environ.setdefault("TRANSFERLAB_CACHE_DIR", str(Path(tmp) / "cache"))
        if args.part in ("quality", "all"):
            results["quality"] = part_quality(Path(tmp))
            print(json.dumps(results["quality"], indent=1))
        if args.part in ("cached", "all"):
            results["cached"] = part_cached(Path(tmp))
            print(json.dumps(results["cached"], indent=1))
        if args.part in ("scale", "all"):
            results["scale"] = part_scale(args.images, Path(tmp))
            print(json.dumps(results["scale"], indent=1))
    results["cpus"] = os.cpu_count()
    path = Path(args.out)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
