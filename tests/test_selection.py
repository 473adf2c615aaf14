"""Model selection: folds, head families, the leaderboard, the search, and what the user gets from them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders, require_shared
from helpers import save_tiny_cnn
from transferlab.selection.errors import SelectionError
from transferlab.selection.folds import make_folds
from transferlab.selection.heads import HeadSettings, cross_validate, cv_logistic


def blobs(n: int = 240, dim: int = 48, classes: int = 3, spread: float = 0.6, seed: int = 0):
    """Gaussian class clusters: (n, dim) float32 features and (n,) labels, learnable but not trivially."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    labels = np.arange(n) % classes
    return (centers[labels] * spread + rng.normal(size=(n, dim))).astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny backbone and a pre-split tinted dataset (train/val/test folders)."""
    root = tmp_path_factory.mktemp("selection")
    backbone = save_tiny_cnn(root / "tiny.keras")
    classes = {"red": 12, "green": 12, "blue": 12}
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        make_class_folders(root / "data" / split, classes if split == "train" else {k: 5 for k in classes}, size=40,
                           seed=seed)
    return root, backbone, root / "data"


def _settings(root, **extra):
    return dict(cache_dir=str(root / "cache"), runs_dir=str(root / "runs"), engine="keras", **extra)


# ---------------------------------------------------------------- folds and heads
def test_folds_are_stratified_partitions_and_reproducible():
    labels = np.array([0] * 30 + [1] * 20 + [2] * 10)
    folds = make_folds(labels, 3, k=5, seed=3)
    assert folds.k == 5
    assert np.array_equal(np.sort(np.concatenate(folds.val)), np.arange(60))
    for train, val in zip(folds.train, folds.val):
        assert not set(train) & set(val) and len(train) + len(val) == 60
        assert np.bincount(labels[val], minlength=3).tolist() == [6, 4, 2]  # every class in every fold
    again = make_folds(labels, 3, k=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds.val, again.val))
    assert not all(np.array_equal(a, b) for a, b in zip(folds.val, make_folds(labels, 3, k=5, seed=4).val))


def test_folds_shrink_to_the_smallest_class_and_refuse_singletons():
    assert make_folds(np.array([0] * 10 + [1] * 3), 2, k=5).k == 3
    with pytest.raises(SelectionError, match="only 1 image"):
        make_folds(np.array([0] * 10 + [1]), 2)
    with pytest.raises(SelectionError, match="at least 2"):
        make_folds(np.array([0, 1, 0, 1]), 2, k=1)


@pytest.mark.parametrize("head", [HeadSettings(epochs=40), HeadSettings(family="mlp", hidden_units=32, epochs=40),
                                  HeadSettings(family="logistic")])
def test_each_family_learns_and_is_deterministic(head):
    x, y = blobs()
    folds = make_folds(y, 3, k=4, seed=0)
    first, second = cross_validate(x, folds, head, seed=1), cross_validate(x, folds, head, seed=1)
    assert first.mean_accuracy > 0.8, first.summary()
    np.testing.assert_array_equal(first.oof_probs, second.oof_probs)
    assert first.oof_probs.shape == (len(y), 3)
    np.testing.assert_allclose(first.oof_probs.sum(1), 1.0, atol=1e-5)
    assert len(first.accuracy) == 4 and np.all(first.log_loss > 0)


def test_each_fold_is_scored_only_on_rows_it_did_not_train_on():
    """Relabel one fold's held-out rows: only that fold's training data is unchanged, so only its score moves."""
    x, y = blobs(n=180)
    folds = make_folds(y, 3, k=3, seed=0)
    head = HeadSettings(epochs=30, patience=0)  # no joint early stopping: the folds are fully independent
    base = cross_validate(x, folds, head, seed=0)
    shuffled = y.copy()
    held_out = folds.val[0]
    shuffled[held_out] = (shuffled[held_out] + 1) % 3  # wrong labels, but only where fold 0 is scored
    moved = cross_validate(x, dataclasses.replace(folds, labels=shuffled), head, seed=0)
    # Fold 0 trained on the same rows and labels: its predictions agree; scored against wrong labels it collapses.
    np.testing.assert_allclose(moved.oof_probs[held_out], base.oof_probs[held_out], atol=1e-6)
    assert moved.accuracy[0] < 0.3 < base.accuracy[0]


def test_batched_softmax_head_scores_like_the_keras_head_per_fold():
    """The folds-at-once trainer re-implements fit_head; on the same folds their accuracies agree.

    Single runs differ by several points with the seed (80 held-out rows per fold), so the
    means over three seeds are compared.
    """
    from transferlab._keras import keras
    from transferlab.training.head import build_head, fit_head, predict_head

    x, y = blobs(n=240, spread=0.35, seed=5)
    folds = make_folds(y, 3, k=3, seed=0)
    settings = HeadSettings(epochs=80, patience=0)
    batched, keras_acc = [], []
    for seed in (0, 1, 2):
        batched.append(cross_validate(x, folds, settings, seed=seed).mean_accuracy)
        for train, val in zip(folds.train, folds.val):
            keras.utils.set_random_seed(seed)
            head = build_head(x.shape[1], 3, hidden_units=0, dropout=settings.dropout)
            fit_head(head, x[train], y[train], None, None, epochs=80, batch_size=32, learning_rate=1e-3,
                     label_smoothing=0.1, patience=0, seed=seed)
            keras_acc.append(np.mean(predict_head(head, x[val]).argmax(1) == y[val]))
    assert abs(np.mean(batched) - np.mean(keras_acc)) < 0.05, (batched, keras_acc)


def test_logistic_probe_chooses_c_on_the_folds():
    x, y = blobs(n=150, dim=80)
    result = cv_logistic(x, make_folds(y, 3, k=3, seed=0), grid=(1e-4, 1e-2, 1.0), patience=5)
    assert result.settings.logistic_c in (1e-4, 1e-2, 1.0)
    best = max(result.extra["grid"], key=lambda g: (g["cv_accuracy"], -g["cv_log_loss"]))
    assert best["C"] == result.settings.logistic_c and len(result.extra["grid"]) == 3


@pytest.mark.parametrize("classes", [2, 4])
def test_logistic_head_is_the_fitted_probe_as_one_dense_layer(classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transferlab.training.head import predict_head
    from transferlab.training.probe import fit_logistic_head

    x, y = blobs(n=120, dim=20, classes=classes, seed=2)
    x = x * np.linspace(0.5, 30, 20, dtype=np.float32) + 7  # unequal scales: the folded scaler matters
    head = fit_logistic_head(x, y, classes + 1, c=0.1)  # one more class than present: never predicted
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(x, y)
    probs = predict_head(head, x)
    np.testing.assert_allclose(probs[:, :classes], reference.predict_proba(x), atol=2e-4)
    assert probs[:, classes].max() < 1e-9
    assert [layer.name for layer in head.layers] == ["features", "predictions"]


# ---------------------------------------------------------------- compare on images
def test_compare_lists_unavailable_backbones_as_skipped_and_ranks_the_rest(tiny):
    from transferlab.selection.compare import compare

    root, backbone, data = tiny
    board = compare(data, [str(backbone), "mobilenet_v2"], folds=3, show_progress=False,
                    **_settings(root, epochs=30))
    assert [s["backbone"] for s in board.skipped] == ["mobilenet_v2"]
    assert "not available offline" in board.skipped[0]["reason"] and "mobilenet_v2" in board.skipped[0]["reason"]
    assert {r["family"] for r in board.rows} == {"softmax", "mlp", "logistic"}
    assert [r["rank"] for r in board.rows] == [1, 2, 3]
    assert board.rows[0]["cv_accuracy"] >= board.rows[-1]["cv_accuracy"]
    assert board.test["split"] == "test" and board.test["num_samples"] == 15
    again = compare(data, [str(backbone)], folds=3, show_progress=False, **_settings(root, epochs=30))
    strip = ("extract_img_per_s", "latency_ms", "cv_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again.rows] == \
        [{k: v for k, v in r.items() if k not in strip} for r in board.rows]  # same seed, same leaderboard
    out = board.write(root / "board")
    assert (out / "leaderboard.csv").read_text().splitlines()[0].startswith("rank,backbone,head,cv_accuracy")
    page = (out / "compare.html").read_text()
    assert "mobilenet_v2" in page and "data:image/png;base64" in page and 'id="leaderboard"' in page


def test_the_test_split_is_never_read_while_choosing(tiny, tmp_path):
    from transferlab.data.dataset import load_dataset
    from transferlab.features import feature_cache_for
    from transferlab.selection.compare import compare, selection_features
    from transferlab.training.config import TrainConfig

    root, backbone, data = tiny
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    settings = _settings(tmp_path, epochs=20)
    board = compare(copy, [str(backbone)], folds=3, score_test=False, show_progress=False, **settings)
    # No feature of a test image was computed: the test images were not even decoded.
    dataset = load_dataset(copy, cache_dir=settings["cache_dir"])
    bf = selection_features(dataset, str(backbone), TrainConfig(**settings), show_progress=False)
    cache = feature_cache_for(bf.info, bf.resize, settings["cache_dir"])
    assert dataset.split("test") and not any(cache.contains(r.sha256) for r in dataset.split("test"))
    assert all(cache.contains(r.sha256) for r in dataset.split("train"))
    # Swap the test images between classes: the leaderboard does not move.
    (copy / "test" / "red").rename(copy / "test" / "tmp")
    (copy / "test" / "blue").rename(copy / "test" / "red")
    (copy / "test" / "tmp").rename(copy / "test" / "blue")
    swapped = compare(copy, [str(backbone)], folds=3, show_progress=False, **settings)
    keys = ("backbone", "head", "cv_accuracy", "cv_accuracy_std", "cv_log_loss", "cv_macro_f1")
    assert [{k: r[k] for k in keys} for r in swapped.rows] == [{k: r[k] for k in keys} for r in board.rows]


def test_save_best_trains_a_plain_keras_run_whose_report_shows_the_leaderboard(tiny):
    root, backbone, data = tiny
    board = transferlab.compare(data, [str(backbone)], folds=3, save_best=True, show_progress=False,
                                **_settings(root, epochs=30))
    run = board.run_dir
    config = json.loads((run / "config.json").read_text())
    winner = board.results[0].settings
    assert config["config"]["head"] == ("logistic" if winner.family == "logistic" else "keras")
    assert config["extras"]["selection"]["winner"]["head"] == board.winner["head"]
    assert board.test["split"] == "test"
    assert (run / "leaderboard.csv").is_file() and 'id="selection"' in (run / "report.html").read_text()
    assert (board.out_dir / "compare.html").is_file()
    # Why the winner won is on both pages (here: the configured backbone was not among those compared).
    assert "was not compared" in board.winner["why"] and "Why the winner" in (run / "report.html").read_text()
    assert "Why this winner" in (board.out_dir / "compare.html").read_text()
    # model.keras: raw image -> probabilities, loaded by plain Keras in safe mode in a fresh process.
    code = ("import keras, numpy as np; m = keras.models.load_model(r'%s', safe_mode=True); "
            "p = m(np.zeros((2, 32, 32, 3), 'float32')); print(p.shape)" % (run / "model.keras"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "(2, 3)" in out.stdout, out.stderr[-1500:]


def test_a_logistic_head_run_loads_predicts_and_explains(tiny):
    from transferlab.evaluation.gradcam import gradcam

    root, backbone, data = tiny
    clf = transferlab.train(data, show_progress=False, backbone=str(backbone), head="logistic", logistic_c=1.0,
                            name="probe", **_settings(root))
    assert not (clf.run_dir / "training_curves.png").exists()  # no epochs, no curves
    loaded = transferlab.load(clf.run_dir)
    images = np.stack([np.asarray(loaded.resize.load(str(p))) for p in sorted((data / "test" / "red").glob("*"))])
    np.testing.assert_allclose(loaded.predict_proba(images), clf.predict_proba(images), atol=1e-5)
    assert clf.metadata["metrics"]["accuracy"] > 0.5
    cams = gradcam(loaded, images[:2])
    assert len(cams) == 2 and np.all(np.isfinite(cams[0]))


# ---------------------------------------------------------------- the search
def test_search_is_deterministic_and_starts_from_the_configured_head():
    from transferlab.selection.tune import search

    x, y = blobs(n=150, dim=24)
    base = HeadSettings(epochs=30)
    best, result, trials, _ = search(x, y, 3, trials=6, folds=3, seed=7, base=base, show_progress=False)
    again = search(x, y, 3, trials=6, folds=3, seed=7, base=base, show_progress=False)
    strip = ("seconds",)
    assert [{k: v for k, v in t.items() if k not in strip} for t in trials] == \
        [{k: v for k, v in t.items() if k not in strip} for t in again[2]]
    assert trials[0]["head"] == "softmax" and trials[0]["params"]["learning_rate"] == base.learning_rate
    assert trials[1]["head"].startswith("logistic")
    chosen = [t for t in trials if t["selected"]]
    assert len(chosen) == 1 and chosen[0]["why"] and result.mean_accuracy == chosen[0]["cv_accuracy"]
    assert chosen[0]["number"] == 0 or chosen[0]["cv_accuracy"] == max(t["cv_accuracy"] for t in trials
                                                                      if t["state"] == "complete")


# ---------------------------------------------------------------- the default unless beaten by one SE
def test_one_standard_error_rule_keeps_the_default_unless_the_gain_is_consistent():
    from transferlab.selection.choose import versus_default

    one_image = versus_default([1, 1, 0.99, 1, 1], [1, 1, 1, 1, 1])  # better on one fold only
    assert not one_image.wins and one_image.margin > 0 and "kept the default" in one_image.reason
    assert not versus_default([0.9] * 5, [0.9] * 5).wins
    assert not versus_default([0.9] * 5, [0.8] * 5).wins
    noisy = versus_default([0.90, 0.90, 0.90, 0.90], [0.99, 0.85, 0.97, 0.86])  # +0.02 mean, swings of 0.1
    assert not noisy.wins and noisy.standard_error > noisy.margin
    steady = versus_default([0.90, 0.91, 0.89, 0.90, 0.92], [0.93, 0.93, 0.92, 0.93, 0.94])
    assert steady.wins and "beats the default" in steady.reason
    with pytest.raises(ValueError, match="same"):
        versus_default([1, 1, 1], [1, 1])


def _scored(accuracy, log_loss, family="softmax"):
    from transferlab.selection.heads import CVResult

    acc = np.array(accuracy, float)
    settings = HeadSettings(family=family, hidden_units=64 if family == "mlp" else 0)
    return CVResult(settings, acc, acc, np.full(len(acc), log_loss), np.zeros((1, 2), np.float32))


def _board_row(backbone, result, default=False):
    return {"backbone": backbone, "head": result.settings.label(), "cv_accuracy": result.mean_accuracy,
            "cv_log_loss": float(result.log_loss.mean()), "latency_ms": 1.0, "default": default}


def test_compare_ranks_the_default_first_unless_a_challenger_beats_it_by_one_se():
    from transferlab.selection.compare import rank_rows

    default = _scored([1, 1, 0.98, 1, 1], 0.30)
    lucky = _scored([1, 1, 1, 1, 1], 0.05, "mlp")  # the top of the CV table by a single image
    rows, results, why = rank_rows([_board_row("a", default, True), _board_row("b", lucky)], [default, lucky])
    assert [r["backbone"] for r in rows] == ["a", "b"] and results[0] is default
    assert rows[0]["vs_default"] == "default" and "within one SE" in rows[1]["vs_default"]
    assert "kept the default a + softmax" in why and rows[0]["why"] == why

    weak = _scored([0.80, 0.82, 0.78, 0.80, 0.81], 0.60)
    strong = _scored([0.95, 0.96, 0.94, 0.95, 0.97], 0.20, "mlp")
    rows, results, why = rank_rows([_board_row("a", weak, True), _board_row("b", strong)], [weak, strong])
    assert rows[0]["backbone"] == "b" and results[0] is strong and "beats the default" in why
    rows, _, why = rank_rows([_board_row("x", weak), _board_row("y", strong)], [weak, strong])  # no default compared
    assert rows[0]["backbone"] == "y" and "was not compared" in why


def test_search_keeps_the_default_head_when_the_best_trial_wins_by_an_image():
    from transferlab.selection.tune import search

    x, y = blobs(n=150, dim=24, spread=4.0)  # near-separable: the heads differ by an image or two
    base = HeadSettings()
    best, result, trials, _ = search(x, y, 3, trials=5, folds=3, seed=1, base=base, show_progress=False)
    top = max((t for t in trials if t["state"] == "complete"), key=lambda t: t["cv_accuracy"])
    assert top["cv_accuracy"] == 1.0 > trials[0]["cv_accuracy"]  # without the rule the search returns top
    assert best == base and result.mean_accuracy == trials[0]["cv_accuracy"]
    assert trials[0]["selected"] and not top["selected"] and "kept the default softmax" in trials[0]["why"]

def test_search_needs_optuna_and_says_what_to_install(monkeypatch):
    from transferlab.errors import MissingDependencyError
    from transferlab.selection.tune import require_optuna

    monkeypatch.setitem(sys.modules, "optuna", None)  # what Python does for a package that is not installed
    with pytest.raises(MissingDependencyError, match=r"transferlab\[tune\]"):
        require_optuna()


def test_tune_time_parses_durations():
    from transferlab.selection.tune import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "2m", "1.5h", None)] == [90, 90, 120, 5400, None]
    with pytest.raises(SelectionError, match="2x"):
        parse_duration("2x")


def test_train_tune_on_the_command_line_keeps_trials_and_best_settings(tiny):
    root, backbone, data = tiny
    cmd = [sys.executable, "-m", "transferlab", "train", str(data), "--backbone", str(backbone), "--tune", "4",
           "--folds", "3", "--name", "tuned", "-q", "--epochs", "20", "--cache-dir", str(root / "cache"),
           "--runs-dir", str(root / "runs"), "--engine", "keras"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = root / "runs" / "tuned"
    trials = (run / "trials.csv").read_text().splitlines()
    assert len(trials) == 5 and trials[0].startswith("number,state,cv_accuracy")
    tuning = json.loads((run / "tuning.json").read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    best = tuning["best_settings"]
    if best["family"] == "logistic":
        assert config["head"] == "logistic" and config["logistic_c"] == best["logistic_c"]
    else:
        assert config["head"] == "keras"
        assert {k: config[k] for k in ("learning_rate", "dropout", "batch_size", "epochs")} == \
            {k: best[k] for k in ("learning_rate", "dropout", "batch_size", "epochs")}
    assert 'id="selection"' in (run / "report.html").read_text() and (run / "search.png").is_file()


def test_compare_command_prints_json_and_errors_as_one_line(tiny, tmp_path):
    root, backbone, data = tiny
    base = [sys.executable, "-m", "transferlab", "compare", str(data), "--folds", "3", "--cache-dir",
            str(root / "cache"), "--runs-dir", str(tmp_path), "--engine", "keras", "--epochs", "20"]
    out = subprocess.run(base + ["--backbones", f"{backbone},resnet50", "--json"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    board = json.loads(out.stdout)
    assert board["skipped"][0]["backbone"] == "resnet50" and board["winner"]["rank"] == 1
    assert board["cv_estimate"] == board["winner"]["cv_accuracy"] and board["test"]["split"] == "test"
    out = subprocess.run(base + ["--backbones", "resnet50", "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: No backbone could be compared")
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- real photos
@pytest.mark.slow
def test_compare_on_real_photos_scores_the_winner_once_on_test(tmp_path):
    data = require_shared("hymenoptera_data")
    from transferlab.selection.compare import compare

    board = compare(data, ["efficientnet_lite0"], folds=3, show_progress=False, runs_dir=str(tmp_path))
    assert board.winner["cv_accuracy"] > 0.85, board.rows
    # hymenoptera is pre-split train/val: no test split, so nothing is scored on test.
    assert board.test is None
    assert {r["family"] for r in board.rows} == {"softmax", "mlp", "logistic"}


def test_a_taken_name_fails_before_the_search_and_overwrite_replaces_it(tiny, monkeypatch):
    import transferlab.selection.tune as tune_module
    from transferlab.cli import main

    root, backbone, data = tiny
    args = ["train", str(data), "--backbone", str(backbone), "--tune", "2", "--folds", "3", "--name", "retuned",
            "--epochs", "5", "--cache-dir", str(root / "cache"), "--runs-dir", str(root / "runs"), "--engine", "keras"]
    assert main(args) == 0
    searched = []
    original = tune_module.tune
    monkeypatch.setattr(tune_module, "tune", lambda *a, **k: searched.append(1) or original(*a, **k))
    assert main(args) == 2 and not searched  # the name is checked before any search
    assert main(args + ["--overwrite"]) == 0 and searched
    assert json.loads((root / "runs" / "retuned" / "config.json").read_text())["status"] == "complete"
