"""Phase 2 of training: a small classification head fitted on cached bottleneck features.

Training on features instead of images makes an epoch take milliseconds, so the defaults can
afford many epochs with early stopping (validation loss, best weights restored).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

import keras

logger = logging.getLogger("transferlab")


def build_head(input_dim: int, num_classes: int, *, hidden_units: int = 0, dropout: float = 0.2,
               name: str = "head") -> keras.Model:
    """Features (N, input_dim) -> class probabilities (N, num_classes).

    Dropout on the features, an optional ReLU hidden layer (with its own dropout), softmax.
    """
    inputs = keras.Input((input_dim,), name="features")
    x = inputs
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="feature_dropout")(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="hidden_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * count), for present classes."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    table = {i: 1.0 for i in range(num_classes)}
    table.update({int(c): float(w) for c, w in zip(present, weights)})
    return table


def compile_classifier(model: keras.Model, learning_rate, label_smoothing: float = 0.0) -> None:
    """Adam + categorical cross-entropy on one-hot labels (so label smoothing works)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def one_hot(labels: Sequence[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def epoch_seeded_arrays(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int, end_epoch: int):
    """A tf.data pipeline over epochs first..end-1 of in-memory data, each epoch shuffled by (seed, epoch).

    Deterministic per epoch, so a resumed run sees the same batches as an uninterrupted one.
    (Keras rebuilds its NumPy adapter every epoch, which costs ~3x more than training a head.)
    """
    import tensorflow as tf

    from transferlab.data.pipeline import epoch_permutation

    x_all, y_all, n = tf.constant(x), tf.constant(y), len(x)

    def one_epoch(epoch):
        order = tf.data.Dataset.range(n).map(lambda i: epoch_permutation(i, n, seed, epoch))
        return order.batch(batch_size).map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx)))

    # repeat(): Keras peeks one batch past the last epoch; never let it see "out of data".
    return tf.data.Dataset.range(first_epoch, end_epoch).flat_map(one_epoch).repeat().prefetch(2)


def fit_head(
    head: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    label_smoothing: float = 0.0,
    class_weight: str | None = None,
    patience: int = 10,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    early_stopping: keras.callbacks.EarlyStopping | None = None,
    initial_epoch: int = 0,
    restore_state: "os.PathLike | None" = None,
    verbose: int = 0,
) -> dict[str, list[float]]:
    """Fit ``head`` on features; returns the Keras history of this call (``loss``, ``accuracy``, ``val_*``).

    Args:
        x_train: (N, D) float32 features; y_train: (N,) int labels. Same for the validation
            set, which drives early stopping (skipped when there is no validation data).
        early_stopping: a ready callback (e.g. resumable); default: a new one when there is
            validation data and ``patience > 0``.
        initial_epoch, restore_state: continue a checkpointed head: its weights and optimizer
            state are loaded from ``restore_state`` (see ``training.checkpoint``) after compiling.
    """
    import tensorflow as tf

    num_classes = int(head.output_shape[-1])
    keras.utils.set_random_seed(seed + initial_epoch)
    compile_classifier(head, learning_rate, label_smoothing)
    if restore_state is not None:
        from transferlab.training.checkpoint import load_training_state

        load_training_state(head, restore_state)
    has_val = x_val is not None and len(x_val) > 0
    all_callbacks = list(callbacks)
    if has_val and early_stopping is None and patience > 0:
        early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=True)
    if has_val and early_stopping is not None:
        all_callbacks.insert(0, early_stopping)
    weights = balanced_class_weight(np.asarray(y_train), num_classes) if class_weight == "balanced" else None
    x_train = np.asarray(x_train, np.float32)
    train_data = epoch_seeded_arrays(x_train, one_hot(y_train, num_classes), batch_size, seed, initial_epoch, epochs)
    val_data = None
    if has_val:
        val_data = tf.data.Dataset.from_tensor_slices(
            (np.asarray(x_val, np.float32), one_hot(y_val, num_classes))).batch(512).cache()
    history = head.fit(train_data, validation_data=val_data, epochs=epochs, initial_epoch=initial_epoch,
                       steps_per_epoch=-(-len(x_train) // batch_size), class_weight=weights, shuffle=False,
                       callbacks=all_callbacks, verbose=verbose)
    return {k: [float(v) for v in values] for k, values in history.history.items()}
