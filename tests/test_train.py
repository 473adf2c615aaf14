"""train -> evaluate -> predict end to end with a tiny backbone on a tiny generated dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    backbone = save_tiny_cnn(root / "tiny.keras")
    data = make_class_folders(root / "data", {"red": 14, "green": 14, "blue": 14}, size=40)
    (data / "green" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root, backbone, data


def _train(root, backbone, data, name, **kwargs):
    settings = dict(backbone=str(backbone), runs_dir=str(root / "runs"), name=name, cache_dir=str(root / "cache"),
                    engine="keras", epochs=15, val_fraction=0.2, test_fraction=0.2)
    return transferlab.train(data, show_progress=False, **{**settings, **kwargs})


def test_run_directory_contents(setup):
    root, backbone, data = setup
    clf = _train(root, backbone, data, "first")
    run = clf.run_dir
    for name in ("model.keras", "labels.txt", "config.json", "splits.csv", "history.csv", "bad_files.txt", "predictions.csv",
                 "metrics.json", "confusion_matrix.png", "training_curves.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert (run / "labels.txt").read_text().split() == ["blue", "green", "red"]
    assert "broken.jpg" in (run / "bad_files.txt").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["backbone"] == str(backbone) and config["resize"]["size"] == 32
    assert config["versions"]["keras"] and config["feature_cache"]["misses"] == 42
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "loss", "macro", "weighted", "per_class", "confusion_matrix"):
        assert key in metrics
    assert "top_k_accuracy" not in metrics  # only for more than 5 classes
    assert len(open(run / "history.csv").read().splitlines()) >= 2
    with pytest.raises(FileExistsError, match="--overwrite"):  # finished: nothing to resume
        _train(root, backbone, data, "first")


def test_same_seed_same_metrics_and_warm_cache(setup):
    root, backbone, data = setup
    a = _train(root, backbone, data, "seed-a")
    b = _train(root, backbone, data, "seed-b")
    assert b.metadata["feature_cache"]["misses"] == 0 and b.metadata["feature_cache"]["hits"] == 42
    assert (a.run_dir / "history.csv").read_text() == (b.run_dir / "history.csv").read_text()
    assert a.metadata["metrics"] == b.metadata["metrics"]
    c = _train(root, backbone, data, "seed-c", dropout=0.1, learning_rate=0.01)  # other head: still warm
    assert c.metadata["feature_cache"]["misses"] == 0


def test_evaluate_and_predict_every_way(setup, tmp_path):
    root, backbone, data = setup
    clf = _train(root, backbone, data, "use", learning_rate=0.05, batch_size=4, dropout=0.0, epochs=60, patience=30)
    report = transferlab.evaluate(clf.run_dir, data, split="all")  # every image, training ones included
    assert report["num_samples"] == 42 and report["accuracy"] > 0.5  # the tint makes the classes separable
    paths = sorted(str(p) for p in (data / "red").glob("*.png"))[:3]
    preds = transferlab.load(clf.run_dir).predict(paths + [str(data / "green" / "broken.jpg")], top_k=2)
    assert [p.source for p in preds] == paths + [str(data / "green" / "broken.jpg")]
    assert preds[-1].error and preds[-1].label is None
    assert all(len(p.top_k) == 2 and 0 <= p.probability <= 1 for p in preds[:3])
    probs_files = clf.predict_proba(paths)
    from PIL import Image

    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_allclose(clf.predict_proba(arrays), probs_files, atol=1e-5)  # arrays resized like files
    assert len(clf.predict(str(data / "red"))) == 14  # folder
    assert len(clf.predict(str(data / "r*" / "*.png"))) == 14  # glob

    out = subprocess.run([sys.executable, "-m", "transferlab", "predict", str(clf.run_dir), str(data / "red"),
                          str(data / "green" / "broken.jpg"), "--format", "json", "--top-k", "3"],
                         capture_output=True, text=True, timeout=300)
    rows = json.loads(out.stdout)
    assert out.returncode == 1  # the unreadable file is reported, not fatal
    assert len(rows) == 15 and sum(1 for r in rows if r["error"]) == 1 and len(rows[0]["top_k"]) == 3
    out = subprocess.run([sys.executable, "-m", "transferlab", "evaluate", str(clf.run_dir), str(data), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # TensorFlow's start-up chatter (absl INFO lines printed before TF_CPP_MIN_LOG_LEVEL applies) is filtered.
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr, out.stderr
    report = json.loads(out.stdout)
    assert {"accuracy", "loss", "per_class", "confusion_matrix"} <= set(report)
    (evaluation,) = (clf.run_dir / "evaluations").iterdir()  # evaluate leaves its own report beside the run
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "report.html"):
        assert (evaluation / name).is_file(), name
    assert 'id="mistakes"' in (evaluation / "report.html").read_text()


def test_model_keras_loads_in_a_fresh_process_with_plain_keras(setup):
    root, backbone, data = setup
    clf = _train(root, backbone, data, "plain")
    paths = sorted(str(p) for p in data.rglob("*.png"))[:4]
    expected = clf.predict_proba(paths)
    images = np.stack([clf.resize.load(p) for p in paths]).astype(np.float32)
    np.save(root / "images.npy", images)
    code = (
        "import sys, numpy as np, keras\n"
        "assert 'transferlab' not in sys.modules\n"
        f"m = keras.models.load_model({str(clf.run_dir / 'model.keras')!r}, safe_mode=True)\n"
        f"p = m.predict(np.load({str(root / 'images.npy')!r}), verbose=0)\n"
        "assert 'transferlab' not in sys.modules\n"
        f"np.save({str(root / 'probs.npy')!r}, p)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(root / "probs.npy"), expected, atol=1e-5)


def test_invalid_settings_fail_before_any_work(setup):
    root, backbone, data = setup
    with pytest.raises(ValueError, match="dropout"):
        _train(root, backbone, data, "bad", dropout=1.5)
    with pytest.raises(ValueError, match="Unknown training setting"):
        transferlab.TrainConfig.from_dict({"epochz": 3})
    assert not (root / "runs" / "bad").exists()


def test_unavailable_weights_fail_cleanly_and_leave_no_run_dir(setup, tmp_path):
    root, _, data = setup
    proc = subprocess.run([sys.executable, "-m", "transferlab", "train", str(data), "--backbone", "mobilenet_v2",
                           "--runs-dir", str(tmp_path / "runs"), "--name", "offline"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRANSFERLAB_OFFLINE": "1",
                               "KERAS_HOME": str(tmp_path / "empty_keras")})
    assert proc.returncode == 2
    assert proc.stderr.count("Traceback") == 0 and "error:" in proc.stderr and "--weights PATH" in proc.stderr
    assert not (tmp_path / "runs" / "offline").exists()
