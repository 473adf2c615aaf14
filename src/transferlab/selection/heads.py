"""Head families scored by stratified k-fold cross-validation on cached features.

Three families, all of which end up as the same kind of Keras head (so export, serving and
Grad-CAM work on whatever wins):

* ``softmax``: the head :func:`transferlab.training.head.build_head` builds and ``train`` fits
  (dropout on the features, Dense softmax; Adam, label smoothing, early stopping on the
  validation loss).
* ``mlp``: the same head with one ReLU hidden layer (``hidden_units > 0``).
* ``logistic``: a linear probe the way CLIP and DINOv2 evaluate frozen features: standardised
  features, L2-regularised multinomial logistic regression (scikit-learn, L-BFGS), C chosen on
  the folds over a log grid. Saved as one Dense softmax layer with the scaler folded in.

The Keras heads are cross-validated by :class:`FoldTrainer`, which trains the head of every fold
at once as one batched model inside one TensorFlow graph (k folds cost about what one costs: on
cached features a head's time goes to per-step overhead, not arithmetic). It re-implements the
head's training step (Glorot-uniform init, Adam with Keras' defaults, decoupled weight decay as
Keras' ``weight_decay``, smoothed cross-entropy, class weights) rather than calling
``fit_head`` per fold, which would trace a new graph for every fold of every trial. Early
stopping watches the validation loss averaged over the folds and keeps, per fold, the
predictions of the best epoch: the stopping epoch is one hyperparameter chosen on the folds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.selection.errors import SelectionError
from transferlab.selection.folds import Folds

FAMILIES = ("softmax", "mlp", "logistic")
# Inverse L2 strengths tried for the linear probe (standardised features): 1e-5 .. 10, 2 per decade.
C_GRID = tuple(float(c) for c in np.logspace(-5, 1, 13))
_EPS = 1e-7  # Keras' clipping epsilon: log-loss figures match the trainer's
_MASKS = 1024  # dropout masks drawn once per run and picked at random per row (see _dropout)


@dataclass(frozen=True)
class HeadSettings:
    """One head configuration: the family and its hyperparameters (``TrainConfig`` names).

    Keras families use ``learning_rate``, ``hidden_units`` (0 for ``softmax``), ``dropout``,
    ``label_smoothing``, ``weight_decay``, ``batch_size``, ``class_weight``, ``epochs`` and
    ``patience``; ``logistic`` uses ``logistic_c`` (None: chosen from :data:`C_GRID` on the folds)
    and ``class_weight``.
    """

    family: str = "softmax"
    learning_rate: float = 1e-3
    hidden_units: int = 0
    dropout: float = 0.5
    label_smoothing: float = 0.1
    weight_decay: float = 0.0
    batch_size: int = 32
    class_weight: str | None = None
    epochs: int = 100
    patience: int = 10
    logistic_c: float | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise SelectionError(f"Unknown head family {self.family!r}; choose one of {', '.join(FAMILIES)}.")
        if self.family == "mlp" and self.hidden_units <= 0:
            raise SelectionError("The mlp head needs hidden_units > 0.")
        if self.family == "softmax" and self.hidden_units:
            raise SelectionError("The softmax head has no hidden layer: use family 'mlp' for hidden_units > 0.")

    @classmethod
    def from_config(cls, config, family: str | None = None, **changes: Any) -> "HeadSettings":
        """The head a :class:`~transferlab.training.config.TrainConfig` describes."""
        names = {f.name for f in dataclasses.fields(cls)} - {"family", "weight_decay"}
        values = {n: getattr(config, n) for n in names if hasattr(config, n)}
        # TrainConfig's weight_decay is fine-tuning's; the head's is head_weight_decay.
        if hasattr(config, "head_weight_decay"):
            values["weight_decay"] = config.head_weight_decay
        values.update(changes)
        head = getattr(config, "head", "keras")
        if family is None:
            family = "logistic" if head == "logistic" else ("mlp" if values.get("hidden_units") else "softmax")
        return cls(family=family, **values)

    def config_changes(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields that make ``train`` fit this head."""
        if self.family == "logistic":
            return {"head": "logistic", "logistic_c": self.logistic_c, "class_weight": self.class_weight}
        changes = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("family", "logistic_c")}
        changes["head_weight_decay"] = changes.pop("weight_decay")
        return {"head": "keras", **changes}

    def label(self) -> str:
        """Short human-readable description, e.g. ``mlp(256)`` or ``logistic(C=0.01)``."""
        if self.family == "logistic":
            return f"logistic(C={self.logistic_c:.3g})" if self.logistic_c is not None else "logistic"
        return f"mlp({self.hidden_units})" if self.family == "mlp" else "softmax"


@dataclass
class CVResult:
    """Cross-validated scores of one head setting.

    Attributes:
        settings: the head; for ``logistic`` with C chosen on the folds, the chosen C is filled in.
        accuracy, macro_f1, log_loss: per-fold scores on each fold's held-out rows, (k,) float.
        oof_probs: (n, C) float32 out-of-fold probabilities, row-aligned with the selection rows.
        epochs: epochs at the best mean validation loss (Keras families), else None.
        seconds: wall time of the cross-validation.
        extra: family-specific details (e.g. the C grid's mean accuracies).
    """

    settings: HeadSettings
    accuracy: np.ndarray
    macro_f1: np.ndarray
    log_loss: np.ndarray
    oof_probs: np.ndarray
    epochs: int | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def std_accuracy(self) -> float:
        return float(np.std(self.accuracy))

    def summary(self) -> dict[str, Any]:
        """JSON-ready scores: means and standard deviations over folds."""
        return {"head": self.settings.label(), "family": self.settings.family,
                "cv_accuracy": self.mean_accuracy, "cv_accuracy_std": self.std_accuracy,
                "cv_macro_f1": float(np.mean(self.macro_f1)), "cv_log_loss": float(np.mean(self.log_loss)),
                "folds": int(len(self.accuracy)), "epochs": self.epochs, "cv_seconds": round(self.seconds, 3),
                "settings": dataclasses.asdict(self.settings)}


def fold_scores(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float, float]:
    """(accuracy, macro-F1 over the classes present, log-loss) of (n, C) probabilities."""
    from sklearn.metrics import f1_score

    pred = probs.argmax(1)
    true_prob = np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)
    f1 = f1_score(labels, pred, labels=np.unique(labels), average="macro", zero_division=0)
    return float(np.mean(pred == labels)), float(f1), float(-np.mean(np.log(true_prob)))


def _result(settings: HeadSettings, folds: Folds, per_fold_probs: list[np.ndarray], seconds: float,
            epochs: int | None = None, extra: dict | None = None) -> CVResult:
    oof = np.zeros((len(folds.labels), folds.num_classes), np.float32)
    scores = []
    for val, probs in zip(folds.val, per_fold_probs):
        oof[val] = probs
        scores.append(fold_scores(probs, folds.labels[val], folds.num_classes))
    acc, f1, loss = (np.array(s) for s in zip(*scores))
    return CVResult(settings, acc, f1, loss, oof, epochs, seconds, extra or {})


# ------------------------------------------------------------------------ linear probe
def cv_logistic(features: np.ndarray, folds: Folds, settings: HeadSettings | None = None,
                grid: tuple[float, ...] = C_GRID, patience: int = 2) -> CVResult:
    """Cross-validate the linear probe; C is ``settings.logistic_c`` or the best of ``grid``.

    Each fold standardises with its own training rows' mean and deviation. The grid is walked
    from strong to weak regularisation with warm starts (each fit starts from the fold's
    previous solution), and stops once the mean accuracy has fallen below the best for
    ``patience`` grid points in a row: the weakly regularised end of the path is the slow one
    to fit, and past the optimum it only overfits. The best C has the highest mean accuracy,
    ties broken by lower mean log-loss.

    Args:
        features: (n, D) float32 features of the selection rows.
        folds: the stratified folds of those rows.
        settings: a ``logistic`` :class:`HeadSettings` (default: C from the grid, no class weights).
        grid: the C values to try when ``settings.logistic_c`` is None (default :data:`C_GRID`).
        patience: grid points past the best before the walk stops.

    Returns:
        The :class:`CVResult` of the chosen C; ``extra["grid"]`` holds each tried C's mean accuracy and log-loss.
    """
    from threadpoolctl import threadpool_limits

    settings = settings or HeadSettings(family="logistic")
    cs = (settings.logistic_c,) if settings.logistic_c is not None else tuple(sorted(grid))
    start = time.perf_counter()
    # These matrices are small (n x D, a few thousand by a thousand): a multi-threaded BLAS
    # spends more on waking and synchronising its threads than it saves, and on a busy CPU far
    # more. Measured on the shared 2-core machine: an SVD of 240 x 1280 took 24 s with OpenBLAS'
    # default threads and 0.4 s with one; an L-BFGS fit 0.8 s and 0.06 s.
    with threadpool_limits(limits=1, user_api="blas"):
        return _cv_logistic(features, folds, settings, cs, patience, start)


def _cv_logistic(features: np.ndarray, folds: Folds, settings: HeadSettings, cs: tuple[float, ...], patience: int,
                 start: float) -> CVResult:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data, models = [], []
    for train, val in zip(folds.train, folds.val):
        scaler = StandardScaler().fit(features[train])
        x_train, x_val = scaler.transform(features[train]), scaler.transform(features[val])
        if len(train) < 0.8 * features.shape[1]:
            # Fewer rows than dimensions: the L2-regularised solution lies in the span of the
            # (centred) training rows, and the penalty is rotation-invariant, so fitting on the
            # coordinates in an orthonormal basis of that span gives the same predictions,
            # for held-out rows too, at a fraction of the cost.
            _, _, vt = np.linalg.svd(x_train, full_matrices=False)
            x_train, x_val = x_train @ vt.T, x_val @ vt.T
        data.append((x_train, folds.labels[train], x_val))
        models.append(LogisticRegression(C=cs[0], max_iter=200, warm_start=True,
                                         class_weight="balanced" if settings.class_weight == "balanced" else None))
    table: dict[float, CVResult] = {}
    best, since_best = None, 0
    for c in cs:
        fold_probs = []
        for model, (x_train, y_train, x_val) in zip(models, data):
            model.set_params(C=c)
            with warnings.catch_warnings():  # a path point stopped at max_iter is still a fair score
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_train, y_train)
            full = np.zeros((len(x_val), folds.num_classes), np.float32)
            full[:, model.classes_] = model.predict_proba(x_val)
            fold_probs.append(full)
        table[c] = _result(dataclasses.replace(settings, logistic_c=c), folds, fold_probs, 0.0)
        key = (table[c].mean_accuracy, -float(np.mean(table[c].log_loss)))
        if best is None or key > (table[best].mean_accuracy, -float(np.mean(table[best].log_loss))):
            best, since_best = c, 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    result = table[best]
    result.seconds = time.perf_counter() - start
    result.extra["grid"] = [{"C": c, "cv_accuracy": r.mean_accuracy, "cv_log_loss": float(np.mean(r.log_loss))}
                            for c, r in table.items()]
    return result


# ------------------------------------------------------------------------ Keras heads, all folds at once
_GRAPHS: dict[bool, Any] = {}


def _graph(hidden: bool):
    """The batched training graph, one per hidden/no-hidden; every shape is dynamic, so traced once.

    All folds share one batch order: each step takes ``batch`` rows of the selection data, and
    every fold trains on those of them that belong to its training part (the others weigh 0).
    The rows are gathered and multiplied by the kernels of all folds in one matrix product
    (kernels are laid out (in, K, out)), instead of once per fold.
    """
    if hidden in _GRAPHS:
        return _GRAPHS[hidden]
    import tensorflow as tf

    f32, i32, i64 = tf.float32, tf.int32, tf.int64
    # Resource handles of three float32 vectors: every fold's kernels (in, K, out) and biases
    # (1, K, out), flattened, and Adam's two moments; updated in place by the fused Adam kernel.
    handle = tf.TensorSpec([], tf.resource)
    signature = [
        tf.TensorSpec([None, None], f32),  # x (N, D)
        tf.TensorSpec([None, None], f32),  # y one-hot (N, C)
        tf.TensorSpec([None, None], f32),  # per-fold training weight of each row (N, K); 0: not in its training part
        tf.TensorSpec([None, None], f32),  # 1 where the row is in fold k's training part (N, K)
        tf.TensorSpec([None, None], i32), tf.TensorSpec([None, None], f32),  # val idx, mask (K, V)
        tf.TensorSpec([4], f32),  # learning rate, dropout, label smoothing, weight decay
        tf.TensorSpec([], i32), tf.TensorSpec([], i32), tf.TensorSpec([], i32),  # shared batch, end epoch, patience
        tf.TensorSpec([], i32), tf.TensorSpec([], i64),  # hidden units, seed
        # state: params, Adam m, Adam v (handles), step, epoch, best loss, wait, best epoch, best probs (K, V, C)
        handle, handle, handle, tf.TensorSpec([], i32), tf.TensorSpec([], i32),
        tf.TensorSpec([], f32), tf.TensorSpec([], i32), tf.TensorSpec([], i32), tf.TensorSpec([None, None, None], f32),
    ]

    @tf.function(input_signature=signature, autograph=False)
    def run(x, y, train_w, train_in, val_idx, val_mask, hp, batch, end_epoch, patience, units, seed,
            params, m, v, step, epoch, best_loss, wait, best_epoch, best_probs):
        lr, rate, smoothing, decay = hp[0], hp[1], hp[2], hp[3]
        n, dim, c, k = tf.shape(x)[0], tf.shape(x)[1], tf.shape(y)[1], tf.shape(train_in)[1]
        classes = tf.cast(c, f32)
        # One flat parameter vector, so that one fused Adam kernel updates all of it per step: the
        # update is memory-bound (1.6M parameters for mlp(256) on 1,280-d features, 5 folds), and
        # as a dozen separate element-wise ops it cost more than the step's matrix products.
        shapes = [tf.stack([dim, k, units]), tf.stack([1, k, units]), tf.stack([units, k, c]), tf.stack([1, k, c])] \
            if hidden else [tf.stack([dim, k, c]), tf.stack([1, k, c])]

        def unpack(theta):
            parts = tf.split(theta, tf.stack([tf.reduce_prod(s_) for s_ in shapes]))
            return [tf.reshape(part, s_) for part, s_ in zip(parts, shapes)]

        keep = 1.0 - rate
        # Dropout masks drawn once per call; each row of each step picks one at random. A fresh
        # mask per row and step would cost more random numbers than the step has arithmetic.
        bank_x = tf.cast(tf.random.stateless_uniform([_MASKS, dim], tf.stack([seed, 11 + tf.cast(epoch, i64)]))
                         < keep, f32) / keep
        bank_h = tf.cast(tf.random.stateless_uniform([_MASKS, units],
                                                     tf.stack([seed, 13 + tf.cast(epoch, i64)])) < keep, f32) / keep \
            if hidden else None

        def dropout(h, bank, s, salt):
            pick = tf.random.stateless_uniform(tf.shape(h)[:-1], tf.stack([seed + salt, tf.cast(s, i64)]),
                                               maxval=_MASKS, dtype=i32)
            return h * tf.gather(bank, pick)  # rate 0: a bank of ones

        def train_logits(p, xb, s):  # (b, D) -> (b, K, C)
            h = tf.reshape(tf.matmul(dropout(xb, bank_x, s, 1), tf.reshape(p[0], [dim, -1])),
                           [tf.shape(xb)[0], tf.shape(p[0])[1], -1]) + p[1]
            if hidden:
                h = dropout(tf.nn.relu(h), bank_h, s, 2)
                return tf.einsum("bkh,hkc->bkc", h, p[2]) + p[3]
            return h

        def val_logits(p, xv):  # (K, V, D) -> (K, V, C), each fold on its own held-out rows
            h = tf.einsum("kvd,dkh->kvh", xv, p[0]) + tf.transpose(p[1], [1, 0, 2])
            if hidden:
                return tf.einsum("kvh,hkc->kvc", tf.nn.relu(h), p[2]) + tf.transpose(p[3], [1, 0, 2])
            return h

        def smoothed_loss(logits, targets):
            targets = targets * (1.0 - smoothing) + smoothing / classes
            return -tf.reduce_sum(targets * tf.nn.log_softmax(logits), -1)

        steps = (n + batch - 1) // batch
        x_val, y_val = tf.gather(x, val_idx), tf.gather(y, val_idx)
        val_count = tf.maximum(tf.reduce_sum(val_mask, 1), 1.0)

        def read(h):
            return tf.raw_ops.ReadVariableOp(resource=h, dtype=f32)

        def one_epoch(epoch, step, best_loss, wait, best_epoch, best_probs):
            order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed + 3, tf.cast(epoch, i64)])))

            def one_step(i, step):
                rows = order[i * batch:(i + 1) * batch]
                weights = tf.gather(train_w, rows)  # (b, K)
                count = tf.maximum(tf.reduce_sum(tf.gather(train_in, rows), 0), 1.0)  # each fold's batch size
                targets = tf.gather(y, rows)[:, None, :]
                theta = read(params)
                with tf.GradientTape() as tape:
                    tape.watch(theta)
                    loss = smoothed_loss(train_logits(unpack(theta), tf.gather(x, rows), step), targets)
                    total = tf.reduce_sum(tf.reduce_sum(loss * weights, 0) / count)  # folds are independent
                grad = tape.gradient(total, theta)
                t = tf.cast(step + 1, f32)
                # Keras' AdamW: decoupled decay of the current weights first, then Adam's step
                # (lr * sqrt(1 - 0.999^t) / (1 - 0.9^t) * m / (sqrt(v) + 1e-7), Keras' defaults).
                decayed = tf.cond(decay > 0.0, lambda: tf.raw_ops.AssignSubVariableOp(
                    resource=params, value=lr * decay * theta), lambda: tf.no_op())
                with tf.control_dependencies([decayed]):
                    update = tf.raw_ops.ResourceApplyAdam(
                        var=params, m=m, v=v, beta1_power=0.9 ** t, beta2_power=0.999 ** t, lr=lr, beta1=0.9,
                        beta2=0.999, epsilon=1e-7, grad=grad)
                with tf.control_dependencies([update]):
                    return i + 1, step + 1

            _, step = tf.while_loop(lambda i, _: i < steps, one_step, (tf.constant(0), step))
            with tf.control_dependencies([step]):
                theta = read(params)
            logits = val_logits(unpack(theta), x_val)
            probs = tf.nn.softmax(logits)
            # The validation loss as Keras reports it for the head: the training loss, smoothing included.
            fold_loss = tf.reduce_sum(smoothed_loss(logits, y_val) * val_mask, 1) / val_count
            mean_loss = tf.reduce_mean(fold_loss)
            better = tf.logical_or(mean_loss < best_loss, patience <= 0)  # no patience: keep the last epoch
            best_loss = tf.where(better, mean_loss, best_loss)
            best_probs = tf.cond(better, lambda: probs, lambda: best_probs)
            best_epoch = tf.where(better, epoch + 1, best_epoch)
            wait = tf.where(better, 0, wait + 1)
            return epoch + 1, step, best_loss, wait, best_epoch, best_probs

        def go_on(epoch, step, best_loss, wait, *_):
            return tf.logical_and(epoch < end_epoch, tf.logical_or(patience <= 0, wait < patience))

        epoch, step, best_loss, wait, best_epoch, best_probs = tf.while_loop(
            go_on, one_epoch, (epoch, step, best_loss, wait, best_epoch, best_probs))
        return step, epoch, best_loss, wait, best_epoch, best_probs  # the state after the handles, in argument order

    _GRAPHS[hidden] = run
    return run


class FoldTrainer:
    """Train one Keras-head setting on every fold at once, a chunk of epochs per :meth:`advance`.

    An epoch is one pass over the selection rows in a shared random order, in batches of
    ``batch_size * k / (k - 1)`` rows: each fold trains on its own rows among them, so it sees
    each of its training rows once per epoch in batches of ``batch_size`` rows on average.
    Between chunks :attr:`score` is the mean over folds of the held-out accuracy at the best
    epoch so far, which a tuner's pruner can act on.

    Args:
        features: (n, D) float32 features of the selection rows.
        folds: the folds of those rows.
        settings: a ``softmax`` or ``mlp`` head.
        seed: seeds initial weights, batch order and dropout: same seed, same result.
    """

    def __init__(self, features: np.ndarray, folds: Folds, settings: HeadSettings, seed: int = 42):
        import tensorflow as tf

        from transferlab.training.head import balanced_class_weight

        if settings.family == "logistic":
            raise SelectionError("FoldTrainer trains Keras heads; use cv_logistic for the linear probe.")
        self.settings, self.folds, self.seed = settings, folds, seed
        self._start = time.perf_counter()
        n, k = len(folds.labels), folds.k
        train_in = np.zeros((n, k), np.float32)
        train_w = np.zeros((n, k), np.float32)
        for i, rows in enumerate(folds.train):
            train_in[rows, i] = 1.0
            if settings.class_weight == "balanced":
                table = balanced_class_weight(folds.labels[rows], folds.num_classes)
                train_w[rows, i] = np.array([table[c] for c in range(folds.num_classes)], np.float32)[folds.labels[rows]]
            else:
                train_w[rows, i] = 1.0
        _, _, val_idx, val_mask = folds.padded()
        onehot = np.eye(folds.num_classes, dtype=np.float32)[folds.labels]
        self._data = [tf.constant(a) for a in (np.asarray(features, np.float32), onehot, train_w, train_in,
                                                  val_idx, val_mask)]
        self._hp = tf.constant([settings.learning_rate, settings.dropout, settings.label_smoothing,
                                settings.weight_decay], tf.float32)
        self._batch = max(1, int(round(settings.batch_size * k / (k - 1))))
        self._hidden = settings.hidden_units > 0
        params = tf.constant(np.concatenate([p.ravel() for p in self._initial_params(features.shape[1])]))
        zeros = tf.zeros_like(params)
        # The weights and Adam's moments live in variables the graph updates in place (by handle).
        self._state = tuple(tf.Variable(t, trainable=False) for t in (params, zeros, zeros)) + (tf.constant(0), tf.constant(0), tf.constant(np.inf, tf.float32),
                       tf.constant(0), tf.constant(0),
                       tf.zeros((k, val_idx.shape[1], folds.num_classes), tf.float32))

    def _initial_params(self, dim: int) -> list[np.ndarray]:
        """Keras' Dense defaults, per fold: Glorot-uniform kernels (in, K, out), zero biases (1, K, out)."""
        rng = np.random.default_rng([self.seed, 7])
        k, c, h = self.folds.k, self.folds.num_classes, self.settings.hidden_units

        def glorot(fan_in, fan_out):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, (fan_in, k, fan_out)).astype(np.float32)

        if self._hidden:
            return [glorot(dim, h), np.zeros((1, k, h), np.float32), glorot(h, c), np.zeros((1, k, c), np.float32)]
        return [glorot(dim, c), np.zeros((1, k, c), np.float32)]

    @property
    def epochs_done(self) -> int:
        return int(self._state[4])

    @property
    def finished(self) -> bool:
        s = self.settings
        return self.epochs_done >= s.epochs or (s.patience > 0 and int(self._state[6]) >= s.patience)

    def advance(self, epochs: int | None = None) -> bool:
        """Train up to ``epochs`` more epochs (default: to the end); True once training has ended."""
        import tensorflow as tf

        if self.finished:
            return True
        s = self.settings
        end = s.epochs if epochs is None else min(s.epochs, self.epochs_done + epochs)
        self._state = self._state[:3] + tuple(_graph(self._hidden)(*self._data, self._hp, tf.constant(self._batch), tf.constant(end),
                                                 tf.constant(s.patience), tf.constant(s.hidden_units),
                                                 tf.constant(self.seed, tf.int64),
                                                 *(v.handle for v in self._state[:3]), *self._state[3:]))
        return self.finished

    def _fold_probs(self) -> list[np.ndarray]:
        probs = self._state[8].numpy()
        return [probs[i, :len(val)] for i, val in enumerate(self.folds.val)]

    @property
    def score(self) -> float:
        """Mean held-out accuracy over folds at the best epoch so far."""
        return float(np.mean([np.mean(p.argmax(1) == self.folds.labels[val])
                              for p, val in zip(self._fold_probs(), self.folds.val)]))

    def result(self) -> CVResult:
        """Train to the end and return the scores at the epoch of the best mean validation loss."""
        self.advance()
        return _result(self.settings, self.folds, self._fold_probs(), time.perf_counter() - self._start,
                       epochs=int(self._state[7]))


def cross_validate(features: np.ndarray, folds: Folds, settings: HeadSettings, seed: int = 42) -> CVResult:
    """Cross-validated scores of one head setting on the folds (any family).

    Args:
        features: (n, D) float32 features of the selection rows (never the test split's).
        folds: stratified folds of those rows (:func:`~transferlab.selection.folds.make_folds`).
        settings: the head.
        seed: the Keras heads' initialisation/shuffling seed.
    """
    if len(features) != len(folds.labels):
        raise SelectionError(f"{len(features)} feature rows but {len(folds.labels)} labels.")
    if settings.family == "logistic":
        return cv_logistic(features, folds, settings)
    return FoldTrainer(features, folds, settings, seed).result()


def default_candidates(config=None) -> list[HeadSettings]:
    """The heads ``compare`` scores per backbone: the configured softmax head, an MLP, the linear probe.

    Args:
        config: a :class:`~transferlab.training.config.TrainConfig` whose head settings the
            Keras heads start from (default: ``TrainConfig()``'s).
    """
    from transferlab.training.config import TrainConfig

    config = config or TrainConfig()
    base = HeadSettings.from_config(config, family="softmax", hidden_units=0)
    return [base, dataclasses.replace(base, family="mlp", hidden_units=256),
            HeadSettings(family="logistic", class_weight=config.class_weight)]
