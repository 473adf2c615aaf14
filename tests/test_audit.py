"""Data audit: confident learning, near-duplicates and leakage, outliers, the report files and the clean CSV.

Unit tests run on generated images with pixel features (no TensorFlow); one test runs the whole
command with a tiny backbone and opens audit.html in headless Chromium; one slow test audits real
photos with labels flipped on purpose.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from test_report import DomSummary, _restore_process_state, rendered_dom  # noqa: F401 (autouse fixture)
from transferlab.audit.core import analyse
from transferlab.audit.duplicates import hash_distance, perceptual_hashes
from transferlab.audit.labels import confident_learning, find_label_issues, out_of_fold_probabilities
from transferlab.audit.neighbours import nearest_neighbours
from transferlab.audit.outliers import find_outliers
from transferlab.audit.report import AUDIT_CSV, AUDIT_HTML, AUDIT_JSON, CSV_COLUMNS, write_audit, write_clean
from transferlab.data.dataset import load_dataset


# ------------------------------------------------------------------ generated data
def smooth_image(seed: int, size: int = 96, tint: int | None = None) -> np.ndarray:
    """A smooth random picture (an 8x8 colour grid upsampled): perceptual hashes see its structure."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, size=(8, 8, 3)).astype(np.float64)
    if tint is not None:  # mostly a per-class colour: the classes are separable, the pictures distinct
        colour = np.full(3, 40.0)
        colour[tint] = 230.0
        grid = 0.4 * grid + 0.6 * colour
    return np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((size, size), Image.BICUBIC))


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def resized_copy(src: Path, dst: Path, scale: float = 0.8, quality: int = 70) -> Path:
    with Image.open(src) as img:
        w, h = img.size
        copy = img.convert("RGB").resize((int(w * scale), int(h * scale)), Image.BICUBIC)
    return save(dst, np.asarray(copy), format="JPEG", quality=quality)


def cropped_copy(src: Path, dst: Path, fraction: float = 0.05) -> Path:
    with Image.open(src) as img:
        w, h = img.size
        copy = img.convert("RGB").crop((int(w * fraction), int(h * fraction), int(w * (1 - fraction)),
                                        int(h * (1 - fraction))))
    return save(dst, np.asarray(copy), format="JPEG", quality=90)


def pixel_features(paths) -> np.ndarray:
    """A stand-in embedding for unit tests: the 8x8 thumbnail, centred (copies stay close, others do not)."""
    rows = []
    for p in paths:
        with Image.open(p) as img:
            rows.append(np.asarray(img.convert("RGB").resize((8, 8), Image.BOX), dtype=np.float32).ravel())
    x = np.stack(rows)
    return x - x.mean(axis=0)


@pytest.fixture
def presplit(tmp_path) -> Path:
    """train/val/test x {red, green}: 14/4/4 smooth images per class, all distinct."""
    root = tmp_path / "data"
    seed = 0
    for split, n in (("train", 14), ("val", 4), ("test", 4)):
        for c, name in enumerate(("red", "green")):
            for i in range(n):
                save(root / split / name / f"{name}_{split}_{i}.png", smooth_image(seed := seed + 1, tint=c))
    return root


# ------------------------------------------------------------------ confident learning
def test_confident_learning_rule_worked_by_hand():
    probs = np.array([[.9, .1], [.8, .2], [.25, .75], [.2, .8], [.6, .4], [.1, .9]])
    given = np.array([0, 0, 0, 1, 1, 1])
    cl = confident_learning(probs, given)
    # t_0 = mean p_0 over images labelled 0 = (.9 + .8 + .25) / 3; t_1 = (.8 + .4 + .9) / 3
    np.testing.assert_allclose(cl.thresholds, [0.65, 0.7], atol=1e-6)
    # image 2 (labelled 0) has p_1 = .75 >= t_1: confidently class 1; image 4 passes no threshold
    assert cl.is_issue.tolist() == [False, False, True, False, False, False]
    assert cl.suggested.tolist() == [0, 0, 1, 1, 0, 1]
    assert cl.confident_joint.tolist() == [[2, 1], [0, 2]]
    np.testing.assert_allclose(cl.noise_matrix, [[2, 1], [0, 3]])  # rows calibrated to 3 and 3 images
    np.testing.assert_allclose(cl.score, 1 - probs[np.arange(6), given], atol=1e-6)
    assert cl.ranking().tolist() == [2]


def test_flipped_labels_of_separable_classes_rank_first():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 3
    truth = np.repeat(np.arange(3), 100)
    features = (centres[truth] + rng.normal(size=(300, 32))).astype(np.float32)
    flipped = rng.choice(300, 15, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, 3, size=15)) % 3
    issues = find_label_issues(features, given, 3, seed=0)
    top = set(np.argsort(-issues.score)[:15].tolist())
    assert len(top & set(flipped.tolist())) >= 14  # precision and recall at k = 15
    flagged = set(np.flatnonzero(issues.is_issue).tolist())
    assert len(flagged & set(flipped.tolist())) >= 12 and len(flagged) <= 20
    assert (issues.suggested[flipped] == truth[flipped]).all()
    off_diagonal = issues.noise_matrix.sum() - np.trace(issues.noise_matrix)
    assert 10 <= off_diagonal <= 20  # estimated number of label errors, 15 planted


def test_out_of_fold_needs_two_images_per_class():
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"two or more images each.*\[6, 1\]"):
        out_of_fold_probabilities(x, np.array([0, 0, 0, 0, 0, 0, 1]), 2)
    probs = out_of_fold_probabilities(x[:6], np.array([0, 0, 0, 1, 1, 1]), 3, folds=5)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(axis=1), 1) and (probs[:, 2] == 0).all()


# ------------------------------------------------------------------ neighbours and outliers
def test_nearest_neighbours_are_cosine_neighbours_without_the_row_itself():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[10:14] = x[10]  # four identical vectors: each row's neighbours are the other three first
    nb = nearest_neighbours(x, k=5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ unit.T
    for i in range(60):
        assert i not in nb.indices[i]
        expected = np.sort(np.delete(cos[i], i))[::-1][:5]
        np.testing.assert_allclose(nb.similarity[i], expected, atol=1e-5)
    assert set(nb.indices[11, :3].tolist()) == {10, 12, 13}


def test_an_image_unlike_all_others_is_the_outlier():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(2, 64)) * 2
    labels = np.repeat([0, 1], 100)
    x = (base[labels] + rng.normal(size=(200, 64))).astype(np.float32)
    x[37] = rng.normal(size=64) * 3  # a placeholder: unlike either class
    result = find_outliers(x, labels, nearest_neighbours(x))
    assert int(np.argmax(result.score)) == 37 and result.is_outlier[37]
    assert result.is_outlier.sum() <= 4


# ------------------------------------------------------------------ perceptual hash
def test_copies_are_within_the_hash_distance_and_distinct_pictures_are_not(tmp_path):
    original = save(tmp_path / "a.png", smooth_image(5, size=160))
    copies = [resized_copy(original, tmp_path / "resized.jpg"), resized_copy(original, tmp_path / "half.jpg", 0.5, 85),
              cropped_copy(original, tmp_path / "crop5.jpg", 0.05), cropped_copy(original, tmp_path / "crop10.jpg", 0.1)]
    others = [save(tmp_path / f"other{i}.png", smooth_image(100 + i, size=160)) for i in range(10)]
    h = perceptual_hashes([original, *copies, *others, tmp_path / "missing.png"])
    assert h[-1] is None and all(x.shape == (3, 64) for x in h[:-1])
    assert max(hash_distance(h[0], c) for c in h[1:5]) <= 6
    assert min(hash_distance(h[0], o) for o in h[5:-1]) > 6


# ------------------------------------------------------------------ duplicates, leakage, the whole analysis
def test_planted_copies_are_grouped_once_and_leakage_and_label_conflicts_are_flagged(presplit):
    src = presplit / "train" / "red" / "red_train_0.png"
    resized_copy(src, presplit / "test" / "red" / "leaked.jpg")  # across train/test
    cropped_copy(presplit / "train" / "green" / "green_train_3.png", presplit / "train" / "red" / "twin.jpg")
    (presplit / "train" / "red" / "byte_copy.png").write_bytes((presplit / "train" / "red" / "red_train_5.png").read_bytes())
    (presplit / "val" / "green" / "conflict.png").write_bytes((presplit / "val" / "red" / "red_val_1.png").read_bytes())
    ds = load_dataset(presplit, show_progress=False)
    result = analyse(ds, ds.records, pixel_features([r.path for r in ds.records]), folds=3)
    groups = {frozenset(Path(m.path).name for m in g.members): g for g in result.duplicates}
    assert set(groups) == {frozenset({"red_train_0.png", "leaked.jpg"}), frozenset({"green_train_3.png", "twin.jpg"}),
                           frozenset({"red_train_5.png", "byte_copy.png"}), frozenset({"red_val_1.png", "conflict.png"})}
    leak = groups[frozenset({"red_train_0.png", "leaked.jpg"})]
    assert leak.kind == "near" and leak.crosses_splits and leak.splits == ["test", "train"] and not leak.two_labels
    assert leak.members[0].split == "train"  # train first: keep-one keeps the training copy
    twin = groups[frozenset({"green_train_3.png", "twin.jpg"})]
    assert twin.two_labels and twin.labels == ["green", "red"] and not twin.crosses_splits
    assert groups[frozenset({"red_train_5.png", "byte_copy.png"})].kind == "exact"
    conflict = groups[frozenset({"red_val_1.png", "conflict.png"})]  # left out of the dataset by load_dataset
    assert conflict.two_labels and conflict.labels == ["green", "red"] and all(m.row is None for m in conflict.members)
    # worst first: label conflicts, then leakage
    assert [g.two_labels for g in result.duplicates[:2]] == [True, True] and result.duplicates[2] is leak
    assert [g.id for g in result.duplicates] == ["d1", "d2", "d3", "d4"]


def test_report_files_and_clean_csv_that_train_accepts(presplit, tmp_path):
    # a red picture filed under green, an unlike-everything placeholder, a leaked copy
    for i in range(2):
        save(presplit / "train" / "green" / f"actually_red_{i}.png", smooth_image(900 + i, tint=0))
    save(presplit / "train" / "red" / "placeholder.png", np.full((96, 96, 3), 255, np.uint8))
    resized_copy(presplit / "train" / "green" / "green_train_2.png", presplit / "test" / "green" / "leaked.jpg")
    before = {p: p.stat().st_mtime_ns for p in presplit.rglob("*")}
    ds = load_dataset(presplit, show_progress=False)
    result = analyse(ds, ds.records, pixel_features([r.path for r in ds.records]), folds=4)
    names = [Path(result.records[r].path).name for r in result.label_issue_rows()]
    assert {"actually_red_0.png", "actually_red_1.png"} <= set(names[:4])
    assert Path(result.records[result.outlier_rows()[0]].path).name == "placeholder.png"

    out = write_audit(result, tmp_path / "audit")
    with open(out / AUDIT_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    kinds = [r["kind"] for r in rows]
    assert kinds == sorted(kinds, key=["label", "duplicate", "outlier"].index)  # grouped by kind
    for kind in ("label", "outlier"):
        scores = [float(r["score"]) for r in rows if r["kind"] == kind]
        assert scores == sorted(scores, reverse=True) and scores
    label_row = next(r for r in rows if r["path"].endswith("actually_red_0.png"))
    assert (label_row["given_label"], label_row["suggested_label"]) == ("green", "red")
    leak_rows = [r for r in rows if r["kind"] == "duplicate"]
    assert {Path(r["path"]).name for r in leak_rows} == {"green_train_2.png", "leaked.jpg"}
    assert len({r["group"] for r in leak_rows}) == 1
    summary = json.loads((out / AUDIT_JSON).read_text())
    assert summary["duplicates"]["cross_split_groups"] == 1 and summary["outliers"]["count"] >= 1
    assert summary["per_class"]["green"]["label_issues"] >= 2
    assert "<script" not in (out / AUDIT_HTML).read_text().lower()

    clean = write_clean(result, tmp_path / "clean" / "clean.csv")
    assert clean["dropped"]["duplicate"] == 1 and clean["dropped"]["outlier"] >= 1 and clean["relabelled"] >= 2
    cleaned = load_dataset(tmp_path / "clean" / "clean.csv", show_progress=False)  # what `train` reads
    by_name = {Path(r.path).name: r for r in cleaned.records}
    assert by_name["actually_red_0.png"].label == "red"
    assert "leaked.jpg" not in by_name and "green_train_2.png" in by_name and "placeholder.png" not in by_name
    assert {r.split for r in cleaned.records} == {"train", "val", "test"}
    assert all(by_name[Path(r.path).name].split == r.split for r in ds.records if Path(r.path).name in by_name)
    kept_all = write_clean(result, tmp_path / "all.csv", labels="keep", duplicates="keep", outliers="keep")
    assert kept_all["written"] == len(ds.records) and kept_all["relabelled"] == 0
    dropped = write_clean(result, tmp_path / "drop.csv", labels="drop")
    assert dropped["dropped"]["label"] >= 2 and dropped["relabelled"] == 0
    with pytest.raises(ValueError, match="labels='fix'"):
        write_clean(result, tmp_path / "x.csv", labels="fix")
    assert {p: p.stat().st_mtime_ns for p in presplit.rglob("*")} == before  # the user's files untouched


def test_clean_csv_never_replaces_the_audited_csv(presplit, tmp_path):
    listing = presplit / "labels.csv"
    rows = ["path,label"] + [f"{p.relative_to(presplit).as_posix()},{p.parent.name}" for p in sorted(presplit.rglob("*.png"))]
    listing.write_text("\n".join(rows) + "\n")
    ds = load_dataset(listing, show_progress=False)
    result = analyse(ds, ds.records, pixel_features([r.path for r in ds.records]), folds=3)
    with pytest.raises(ValueError, match="is the audited CSV"):
        write_clean(result, listing)
    assert listing.read_text().splitlines() == rows


# ------------------------------------------------------------------ the command, with a real (tiny) backbone
def test_audit_command_end_to_end_and_page_in_headless_chromium(presplit, tmp_path, capsys):
    from helpers import save_tiny_cnn
    from transferlab import cli

    backbone = save_tiny_cnn(tmp_path / "tiny.keras", num_classes=2)
    save(presplit / "train" / "green" / "actually_red.png", smooth_image(999, tint=0))
    resized_copy(presplit / "train" / "red" / "red_train_1.png", presplit / "test" / "red" / "leaked<&>.jpg")
    out, clean = tmp_path / "audit", tmp_path / "clean.csv"
    args = ["-q", "audit", str(presplit), "--backbone", str(backbone), "--cache-dir", str(tmp_path / "cache"),
            "--engine", "keras", "--out", str(out), "--json", "--write-clean", str(clean), "--folds", "3"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 46 and summary["duplicates"]["cross_split_groups"] == 1
    assert summary["clean"]["path"] == str(clean.resolve()) and clean.is_file()
    assert {f["path"].rsplit("/", 1)[-1] for f in summary["duplicates"]["list"][0]["files"]} == \
        {"red_train_1.png", "leaked<&>.jpg"}

    import transferlab

    # Again through the Python API (transferlab.audit is callable), where importing TensorFlow
    # fails: every feature is cached under settings resolved before, so the backbone is not built.
    from test_architecture import _run_without_tf

    proc = _run_without_tf("""
        import json, sys, transferlab
        result = transferlab.audit(sys.argv[1], out=sys.argv[2], backbone=sys.argv[3], cache_dir=sys.argv[4],
                                   folds=3, show_progress=False)
        print(json.dumps(result.summary()["duplicates"]["cross_split_groups"]))
    """, str(presplit), str(tmp_path / "again"), str(backbone), str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "1"

    text = (out / AUDIT_HTML).read_text(encoding="utf-8")
    assert "leaked&lt;&amp;&gt;.jpg" in text and "leaked<&>" not in text  # escaped file name
    dom = rendered_dom(tmp_path, text)
    page = DomSummary()
    page.feed(dom)
    assert {"summary", "label-issues", "duplicates", "outliers", "per-class", "settings"} <= page.ids
    assert not page.links and len(page.images) >= 2
    for img in page.images:
        assert img["src"].startswith("data:image/") and int(img["data-natural-width"]) > 0
    duplicates = re.search(r'<section id="duplicates">(.*?)</section>', dom, re.S).group(1)
    assert "leakage: test, train" in duplicates

    # `transferlab train` accepts the clean CSV as is
    clf = transferlab.train(clean, backbone=str(backbone), cache_dir=str(tmp_path / "cache"), engine="keras",
                            runs_dir=str(tmp_path / "runs"), name="clean", epochs=3, show_progress=False)
    assert clf.metadata["feature_cache"]["misses"] == 0  # the audit's features were reused
    assert clf.metadata["data"]["layout"] == "csv"


# ------------------------------------------------------------------ real photos
@pytest.mark.slow
def test_real_photos_flipped_labels_placeholder_and_planted_leak(tmp_path):
    """hymenoptera_data with 5 % of the labels flipped by this test and resized copies planted in val."""
    import transferlab

    root = require_shared("hymenoptera_data")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    flip = set(rng.choice(len(files), round(0.05 * len(files)), replace=False).tolist())
    rows = []
    for i, p in enumerate(files):
        split, label = p.relative_to(root).parts[:2]
        rows.append([str(p), {"ants": "bees", "bees": "ants"}[label] if i in flip else label, split])
    planted = [files[i] for i in rng.choice([i for i, p in enumerate(files) if "/train/" in str(p) and p.suffix == ".jpg"
                                             and i not in flip], 4, replace=False)]
    for j, p in enumerate(planted):  # 80 % size, JPEG quality 70, in the validation split
        copy = resized_copy(p, tmp_path / "copies" / f"copy{j}.jpg")
        rows.append([str(copy), p.parent.name, "val"])
    listing = tmp_path / "flipped.csv"
    with open(listing, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "split"], *rows])

    result = transferlab.audit(listing, out=tmp_path / "audit", show_progress=False)
    # Compared as resolved paths: the shared folder may be reached through a symbolic link.
    flipped = {str(files[i].resolve()) for i in flip}
    ranked = [str(Path(result.records[r].path).resolve()) for r in np.argsort(-result.labels.score)[:len(flipped)]]
    precision_at_k = len(flipped & set(ranked)) / len(flipped)
    print(f"hymenoptera, {len(flipped)} of {len(files)} labels flipped: precision = recall at k={len(flipped)} "
          f"{precision_at_k:.2f}; flagged {len(result.label_issue_rows())}")
    assert precision_at_k >= 0.6
    outliers = [Path(result.records[r].path).name for r in result.outlier_rows()]
    assert "imageNotFound.gif" in outliers[:3]
    leaks = [g for g in result.duplicates if g.crosses_splits]
    found = {frozenset(Path(m.path).name for m in g.members) for g in leaks}
    assert found == {frozenset({p.name, f"copy{j}.jpg"}) for j, p in enumerate(planted)}


def test_remembered_resolution_is_used_only_while_the_weights_file_is_unchanged(tmp_path):
    import os
    from types import SimpleNamespace

    from transferlab.audit.resolved import cached_features, remember
    from transferlab.features.cache import FeatureCache
    from transferlab.training.config import TrainConfig

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w" * 100)
    config = TrainConfig(backbone="my_net", cache_dir=str(tmp_path / "cache"))
    info = SimpleNamespace(weights_source=str(weights), feature_dim=3, name="my_net")
    parts = {"backbone": "my_net", "weights": "abc"}
    records = [SimpleNamespace(sha256=f"{i:064x}") for i in range(4)]
    cache = FeatureCache(config.cache_dir, parts)
    for i, r in enumerate(records[:3]):
        cache.put(r.sha256, np.full(3, i, np.float32))
    assert cached_features(records[:3], config) is None  # never resolved
    remember(config, info, parts)
    features, name = cached_features(records[:3], config)
    assert name == "my_net" and features.tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    assert cached_features(records, config) is None  # one image not cached: build the backbone
    assert cached_features(records[:3], config.replace(image_size=64)) is None  # other settings
    os.utime(weights, ns=(1, 1))  # the weights file changed
    assert cached_features(records[:3], config) is None


# ------------------------------------------------------------------ the hint `train` prints
def test_hint_counts_copies_and_held_out_label_errors():
    from types import SimpleNamespace

    from transferlab.audit.hint import dataset_warnings, training_hint
    from transferlab.features.dataset import SplitFeatures

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(2, 16)) * 1.5

    def split(name, n, start):
        y = np.arange(n) % 2
        records = [SimpleNamespace(sha256=f"{name}{i}") for i in range(n)]
        return SplitFeatures((centres[y] + rng.normal(size=(n, 16))).astype(np.float32), y, records)

    splits = {"train": split("train", 80, 0), "val": split("val", 20, 0), "test": split("test", 20, 0)}
    probs = np.eye(2)[np.concatenate([splits["val"].y, splits["test"].y])] * 0.9 + 0.05
    clean = dataset_warnings(splits, probs)
    assert clean == {"held_out": 40, "label_issues": 0, "copies_of_train": 0}
    assert training_hint(clean, "photos") is None

    splits["test"].records[0].sha256 = "train5"  # a byte copy of a training image
    splits["test"].x[1:4] = splits["train"].x[10:13] * 1.01  # near-identical features
    probs[:5] = probs[:5, ::-1]  # the head is sure five held-out images are the other class
    dirty = dataset_warnings(splits, probs)
    assert dirty == {"held_out": 40, "label_issues": 5, "copies_of_train": 4}
    hint = training_hint(dirty, "photos")
    assert hint.count("\n") == 0 and "5 of the 40" in hint and "4 of them" in hint and "transferlab audit photos" in hint


def test_train_prints_the_hint_on_a_dirty_dataset(presplit, tmp_path, caplog):
    import logging

    import transferlab
    from helpers import save_tiny_cnn

    backbone = save_tiny_cnn(tmp_path / "tiny.keras", num_classes=2)
    for i in range(4):  # red pictures filed as green in val/test, and training images copied into test
        save(presplit / ("val" if i % 2 else "test") / "green" / f"actually_red_{i}.png", smooth_image(700 + i, tint=0))
        name = f"{'red' if i % 2 else 'green'}_train_{i}.png"
        (presplit / "test" / name.split("_")[0] / f"copy_{i}.png").write_bytes(
            (presplit / "train" / name.split("_")[0] / name).read_bytes())
    with caplog.at_level(logging.INFO, logger="transferlab"):
        transferlab.train(presplit, backbone=str(backbone), cache_dir=str(tmp_path / "cache"), engine="keras",
                          runs_dir=str(tmp_path / "runs"), name="dirty", epochs=30, show_progress=False)
    hints = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Hint:")]
    assert len(hints) == 1 and f"transferlab audit {presplit}" in hints[0]
    assert "4 of them are copies of training images" in hints[0]
