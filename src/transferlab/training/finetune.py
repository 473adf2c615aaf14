"""Fine-tuning: unfreeze the top of the backbone and train end to end on images.

BatchNorm layers always stay frozen. In Keras 3 a BatchNormalization layer with
``trainable = False`` runs in inference mode (moving statistics used, never updated), even
inside ``fit``; so small fine-tuning batches cannot wreck statistics learned on ImageNet, the
known pitfall where fine-tuning destroys validation accuracy.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from transferlab._keras import keras
from transferlab.errors import ConfigError

logger = logging.getLogger("transferlab")


def find_base(model: keras.Model) -> keras.Model:
    """The nested functional model named "base" inside a backbone or a full classifier."""
    for layer in model.layers:
        if layer.name == "base" and isinstance(layer, keras.Model):
            return layer
        if isinstance(layer, keras.Model):
            try:
                return find_base(layer)
            except ValueError:
                continue
    raise ConfigError(f"Model {model.name!r} has no nested 'base' network to fine-tune.")


def _weighted_layers(base: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own weights, excluding BatchNorm (never unfrozen), bottom to top."""
    return [layer for layer in base.layers
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]


def set_trainable_top(base: keras.Model, unfreeze: str | int = "20", unfreeze_from: str | None = None) -> list[str]:
    """Unfreeze the top of ``base``; return the names of the layers made trainable.

    Args:
        unfreeze: ``"all"`` or N: the top N layers that have weights (BatchNorm not counted).
        unfreeze_from: a layer name: that layer and every layer above it (overrides ``unfreeze``).

    BatchNormalization layers stay frozen (inference mode) whatever is asked.
    """
    base.trainable = True  # nested layers only train if their container is trainable
    names = [layer.name for layer in base.layers]
    if unfreeze_from is not None:
        if unfreeze_from not in names:
            close = ", ".join(n for n in names if unfreeze_from.split("_")[0] in n)[:300]
            raise ConfigError(f"No layer named {unfreeze_from!r} in the backbone. "
                             f"{'Similar: ' + close if close else 'List them with model.summary()'}.")
        start = names.index(unfreeze_from)
        chosen = {layer.name for layer in base.layers[start:] if layer.weights}
    else:
        candidates = _weighted_layers(base)
        count = len(candidates) if str(unfreeze) == "all" else int(unfreeze)
        # max(0, ...): asking for more layers than there are means all of them (a negative
        # start would silently pick the last few instead).
        chosen = {layer.name for layer in candidates[max(0, len(candidates) - count):]} if count > 0 else set()
    unfrozen = []
    for layer in base.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name in chosen and not is_bn
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    if not unfrozen:
        base.trainable = False
    return unfrozen


def freeze_all(model: keras.Model, label_smoothing: float = 0.0) -> None:
    """Freeze the backbone base again (after fine-tuning, before saving), with a plain optimizer."""
    find_base(model).trainable = False
    release_optimizer(model, label_smoothing)


_BLOCK = re.compile(r"(block_?\d+[a-z]?|conv\d+_block\d+)")


def layer_groups(base: keras.Model) -> dict[str, int]:
    """Weighted layer name -> depth group (0 = bottom), one group per block of the network.

    A block is what a name like ``block6a_*`` (EfficientNet), ``block_13_*`` (MobileNetV2) or
    ``conv4_block2_*`` (ResNet) says; layers outside blocks (stem, top conv) are groups of their
    own, so layer-wise rate decay steps once per block rather than once per layer.
    """
    groups, group, previous = {}, -1, object()
    for layer in _weighted_layers(base):
        match = _BLOCK.match(layer.name)
        key = match.group(1) if match else layer.name
        if key != previous:
            group, previous = group + 1, key
        groups[layer.name] = group
    return groups


def rate_multipliers(model: keras.Model, layer_decay: float) -> dict[int, float]:
    """``id(variable)`` -> learning-rate multiplier for the trainable variables of ``model``.

    Layer-wise rate decay (discriminative rates, as fastai's ``fine_tune`` and timm's
    ``--layer-decay``): the head and the top block train at the full rate, each block below at
    ``layer_decay`` times the rate of the block above it. ``layer_decay`` 1.0 gives every
    variable the full rate (an empty mapping).
    """
    if layer_decay >= 1.0:
        return {}
    base = find_base(model)
    groups = layer_groups(base)
    top = max(groups.values(), default=0)
    multipliers = {}
    for layer in base.layers:
        if layer.name in groups:
            for variable in layer.trainable_weights:
                multipliers[id(variable)] = float(layer_decay ** (top - groups[layer.name]))
    return multipliers


class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose step for each variable is scaled by a fixed multiplier (layer-wise rate decay).

    Only used while fine-tuning: the model is recompiled with a plain optimizer before it is
    saved (:func:`fine_tune`), so a saved model never needs this class to load.
    """

    def __init__(self, *args, multipliers: dict[int, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._multipliers_by_id = dict(multipliers or {})
        self._multiplier_list: list[float] = []

    def build(self, var_list):
        self._multiplier_list = [self._multipliers_by_id.get(id(v), 1.0) for v in var_list]
        super().build(var_list)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_list[self._get_variable_index(variable)] if self._multiplier_list else 1.0
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)


def fine_tune_optimizer(learning_rate, config, multipliers: dict[int, float] | None = None) -> keras.optimizers.Optimizer:
    """AdamW with the config's weight decay and global gradient clipping; ``multipliers`` from
    :func:`rate_multipliers` (layer-wise rate decay). Biases (and BatchNorm, which never
    trains) are excluded from weight decay.
    """
    optimizer = LayerwiseAdamW(learning_rate, weight_decay=float(config.weight_decay),
                               global_clipnorm=config.clip_norm or None, multipliers=multipliers)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_fine_tune(model: keras.Model, learning_rate, config, multipliers: dict[int, float] | None = None) -> None:
    """Compile ``model`` for fine-tuning: :func:`fine_tune_optimizer`, smoothed cross-entropy."""
    model.compile(optimizer=fine_tune_optimizer(learning_rate, config, multipliers),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def learning_rate_schedule(kind: str, base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 1):
    """A learning rate (float) or Keras schedule for ``kind`` in constant / cosine / plateau.

    "cosine" warms up linearly from base_lr/10 over ``warmup_epochs`` then decays to ~0;
    "plateau" returns the constant rate and relies on the ReduceLROnPlateau callback.
    """
    if kind in ("constant", "plateau"):
        return base_lr
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, max(0, warmup_epochs * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base_lr / 10.0 if warmup else base_lr, decay_steps=max(1, total - warmup),
        warmup_target=base_lr if warmup else None, warmup_steps=warmup, alpha=0.0)


def schedule_callbacks(kind: str, patience: int) -> list[keras.callbacks.Callback]:
    if kind == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                  patience=max(1, patience // 3), min_lr=1e-7)]
    return []


def fine_tune_rate(config) -> float:
    """The fine-tuning peak learning rate: ``fine_tune_lr``, or half the head's rate (5e-4 by
    default: with the top 16 layers it reached blood_cells' best validation accuracy by epoch 5)."""
    return config.fine_tune_lr or config.learning_rate / 2.0


def steps_for(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def fine_tune(model: keras.Model, train_data: tuple[list[str], list[int]], val_data: tuple[list[str], list[int]],
              resize, config, *, num_classes: int, callbacks: list, initial_epoch: int = 0,
              restore_state=None, guard=None, views=None, learning_rate=None) -> dict[str, list[float]]:
    """Phase 2: train ``model`` (image -> probabilities) end to end on augmented images.

    ``model`` must already have its trainable layers set (see :func:`set_trainable_top`); pass
    ``restore_state`` (a checkpoint's ``state.npz``) and ``initial_epoch`` to continue one.
    ``guard``: a ResumableEarlyStopping seeded with the starting model's validation loss, so the
    fine-tuned weights are kept only if they beat it (else the starting weights are restored).
    ``views``: :class:`~transferlab.training.cached_top.CachedViews` of the frozen bottom: then
    only the top of the network runs, on those (the checkpoints hold the top's weights).
    ``learning_rate``: a rate or schedule instead of the config's (e.g. a budget-fitted one).
    """
    import tensorflow as tf

    from transferlab.data.augment import resolve_augment
    from transferlab.data.pipeline import make_image_dataset

    epochs = config.fine_tune_epochs
    lr = fine_tune_rate(config)
    train_paths, train_labels = train_data
    steps = steps_for(len(train_paths), config.fine_tune_batch_size)
    multipliers = rate_multipliers(model, config.layer_decay)
    trained = model
    if views is not None:
        from transferlab.training.cached_top import split_classifier

        trained = split_classifier(model, views.cut)[1]
    if learning_rate is None:
        learning_rate = learning_rate_schedule(config.schedule, lr, epochs, steps, config.warmup_epochs)
    compile_fine_tune(trained, learning_rate, config, multipliers)
    if restore_state is not None:
        from transferlab.training.checkpoint import load_training_state

        load_training_state(trained, restore_state)
    keras.utils.set_random_seed(config.seed + 7919 + initial_epoch)

    def one_hot(images, labels, weights):
        return images, tf.one_hot(labels, num_classes), weights

    val = None
    if views is not None:
        from transferlab.training.cached_top import views_dataset

        train = views_dataset(views, np.asarray(train_labels), num_classes, batch_size=config.fine_tune_batch_size,
                              seed=config.seed, epochs=(initial_epoch, epochs))
        if views.val is not None:
            val = tf.data.Dataset.from_tensor_slices(
                (views.val.astype(np.float32), np.eye(num_classes, dtype=np.float32)[np.asarray(val_data[1])])
            ).batch(64)
    else:
        train = make_image_dataset(train_paths, train_labels, resize, batch_size=config.fine_tune_batch_size,
                                   shuffle=True, augment=resolve_augment(config.augment), seed=config.seed,
                                   epochs=(initial_epoch, epochs)).map(one_hot)
        if val_data[0]:
            val = make_image_dataset(val_data[0], val_data[1], resize, batch_size=32).map(one_hot)
    if guard is not None and val is not None and restore_state is None:
        baseline = trained.evaluate(val, verbose=0, return_dict=True)["loss"]
        guard.seed_baseline(trained, baseline)
        logger.info("Validation loss before fine-tuning: %.4f", baseline)
    history = trained.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=0)
    release_optimizer(model, config.label_smoothing)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def release_optimizer(model: keras.Model, label_smoothing: float = 0.0) -> None:
    """Recompile with plain Adam so the saved model loads in plain Keras (no custom optimizer)."""
    from transferlab.training.head import compile_classifier

    compile_classifier(model, 1e-4, label_smoothing)
    # Built now, for the variables trainable now: a saved model then loads without Keras warning
    # that the optimizer's saved variables do not match.
    model.optimizer.build(model.trainable_variables)
