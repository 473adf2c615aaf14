"""Inspection data: imbalance handled by default, an operating point on P(good), the "uncertain" outcome."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.errors import ConfigError
from transferlab.training.config import TrainConfig
from transferlab.training.head import choose_class_weight
from transferlab.training.imbalance import imbalance_ratio, is_imbalanced
from transferlab.training.operating_point import (
    UNCERTAIN,
    DecisionRule,
    choose_threshold,
    decide,
    decision_figures,
    select_rule,
)

NAMES = ["crack", "good", "hole"]


# ------------------------------------------------------------------ threshold selection
def test_threshold_is_the_lowest_that_catches_the_target_share():
    rng = np.random.default_rng(0)
    p_good = rng.uniform(size=200)
    is_defect = rng.uniform(size=200) < 0.3 + 0.5 * (p_good < 0.5)  # defects tend to have low P(good)
    for target in (0.5, 0.8, 0.95, 1.0):
        t = choose_threshold(p_good, is_defect, target)
        caught = p_good[is_defect] <= t
        assert caught.mean() >= target
        # Fewest false alarms: the highest defect score below t is needed to reach the target ...
        needed = p_good[is_defect][p_good[is_defect] <= t].max()
        assert np.mean(p_good[is_defect] < needed) < target
        # ... and t lies midway between it and the next score of the split: same calls, a margin.
        above = p_good[p_good > needed]
        assert t == pytest.approx((needed + above.min()) / 2) if len(above) else t == needed
        assert not ((p_good > needed) & (p_good <= t)).any()


def test_threshold_needs_both_kinds_of_images():
    with pytest.raises(ConfigError, match="both good and defective"):
        choose_threshold(np.array([0.2, 0.4]), np.array([True, True]), 0.9)


def test_decide_applies_the_threshold_and_the_reject_option():
    probs = np.array([[0.05, 0.90, 0.05],   # confident good
                      [0.30, 0.60, 0.10],   # P(good) 0.6 <= 0.7: defective, most probable defect: crack
                      [0.10, 0.55, 0.35],   # defective: hole
                      [0.70, 0.20, 0.10]])  # defective anyway
    rule = DecisionRule(good_class="good", threshold=0.7, target_recall=0.9, uncertain_below=0.65)
    labels, uncertain = decide(probs, NAMES, rule)
    assert [NAMES[i] for i in labels] == ["good", "crack", "hole", "crack"]
    assert uncertain.tolist() == [False, True, True, False]
    labels, uncertain = decide(probs, NAMES, None)  # no rule: argmax, nothing uncertain
    assert labels.tolist() == [1, 1, 1, 0] and not uncertain.any()


def test_select_rule_reports_its_validation_figures():
    rng = np.random.default_rng(1)
    y = np.array([1] * 60 + [0] * 20 + [2] * 20)
    logits = rng.normal(size=(100, 3)) + 2.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rule = select_rule(probs, y, NAMES, good_class="good", target_recall=0.95, uncertain_below=None)
    v = rule.validation
    assert v["defect_recall"] >= 0.95 and v["defective"] == 40 and v["good"] == 60
    labels, _ = decide(probs, NAMES, rule)
    assert v["false_alarm_rate"] == round(float(np.mean(labels[y == 1] != 1)), 4)
    assert DecisionRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    with pytest.raises(ConfigError, match="'ok' is not one of the classes"):
        select_rule(probs, y, NAMES, good_class="ok", target_recall=0.95, uncertain_below=None)


def test_decision_settings_are_checked():
    assert TrainConfig(good_class="good").target_recall == 0.95
    with pytest.raises(ConfigError, match="needs good_class"):
        TrainConfig(target_recall=0.9)
    with pytest.raises(ConfigError, match="target_recall"):
        TrainConfig(good_class="good", target_recall=1.5)
    assert TrainConfig().class_weight == "auto"
    assert TrainConfig(class_weight=None).class_weight == "none"  # runs written before "auto" load


# ------------------------------------------------------------------ imbalance default
def _imbalanced_features(seed: int = 0):
    """Three overlapping Gaussian classes, one rare: 200 / 200 / 12 training images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 0.4

    def sample(counts):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
        return (centres[y] + rng.normal(size=(len(y), 16))).astype(np.float32), y
    return sample([200, 200, 12]), sample([40, 40, 15])


def test_imbalance_rule():
    assert imbalance_ratio([300, 100, 0]) == 3.0 and is_imbalanced([300, 100])
    assert not is_imbalanced([299, 100]) and imbalance_ratio([5]) == 1.0


def test_auto_class_weight_compares_on_validation_and_is_deterministic():
    (x, y), (xv, yv) = _imbalanced_features()
    a = choose_class_weight(x, y, xv, yv, 3, epochs=40, seed=3)
    b = choose_class_weight(x, y, xv, yv, 3, epochs=40, seed=3)
    assert a == b  # same seed, same fits, same choice and scores
    assert a.imbalanced and a.ratio == round(200 / 12, 3) and a.metric == "macro_f1"
    assert set(a.scores) == {"none", "balanced"}
    best = max(a.scores, key=lambda v: (a.scores[v]["macro_f1"], a.scores[v]["balanced_accuracy"],
                                        v == "balanced"))
    assert a.class_weight == (None if best == "none" else "balanced")
    assert "chosen on validation macro-F1" in a.reason
    # On this data the rare class needs the weights: the balanced head recalls it better.
    assert a.scores["balanced"]["balanced_accuracy"] > a.scores["none"]["balanced_accuracy"]


def test_auto_class_weight_leaves_balanced_data_alone():
    (x, y), (xv, yv) = _imbalanced_features()
    keep = y != 2
    choice = choose_class_weight(x[keep], y[keep], xv, yv, 3)
    assert choice.class_weight is None and not choice.imbalanced and choice.scores is None
    assert choose_class_weight(x, y, None, None, 3).class_weight == "balanced"  # nothing to compare on
    assert choose_class_weight(x, y, xv, yv, 3, requested="none").class_weight is None


# ------------------------------------------------------------------ end to end on a tiny backbone
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspection")
    backbone = save_tiny_cnn(root / "tiny.keras")
    data = make_class_folders(root / "data", {"crack": 8, "good": 40, "hole": 8}, size=40)
    clf = transferlab.train(data, show_progress=False, backbone=str(backbone), runs_dir=str(root / "runs"),
                            name="op", cache_dir=str(root / "cache"), engine="keras", epochs=30,
                            val_fraction=0.3, test_fraction=0.2, good_class="good", target_recall=0.9,
                            uncertain_below=0.6)
    return root, data, clf


def test_training_records_the_imbalance_choice_and_the_operating_point(run):
    root, data, clf = run
    config = json.loads((clf.run_dir / "config.json").read_text())
    imbalance = config["extras"]["imbalance"]
    assert imbalance["requested"] == "auto" and imbalance["imbalanced"] and imbalance["ratio"] >= 3
    assert imbalance["class_weight"] in (None, "balanced") and imbalance["scores"]
    rule = config["extras"]["operating_point"]
    assert rule["good_class"] == "good" and rule["chosen_on"] == "val" and rule["target_recall"] == 0.9
    assert rule["validation"]["defect_recall"] >= 0.9
    metrics = json.loads((clf.run_dir / "metrics.json").read_text())
    op = metrics["operating_point"]
    assert op["split"] == "test" and op["threshold"] == rule["threshold"]
    assert op["defective"] + op["good"] == metrics["num_samples"]
    assert (clf.run_dir / "precision_recall.png").stat().st_size > 1000
    html = (clf.run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="operating-point"' in html and "lowest recall" in html and "Class weighting" in html
    # The report leads with macro F1 on imbalanced data.
    assert html.index("macro F1") < html.index(">accuracy<")


def test_predict_applies_the_saved_operating_point(run):
    root, data, clf = run
    loaded = transferlab.load(clf.run_dir)
    assert loaded.decision == clf.decision and loaded.decision.threshold is not None
    files = sorted(str(p) for p in data.rglob("*.png"))
    probs = loaded.predict_proba(files)
    labels, uncertain = decide(probs, loaded.class_names, loaded.decision)
    predictions = loaded.predict(files, top_k=3)
    assert [p.predicted for p in predictions] == [loaded.class_names[i] for i in labels]
    assert [p.outcome == UNCERTAIN for p in predictions] == uncertain.tolist()
    assert all(p.outcome == p.predicted for p, u in zip(predictions, uncertain) if not u)
    # The threshold changes answers where P(good) is high but not high enough.
    g = loaded.class_names.index("good")
    flipped = (probs.argmax(axis=1) == g) & (probs[:, g] <= loaded.decision.threshold)
    assert all(predictions[i].label != "good" for i in np.flatnonzero(flipped))


def test_uncertain_outcome_and_its_share(run, capsys):
    from transferlab.cli import main

    root, data, clf = run
    loaded = transferlab.load(clf.run_dir)
    loaded.decision.uncertain_below = 1.01  # nothing is that sure: every answer goes to a person
    predictions = loaded.predict(str(data / "crack"))
    assert predictions and all(p.outcome == UNCERTAIN and p.label in loaded.class_names for p in predictions)
    figures = decision_figures(loaded.predict_proba(str(data / "crack")), np.zeros(len(predictions), int),
                               loaded.class_names, loaded.decision)
    assert figures["uncertain_share"] == 1.0 and figures["accuracy_decided"] is None
    capsys.readouterr()
    assert main(["predict", str(clf.run_dir), str(data / "hole"), "--format", "csv", "--uncertain-below", "1.0"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(out.splitlines()))
    assert len(rows) == 8 and {r["outcome"] for r in rows} == {UNCERTAIN}
    assert "uncertain (top probability < 1): 8 of 8 (100.0%)" in err
    assert main(["predict", str(clf.run_dir), str(data / "hole"), "--format", "csv", "--argmax"]) == 0
    rows = list(csv.DictReader(capsys.readouterr()[0].splitlines()))
    assert all(r["outcome"] == r["predicted"] for r in rows)


def test_model_card_carries_the_decision_and_a_bare_export_applies_it(run, tmp_path):
    from transferlab.data.decode import ResizeConfig
    from transferlab.export.card import build_model_card

    root, data, clf = run
    config = json.loads((clf.run_dir / "config.json").read_text())
    card = build_model_card(clf.run_dir, config, clf.class_names, ResizeConfig(**config["resize"]), {})
    decision = card["decision"]
    assert decision["threshold"] == config["extras"]["operating_point"]["threshold"]
    assert decision["good_class"] == "good" and "uncertain_below" in decision["apply"]
    # A folder with only the model, its labels and the card (no config.json): the card's rule applies.
    bare = tmp_path / "deploy"
    bare.mkdir()
    shutil.copy(clf.run_dir / "model.keras", bare / "model.keras")
    shutil.copy(clf.run_dir / "labels.txt", bare / "labels.txt")
    (bare / "model_card.json").write_text(json.dumps(card, default=str))
    loaded = transferlab.load(bare)
    assert loaded.decision.threshold == decision["threshold"] and loaded.decision.uncertain_below == 0.6


def test_evaluate_reports_the_figures_at_the_saved_point(run, tmp_path):
    root, data, clf = run
    report = transferlab.evaluate(clf.run_dir, data, split="all", show_progress=False, out_dir=tmp_path / "eval")
    op = report["operating_point"]
    assert op["images"] == 56 and op["defective"] == 16 and op["good"] == 40
    assert op["threshold"] == clf.decision.threshold and op["rule"]["chosen_on"] == "val"
    assert (tmp_path / "eval" / "precision_recall.png").is_file()
    from transferlab.evaluation.metrics import format_summary

    text = format_summary(report)
    assert text.splitlines()[1].startswith("macro F1") and "operating point (evaluated split)" in text


def test_unknown_good_class_fails_before_any_work(run):
    root, data, clf = run
    with pytest.raises(ConfigError, match="'Free' is not one of the classes"):
        transferlab.train(data, show_progress=False, backbone=str(root / "tiny.keras"), runs_dir=str(root / "runs"),
                          name="bad", cache_dir=str(root / "cache"), engine="keras", good_class="Free")


def test_console_summary_leads_with_macro_f1_only_when_imbalanced():
    from transferlab.evaluation.metrics import classification_report, format_summary

    y = np.array([0] * 30 + [1] * 30 + [2] * 3)
    probs = np.eye(3)[np.where(y == 2, 1, y)] * 0.8 + 0.2 / 3  # the rare class is always missed
    text = format_summary(classification_report(y, probs, NAMES))
    assert text.splitlines()[1].startswith("macro F1")
    assert "recall per class: crack 1.000, good 1.000, hole 0.000" in text
    balanced = format_summary(classification_report(y[:60], probs[:60], NAMES))
    assert balanced.splitlines()[1].startswith("accuracy")


def test_resize_mode_auto_picks_by_validation(run):
    root, data, _ = run
    clf = transferlab.train(data, show_progress=False, backbone=str(root / "tiny.keras"), runs_dir=str(root / "runs"),
                            name="resize-auto", cache_dir=str(root / "cache"), engine="keras", epochs=10,
                            val_fraction=0.3, test_fraction=0.2, resize_mode="auto")
    config = json.loads((clf.run_dir / "config.json").read_text())
    choice = config["extras"]["resize"]
    assert set(choice["scores"]) >= {"squash", "pad"} and config["config"]["resize_mode"] == "auto"
    best = max(choice["scores"], key=lambda m: (choice["scores"][m]["macro_f1"], -choice["scores"][m]["val_loss"]))
    assert choice["chosen"] == best == config["resize"]["mode"] == clf.resize.mode
