"""The fine-tune recipe: augmentation presets, layer-wise rates, the cached frozen bottom, time budgets."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.errors import ConfigError


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth, asymmetric content so flips and rotations change pixels.
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x * y) % 255], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.float32)


# ---------------------------------------------------------------- augmentation presets
@pytest.mark.parametrize("name", ["light", "standard", "micrograph", "aerial"])
def test_each_preset_is_deterministic_under_a_seed_and_varies_with_it(name):
    import tensorflow as tf

    from transferlab.data.augment import augment_image, augment_preset

    config = augment_preset(name)
    image = tf.constant(_image())

    def run(a, b):
        return augment_image(image, tf.constant([a, b], tf.int64), config).numpy()

    first, again = run(1, 2), run(1, 2)
    np.testing.assert_array_equal(first, again)
    assert first.shape == image.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 255.0
    outputs = [run(1, s) for s in range(8)]
    assert len({o.tobytes() for o in outputs}) == 8  # different seeds, different views


def test_micrograph_rotates_and_flips_vertically_standard_never_does():
    import tensorflow as tf

    from transferlab.data.augment import AugmentConfig, augment_image, augment_preset

    image = tf.constant(_image(size=16))
    geometric_only = {"brightness": 0.0, "contrast": 0.0}
    micro = AugmentConfig(**{**augment_preset("micrograph").to_dict(), **geometric_only, "min_crop_area": 1.0})
    seen = {augment_image(image, tf.constant([0, s], tf.int64), micro).numpy().round(3).tobytes() for s in range(64)}
    dihedral = {tf.image.rot90(img, k).numpy().round(3).tobytes()
                for img in (image, tf.image.flip_left_right(image)) for k in range(4)}
    assert seen == dihedral  # exactly the 8 symmetries of the square, and all of them

    standard = AugmentConfig(**{**augment_preset("standard").to_dict(), **geometric_only, "min_crop_area": 1.0})
    seen = {augment_image(image, tf.constant([0, s], tf.int64), standard).numpy().round(3).tobytes()
            for s in range(32)}
    assert seen == {image.numpy().round(3).tobytes(), tf.image.flip_left_right(image).numpy().round(3).tobytes()}


def test_light_preset_augments_exactly_as_the_old_default():
    """Runs checkpointed before the presets existed resume with the same augmentation."""
    import tensorflow as tf

    from transferlab.data.augment import AugmentConfig, augment_image, augment_preset

    assert augment_preset("light") == AugmentConfig()
    image = tf.constant(_image())
    seed = tf.constant([5, 9], tf.int64)
    s = tf.random.experimental.stateless_split(seed, num=5)
    expected = tf.image.stateless_random_flip_left_right(image / 255.0, s[0])  # the old code path
    u = tf.random.stateless_uniform([3], s[2])
    keep = 1.0 - 0.1 * u[0]
    box = tf.stack([(1.0 - keep) * u[1], (1.0 - keep) * u[2], (1.0 - keep) * u[1] + keep,
                    (1.0 - keep) * u[2] + keep])[None]
    expected = tf.image.crop_and_resize(expected[None], box, [0], [32, 32])[0]
    expected = tf.image.stateless_random_brightness(expected, 0.1, s[3])
    expected = tf.image.stateless_random_contrast(expected, 0.9, 1.1, s[4])
    np.testing.assert_allclose(augment_image(image, seed, AugmentConfig()).numpy(),
                               tf.clip_by_value(expected, 0.0, 1.0).numpy() * 255.0, atol=1e-4)


def test_augment_setting_accepts_presets_and_rejects_unknown_names():
    from transferlab.data.augment import AugmentConfig, resolve_augment
    from transferlab.training.config import TrainConfig

    assert resolve_augment("none") is None and resolve_augment(None) is None
    assert resolve_augment({"rotate90": True}) == AugmentConfig(rotate90=True)
    config = TrainConfig(augment="micrograph")
    assert TrainConfig.from_dict(config.to_dict()).augment == "micrograph"
    with pytest.raises(ValueError, match="augment must be one of.*micrograph"):
        TrainConfig(augment="microscope")
    with pytest.raises(ValueError, match="min_crop_area"):
        AugmentConfig(min_crop_area=0.0)


# ---------------------------------------------------------------- layer-wise rates, optimizer
def test_layer_groups_follow_blocks_and_rates_decay_downwards():
    from transferlab.backbones.efficientnet_lite import build_efficientnet_lite
    from transferlab.training.finetune import layer_groups

    base = build_efficientnet_lite("efficientnet_lite0", weights=None, input_shape=(64, 64, 3))
    groups = layer_groups(base)
    assert groups["stem_conv"] == 0 and groups["block1a_dwconv"] == 1
    assert groups["block6a_expand_conv"] == groups["block6a_project_conv"] != groups["block6b_expand_conv"]
    assert groups["top_conv"] == max(groups.values()) == 17  # stem, 16 blocks, top


def test_layer_decay_scales_each_variables_step(tmp_path):
    """With decay d the variables of the block below the top move d times as far (plain SGD-like
    check on Adam: its first step has size ~lr for every variable, so ratios show the multipliers)."""
    import keras

    from transferlab.backbones import resolve_backbone
    from transferlab.training.config import TrainConfig
    from transferlab.training.finetune import compile_fine_tune, find_base, rate_multipliers, set_trainable_top
    from transferlab.training.head import assemble_classifier, build_head

    backbone, info = resolve_backbone(str(save_tiny_cnn(tmp_path / "m.keras")))
    model = assemble_classifier(backbone, build_head(info.feature_dim, 3, dropout=0.0))
    set_trainable_top(find_base(model), "all")
    multipliers = rate_multipliers(model, 0.5)
    config = TrainConfig(layer_decay=0.5, clip_norm=0.0, weight_decay=0.0, label_smoothing=0.0)
    compile_fine_tune(model, 1e-3, config, multipliers)
    before = {layer: [w.copy() for w in find_base(model).get_layer(layer).get_weights()] for layer in ("conv1", "conv2")}
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    model.train_on_batch(x, keras.utils.to_categorical(np.arange(8) % 3, 3))
    step = {layer: np.abs(find_base(model).get_layer(layer).get_weights()[0] - before[layer][0]).max()
            for layer in before}
    # Adam's first step is ~lr x sign(g) for every element: conv2 (top) ~1e-3, conv1 ~5e-4.
    assert step["conv2"] == pytest.approx(1e-3, rel=0.05)
    assert step["conv1"] == pytest.approx(5e-4, rel=0.05)


# ---------------------------------------------------------------- cached frozen bottom
def test_cut_points_never_split_a_residual_block():
    from transferlab.backbones.efficientnet_lite import build_efficientnet_lite
    from transferlab.training.cached_top import cut_points

    base = build_efficientnet_lite("efficientnet_lite0", weights=None, input_shape=(64, 64, 3))
    cuts = cut_points(base)
    assert "block5c_add" in cuts and "block5a_project_bn" in cuts
    assert "block5c_project_bn" not in cuts  # its block input is still read by block5c_add
    assert "block5c_expand_conv" not in cuts


def test_cached_views_train_the_same_network_as_streaming(tmp_path):
    """Top trained on cached bottom outputs (no augmentation): same losses as running the whole network."""
    import keras

    from transferlab.backbones import resolve_backbone
    from transferlab.data.dataset import load_dataset
    from transferlab.data.pipeline import ResizeConfig
    from transferlab.training.cached_top import compute_views, cut_below, split_classifier
    from transferlab.training.config import TrainConfig
    from transferlab.training.finetune import find_base, fine_tune, set_trainable_top
    from transferlab.training.head import assemble_classifier, build_head

    data = make_class_folders(tmp_path / "d", {"a": 8, "b": 8}, size=32)
    records = load_dataset(data, show_progress=False, val_fraction=0.25, test_fraction=0.0).records
    paths, keys = [r.path for r in records], [r.sha256 for r in records]
    labels = [0 if r.label == "a" else 1 for r in records]
    config = TrainConfig(augment=None, fine_tune_epochs=2, fine_tune_batch_size=4, label_smoothing=0.0,
                         fine_tune_lr=1e-3, schedule="constant", layer_decay=0.7, clip_norm=1.0, weight_decay=0.01)
    backbone_file = save_tiny_cnn(tmp_path / "m.keras", batchnorm=True)

    def run(cached: bool):
        keras.utils.set_random_seed(0)
        backbone, info = resolve_backbone(str(backbone_file))
        model = assemble_classifier(backbone, build_head(info.feature_dim, 2, dropout=0.0))
        unfrozen = set_trainable_top(find_base(model), "1")
        views = None
        if cached:
            cut = cut_below(find_base(model), unfrozen)
            bottom, _, shape = split_classifier(model, cut)
            views = compute_views(bottom, cut, shape, (paths[:12], keys[:12]), (paths[12:], keys[12:]),
                                  ResizeConfig(32), None, views=2, seed=0, cache_root=tmp_path / "cache",
                                  fingerprint={"test": 1}, engine="keras", show_progress=False)
            assert views.train.shape == (2, 12, int(np.prod(shape))) and views.val.shape[0] == 4
        history = fine_tune(model, (paths[:12], labels[:12]), (paths[12:], labels[12:]), ResizeConfig(32), config,
                            num_classes=2, callbacks=[], views=views)
        return history, model

    streamed, model_a = run(False)
    cached, model_b = run(True)
    np.testing.assert_allclose(cached["loss"], streamed["loss"], rtol=2e-3)
    np.testing.assert_allclose(cached["val_loss"], streamed["val_loss"], rtol=2e-3)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model_b.predict(x, verbose=0), model_a.predict(x, verbose=0), atol=2e-3)


# ---------------------------------------------------------------- time budgets
@pytest.mark.parametrize("text, seconds", [("600", 600), (90, 90), ("90s", 90), ("15m", 900), ("1.5h", 5400),
                                           ("1h30m", 5400), (" 2m 30s ", 150)])
def test_parse_duration(text, seconds):
    from transferlab.training.budget import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "0", "-5m", "15 minutes"])
def test_parse_duration_rejects_what_is_not_a_duration(text):
    from transferlab.training.budget import parse_duration

    with pytest.raises(ValueError, match="Time budget"):
        parse_duration(text)


def test_plan_epochs():
    from transferlab.training.budget import plan_epochs

    assert plan_epochs(100, 9.0) == 11
    assert plan_epochs(100, 60.0) == 0  # fewer than the minimum of 2: not worth starting
    assert plan_epochs(1e6, 1.0, maximum=12) == 12


# ---------------------------------------------------------------- strategy auto
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    backbone = save_tiny_cnn(root / "tiny_bn.keras", batchnorm=True)
    data = make_class_folders(root / "data", {"red": 24, "green": 24, "blue": 24}, size=40)
    return root, backbone, data


def _auto(root, backbone, name, **kwargs):
    base = dict(backbone=str(backbone), runs_dir=str(root / "runs"), name=name, cache_dir=str(root / "cache"),
                engine="keras", epochs=5, val_fraction=0.2, test_fraction=0.2, fine_tune_batch_size=4,
                strategy="auto", patience=0, fine_tune_patience=0)
    return {**base, **kwargs}


def test_auto_fits_fine_tuning_to_the_time_budget(tiny):
    import json
    import time

    import transferlab

    root, backbone, data = tiny
    budget = 45.0
    start = time.perf_counter()
    # 5000 epochs would take far longer than 45 s on any machine (200 fit in 45 s on an idle
    # 2-core one): the plan must fit the budget instead.
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "budget", time_budget=budget,
                                                                fine_tune_epochs=5000))
    wall = time.perf_counter() - start
    assert wall <= budget * 1.1
    meta = json.loads((clf.run_dir / "config.json").read_text())
    assert wall - 1 <= meta["timing"]["budget_spent_seconds"] <= wall
    fine = meta["fine_tune"]
    assert 2 <= fine["planned_epochs"] < 5000 and len(fine["epoch_seconds"]) == fine["planned_epochs"]
    # It used the budget rather than stopping at the first estimate: at least half of it.
    assert meta["timing"]["budget_spent_seconds"] >= budget / 2
    phases = meta["extras"]["strategy"]["phases"]
    assert [p["phase"] for p in phases] == ["frozen features + head", "fine-tune"]
    assert meta["extras"]["strategy"]["kept"] in ("head", "fine-tune") and meta["extras"]["strategy"]["why"]
    assert "gain_val_loss" in phases[1]


def test_auto_skips_fine_tuning_when_the_budget_is_spent(tiny):
    import transferlab

    root, backbone, data = tiny
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "no-time", time_budget=1.0))
    strategy = clf.metadata["extras"]["strategy"]
    assert strategy["kept"] == "head" and "too short" in strategy["why"]
    assert [p["phase"] for p in strategy["phases"]] == ["frozen features + head"]
    assert clf.metadata["metrics"]["num_samples"] > 0


def test_auto_keeps_the_fine_tuned_model_only_if_validation_improves(tiny):
    """A rate that wrecks the network: the head on frozen features is kept, backbone untouched."""
    import keras

    import transferlab

    root, backbone, data = tiny
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "wrecked", fine_tune_epochs=3,
                                                                fine_tune_lr=50.0, warmup_epochs=0,
                                                                fine_tune_patience=3, schedule="constant"))
    strategy = clf.metadata["extras"]["strategy"]
    head, fine = strategy["phases"]
    assert fine["val_loss"] >= head["val_loss"]
    assert strategy["kept"] == "head" and not fine["kept"]
    original = keras.models.load_model(backbone)
    saved = keras.models.load_model(clf.run_dir / "model.keras")
    base = next(layer for layer in saved.layers if layer.name.startswith("backbone")).get_layer("base")
    np.testing.assert_array_equal(base.get_layer("conv2").get_weights()[0],
                                  original.get_layer("conv2").get_weights()[0])

    good = transferlab.train(data, show_progress=False, **_auto(root, backbone, "sane", fine_tune_epochs=3,
                                                                 fine_tune_patience=3))
    head, fine = good.metadata["extras"]["strategy"]["phases"]
    assert (good.metadata["extras"]["strategy"]["kept"] == "fine-tune") == (fine["val_loss"] < head["val_loss"])


_BUDGET_RUNNER = """
import sys, time, keras, transferlab
from transferlab.api import finetune_phase, training as trainer
class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.5)
# Slow epochs (in both phases) so that the test can interrupt the run in the middle.
trainer.extra_callbacks = finetune_phase.extra_callbacks = lambda run_dir, config: [Slow()]
transferlab.train({data!r}, show_progress=False, **{settings!r})
"""


def test_resume_of_a_budgeted_run_continues_its_plan_and_budget(tiny):
    import json
    import subprocess
    import sys
    import time

    import transferlab

    root, backbone, data = tiny
    budget = 60.0
    settings = _auto(root, backbone, "resumed", time_budget=budget, fine_tune_epochs=5000)
    run_dir = root / "runs" / "resumed"
    state_path = run_dir / "checkpoint" / "state.json"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _BUDGET_RUNNER.format(data=str(data), settings=settings)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {}
    while time.perf_counter() - started < 120:
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("phase") == "fine-tune" and state.get("epochs_done", 0) >= 3:
                break
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    planned, spent = state["budget"]["planned_epochs"], state["budget"]["spent_seconds"]
    assert 3 < planned < 5000 and 0 < spent < budget

    resumed_at = time.perf_counter()
    clf = transferlab.resume(run_dir, show_progress=False)
    second_process = time.perf_counter() - resumed_at
    meta = clf.metadata
    assert meta["fine_tune"]["planned_epochs"] <= planned  # the plan is continued, never stretched
    assert len(meta["extras"]["strategy"]["phases"][1:]) == 1
    rows = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert sum(",fine-tune," in r for r in rows) == meta["fine_tune"]["planned_epochs"]
    # The budget counts both processes (each from its train/resume call, the report included) and
    # ends within +10%; the epoch cut short by the kill is lost, and not counted.
    assert meta["timing"]["budget_spent_seconds"] <= budget * 1.1
    assert spent + second_process <= budget * 1.1 + 2


def test_auto_depth_rule_fine_tunes_every_layer_only_when_the_budget_fits_it():
    from transferlab.training import auto
    from transferlab.training.config import TrainConfig

    deep, why = auto.choose_depth(1000.0, 0.01, n_train=100, n_val=10)  # ~1.8 s per epoch
    assert deep and "every layer" in why
    deep, why = auto.choose_depth(100.0, 0.02, n_train=1400, n_val=170)  # ~51 s per epoch: 1 fits
    assert not deep and "1 of the 8 wanted" in why and "--unfreeze all" in why
    # Without a budget, 20 minutes: blood_cells' size fits on 2 cores, ten times that does not.
    deep, why = auto.choose_depth(auto.UNBUDGETED_SECONDS, 0.02, n_train=1400, n_val=170, budgeted=False)
    assert deep and "20 minutes allowed without --time-budget" in why
    deep, why = auto.choose_depth(auto.UNBUDGETED_SECONDS, 0.02, n_train=14000, n_val=1700, budgeted=False)
    assert not deep and "top 16 layers" in why
    for strategy in ("auto", "fine-tune"):  # the default depth is chosen, a depth the user gave is kept
        assert TrainConfig(strategy=strategy).unfreeze == "auto"
        assert auto.may_choose_depth(TrainConfig(strategy=strategy))
        assert not auto.may_choose_depth(TrainConfig(strategy=strategy, unfreeze="4"))
        assert not auto.may_choose_depth(TrainConfig(strategy=strategy, unfreeze="all"))
        assert not auto.may_choose_depth(TrainConfig(strategy=strategy, unfreeze_from="conv2"))
    with pytest.raises(ConfigError, match="'auto', 'all' or a number"):
        TrainConfig(unfreeze="most")


def test_auto_with_time_to_spare_fine_tunes_every_layer_and_keeps_the_users_settings(tiny):
    import json

    import transferlab

    root, backbone, data = tiny
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "deep", time_budget=600,
                                                                fine_tune_epochs=2))
    meta = json.loads((clf.run_dir / "config.json").read_text())
    depth = meta["extras"]["strategy"]["depth"]
    assert depth["all_layers"] and "every layer" in depth["why"]
    assert {"conv1", "conv2"} <= set(meta["fine_tune"]["unfrozen_layers"])
    assert len(meta["fine_tune"]["epoch_seconds"]) <= 2  # the user's fine_tune_epochs, not the recipe's 12
    chosen = transferlab.train(data, show_progress=False, **_auto(root, backbone, "told", time_budget=600,
                                                                   fine_tune_epochs=1, unfreeze="1"))
    told = json.loads((chosen.run_dir / "config.json").read_text())
    assert "depth" not in told["extras"]["strategy"] and len(told["fine_tune"]["unfrozen_layers"]) == 1


def test_plain_fine_tune_without_a_budget_chooses_its_depth_and_says_why(tiny, monkeypatch):
    import json

    import transferlab
    from transferlab.training import auto

    root, backbone, data = tiny
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "plain-deep", strategy="fine-tune",
                                                                fine_tune_epochs=2))
    meta = json.loads((clf.run_dir / "config.json").read_text())
    depth = meta["extras"]["strategy"]["depth"]
    assert depth["all_layers"] and "without --time-budget" in depth["why"]
    assert {"conv1", "conv2"} <= set(meta["fine_tune"]["unfrozen_layers"])
    assert len(meta["fine_tune"]["epoch_seconds"]) == 2  # the user's epochs, not the recipe's 8
    assert meta["fine_tune"]["cached_bottom"] is None  # every layer trains: images stream

    monkeypatch.setattr(auto, "UNBUDGETED_SECONDS", 1e-6)  # nothing fits: the top layers
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "plain-top", strategy="fine-tune",
                                                                fine_tune_epochs=1))
    meta = json.loads((clf.run_dir / "config.json").read_text())
    assert not meta["extras"]["strategy"]["depth"]["all_layers"]
    assert "top 16 layers" in meta["extras"]["strategy"]["depth"]["why"]


def test_operating_point_of_a_kept_fine_tune_is_chosen_on_the_fine_tuned_model(tiny):
    """Strategy auto that keeps fine-tuning: the threshold is chosen on what the saved model
    predicts, not on the head's probabilities over the frozen features."""
    import csv

    import transferlab
    from transferlab.training.operating_point import DecisionRule, decision_figures

    root, backbone, data = tiny
    # A one-epoch head leaves room for fine-tuning (which trains the head too) to lower the loss.
    clf = transferlab.train(data, show_progress=False, **_auto(root, backbone, "point", epochs=1, time_budget=600,
                                                                fine_tune_epochs=3, good_class="red",
                                                                target_recall=0.9))
    assert clf.metadata["extras"]["strategy"]["kept"] == "fine-tune"
    rule = DecisionRule.from_metadata(clf.metadata)
    with open(clf.run_dir / "splits.csv", newline="") as fh:
        val = [row for row in csv.DictReader(fh) if row["split"] == "val"]
    classes = list(clf.classes_)
    probs = clf.predict_proba([str(data / row["path"]) for row in val])
    y = np.array([classes.index(row["label"]) for row in val])
    expected = decision_figures(probs, y, classes, rule)
    for key in ("defect_recall", "false_alarm_rate", "defective", "good"):
        assert rule.validation[key] == expected[key], key
