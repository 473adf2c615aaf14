"""Data layer: formats, bad files, layouts, stable splits, the streaming pipeline."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_class_folders, require_shared, rgb_array, write_image
from transferlab.data import DatasetError, ImageDecodeError, decode_image, inspect_dataset, load_dataset
from transferlab.data.decode import load_image
from transferlab.data.split import assign_split


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"),
                                     ("WEBP", "webp"), ("TIFF", "tif")])
def test_every_supported_format_decodes_to_rgb(tmp_path, fmt, ext):
    path = write_image(tmp_path / f"img.{ext}", rgb_array(40, 30), fmt=fmt)
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)


def test_content_decides_not_extension(tmp_path):
    arr = rgb_array(20, 10)
    path = write_image(tmp_path / "actually_png.jpg", arr, fmt="PNG")
    np.testing.assert_array_equal(decode_image(path), arr)  # lossless, so PNG was used


def test_gif_first_frame(tmp_path):
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    blue = Image.new("RGB", (8, 8), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=100)
    out = decode_image(path)
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_exif_orientation_is_applied(tmp_path):
    arr = rgb_array(40, 20)  # width 40, height 20
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert decode_image(path).shape == (40, 20, 3)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "I"])
def test_modes_convert_to_rgb(tmp_path, mode):
    img = Image.fromarray(rgb_array(16, 16)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I" else "PNG")
    path = tmp_path / f"img_{mode}.{fmt.lower()}"
    img.save(path, format=fmt)
    out = decode_image(path)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_rgba_alpha_is_composited_over_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 200  # red under the alpha
    arr[0, 0, 3] = 255  # one opaque pixel, the rest fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = decode_image(path)
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_16bit_grayscale_is_scaled_to_8bit(tmp_path):
    arr16 = np.full((4, 4), 65535, np.uint16)
    arr16[0, 0] = 256 * 100
    path = tmp_path / "deep.png"
    Image.fromarray(arr16).save(path)
    out = decode_image(path)
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 100 and out.shape == (4, 4, 3)


def _bad_files(folder: Path) -> dict[str, str]:
    """Write one file of every bad kind; return name -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(rgb_array(64, 64)).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (folder / "notes.txt").write_text("not an image")
    return {"empty.jpg": "empty", "truncated.jpg": "truncated", "garbage.png": "truncated", "notes.txt": "not an image"}


def test_bad_files_raise_decode_error_with_reason(tmp_path):
    for name, fragment in _bad_files(tmp_path).items():
        with pytest.raises(ImageDecodeError) as info:
            decode_image(tmp_path / name)
        assert fragment in info.value.reason
        assert str(tmp_path / name) in str(info.value)


# ------------------------------------------------------------------ datasets
def test_bad_and_hidden_files_are_skipped_and_listed(tmp_path):
    root = make_class_folders(tmp_path / "data", {"cat": 5, "dog": 5})
    expected = _bad_files(root / "cat")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "dog" / "Thumbs.db").write_bytes(b"junk")
    write_image(root / "dog" / ".hidden.png")
    ds = load_dataset(root, show_progress=False)
    bad = {Path(b.path).name: b.reason for b in ds.bad_files}
    assert set(bad) == set(expected)
    for name, fragment in expected.items():
        assert fragment in bad[name]
    assert ds.counts() == {"cat": 5, "dog": 5}
    written = ds.write_bad_files(tmp_path / "bad_files.txt").read_text()
    assert all(name in written for name in expected)


def test_class_without_images_and_single_class_are_errors(tmp_path):
    root = make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    (root / "bird").mkdir()
    (root / "bird" / "broken.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="bird"):
        load_dataset(root, show_progress=False)
    report = inspect_dataset(root, show_progress=False)
    assert report["problems"] and report["classes"]["bird"] == 0

    single = make_class_folders(tmp_path / "one", {"cat": 3})
    with pytest.raises(DatasetError, match="at least two classes"):
        load_dataset(single, show_progress=False)
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_dataset(tmp_path / "one" / "cat", show_progress=False)


def test_label_conflict_is_reported_and_excluded(tmp_path):
    root = make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    shutil.copy(root / "cat" / "cat_0000.png", root / "dog" / "copied.png")
    ds = load_dataset(root, show_progress=False)
    assert len(ds.label_conflicts) == 1
    assert ds.label_conflicts[0]["labels"] == ["cat", "dog"]
    assert ds.counts() == {"cat": 2, "dog": 3}
    assert any("label conflict" in b.reason for b in ds.bad_files)


def test_presplit_layout_is_used_as_is(tmp_path):
    make_class_folders(tmp_path / "d" / "train", {"a": 4, "b": 4}, seed=1)
    make_class_folders(tmp_path / "d" / "validation", {"a": 2, "b": 2}, seed=2)
    make_class_folders(tmp_path / "d" / "test", {"a": 1, "b": 1}, seed=3)
    ds = load_dataset(tmp_path / "d", show_progress=False)
    assert ds.layout == "presplit"
    assert ds.counts("train") == {"a": 4, "b": 4}
    assert ds.counts("val") == {"a": 2, "b": 2}
    assert ds.counts("test") == {"a": 1, "b": 1}


def test_csv_input_with_relative_paths_and_optional_split(tmp_path):
    images = make_class_folders(tmp_path / "imgs", {"x": 3, "y": 3})
    rows = ["path,label"] + [f"imgs/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(images.rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "labels.csv", show_progress=False)
    assert ds.layout == "csv" and ds.counts() == {"x": 3, "y": 3}

    with_split = ["path,label,split"] + [r + (",train" if i % 2 else ",val") for i, r in enumerate(rows[1:])]
    (tmp_path / "split.csv").write_text("\n".join(with_split) + "\n")
    ds = load_dataset(tmp_path / "split.csv", show_progress=False)
    assert {r.split for r in ds.records} == {"train", "val"}

    (tmp_path / "wrong.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DatasetError, match="'path' and a 'label'"):
        load_dataset(tmp_path / "wrong.csv", show_progress=False)


# ------------------------------------------------------------------ splits
def test_split_is_deterministic_and_roughly_stratified(tmp_path):
    root = make_class_folders(tmp_path / "d", {"a": 60, "b": 40})
    first = load_dataset(root, show_progress=False)
    second = load_dataset(root, show_progress=False, workers=1)
    assert [(r.rel_path, r.split) for r in first.records] == [(r.rel_path, r.split) for r in second.records]
    for name, total in (("a", 60), ("b", 40)):
        assert 0.6 * total <= first.counts("train")[name] <= 0.95 * total
    other_seed = load_dataset(root, show_progress=False, seed=7)
    assert [r.split for r in other_seed.records] != [r.split for r in first.records]


def test_adding_images_never_moves_existing_ones(tmp_path):
    root = make_class_folders(tmp_path / "d", {"a": 30, "b": 30})
    before = {r.rel_path: r.split for r in load_dataset(root, show_progress=False).records}
    make_class_folders(tmp_path / "extra", {"a": 20, "b": 20}, seed=9)
    for p in (tmp_path / "extra").rglob("*.png"):
        shutil.copy(p, root / p.parent.name / f"new_{p.name}")
    after = {r.rel_path: r.split for r in load_dataset(root, show_progress=False).records}
    assert len(after) == 100
    assert all(after[path] == split for path, split in before.items())


def test_split_rule_is_the_documented_hash(tmp_path):
    assert assign_split("a/x.png", seed=42) == assign_split("a/x.png", seed=42)
    splits = [assign_split(f"c/{i}.jpg", seed=0, val_fraction=0.2, test_fraction=0.3) for i in range(4000)]
    assert abs(splits.count("test") / 4000 - 0.3) < 0.03
    assert abs(splits.count("val") / 4000 - 0.2) < 0.03


def test_splits_csv_reproduces_the_run(tmp_path):
    root = make_class_folders(tmp_path / "d", {"a": 10, "b": 10})
    ds = load_dataset(root, show_progress=False)
    out = ds.write_splits(tmp_path / "splits.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,split,sha256" and len(lines) == 21
    # The written CSV is itself a valid dataset source (paths relative to the root).
    shutil.copy(out, root / "splits.csv")
    replay = load_dataset(root / "splits.csv", show_progress=False)
    assert [(r.rel_path, r.split) for r in replay.records] == [(r.rel_path, r.split) for r in ds.records]


# ------------------------------------------------------------------ pipeline
def test_resize_modes(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    path = write_image(tmp_path / "wide.png", arr)
    squash = load_image(path, (10, 10), mode="squash")
    crop = load_image(path, (10, 10), mode="center-crop")
    pad = load_image(path, (10, 10), mode="pad")
    assert squash.shape == crop.shape == pad.shape == (10, 10, 3)
    assert pad[0].max() == 0 and pad[-1].max() == 0  # letterbox bars top and bottom
    assert squash[:, 0].min() == 255 and squash[:, -1].max() == 0
    assert crop[:, 0].min() == 255 and crop[:, -1].max() == 0  # centre crop still spans the edge


def test_pipeline_shapes_dtypes_ranges_and_augmentation(tmp_path):
    from transferlab.data.pipeline import AugmentConfig, ResizeConfig, make_image_dataset

    root = make_class_folders(tmp_path / "d", {"a": 5, "b": 4})
    ds = load_dataset(root, show_progress=False)
    paths = [r.path for r in ds.records]
    labels = ds.labels(ds.records)
    plain = list(make_image_dataset(paths, labels, ResizeConfig(24), batch_size=4))
    assert [x.shape[0] for x, _, _ in plain] == [4, 4, 1]
    x, y, w = plain[0]
    assert x.dtype.name == "float32" and tuple(x.shape[1:]) == (24, 24, 3) and y.dtype.name == "int32"
    assert w.numpy().tolist() == [1.0] * 4
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 255.0
    np.testing.assert_array_equal(x[0].numpy().astype(np.uint8), ResizeConfig(24).load(paths[0]))

    def run(seed):
        data = make_image_dataset(paths, labels, ResizeConfig(24), batch_size=9, augment=AugmentConfig(),
                                  shuffle=True, seed=seed)
        return next(iter(data))

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())  # seeded: reproducible
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    assert sorted(a[1].numpy().tolist()) == sorted(labels)  # shuffled, nothing lost
    assert 0.0 <= float(np.min(a[0])) and float(np.max(a[0])) <= 255.0


def test_pipeline_skips_a_file_that_broke_after_checking(tmp_path):
    from transferlab.data.pipeline import ResizeConfig, make_image_dataset

    root = make_class_folders(tmp_path / "d", {"a": 3, "b": 3})
    ds = load_dataset(root, show_progress=False)
    Path(ds.records[0].path).write_bytes(b"")
    paths, labels = [r.path for r in ds.records], ds.labels(ds.records)
    (x, y, w), = list(make_image_dataset(paths, labels, ResizeConfig(16), batch_size=8))
    assert w.numpy().tolist() == [0.0] + [1.0] * 5  # kept with weight 0: Keras ignores it
    unlabeled = list(make_image_dataset(paths, None, ResizeConfig(16), batch_size=8))
    assert sum(int(b.shape[0]) for b in unlabeled) == 5  # unlabeled: dropped


# ------------------------------------------------------------------ CLI
def test_cli_inspect_json_names_bad_files(tmp_path):
    root = make_class_folders(tmp_path / "d", {"ok": 4, "scratch": 2})
    expected = _bad_files(root / "ok")
    proc = subprocess.run([sys.executable, "-m", "transferlab", "inspect", str(root), "--json"],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert report["classes"] == {"ok": 4, "scratch": 2} and report["total"] == 6
    assert {Path(b["path"]).name for b in report["bad_files"]} == set(expected)
    assert all(b["reason"] for b in report["bad_files"])
    text = subprocess.run([sys.executable, "-m", "transferlab", "inspect", str(root)],
                          capture_output=True, text=True, timeout=120).stdout
    assert "Imbalance ratio" in text and "truncated.jpg" in text


# ------------------------------------------------------------------ real photos
@pytest.mark.slow
def test_hymenoptera_counts_and_palette_gif(shared_datasets):
    root = require_shared("hymenoptera_data")
    ds = load_dataset(root, show_progress=False)
    assert ds.layout == "presplit"
    assert ds.counts("train") == {"ants": 124, "bees": 121}
    assert ds.counts("val") == {"ants": 70, "bees": 83}
    assert not ds.bad_files
    gif = root / "train" / "ants" / "imageNotFound.gif"
    assert Image.open(gif).mode == "P"
    out = decode_image(gif)
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8


def test_batch_loader_keeps_order_reports_bad_files_and_decodes_at_low_priority(tmp_path, monkeypatch):
    import os
    import sys
    import threading

    from transferlab.data import loader
    from transferlab.data.pipeline import ResizeConfig

    paths = [str(write_image(tmp_path / f"img_{i}.png", rgb_array(40, 30, seed=i))) for i in range(7)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff nope")
    paths.insert(3, str(tmp_path / "broken.jpg"))
    priorities = []
    real = loader._load_batch

    def recording(*args):
        if hasattr(os, "getpriority"):
            priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(*args)

    monkeypatch.setattr(loader, "_load_batch", recording)
    resize = ResizeConfig(size=16)
    batches = list(loader.iter_file_batches(paths, resize, batch_size=3, workers=2))
    assert [i for indices, _, _ in batches for i in indices] == [0, 1, 2, 4, 5, 6, 7]
    assert {i for _, _, errors in batches for i in errors} == {3}
    assert all(images.shape[1:] == (16, 16, 3) and images.dtype == np.uint8 for _, images, _ in batches)
    np.testing.assert_array_equal(batches[0][1][1], resize.load(paths[1]))
    if sys.platform.startswith("linux"):
        assert priorities and min(priorities) >= loader._DECODER_NICENESS  # decoders yield to the model
