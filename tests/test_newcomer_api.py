"""What a new user trips over (issue 16): the Python input contract, honest evaluation, the CLI's edges.

Everything runs on the tiny ONNX classifier of ``helpers.save_tiny_onnx_classifier`` (no
TensorFlow): a "run" here is a folder with that model, ``labels.txt``, ``config.json`` and the
``splits.csv`` that training writes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferlab
from conftest import make_class_folders, rgb_array, write_image
from helpers import save_tiny_onnx_classifier
from transferlab.cli import main
from transferlab.data.dataset import load_dataset
from transferlab.errors import ConfigError
from transferlab.inference import Prediction

CLASSES = ["red", "green"]


def fake_run(folder: Path, data: Path | None = None, classes: list[str] = CLASSES) -> Path:
    """A run directory around the tiny ONNX model; ``splits.csv`` from ``data`` when given."""
    save_tiny_onnx_classifier(folder / "model.onnx", classes)
    config = {"status": "complete", "class_names": classes,
              "resize": {"size": 32, "mode": "squash", "interpolation": "bilinear", "crop_fraction": 1.0}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if data is not None:
        load_dataset(data, show_progress=False).write_splits(folder / "splits.csv")
    return folder / "model.onnx"


@pytest.fixture
def tiny(tmp_path):
    data = make_class_folders(tmp_path / "data", {"red": 4, "green": 4})
    model = fake_run(tmp_path / "run")
    return data, model, transferlab.load(model)


def _red_batch(data: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((data / "red").glob("*.png"))])


# ------------------------------------------------------------------ item 1: float images
def test_float_images_in_0_1_are_read_as_0_1(tiny):
    data, _, clf = tiny
    x = _red_batch(data)
    expected = clf.predict_proba(x)
    np.testing.assert_allclose(clf.predict_proba(x.astype(np.float32) / 255), expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(x.astype(np.float64)), expected, atol=1e-6)  # 0..255 floats
    np.testing.assert_allclose(clf.predict_proba(x.astype(np.int32)), expected, atol=1e-6)
    assert [p.predicted for p in clf.predict(x.astype(np.float32) / 255)] == ["red"] * len(x)


@pytest.mark.parametrize("bad, words", [
    (lambda x: x.astype(np.float32) / 127.5 - 1, "0..1 or 0..255"),   # normalised to [-1, 1]
    (lambda x: x.astype(np.float32) * 2, "0..1 or 0..255"),           # above 255
    (lambda x: x.astype(np.int16) * 4 - 100, "0..255"),               # integers out of range
    (lambda x: np.where(x > 100, np.nan, x / 255.0), "NaN"),
])
def test_pixel_values_outside_the_contract_are_refused(tiny, bad, words):
    data, _, clf = tiny
    with pytest.raises(ConfigError, match=words):
        clf.predict_proba(bad(_red_batch(data)))


# ------------------------------------------------------------------ item 5: lists, PIL, empty, grayscale
def test_lists_of_arrays_of_any_size_and_pil_images(tiny):
    data, _, clf = tiny
    files = sorted((data / "red").glob("*.png"))
    x = _red_batch(data)
    by_path = clf.predict_proba([str(f) for f in files])
    big = np.asarray(Image.fromarray(x[1]).resize((64, 48)))
    mixed_sizes = clf.predict_proba([x[0], big])
    np.testing.assert_allclose(mixed_sizes[0], by_path[0], atol=1e-6)
    np.testing.assert_allclose(mixed_sizes[1], clf.predict_proba(big)[0], atol=1e-6)  # resized on its own
    np.testing.assert_allclose(clf.predict_proba([Image.open(f) for f in files]), by_path, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(Image.open(files[0])), by_path[:1], atol=1e-6)
    assert [p.source for p in clf.predict([x[0], Image.open(files[1])])] == ["array[0]", "array[1]"]
    with pytest.raises(ConfigError, match="only paths or only images"):
        clf.predict([str(files[0]), x[0]])
    with pytest.raises(ConfigError, match="Cannot predict on a dict"):
        clf.predict([{"a": 1}])


def test_empty_grayscale_and_rgba_batches(tiny):
    data, _, clf = tiny
    x = _red_batch(data)
    empty = clf.predict_proba(np.zeros((0, 32, 32, 3), np.uint8))
    assert empty.shape == (0, 2) and clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 2)
    gray = x[..., 0]  # (N, H, W)
    as_rgb = clf.predict_proba(np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_allclose(clf.predict_proba(gray), as_rgb, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(gray[0]), as_rgb[:1], atol=1e-6)  # (H, W): one image
    np.testing.assert_allclose(clf.predict_proba(gray[..., None]), as_rgb, atol=1e-6)  # (N, H, W, 1)
    rgba = np.concatenate([x, np.full(x.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(clf.predict_proba(rgba), clf.predict_proba(x), atol=1e-6)  # opaque alpha dropped
    transparent = rgba.copy()
    transparent[..., 3] = 0  # fully transparent: white, as for an RGBA file
    np.testing.assert_allclose(clf.predict_proba(transparent[:1]),
                               clf.predict_proba(np.full((1, 32, 32, 3), 255, np.uint8)), atol=1e-6)
    with pytest.raises(ConfigError, match=r"shape \(2, 32, 32, 5\)"):
        clf.predict_proba(np.zeros((2, 32, 32, 5), np.uint8))


def test_top_k_must_be_positive_and_is_capped_at_the_classes(tiny):
    data, _, clf = tiny
    x = _red_batch(data)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="top_k must be a whole number of at least 1"):
            clf.predict(x, top_k=bad)
    assert [len(p.top_k) for p in clf.predict(x, top_k=5)] == [2] * len(x)


# ------------------------------------------------------------------ item 6: scikit-learn conveniences
def test_predict_labels_is_an_array_of_class_names(tiny):
    data, _, clf = tiny
    x = np.concatenate([_red_batch(data), np.stack([np.asarray(Image.open(p))
                                                    for p in sorted((data / "green").glob("*.png"))])])
    labels = clf.predict_labels(x)
    assert isinstance(labels, np.ndarray) and labels.dtype.kind == "U"
    assert labels.tolist() == ["red"] * 4 + ["green"] * 4
    assert labels.tolist() == [p.predicted for p in clf.predict(x)]
    assert clf.predict_labels(str(data / "green")).tolist() == ["green"] * 4
    assert clf.classes_ == CLASSES and clf.predict_labels(x[:0]).shape == (0,)
    from transferlab.training.operating_point import DecisionRule

    clf.decision = DecisionRule(uncertain_below=1.01)  # nothing is that sure
    assert clf.predict_labels(x, outcome=True).tolist() == ["uncertain"] * 8
    assert clf.predict_labels(x).tolist() == labels.tolist()


# ------------------------------------------------------------------ item 14: one vocabulary
def test_prediction_says_predicted_and_keeps_label_as_alias():
    p = Prediction("a.png", "red", 0.9, [("red", 0.9), ("green", 0.1)], outcome="red")
    assert p.predicted == p.label == "red"
    d = p.to_dict()
    assert d["predicted"] == "red" and "label" not in d
    assert d["top_k"] == [{"class": "red", "probability": 0.9}, {"class": "green", "probability": 0.1}]


def test_predict_csv_has_lf_endings_and_the_runs_vocabulary(tiny, capsysbinary):
    data, model, _ = tiny
    assert main(["predict", str(model), str(data / "red"), "--format", "csv"]) == 0
    out = capsysbinary.readouterr().out
    assert b"\r\n" not in out and out.count(b"\n") == 5
    rows = list(csv.DictReader(out.decode().splitlines()))
    assert list(rows[0]) == ["path", "predicted", "probability", "outcome", "top_k", "error"]
    assert {r["predicted"] for r in rows} == {"red"}
    assert main(["predict", str(model), str(data / "red"), "--format", "json"]) == 0
    first = json.loads(capsysbinary.readouterr().out)[0]
    assert first["predicted"] == "red" and first["top_k"][0]["class"] == "red"


# ------------------------------------------------------------------ item 13: predict's edges
def test_predict_skips_non_images_in_folders_but_not_named_ones(tiny, capsys, caplog):
    data, model, _ = tiny
    (data / "red" / "notes.txt").write_text("to do: label these\n", encoding="utf-8")
    assert main(["predict", str(model), str(data), "--format", "csv"]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 9 and "notes.txt" not in out
    # The warning goes to stderr through logging (pytest's handler catches it here).
    assert "skipped" in caplog.text and "notes.txt: not an image" in caplog.text
    assert main(["predict", str(model), str(data / "red" / "notes.txt"), "--format", "csv"]) == 1
    out, _ = capsys.readouterr()
    assert "not an image" in out.splitlines()[1]
    # A broken image inside a folder is still an error: it was meant to be predicted.
    (data / "red" / "broken.png").write_bytes((data / "red" / "red_0000.png").read_bytes()[:60])
    assert main(["predict", str(model), str(data / "red")]) == 1


def test_predict_out_file_and_min_confidence(tiny, tmp_path, capsys):
    data, model, _ = tiny
    out_csv = tmp_path / "results" / "pred.csv"
    assert main(["predict", str(model), str(data), "--out", str(out_csv)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout == "" and "8 prediction(s) written to" in err
    rows = list(csv.DictReader(out_csv.read_text(encoding="utf-8").splitlines()))  # format from the suffix
    assert len(rows) == 8 and {r["predicted"] for r in rows} == {"red", "green"}
    out_json = tmp_path / "pred.json"
    assert main(["predict", str(model), str(data), "--out", str(out_json), "--min-confidence", "1.0"]) == 0
    assert {r["outcome"] for r in json.loads(out_json.read_text(encoding="utf-8"))} == {"uncertain"}
    assert "uncertain (top probability < 1): 8 of 8" in capsys.readouterr().err


def test_predict_sort_into_copies_or_links_and_never_overwrites(tiny, tmp_path, capsys):
    data, model, _ = tiny
    sorted_dir = tmp_path / "sorted"
    (sorted_dir / "red").mkdir(parents=True)
    (sorted_dir / "red" / "red_0000.png").write_bytes(b"already here")
    assert main(["predict", str(model), str(data), "--sort-into", str(sorted_dir)]) == 0
    assert "copied 8 image(s) into" in capsys.readouterr().err
    assert (sorted_dir / "red" / "red_0000.png").read_bytes() == b"already here"  # untouched
    assert (sorted_dir / "red" / "red_0000-1.png").read_bytes() == (data / "red" / "red_0000.png").read_bytes()
    assert sorted(p.name for p in (sorted_dir / "green").iterdir()) == [f"green_{i:04d}.png" for i in range(4)]
    linked = tmp_path / "linked"
    assert main(["predict", str(model), str(data / "green"), "--sort-into", str(linked), "--link",
                 "--uncertain-below", "1.0"]) == 0
    target = linked / "uncertain" / "green_0000.png"
    assert target.is_file() and os.path.samefile(target, data / "green" / "green_0000.png")
    assert main(["predict", str(model), str(data), "--link"]) == 2
    assert "add --sort-into DIR" in capsys.readouterr().err


# ------------------------------------------------------------------ items 2, 9, 12, 10: evaluate
def test_evaluate_on_the_training_data_leaves_training_images_out(tmp_path, capsys):
    data = make_class_folders(tmp_path / "data", {"red": 20, "green": 20})
    model = fake_run(tmp_path / "run", data)
    dataset = load_dataset(data, show_progress=False)
    n_train = len(dataset.split("train"))
    assert 0 < n_train < 40
    clf = transferlab.load(model)
    report = clf.evaluate(data, show_progress=False)
    assert report["num_samples"] == 40 - n_train and report["seen_in_training"] == n_train
    assert report["seen_in_training_included"] is False
    everything = clf.evaluate(data, split="all", show_progress=False)
    assert everything["num_samples"] == 40 and everything["seen_in_training_included"] is True
    val = clf.evaluate(data, split="val", show_progress=False)  # the data's own split, as before
    assert val["num_samples"] == len(dataset.split("val")) and val["seen_in_training"] == 0
    # New images are evaluated whatever their split.
    write_image(data / "red" / "new.png", rgb_array(32, 32, seed=4242))
    assert clf.evaluate(data, show_progress=False)["num_samples"] == 41 - n_train

    assert main(["evaluate", str(model), str(data), "--out", str(tmp_path / "ev")]) == 0
    assert f"left out {n_train} image(s) the model was trained on" in capsys.readouterr().out
    assert main(["evaluate", str(model), str(data), "--split", "all", "--out", str(tmp_path / "ev2")]) == 0
    assert f"warning: {n_train} of these 41 images were used to train this model" in capsys.readouterr().out
    # Only training images: nothing honest to report.
    only_train = tmp_path / "only_train"
    for r in dataset.split("train"):
        write_image(only_train / r.label / Path(r.path).name, np.asarray(Image.open(r.path)))
    assert main(["evaluate", str(model), str(only_train), "--out", str(tmp_path / "ev3")]) == 2
    assert "were used to train this model" in capsys.readouterr().err


def test_evaluate_one_class(tmp_path, capsys):
    data = make_class_folders(tmp_path / "defects", {"red": 5})
    model = fake_run(tmp_path / "run")
    assert main(["evaluate", str(model), str(data), "--json", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 5 and report["per_class"]["red"]["support"] == 5


def test_evaluate_a_split_the_data_does_not_have(tmp_path, capsys):
    root = tmp_path / "presplit"
    make_class_folders(root / "train", {"red": 3, "green": 3})
    make_class_folders(root / "val", {"red": 2, "green": 2}, seed=1)
    model = fake_run(tmp_path / "run")
    assert main(["evaluate", str(model), str(root), "--split", "test", "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert "has no test split (its splits: train, val); use --split val" in err
    assert main(["evaluate", str(model), str(root), "--split", "val", "--json", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 4


def test_evaluate_cache_dir(tiny, tmp_path, monkeypatch):
    from transferlab.data import check_cache

    data, model, _ = tiny
    monkeypatch.setattr(check_cache, "RACY_SECONDS", 0.0)  # files written just now are remembered too
    cache = tmp_path / "my-cache"
    assert main(["evaluate", str(model), str(data), "--cache-dir", str(cache), "--out", str(tmp_path / "ev")]) == 0
    assert (cache / "file_checks.sqlite3").is_file()


# ------------------------------------------------------------------ item 10: TFLite chatter
def test_tflite_predict_quiet_prints_no_interpreter_chatter(tmp_path):
    import keras
    import tensorflow as tf

    from helpers import save_tiny_cnn

    data = make_class_folders(tmp_path / "data", {"red": 2, "green": 2})
    model = keras.models.load_model(save_tiny_cnn(tmp_path / "tiny.keras", num_classes=2))
    path = tmp_path / "model" / "model.tflite"
    path.parent.mkdir()
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    fake_run(tmp_path / "model")  # labels and resize beside it (its ONNX twin is not used)

    def predict(level: str | None) -> subprocess.CompletedProcess:
        # A fresh process: the interpreter announces its delegate once per process, from C++.
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env.update({"TF_CPP_MIN_LOG_LEVEL": level} if level else {})
        return subprocess.run([sys.executable, "-m", "transferlab", "-q", "predict", str(path), str(data),
                               "--format", "csv"], capture_output=True, text=True, timeout=120, env=env)

    quiet = predict(None)
    assert quiet.returncode == 0 and len(quiet.stdout.splitlines()) == 5, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    assert "XNNPACK" in predict("0").stderr  # asked for: shown
