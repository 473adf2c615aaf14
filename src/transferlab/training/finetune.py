"""Fine-tuning: unfreeze the top of the backbone and train end to end on images.

BatchNorm layers always stay frozen. In Keras 3 a BatchNormalization layer with
``trainable = False`` runs in inference mode (moving statistics used, never updated), even
inside ``fit``; so small fine-tuning batches cannot wreck statistics learned on ImageNet, the
known pitfall where fine-tuning destroys validation accuracy.
"""

from __future__ import annotations

import logging
import math

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


def freeze_all(model: keras.Model) -> None:
    """Freeze the backbone base again (e.g. after fine-tuning, before saving)."""
    find_base(model).trainable = False


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


def steps_for(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def fine_tune(model: keras.Model, train_data: tuple[list[str], list[int]], val_data: tuple[list[str], list[int]],
              resize, config, *, num_classes: int, callbacks: list, initial_epoch: int = 0,
              restore_state=None, guard=None) -> dict[str, list[float]]:
    """Phase 2: train ``model`` (image -> probabilities) end to end on augmented images.

    ``model`` must already have its trainable layers set (see :func:`set_trainable_top`); pass
    ``restore_state`` (a checkpoint's ``state.npz``) and ``initial_epoch`` to continue one.
    ``guard``: a ResumableEarlyStopping seeded with the starting model's validation loss, so the
    fine-tuned weights are kept only if they beat it (else the starting weights are restored).
    """
    import tensorflow as tf

    from transferlab.data.pipeline import make_image_dataset
    from transferlab.training.head import compile_classifier

    epochs = config.fine_tune_epochs
    lr = config.fine_tune_lr or config.learning_rate / 10.0
    train_paths, train_labels = train_data
    steps = steps_for(len(train_paths), config.fine_tune_batch_size)
    compile_classifier(model, learning_rate_schedule(config.schedule, lr, epochs, steps, config.warmup_epochs),
                       config.label_smoothing)
    if restore_state is not None:
        from transferlab.training.checkpoint import load_training_state

        load_training_state(model, restore_state)
    keras.utils.set_random_seed(config.seed + 7919 + initial_epoch)

    def one_hot(images, labels, weights):
        return images, tf.one_hot(labels, num_classes), weights

    train = make_image_dataset(train_paths, train_labels, resize, batch_size=config.fine_tune_batch_size,
                               shuffle=True, augment=config.augment, seed=config.seed,
                               epochs=(initial_epoch, epochs)).map(one_hot)
    val = None
    if val_data[0]:
        val = make_image_dataset(val_data[0], val_data[1], resize, batch_size=32).map(one_hot)
    if guard is not None and val is not None and restore_state is None:
        baseline = model.evaluate(val, verbose=0, return_dict=True)["loss"]
        guard.seed_baseline(model, baseline)
        logger.info("Validation loss before fine-tuning: %.4f", baseline)
    history = model.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=0)
    return {k: [float(v) for v in values] for k, values in history.history.items()}
