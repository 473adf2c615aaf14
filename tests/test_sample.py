"""Tests for the bundled synthetic inspection dataset (transferlab.data.sample)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transferlab.data.sample import SAMPLE_CLASSES, make_sample_dataset, render_sample


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_deterministic_bytes_across_folders(tmp_path):
    a = make_sample_dataset(tmp_path / "a", images_per_class=3, image_size=64, seed=7)
    b = make_sample_dataset(tmp_path / "b", images_per_class=3, image_size=64, seed=7)
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_seed_changes_images(tmp_path):
    a = make_sample_dataset(tmp_path / "a", images_per_class=2, image_size=64, seed=0)
    b = make_sample_dataset(tmp_path / "b", images_per_class=2, image_size=64, seed=1)
    assert (a / "ok" / "ok_0000.jpg").read_bytes() != (b / "ok" / "ok_0000.jpg").read_bytes()


def test_layout_counts_and_decoding(tmp_path):
    out = make_sample_dataset(tmp_path / "ds", images_per_class=4, image_size=96)
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(SAMPLE_CLASSES)
    sizes = set()
    for cls in SAMPLE_CLASSES:
        names = sorted(p.name for p in (out / cls).iterdir())
        assert names == [f"{cls}_{i:04d}.jpg" for i in range(4)]
        for name in names:
            with Image.open(out / cls / name) as im:
                assert im.format == "JPEG"
                assert im.mode == "RGB"
                w, h = im.size
                assert 0.85 * 96 <= w <= 1.15 * 96 and 0.85 * 96 <= h <= 1.15 * 96
                sizes.add(im.size)
    # Like real captures, not every image has the same (square) shape.
    assert len(sizes) > 1
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["images_per_class"] == 4 and manifest["classes"] == list(SAMPLE_CLASSES)


def test_class_subset(tmp_path):
    out = make_sample_dataset(tmp_path, images_per_class=2, image_size=48, classes=["ok", "crack"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["crack", "ok"]


@pytest.mark.parametrize("defect", ["scratch", "spot", "crack"])
def test_defect_is_visible_but_local(defect):
    # Equal generators give the same surface, so the difference is exactly the defect.
    changed_fractions, peak_diffs = [], []
    for i in range(12):
        ok = np.asarray(render_sample("ok", np.random.default_rng(i), 128), dtype=np.float64)
        bad = np.asarray(render_sample(defect, np.random.default_rng(i), 128), dtype=np.float64)
        assert ok.shape == bad.shape
        diff = np.abs(ok - bad).max(axis=-1)
        changed_fractions.append(float((diff > 12).mean()))
        peak_diffs.append(float(np.percentile(diff, 99.9)))
    # Visible: a clear local change in every image, strong in a typical one ...
    assert min(peak_diffs) > 15, peak_diffs
    assert np.median(peak_diffs) > 30, peak_diffs
    # ... but a defect, not a different picture: most of the surface is untouched.
    assert max(changed_fractions) < 0.35, changed_fractions
    assert np.mean(changed_fractions) > 0.001


def test_defect_contrast_varies():
    # "Not trivial": defect strength differs between images instead of being constant.
    peaks = []
    for i in range(12):
        ok = np.asarray(render_sample("ok", np.random.default_rng(i), 96), dtype=np.float64)
        bad = np.asarray(render_sample("scratch", np.random.default_rng(i), 96), dtype=np.float64)
        peaks.append(np.abs(ok - bad).max())
    assert np.std(peaks) > 5


def test_skip_when_complete(tmp_path):
    out = make_sample_dataset(tmp_path, images_per_class=2, image_size=48)
    target = out / "ok" / "ok_0000.jpg"
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    # A marker byte the generator would never write: survives only if the file is not rewritten.
    target.write_bytes(target.read_bytes() + b"\0")
    make_sample_dataset(out, images_per_class=2, image_size=48)
    assert target.read_bytes().endswith(b"\0")
    for p, t in mtimes.items():
        if p != target:
            assert p.stat().st_mtime_ns == t


def test_hidden_files_do_not_count(tmp_path):
    out = make_sample_dataset(tmp_path, images_per_class=1, image_size=48)
    (out / ".DS_Store").write_bytes(b"finder")
    (out / "ok" / ".DS_Store").write_bytes(b"finder")
    before = (out / "MANIFEST.json").stat().st_mtime_ns
    make_sample_dataset(out, images_per_class=1, image_size=48)
    assert (out / "MANIFEST.json").stat().st_mtime_ns == before


def test_regenerate_when_arguments_differ(tmp_path):
    out = make_sample_dataset(tmp_path, images_per_class=3, image_size=48)
    make_sample_dataset(out, images_per_class=2, image_size=48, classes=["ok", "spot"])
    # Stale files from the earlier call are gone: they would otherwise become training data.
    assert _files(out) == sorted(
        ["MANIFEST.json"] + [f"{c}/{c}_{i:04d}.jpg" for c in ("ok", "spot") for i in range(2)]
    )
    fresh = make_sample_dataset(
        tmp_path / "fresh", images_per_class=2, image_size=48, classes=["ok", "spot"]
    )
    for rel in _files(fresh):
        assert (out / rel).read_bytes() == (fresh / rel).read_bytes()


def test_regenerate_when_files_missing_or_manifest_absent(tmp_path):
    out = make_sample_dataset(tmp_path, images_per_class=2, image_size=48)
    reference = (out / "spot" / "spot_0001.jpg").read_bytes()
    (out / "spot" / "spot_0001.jpg").unlink()
    make_sample_dataset(out, images_per_class=2, image_size=48)
    assert (out / "spot" / "spot_0001.jpg").read_bytes() == reference

    # An interrupted run leaves images but no manifest: finish it instead of refusing.
    (out / "MANIFEST.json").unlink()
    make_sample_dataset(out, images_per_class=2, image_size=48)
    assert (out / "MANIFEST.json").exists()


def test_refuses_folder_with_foreign_files(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "IMG_1234.jpg").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="IMG_1234"):
        make_sample_dataset(tmp_path, images_per_class=1, image_size=48)
    assert (tmp_path / "cats" / "IMG_1234.jpg").read_bytes() == b"not ours"


def test_foreign_files_named_like_samples_are_not_deleted(tmp_path):
    # Same naming scheme, but not one of our classes: a user's real data, never ours to delete.
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "cats_0000.jpg").write_bytes(b"a real cat")
    with pytest.raises(FileExistsError):
        make_sample_dataset(tmp_path, images_per_class=1, image_size=48)
    assert (tmp_path / "cats" / "cats_0000.jpg").read_bytes() == b"a real cat"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"images_per_class": 0},
        {"image_size": 8},
        {"seed": -1},
        {"classes": ()},
        {"classes": ("ok", "dent")},
        {"classes": ("ok", "ok")},
    ],
)
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_sample_dataset(tmp_path, **kwargs)


def test_does_not_import_tensorflow():
    code = "import sys, transferlab.data.sample; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
