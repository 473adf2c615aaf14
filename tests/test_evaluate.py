"""Tests for transferlab.evaluation: metrics report, console summary and plots."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from transferlab.evaluation.metrics import classification_report, format_summary
from transferlab.evaluation.plots import plot_confusion_matrix, plot_training_curves

NAMES = ["a", "b", "c"]
Y = np.array([0, 0, 0, 1, 1, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],  # a -> a
        [0.4, 0.5, 0.1],  # a -> b
        [0.6, 0.3, 0.1],  # a -> a
        [0.1, 0.8, 0.1],  # b -> b
        [0.2, 0.2, 0.6],  # b -> c
        [0.1, 0.1, 0.8],  # c -> c
    ]
)


def test_hand_computed_example():
    r = classification_report(Y, P, NAMES)
    assert r["num_samples"] == 6
    assert r["class_names"] == NAMES
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.6, 0.8, 0.2, 0.8])))
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]

    # precision = TP / predicted, recall = TP / true.
    expected = {
        "a": (1.0, 2 / 3, 0.8, 3),
        "b": (0.5, 0.5, 0.5, 2),
        "c": (0.5, 1.0, 2 / 3, 1),
    }
    for name, (p, rc, f1, support) in expected.items():
        m = r["per_class"][name]
        assert m["precision"] == pytest.approx(p)
        assert m["recall"] == pytest.approx(rc)
        assert m["f1"] == pytest.approx(f1)
        assert m["support"] == support

    assert r["macro"]["precision"] == pytest.approx(2 / 3)
    assert r["macro"]["recall"] == pytest.approx(13 / 18)
    assert r["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["weighted"]["precision"] == pytest.approx((3 * 1.0 + 2 * 0.5 + 1 * 0.5) / 6)
    assert r["weighted"]["recall"] == pytest.approx(4 / 6)
    assert r["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)

    # Ties keep (true, predicted) index order.
    assert r["most_confused"] == [
        {"true": "a", "predicted": "b", "count": 1},
        {"true": "b", "predicted": "c", "count": 1},
    ]
    assert "top_k_accuracy" not in r


def test_report_is_plain_json():
    r = classification_report(Y.astype(np.int32), P.astype(np.float32), NAMES)
    again = json.loads(json.dumps(r))
    assert again == r

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                assert type(k) is str
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert type(x) in (int, float, str), type(x)

    walk(r)


def test_loss_clips_zero_probability():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = classification_report(np.array([1, 1]), p, ["x", "y"])
    assert math.isfinite(r["loss"])
    assert r["loss"] == pytest.approx(-np.log(1e-7) / 2)


def test_absent_classes_keep_their_row_and_column():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.9, 0.1, 0, 0], [0.2, 0.7, 0.1, 0], [0.1, 0.2, 0.7, 0], [0.6, 0.4, 0, 0]])
    r = classification_report(y, p, ["w", "x", "y", "z"])
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (4, 4)
    assert cm.sum() == 4
    assert cm[:, 3].sum() == 0 and cm[3].sum() == 0
    assert r["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # "y" was predicted once, never true: precision 0 by zero_division, no warning spam.
    assert r["per_class"]["y"]["support"] == 0


def test_most_confused_sorted_and_capped():
    rng = np.random.default_rng(0)
    c = 12
    y = rng.integers(0, c, size=600)
    p = rng.random((600, c))
    r = classification_report(y, p, [f"k{i}" for i in range(c)])
    counts = [m["count"] for m in r["most_confused"]]
    assert len(counts) == 10
    assert counts == sorted(counts, reverse=True)
    assert all(m["true"] != m["predicted"] and m["count"] > 0 for m in r["most_confused"])


def test_most_confused_empty_when_perfect():
    r = classification_report(np.array([0, 1]), np.eye(2), ["x", "y"])
    assert r["most_confused"] == []
    assert r["accuracy"] == 1.0


@pytest.mark.parametrize("c", [2, 5])
def test_no_top_k_for_few_classes(c):
    y = np.arange(c)
    r = classification_report(y, np.eye(c), [str(i) for i in range(c)])
    assert "top_k_accuracy" not in r


def test_top_k_for_many_classes():
    c = 6
    # Each row ranks classes 0 > 1 > ... > 5.
    p = np.tile(np.array([0.3, 0.25, 0.2, 0.12, 0.08, 0.05]), (4, 1))
    y = np.array([0, 2, 3, 5])  # ranks 1, 3, 4, 6
    r = classification_report(y, p, [f"k{i}" for i in range(c)])
    assert r["top_k_accuracy"] == {"top_3": pytest.approx(2 / 4), "top_5": pytest.approx(3 / 4)}
    assert r["accuracy"] == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    ("y", "p", "names", "match"),
    [
        (Y, P[:5], NAMES, "6 samples but probabilities have 5 rows"),
        (Y, P, ["a", "b"], "3 columns but 2 class names"),
        (np.array([0, 1, 3]), np.full((3, 3), 1 / 3), NAMES, r"outside \[0, 2\]: \[3\]"),
        (np.array([0, -1, 2]), np.full((3, 3), 1 / 3), NAMES, "outside"),
        (Y, P.ravel(), NAMES, "must be 2-D"),
        (Y, P[None], NAMES, "must be 2-D"),
        (Y[:, None], P, NAMES, "must be 1-D"),
        (np.array([0.5, 1, 2]), np.full((3, 3), 1 / 3), NAMES, "integer class indices"),
        (Y, np.where(np.eye(6, 3) > 0, np.nan, P), NAMES, "NaN"),
        (np.array([], dtype=int), np.zeros((0, 3)), NAMES, "0 samples"),
        (Y, P, ["a", "a", "c"], "duplicates"),
    ],
)
def test_invalid_inputs(y, p, names, match):
    with pytest.raises(ValueError, match=match):
        classification_report(y, p, names)


def test_float_labels_that_are_integers_are_accepted():
    r = classification_report(Y.astype(np.float32), P, NAMES)
    assert r["accuracy"] == pytest.approx(4 / 6)


def test_format_summary_table_is_aligned():
    names = ["ok", "scratch", "a_long_class_name"]
    r = classification_report(Y, P, names)
    text = format_summary(r)
    assert "accuracy: 0.6667" in text
    assert f"loss: {r['loss']:.4f}" in text
    assert f"macro F1: {r['macro']['f1']:.4f}" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    table = [lines[header]] + lines[header + 2 : header + 2 + len(names)]
    assert [line.split()[0] for line in table[1:]] == names
    # Every column ends at the same character offset in every row.
    assert len({len(line) for line in table}) == 1
    for col in ("precision", "recall", "f1", "support"):
        end = lines[header].index(col) + len(col)
        for line in table:
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), line


def test_format_summary_mentions_top_k():
    c = 7
    r = classification_report(np.arange(c), np.eye(c), [f"k{i}" for i in range(c)])
    assert "top-5 accuracy: 1.0000" in format_summary(r)


# ---------------------------------------------------------------- plots


def _open_png(path):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_confusion_matrix_png(tmp_path):
    r = classification_report(Y, P, NAMES)
    out = plot_confusion_matrix(r["confusion_matrix"], NAMES, tmp_path / "deep" / "er" / "cm.png")
    assert out == tmp_path / "deep" / "er" / "cm.png"
    w, h = _open_png(out)
    assert 400 <= w <= 4000 and 400 <= h <= 4000


def test_confusion_matrix_grows_with_classes(tmp_path):
    small = _open_png(plot_confusion_matrix(np.eye(3, dtype=int), list("abc"), tmp_path / "s.png"))
    names = [f"class_{i}" for i in range(25)]
    big_path = plot_confusion_matrix(np.eye(25, dtype=int), names, tmp_path / "b.png", title="Big")
    big = _open_png(big_path)
    # Nothing drawn touches the canvas edge: axis labels were once clipped off at this size.
    with Image.open(big_path) as im:
        grey = np.asarray(im.convert("L"))
    edges = np.concatenate([grey[:5], grey[-5:], grey[:, :5].T, grey[:, -5:].T], axis=None)
    assert edges.min() > 200
    assert big[0] > small[0] and big[1] > small[1]


def test_normalized_confusion_matrix_with_empty_class(tmp_path):
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 2]])  # class "b" has no samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 RuntimeWarning would mean NaNs in the plot
        out = plot_confusion_matrix(cm, NAMES, tmp_path / "cm_norm.png", normalize=True)
    _open_png(out)


def test_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "x.png")


def test_training_curves_png(tmp_path):
    history = {
        "loss": [1.2, 0.8, 0.6, 0.5, 0.35, 0.3],
        "val_loss": [1.0, 0.85, 0.7, 0.65, 0.5, 0.48],
        "accuracy": [0.5, 0.7, 0.78, 0.82, 0.9, 0.92],
        "val_accuracy": [0.55, 0.68, 0.75, 0.8, 0.86, 0.88],
        "learning_rate": [1e-3] * 4 + [1e-5] * 2,
    }
    out = plot_training_curves(history, tmp_path / "plots" / "curves.png", phase_boundaries=[4])
    assert out == tmp_path / "plots" / "curves.png"
    w, h = _open_png(out)
    assert w > h >= 300  # two panels side by side


def test_training_curves_other_accuracy_name_and_no_val(tmp_path):
    history = {"loss": [0.9], "sparse_categorical_accuracy": [0.6]}
    _open_png(plot_training_curves(history, tmp_path / "one_epoch.png"))


def test_training_curves_loss_only(tmp_path):
    w, h = _open_png(plot_training_curves({"loss": [1.0, 0.5]}, tmp_path / "loss.png"))
    assert w < 2 * h


def test_training_curves_need_something_to_plot(tmp_path):
    with pytest.raises(ValueError, match="neither loss nor accuracy"):
        plot_training_curves({"learning_rate": [0.1]}, tmp_path / "x.png")


def _figure_jobs(tmp_path):
    from transferlab.evaluation.artifacts import confusion_figures
    from transferlab.evaluation.figures import FigureJob

    report = {"confusion_matrix": [[5, 1], [2, 7]], "split": "test"}
    history = {"loss": [1.0, 0.5, float("nan")], "val_loss": [1.1, 0.7, 0.6]}
    return confusion_figures(tmp_path, report, ["ok", "scratch"]) + [
        FigureJob("plot_training_curves", str(tmp_path / "curves.png"), {"history": history, "phase_boundaries": [1]})]


def _assert_pngs(paths):
    assert [p.name for p in paths] == ["confusion_matrix.png", "confusion_matrix_normalized.png", "curves.png"]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300


@pytest.mark.parametrize("prestart", [False, True])
def test_figures_drawn_by_a_helper_process(tmp_path, monkeypatch, prestart):
    from transferlab.evaluation import figures

    monkeypatch.setattr(figures, "_spare_core", lambda: True)
    if prestart:
        figures.prestart_helper()
        assert figures._prestarted is not None
    pending = figures.draw_figures(_figure_jobs(tmp_path), background=True)
    assert pending.in_background and figures._prestarted is None
    paths = pending.wait()
    _assert_pngs(paths)
    assert pending.wait() == paths  # idempotent


def test_unused_prestarted_helper_exits_on_end_of_input(monkeypatch):
    from transferlab.evaluation import figures

    monkeypatch.setattr(figures, "_spare_core", lambda: True)
    figures.prestart_helper()
    helper, figures._prestarted = figures._prestarted, None
    helper.stdin.close()
    assert helper.wait(timeout=60) == 0


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_figures_are_drawn_here_when_the_helper_fails(tmp_path, monkeypatch, executable):
    import sys

    from transferlab.evaluation import figures

    monkeypatch.setattr(figures, "_spare_core", lambda: True)
    monkeypatch.setattr(sys, "executable", executable)
    _assert_pngs(figures.draw_figures(_figure_jobs(tmp_path), background=True).wait())


def test_unknown_figure_is_refused(tmp_path):
    from transferlab.evaluation.figures import FigureJob, draw_figures

    with pytest.raises(ValueError, match="unknown plot"):
        draw_figures([FigureJob("os.system", str(tmp_path / "x.png"), {})])
