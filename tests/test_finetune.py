"""Fine-tuning: which layers train, BatchNorm untouched, --from, checkpoints, resume, Ctrl-C."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    backbone = save_tiny_cnn(root / "tiny_bn.keras", batchnorm=True)
    data = make_class_folders(root / "data", {"red": 12, "green": 12, "blue": 12}, size=40)
    return root, backbone, data


def _settings(root, backbone, name, **kwargs):
    base = dict(backbone=str(backbone), runs_dir=str(root / "runs"), name=name, cache_dir=str(root / "cache"),
                engine="keras", epochs=3, val_fraction=0.2, test_fraction=0.2, fine_tune_epochs=3,
                fine_tune_batch_size=8, strategy="fine-tune", patience=0, fine_tune_patience=0)
    return {**base, **kwargs}


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_trainable_layers_for_each_option(tmp_path):
    import keras

    from transferlab.backbones import resolve_backbone
    from transferlab.training.finetune import find_base, set_trainable_top

    model, _ = resolve_backbone(str(save_tiny_cnn(tmp_path / "m.keras", batchnorm=True)))
    base = find_base(model)
    assert not any(layer.trainable_weights for layer in base.layers)  # frozen by default
    assert set_trainable_top(base, "1") == ["conv2"]
    assert set_trainable_top(base, "2") == ["conv1", "conv2"]
    assert set_trainable_top(base, "all") == ["conv1", "conv2"]
    assert set_trainable_top(base, "50") == ["conv1", "conv2"]  # more than there are: all of them
    assert set_trainable_top(base, "5", unfreeze_from="conv2") == ["conv2"]
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable  # never unfrozen
    assert set_trainable_top(base, "0") == [] and not base.trainable
    with pytest.raises(ValueError, match="No layer named"):
        set_trainable_top(base, unfreeze_from="conv9")


def test_fine_tune_keeps_bn_statistics_and_lowers_training_loss(setup):
    import keras

    root, backbone, data = setup
    # No dropout/augmentation/smoothing: the training loss then reflects the fit alone.
    clf = transferlab.train(data, show_progress=False, **_settings(
        root, backbone, "ft", unfreeze="all", fine_tune_epochs=10, fine_tune_lr=1e-2, dropout=0.0,
        label_smoothing=0.0, augment=None, schedule="constant"))
    rows = _history(clf.run_dir)
    assert [r["phase"] for r in rows] == ["head"] * 3 + ["fine-tune"] * 10
    fine_losses = [float(r["loss"]) for r in rows if r["phase"] == "fine-tune"]
    assert fine_losses[-1] < fine_losses[0]
    original = keras.models.load_model(backbone)
    tuned = keras.models.load_model(clf.run_dir / "model.keras")
    base = next(l for l in tuned.layers if l.name.startswith("backbone")).get_layer("base")
    for name in ("bn1", "bn2"):
        before = original.get_layer(name).get_weights()
        after = base.get_layer(name).get_weights()
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a, b)  # gamma, beta, moving mean and variance untouched
    changed = not np.array_equal(original.get_layer("conv2").get_weights()[0], base.get_layer("conv2").get_weights()[0])
    assert changed, "the unfrozen conv layer should have been trained"
    metrics = json.loads((clf.run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert clf.feature_map_cache is None  # the backbone changed: its feature maps must not be cached


def test_from_model_same_and_new_classes(setup, tmp_path):
    root, backbone, data = setup
    first = transferlab.train(data, show_progress=False,
                              **_settings(root, backbone, "base-run", strategy="feature-extraction", hidden_units=8))
    more = make_class_folders(tmp_path / "more", {"red": 12, "green": 12, "blue": 12}, size=40, seed=5)
    same = transferlab.train(more, show_progress=False, from_model=first.run_dir,
                             **_settings(root, backbone, "continue", strategy="feature-extraction", hidden_units=8))
    assert "continuing from its head" in json.loads((same.run_dir / "config.json").read_text())["warm_start"]
    assert same.class_names == first.class_names

    other = make_class_folders(tmp_path / "other", {"round": 10, "square": 10}, size=40, seed=6)
    new = transferlab.train(other, show_progress=False, from_model=first.run_dir,
                            **_settings(root, backbone, "new-classes", hidden_units=8, fine_tune_epochs=2))
    meta = json.loads((new.run_dir / "config.json").read_text())
    assert "new classifier" in meta["warm_start"] and "hidden layer kept" in meta["warm_start"]
    assert new.class_names == ["round", "square"] and new.model.output_shape[-1] == 2
    # The old backbone was kept: its weights equal those of the first run's model.
    old_bb = next(l for l in first.model.layers if l.name.startswith("backbone"))
    new_bb = next(l for l in new.model.layers if l.name.startswith("backbone"))
    assert old_bb.get_layer("base").get_layer("conv1").get_weights()[0].shape == \
        new_bb.get_layer("base").get_layer("conv1").get_weights()[0].shape


_RUNNER = """
import sys, time, keras, transferlab
from transferlab.training import checkpoint
class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.25)
checkpoint.EpochCheckpoint.on_train_begin_orig = checkpoint.EpochCheckpoint.on_train_begin
from transferlab.api import finetune_phase, training as trainer
# Slow epochs (in both phases) so that the test can interrupt the run in the middle.
trainer.extra_callbacks = finetune_phase.extra_callbacks = lambda run_dir, config: [Slow()]
settings = {settings!r}
try:
    transferlab.train({data!r}, show_progress=False, **settings)
except transferlab.TrainingInterrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(130)
print("finished")
"""


def _start(root, backbone, data, name, **kwargs):
    settings = _settings(root, backbone, name, epochs=4, fine_tune_epochs=12, **kwargs)
    script = _RUNNER.format(settings=settings, data=str(data))
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_fine_tune_epoch(state_path: Path, proc, epochs: int = 2, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
            except json.JSONDecodeError:  # never happens with atomic writes; be safe anyway
                state = {}
            if state.get("phase") == "fine-tune" and state.get("epochs_done", 0) >= epochs:
                return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail("no fine-tune checkpoint appeared in time")


def test_resume_after_killed_process_completes_planned_epochs(setup):
    root, backbone, data = setup
    proc = _start(root, backbone, data, "killed")
    run_dir = root / "runs" / "killed"
    _wait_for_fine_tune_epoch(run_dir / "checkpoint" / "state.json", proc)
    proc.kill()
    proc.wait()
    assert json.loads((run_dir / "config.json").read_text())["status"] == "running"
    assert not (run_dir / "metrics.json").exists()
    clf = transferlab.resume(run_dir, show_progress=False)
    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 17))  # 4 head + 12 fine-tune epochs, no gaps
    assert [r["phase"] for r in rows].count("fine-tune") == 12
    assert json.loads((run_dir / "config.json").read_text())["status"] == "complete"
    assert clf.metadata["metrics"]["num_samples"] > 0
    with pytest.raises(ValueError, match="already complete"):
        transferlab.resume(run_dir, show_progress=False)


def test_ctrl_c_saves_checkpoint_and_prints_how_to_resume(setup):
    root, backbone, data = setup
    proc = _start(root, backbone, data, "sigint")
    run_dir = root / "runs" / "sigint"
    _wait_for_fine_tune_epoch(run_dir / "checkpoint" / "state.json", proc, epochs=1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"--resume {run_dir}" in stderr
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["phase"] == "fine-tune" and 1 <= state["epochs_done"] < 12
    clf = transferlab.resume(run_dir, show_progress=False)
    assert len(_history(run_dir)) == 16 and clf.run_dir == run_dir


def test_seed_zero_works_in_both_phases(setup):
    # TensorFlow compares a global seed of 0 with the op seed as a Python bool: per-epoch
    # shuffling must not depend on TF's global seed.
    root, backbone, data = setup
    clf = transferlab.train(data, show_progress=False, **_settings(root, backbone, "seed0", seed=0, epochs=2,
                                                                   fine_tune_epochs=1))
    assert len(_history(clf.run_dir)) == 3
