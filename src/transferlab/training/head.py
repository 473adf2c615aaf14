"""Phase 2 of training: a small classification head fitted on cached bottleneck features.

Training on features instead of images makes an epoch take milliseconds, so the defaults can
afford many epochs with early stopping (validation loss, best weights restored).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import numpy as np

from transferlab._keras import keras
from transferlab.training.config import TrainConfig
from transferlab.training.imbalance import IMBALANCE_RATIO, ImbalanceChoice, imbalance_ratio, rare_class_scores

logger = logging.getLogger("transferlab")

# One set of defaults: the functions' keyword defaults are TrainConfig's.
_DEFAULTS = TrainConfig()


def build_head(input_dim: int, num_classes: int, *, hidden_units: int = _DEFAULTS.hidden_units,
               dropout: float = _DEFAULTS.dropout,
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


def compile_classifier(model: keras.Model, learning_rate, label_smoothing: float = 0.0,
                       weight_decay: float = 0.0) -> None:
    """Adam + categorical cross-entropy on one-hot labels (so label smoothing works).

    ``weight_decay`` > 0 is Keras' decoupled weight decay (AdamW): each step shrinks every
    weight by ``learning_rate * weight_decay`` of itself.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def one_hot(labels: Sequence[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def fit_epochs(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    val_batch_size: int = 1024,
) -> dict[str, list[float]]:
    """``model.fit`` for in-memory data that trains in milliseconds per epoch: one compiled call per epoch.

    On cached features Keras' ``fit`` spends ~20 ms of Python per epoch around ~6 ms of training
    (iterators, evaluation set-up), so a 30-epoch head took 1.5 s; here each epoch (shuffle,
    batches, one ``train_step`` each, then the validation pass) is a single ``tf.function`` call.
    The model's own ``train_step``/``test_step``, optimizer, loss and metrics do the work, and
    callbacks see what they see under ``fit(..., steps_per_execution=steps_per_epoch)``: one
    ``on_train_batch_end`` per epoch, then ``on_epoch_end`` with ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``; ``model.stop_training`` ends training.

    Args:
        train: (x (N, D) float32, y (N, C) one-hot float32, sample weights (N,) float32). The
            order of epoch k is a permutation keyed by (seed, k) alone, so a run resumed at
            ``initial_epoch`` trains on exactly the batches an uninterrupted run would have.
        val: (x, y) or None.

    Returns:
        The history of this call: metric name -> one value per completed epoch.
    """
    import tensorflow as tf

    from transferlab.data.pipeline import epoch_permutation

    x, y, weights = (tf.constant(a, tf.float32) for a in train)
    n = len(train[0])
    steps = -(-n // batch_size)
    if not model.optimizer.built:  # variables created inside the first trace would force a second one
        model.optimizer.build(model.trainable_variables)
    if val is not None:
        x_val, y_val = (tf.constant(a, tf.float32) for a in val)
        n_val = len(val[0])

    # One call per epoch: training, then validation on the same (reset) metric objects. Without
    # autograph (explicit while loops): converting this source would cost more (~0.3 s) than all
    # the epochs of a typical head.
    @tf.function(autograph=False)
    def run_epoch(epoch):
        order = epoch_permutation(tf.range(n), n, seed, epoch)

        def train_step(i):
            batch = order[i * batch_size:(i + 1) * batch_size]
            model.train_step((tf.gather(x, batch), tf.gather(y, batch), tf.gather(weights, batch)))
            return (i + 1,)

        tf.while_loop(lambda i: i < steps, train_step, (tf.constant(0),))
        train_logs = {k: tf.identity(v) for k, v in model.get_metrics_result().items()}
        if val is None:
            return train_logs, {}
        with tf.control_dependencies(list(train_logs.values())):
            for metric in model.metrics:
                metric.reset_state()

        def test_step(start):
            model.test_step((x_val[start:start + val_batch_size], y_val[start:start + val_batch_size]))
            return (start + val_batch_size,)

        tf.while_loop(lambda start: start < n_val, test_step, (tf.constant(0),))
        return train_logs, model.get_metrics_result()

    callback_list = keras.callbacks.CallbackList(list(callbacks), add_history=True, model=model, epochs=epochs,
                                                 steps=steps, verbose=0)
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        callback_list.on_train_batch_begin(steps - 1)
        train_logs, val_logs = run_epoch(tf.constant(epoch, tf.int64))
        logs = {k: float(v) for k, v in train_logs.items()}
        callback_list.on_train_batch_end(steps - 1, logs)
        logs.update({f"val_{k}": float(v) for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return {k: [float(v) for v in values] for k, values in model.history.history.items()}


def predict_head(head: keras.Model, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, C) for features (N, D), by direct calls in chunks.

    ``head.predict`` would first build and trace a predict function (~0.1 s), more than the
    whole computation for a test split of cached features.
    """
    features = np.asarray(features, np.float32)
    chunks = [np.asarray(head(features[i:i + batch_size], training=False)) for i in range(0, len(features), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, int(head.output_shape[-1])), np.float32)


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
    label_smoothing: float = _DEFAULTS.label_smoothing,
    weight_decay: float = _DEFAULTS.weight_decay,
    class_weight: str | None = _DEFAULTS.class_weight,
    patience: int = _DEFAULTS.patience,
    seed: int = _DEFAULTS.seed,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    early_stopping: keras.callbacks.EarlyStopping | None = None,
    initial_epoch: int = 0,
    restore_state: "os.PathLike | None" = None,
) -> dict[str, list[float]]:
    """Fit ``head`` on features; returns the Keras history of this call (``loss``, ``accuracy``, ``val_*``).

    Args:
        x_train: (N, D) float32 features; y_train: (N,) int labels. Same for the validation
            set, which drives early stopping (skipped when there is no validation data).
        class_weight: None, "balanced" (sample weights n / (C * count)) or "auto" (chosen on
            validation when the classes are imbalanced, :mod:`transferlab.training.imbalance`).
        early_stopping: a ready callback (e.g. resumable); default: a new one when there is
            validation data and ``patience > 0``.
        initial_epoch, restore_state: continue a checkpointed head: its weights and optimizer
            state are loaded from ``restore_state`` (see ``training.checkpoint``) after compiling.
    """
    num_classes = int(head.output_shape[-1])
    keras.utils.set_random_seed(seed + initial_epoch)
    compile_classifier(head, learning_rate, label_smoothing, weight_decay)
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
    y_train = np.asarray(y_train, np.int64)
    if class_weight == "auto":
        class_weight = _resolve_auto_weight(head, x_train, y_train, x_val if has_val else None,
                                            y_val if has_val else None, epochs=epochs, batch_size=batch_size,
                                            learning_rate=learning_rate, label_smoothing=label_smoothing,
                                            patience=patience, seed=seed)
    sample_weights = np.ones(len(y_train), np.float32)
    if class_weight == "balanced":
        table = balanced_class_weight(y_train, num_classes)
        sample_weights = np.array([table[c] for c in range(num_classes)], np.float32)[y_train]
    train = (np.asarray(x_train, np.float32), one_hot(y_train, num_classes), sample_weights)
    val = (np.asarray(x_val, np.float32), one_hot(y_val, num_classes)) if has_val else None
    return fit_epochs(head, train, val, epochs=epochs, batch_size=batch_size, seed=seed, initial_epoch=initial_epoch,
                      callbacks=all_callbacks)


def _resolve_auto_weight(head: keras.Model, x_train, y_train, x_val, y_val, **settings) -> str | None:
    """``class_weight="auto"`` inside :func:`fit_head`: candidates are clones of ``head`` with its
    current (initial) weights; see :func:`~transferlab.training.imbalance.choose_class_weight`."""
    initial = head.get_weights()

    def make_head() -> keras.Model:
        clone = keras.models.clone_model(head)
        clone.set_weights(initial)
        return clone

    choice = choose_class_weight(x_train, y_train, x_val, y_val, int(head.output_shape[-1]), make_head=make_head,
                                 **settings)
    head.set_weights(initial)
    logger.info("%s.", choice.reason[:1].upper() + choice.reason[1:])
    return choice.class_weight


def choose_class_weight(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
                        y_val: np.ndarray | None, num_classes: int, *, requested: str | None = "auto",
                        hidden_units: int = 0, dropout: float = 0.5, epochs: int = 100, batch_size: int = 32,
                        learning_rate: float = 1e-3, label_smoothing: float = 0.1, patience: int = 10,
                        seed: int = 42, make_head: Callable[[], object] | None = None) -> ImbalanceChoice:
    """Resolve ``class_weight="auto"`` (other values are returned as they are).

    Args:
        x_train, x_val: (N, D) float32 cached features; y_train, y_val: (N,) int class indices.
        num_classes: C, the head's outputs.
        requested: "auto", "balanced" or None.
        hidden_units ... seed: the head's settings (TrainConfig's), so each candidate is the
            head that training would fit; both start from the same seeded initial weights.
        make_head: builds a fresh candidate head (default: ``build_head`` with these settings,
            after ``keras.utils.set_random_seed(seed)``).

    Returns:
        The :class:`ImbalanceChoice`. Without validation images "auto" weights an imbalanced
        training split ("balanced"): nothing to compare on, and the rare classes are the point.
    """
    counts = np.bincount(np.asarray(y_train, np.int64), minlength=num_classes)
    ratio = round(imbalance_ratio(counts), 3)
    imbalanced = ratio >= IMBALANCE_RATIO
    if requested != "auto":
        weight = "balanced" if requested == "balanced" else None
        return ImbalanceChoice(requested, weight, ratio, imbalanced, reason=f"class weighting '{weight or 'none'}' "
                               "as set")
    if not imbalanced:
        return ImbalanceChoice(requested, None, ratio, False, reason=f"classes are balanced enough (largest/smallest "
                               f"training class {ratio:.1f}:1 < {IMBALANCE_RATIO:g}:1): no class weighting")
    if x_val is None or len(x_val) == 0:
        return ImbalanceChoice(requested, "balanced", ratio, True, reason=f"classes are imbalanced ({ratio:.1f}:1) "
                               "and there is no validation split to compare on: 'balanced' class weights")
    scores = {}
    for variant in (None, "balanced"):
        keras.utils.set_random_seed(seed)  # the same initial weights for both candidates
        head = make_head() if make_head else build_head(x_train.shape[1], num_classes, hidden_units=hidden_units,
                                                        dropout=dropout)
        fit_head(head, x_train, y_train, x_val, y_val, epochs=epochs, batch_size=batch_size,
                 learning_rate=learning_rate, label_smoothing=label_smoothing, class_weight=variant,
                 patience=patience, seed=seed)
        f1, bal = rare_class_scores(y_val, predict_head(head, x_val).argmax(axis=1), num_classes)
        scores[variant or "none"] = {"macro_f1": round(f1, 4), "balanced_accuracy": round(bal, 4)}
    key = {v: (s["macro_f1"], s["balanced_accuracy"], v == "balanced") for v, s in scores.items()}
    best = max(key, key=key.get)
    chosen = "balanced" if best == "balanced" else None
    other = "none" if best == "balanced" else "balanced"
    reason = (f"classes are imbalanced (largest/smallest training class {ratio:.1f}:1): class weighting "
              f"'{best}' chosen on validation macro-F1 {scores[best]['macro_f1']:.3f} vs "
              f"{scores[other]['macro_f1']:.3f} with '{other}'")
    return ImbalanceChoice(requested, chosen, ratio, True, "macro_f1", scores, reason)


def assemble_classifier(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """One Keras model: raw pixels (N, S, S, 3) -> backbone (preprocessing inside) -> head -> probabilities."""
    size = backbone.input_shape[1]
    image = keras.Input((size, size, 3), name="image")
    probs = head(backbone(image))
    return keras.Model(image, probs, name="transferlab_classifier")
