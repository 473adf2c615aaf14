"""Streaming ``tf.data`` input pipelines: decode -> resize -> (augment) -> batch -> prefetch.

Files are decoded by the same Pillow code that validated them (:func:`transferlab.data.decode.load_image`),
in parallel threads (Pillow releases the GIL while decoding), so the pipeline never meets a
file validation would reject and never holds more than a few batches in memory.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from transferlab._tf import import_tf
from transferlab.data.decode import ImageDecodeError, ResizeConfig, load_image  # noqa: F401 (re-exported)
from transferlab.errors import ConfigError

logger = logging.getLogger("transferlab")


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation; each transform is off at 0 / False.

    Attributes:
        flip_horizontal, flip_vertical: random mirror (vertical suits top-down inspection shots).
        brightness: max absolute brightness change, as a fraction of 255.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        zoom: random crop keeping between (1 - zoom) and 1 of each side, resized back.
    """

    flip_horizontal: bool = True
    flip_vertical: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    zoom: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def augment_image(image, seed, config: AugmentConfig):
    """Augment one float32 image (H, W, 3) in 0..255 with a stateless seed of shape (2,)."""
    import tensorflow as tf  # already imported by the caller; plain import keeps AutoGraph quiet
    image = image / 255.0
    s = tf.random.experimental.stateless_split(seed, num=5)
    if config.flip_horizontal:
        image = tf.image.stateless_random_flip_left_right(image, s[0])
    if config.flip_vertical:
        image = tf.image.stateless_random_flip_up_down(image, s[1])
    if config.zoom > 0:
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        u = tf.random.stateless_uniform([3], s[2])
        keep = 1.0 - config.zoom * u[0]
        top, left = (1.0 - keep) * u[1], (1.0 - keep) * u[2]
        box = tf.stack([top, left, top + keep, left + keep])[None]
        image = tf.image.crop_and_resize(image[None], box, [0], tf.stack([h, w]))[0]
    if config.brightness > 0:
        image = tf.image.stateless_random_brightness(image, config.brightness, s[3])
    if config.contrast > 0:
        image = tf.image.stateless_random_contrast(image, 1.0 - config.contrast, 1.0 + config.contrast, s[4])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def epoch_permutation(index, n: int, seed: int, epoch):
    """Position ``index`` of a permutation of range(n) that depends only on (seed, epoch).

    Stateless (``index_shuffle``), so it never interacts with TensorFlow's global seed, and a
    resumed run recomputes exactly the order an uninterrupted run used.
    """
    import tensorflow as tf

    key = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64), tf.constant(0, tf.int64)])
    return tf.random.experimental.index_shuffle(tf.cast(index, tf.int64), key, tf.constant(n - 1, tf.int64))


def _is_ok(element, ok):
    return ok


def _drop_flag(element, ok):
    return element


def make_image_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    resize: ResizeConfig,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    epochs: tuple[int, int] | None = None,
    num_parallel_calls: int | None = None,
):
    """Build a streaming ``tf.data.Dataset`` over image files.

    Args:
        paths: image files (already validated).
        labels: int class indices aligned with paths, or None for unlabeled data.
        resize: output size and resize mode.
        shuffle: shuffle the file order (seeded, reproducible).
        augment: random augmentation applied per image with seeded stateless ops.
        epochs: ``(first, end)``: one dataset covering epochs first..end-1 back to back, each
            epoch's order and augmentation derived from ``(seed, epoch)`` alone, so a run
            resumed at epoch k sees exactly the data an uninterrupted run would have. Use with
            ``fit(..., initial_epoch=first, steps_per_epoch=ceil(N / batch_size))``.
            Without it, one pass whose order changes each time it is iterated.

    Returns:
        Dataset of ``(images, labels, weights)``: images float32 (B, size, size, 3) with values
        in 0..255, labels int32 (B,), weights float32 (B,) = 1, or 0 for a file that could not
        be read any more (Keras then ignores it in losses and metrics). Keeping such a row
        instead of dropping it keeps the number of batches known, which Keras needs to
        iterate validation data correctly. Unlabeled (labels None): ``images`` only, unreadable
        files dropped.
    """
    tf = import_tf()
    n = len(paths)
    if n == 0:
        raise ConfigError("No images to read: the list of paths is empty.")
    size = resize.size
    path_table = tf.constant(list(paths))
    label_table = tf.constant(np.asarray(labels, dtype=np.int32)) if labels is not None else None
    calls = num_parallel_calls or tf.data.AUTOTUNE

    def read(path: bytes) -> tuple[np.ndarray, np.bool_]:
        try:
            return resize.load(path.decode("utf-8")), np.bool_(True)
        except ImageDecodeError as exc:
            # Files were validated before; one that broke since then is skipped with a
            # warning, so a long training run never dies on it.
            logger.warning("skipped %s (it changed since it was checked)", exc)
            return np.zeros((size, size, 3), np.uint8), np.bool_(False)

    def load(index, aug_seed):
        image, ok = tf.numpy_function(read, [path_table[index]], (tf.uint8, tf.bool), stateful=False)
        image = tf.cast(tf.ensure_shape(image, (size, size, 3)), tf.float32)
        if augment is not None:
            image = augment_image(image, aug_seed, augment)
        ok = tf.ensure_shape(ok, ())
        if label_table is None:
            return image, ok
        return image, label_table[index], tf.cast(ok, tf.float32)

    def one_epoch(epoch):
        indices = tf.data.Dataset.range(n)
        if shuffle:
            indices = indices.map(lambda i: epoch_permutation(i, n, seed, epoch))
        # Stateless per-image augmentation seed: (seed + epoch, index).
        with_seeds = indices.map(lambda i: (i, tf.stack([tf.cast(seed, tf.int64) + epoch, i])))
        ds = with_seeds.map(load, num_parallel_calls=calls, deterministic=True)
        if label_table is None:
            ds = ds.filter(_is_ok).map(_drop_flag)
        return ds.batch(batch_size)

    if epochs is not None:
        first, end = epochs
        # repeat(): Keras peeks one batch past the last epoch; never let it see "out of data".
        ds = tf.data.Dataset.range(first, end).flat_map(one_epoch).repeat()
    elif shuffle or augment is not None:
        # A fresh epoch number each time the dataset is iterated (Keras iterates it per epoch).
        counter = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        ds = counter.flat_map(lambda r: one_epoch(tf.math.abs(r) % 1_000_000_007))
    else:
        ds = one_epoch(tf.constant(0, tf.int64))
    return ds.prefetch(tf.data.AUTOTUNE)
