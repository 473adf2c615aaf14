"""Fine-tune only the top of the backbone on cached outputs of its frozen bottom.

When fine-tuning leaves the bottom of the network frozen (BatchNorm in inference mode, no
dropout below the cut), the bottom maps an image to the same tensor in every epoch. So the
bottom's outputs for a fixed set of augmented *views* of each training image are computed once,
through the feature cache (key: image content hash x view; fingerprint: backbone setting x cut
layer x augmentation x seed), and each epoch runs only the trainable top on them: no decoding,
resizing, augmentation or bottom forward pass per epoch, and validation reuses its cached
(unaugmented) view too. View 0 of every image is unaugmented; views 1.. are augmented with the
run's preset under a seed derived from (seed, view, content hash), so a view is the same in
every run and on every machine.

The price: a bounded set of augmentations (``views`` per image instead of a fresh one per
epoch), ``views x`` the cut tensor's size on disk and in memory (float16 in memory) per image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from transferlab._keras import keras
from transferlab.data.augment import AugmentConfig, augment_image

logger = logging.getLogger("transferlab")

# Mid-network activations reach the tens, and are held as float16 (relative precision ~5e-4):
# an ONNX Runtime result within 1e-3 of Keras is as exact as what is kept.
PARITY_TOLERANCE = 1e-3


@dataclass
class CachedViews:
    """The frozen bottom's outputs, flattened: train (views, N, D) and val (N_val, D), float16."""

    cut: str
    shape: tuple[int, ...]
    train: np.ndarray
    val: np.ndarray | None
    seconds: float = 0.0
    hits: int = 0
    misses: int = 0

    @property
    def bytes_per_view(self) -> int:
        """Size of one cache entry's vector (float32 on disk)."""
        return int(np.prod(self.shape)) * 4


def cut_points(base: keras.Model) -> list[str]:
    """Names of the layers of ``base`` whose output is the only tensor that later layers read.

    Splitting the network after such a layer gives a bottom and a top joined by one tensor
    (between blocks of EfficientNet, MobileNet, ResNet; never inside a residual block).
    """
    layers = base.layers
    position = {id(layer): i for i, layer in enumerate(layers)}
    # For each layer, the earliest layer any layer from it onwards reads from.
    earliest_read = [len(layers)] * (len(layers) + 1)
    for i in range(len(layers) - 1, -1, -1):
        reads = [position[id(t._keras_history.operation)] for node in layers[i]._inbound_nodes
                 for t in node.input_tensors]
        earliest_read[i] = min([earliest_read[i + 1], *reads])
    return [layers[i].name for i in range(1, len(layers) - 1) if earliest_read[i + 1] >= i]


def cut_below(base: keras.Model, trainable: list[str]) -> str | None:
    """The highest cut point below every trainable layer, or None when nothing useful is frozen."""
    names = [layer.name for layer in base.layers]
    if not trainable:
        return None
    first = min(names.index(name) for name in trainable)
    below = [name for name in cut_points(base) if names.index(name) < first]
    return below[-1] if below else None


def split_classifier(model: keras.Model, cut: str) -> tuple[keras.Model, keras.Model, tuple[int, ...]]:
    """``(bottom, top, cut shape)`` of a classifier (image -> backbone -> head) split at ``cut``.

    ``bottom``: raw pixels float32 (B, S, S, 3) -> flattened cut tensor (B, D), preprocessing
    included. ``top``: (B, D) -> class probabilities (B, C). Both share the classifier's layers,
    so training ``top`` trains the classifier.
    """
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "head")
    head = model.layers[-1]
    base = backbone.get_layer("base")  # every assembled backbone: image -> preprocessing -> "base" -> pooling
    cut_tensor = base.get_layer(cut).output
    shape = tuple(int(d) for d in cut_tensor.shape[1:])
    lower = keras.Model(base.input, cut_tensor, name="frozen_bottom")
    upper = keras.Model(cut_tensor, base.output, name="trainable_top")
    before, after, seen = [], [], False
    for layer in backbone.layers[1:]:  # preprocessing before the base, pooling after it
        if layer is base:
            seen = True
        elif seen:
            after.append(layer)
        else:
            before.append(layer)

    image = keras.Input(backbone.input_shape[1:], name="image")
    x = image
    for layer in before:
        x = layer(x)
    bottom = keras.Model(image, keras.layers.Flatten(name="flat_cut")(lower(x)), name="bottom")

    flat = keras.Input((int(np.prod(shape)),), name="cut_features")
    y = upper(keras.layers.Reshape(shape, name="cut_tensor")(flat))
    for layer in after:
        y = layer(y)
    top = keras.Model(flat, head(y), name="top")
    return bottom, top, shape


def view_seed(key: str, seed: int) -> tuple[int, int]:
    """Stateless seed of the view named by cache key ``<sha256>.v<view>``."""
    sha, view = key.rsplit(".v", 1)
    return seed * 1_000_003 + int(view), int(sha[:15], 16)


class ViewAugmenter:
    """``(uint8 images, keys) -> float32 images``: view 0 unchanged, others augmented by their seed."""

    def __init__(self, augment: AugmentConfig | None, seed: int):
        import tensorflow as tf

        self.augment, self.seed = augment, seed
        if augment is not None:
            def one(pair):
                return augment_image(pair[0], pair[1], augment)

            def batch(images, seeds):
                return tf.map_fn(one, (images, seeds), fn_output_signature=tf.float32)

            # No AutoGraph: the transforms are plain TensorFlow ops (and converting costs time).
            self._fn = tf.function(batch, reduce_retracing=True, autograph=False)

    def __call__(self, images: np.ndarray, keys: list[str]) -> np.ndarray:
        images = images.astype(np.float32)
        if self.augment is None or all(key.endswith(".v0") for key in keys):
            return images
        seeds = np.array([view_seed(key, self.seed) for key in keys], np.int64)
        out = np.array(self._fn(images, seeds))
        plain = [i for i, key in enumerate(keys) if key.endswith(".v0")]
        out[plain] = images[plain]
        return out


def compute_views(bottom: keras.Model, cut: str, shape: tuple[int, ...], train: tuple[list[str], list[str]],
                  val: tuple[list[str], list[str]], resize, augment: AugmentConfig | None, *, views: int,
                  seed: int, cache_root, fingerprint: dict, engine: str = "auto",
                  show_progress: bool = True, max_seconds: float | None = None) -> CachedViews:
    """The bottom's outputs for ``views`` views of each training image and view 0 of each val image.

    Args:
        train, val: ``(paths, sha256 keys)``.
        fingerprint: the backbone's feature fingerprint; the cut, augmentation and seed are added.
        max_seconds: stop adding views (at least one) once the next would end after this many
            seconds (time budgets); ``CachedViews.train`` then holds fewer views.

    Returns:
        :class:`CachedViews`; rows of files that could no longer be read are zero.
    """
    import time

    from transferlab.features.cache import FeatureCache
    from transferlab.features.extract import extract_features

    start = time.perf_counter()
    parts = {**fingerprint, "cut": cut, "augment": augment.to_dict() if augment else None, "view_seed": seed,
             "kind": "frozen-bottom views"}
    cache = FeatureCache(cache_root, parts)
    transform = ViewAugmenter(augment, seed)
    dim = int(np.prod(shape))
    out = CachedViews(cut, shape, np.zeros((views, len(train[0]), dim), np.float16), None)

    def run(paths, keys, desc):
        result = extract_features(paths, keys, bottom, resize, cache, engine=engine, show_progress=show_progress,
                                  desc=desc, transform=transform, parity_tolerance=PARITY_TOLERANCE)
        out.hits += result.hits
        out.misses += result.misses
        return result.features.astype(np.float16)

    if val[0]:
        out.val = run(val[0], [f"{k}.v0" for k in val[1]], "Frozen bottom, validation")
    done = 0
    for view in range(views if augment is not None else 1):
        began = time.perf_counter()
        out.train[view] = run(train[0], [f"{k}.v{view}" for k in train[1]], f"Frozen bottom, view {view + 1}/{views}")
        done = view + 1
        if max_seconds is not None and time.perf_counter() - start + (time.perf_counter() - began) > max_seconds:
            break
    if augment is None:  # without augmentation every view is view 0
        out.train[1:] = out.train[0]
    elif done < views:
        logger.info("Time budget: %d of %d views of the frozen bottom computed.", done, views)
        out.train = out.train[:done]
    out.seconds = time.perf_counter() - start
    logger.info("Frozen bottom (%s, %s = %.0f KB per view): %d views of %d images in %.1f s", cut,
                "x".join(map(str, shape)), out.bytes_per_view / 1024, views, len(train[0]), out.seconds)
    return out


def views_dataset(cached: CachedViews, labels: np.ndarray, num_classes: int, *, batch_size: int, seed: int,
                  epochs: tuple[int, int]):
    """Training batches of cached views: epoch k shows image i as view (k + i) mod views.

    Order and view depend on (seed, epoch) alone, like ``make_image_dataset(epochs=...)``, so
    a resumed run sees exactly the batches of an uninterrupted one. Yields
    ``(x float32 (B, D), one-hot float32 (B, C))``.
    """
    import tensorflow as tf

    from transferlab.data.pipeline import epoch_permutation

    views, n, dim = cached.train.shape
    store = cached.train
    one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]

    def gather(rows, epoch):
        rows = np.asarray(rows, np.int64)
        return store[(epoch + rows) % views, rows].astype(np.float32), one_hot[rows]

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops: nothing for AutoGraph to do
    def one_epoch(epoch):
        @tf.autograph.experimental.do_not_convert
        def position(i):
            return epoch_permutation(i, n, seed, epoch)

        @tf.autograph.experimental.do_not_convert
        def load(rows):
            x, y = tf.numpy_function(gather, [rows, epoch], (tf.float32, tf.float32), stateful=False)
            return tf.ensure_shape(x, (None, dim)), tf.ensure_shape(y, (None, num_classes))

        return tf.data.Dataset.range(n).map(position).batch(batch_size).map(load)

    first, end = epochs
    return tf.data.Dataset.range(first, end).flat_map(one_epoch).repeat().prefetch(2)
