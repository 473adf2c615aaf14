"""The head's training loop: same updates as Keras, class weights, callbacks, exact resume."""

from __future__ import annotations

import keras
import numpy as np

from transferlab.training.head import build_head, compile_classifier, fit_epochs, fit_head, one_hot


def _data(n=40, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)).astype(np.float32) + y[:, None].astype(np.float32)
    return x, y


def _head(d=8, classes=3, seed=1):
    keras.utils.set_random_seed(seed)
    head = build_head(d, classes, dropout=0.0)
    compile_classifier(head, 0.05)
    return head


def test_full_batch_epochs_match_keras_train_on_batch_with_sample_weights():
    x, y = _data()
    weights = np.where(y == 0, 3.0, 1.0).astype(np.float32)
    ours, reference = _head(), _head()
    history = fit_epochs(ours, (x, one_hot(y, 3), weights), None, epochs=3, batch_size=len(x), seed=0)
    for _ in range(3):
        reference.train_on_batch(x, one_hot(y, 3), sample_weight=weights)
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sorted(history) == ["accuracy", "loss"] and len(history["loss"]) == 3


def test_validation_metrics_match_evaluate_and_callbacks_can_stop():
    x, y = _data()
    xv, yv = _data(n=30, seed=5)

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.last = dict(logs)
            if epoch == 1:
                self.model.stop_training = True

    stopper = StopAfterTwo()
    head = _head()
    history = fit_epochs(head, (x, one_hot(y, 3), np.ones(len(x), np.float32)), (xv, one_hot(yv, 3)), epochs=10,
                         batch_size=8, seed=0, callbacks=[stopper], val_batch_size=7)
    assert len(history["val_loss"]) == 2
    loss, accuracy = head.evaluate(xv, one_hot(yv, 3), verbose=0)
    np.testing.assert_allclose(stopper.last["val_loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(stopper.last["val_accuracy"], accuracy, rtol=1e-6)


def test_resumed_head_equals_uninterrupted(tmp_path):
    from transferlab.training.checkpoint import save_training_state

    x, y = _data(n=50)
    settings = dict(epochs=6, batch_size=8, learning_rate=0.05, seed=3, patience=0)
    whole = build_head(8, 3, dropout=0.0)
    keras.utils.set_random_seed(1)
    whole.set_weights(_head().get_weights())
    start = whole.get_weights()
    fit_head(whole, x, y, None, None, **settings)

    first = build_head(8, 3, dropout=0.0)
    first.set_weights(start)
    fit_head(first, x, y, None, None, **{**settings, "epochs": 2})
    save_training_state(first, tmp_path / "state.npz")
    resumed = build_head(8, 3, dropout=0.0)
    fit_head(resumed, x, y, None, None, **settings, initial_epoch=2, restore_state=tmp_path / "state.npz")
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_balanced_class_weight_lifts_the_minority_class():
    rng = np.random.default_rng(0)
    y = np.array([0] * 90 + [1] * 10)
    x = rng.normal(size=(100, 4)).astype(np.float32) + y[:, None] * 0.8
    recalls = {}
    for mode in (None, "balanced"):
        keras.utils.set_random_seed(0)
        head = build_head(4, 2, dropout=0.0)
        fit_head(head, x, y, None, None, epochs=30, batch_size=20, learning_rate=0.05, class_weight=mode, patience=0)
        predicted = head.predict(x, verbose=0).argmax(1)
        recalls[mode] = (predicted[y == 1] == 1).mean()
    assert recalls["balanced"] > recalls[None]


def test_predict_head_equals_keras_predict_in_chunks():
    x, _ = _data(n=23)
    head = _head()
    from transferlab.training.head import predict_head

    np.testing.assert_allclose(predict_head(head, x, batch_size=5), head.predict(x, verbose=0), rtol=1e-5, atol=1e-7)
    assert predict_head(head, x[:0]).shape == (0, 3)


def test_throttled_head_checkpoint_writes_last_epoch_with_matching_best_weights(tmp_path):
    import json

    from transferlab.training.checkpoint import EpochCheckpoint, ResumableEarlyStopping

    class Counting(EpochCheckpoint):
        writes = 0

        def write(self):
            Counting.writes += 1
            super().write()

    x, y = _data(n=40)
    xv, yv = _data(n=20, seed=9)
    early = ResumableEarlyStopping(tmp_path, patience=50)
    checkpoint = Counting(tmp_path, "head", 0, early_stopping=early, min_interval_s=3600)
    head = _head()
    fit_head(head, x, y, xv, yv, epochs=7, batch_size=8, learning_rate=0.05, seed=0, callbacks=[checkpoint],
             early_stopping=early)
    assert Counting.writes == 1  # only after the last epoch
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 7 and len(state["history"]["val_loss"]) == 7
    best_epoch = state["early_stopping"]["best_epoch"]
    assert state["history"]["val_loss"][best_epoch] == min(state["history"]["val_loss"])
    from transferlab.training.checkpoint import checkpoint_file

    assert checkpoint_file(tmp_path, "best", state).name == state["files"]["best"]  # committed together
    with np.load(checkpoint_file(tmp_path, "best", state)) as best:
        np.testing.assert_allclose(best["w0"], early.best_weights[0])


def test_resumed_head_with_dropout_draws_the_same_masks_as_uninterrupted(tmp_path):
    # Dropout masks come from seed-generator state that model.weights leaves out: a resume that
    # restarted it trained on other masks and ended elsewhere (issue: 0.880 resumed vs 0.868).
    from transferlab.training.checkpoint import save_training_state

    x, y = _data(n=50)
    settings = dict(epochs=6, batch_size=8, learning_rate=0.05, seed=3, patience=0)

    def fresh():
        keras.utils.set_random_seed(11)  # same initial weights and seed-generator state each time
        return build_head(8, 3, hidden_units=16, dropout=0.5)

    whole = fresh()
    fit_head(whole, x, y, None, None, **settings)
    first = fresh()
    fit_head(first, x, y, None, None, **{**settings, "epochs": 3})
    save_training_state(first, tmp_path / "state.npz")
    resumed = fresh()
    fit_head(resumed, x, y, None, None, **settings, initial_epoch=3, restore_state=tmp_path / "state.npz")
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupt_writes_the_last_completed_epoch_even_when_throttled(tmp_path):
    import json

    import pytest

    from transferlab.errors import TrainingInterrupted
    from transferlab.training.checkpoint import EpochCheckpoint, stop_on_sigint

    class StopAt(keras.callbacks.Callback):  # what the Ctrl-C handler does, during epoch 5
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 5:
                checkpoint.stop_requested.set()

    x, y = _data(n=40)
    checkpoint = EpochCheckpoint(tmp_path, "head", 0, min_interval_s=3600)  # throttled: nothing written yet
    head = _head()
    with pytest.raises(TrainingInterrupted, match=r"after 5 completed epoch"):
        with stop_on_sigint(checkpoint):
            fit_head(head, x, y, None, None, epochs=50, batch_size=8, learning_rate=0.05, seed=0,
                     callbacks=[StopAt(), checkpoint], patience=0)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 5 and len(state["history"]["loss"]) == 5
