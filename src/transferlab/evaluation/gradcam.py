"""Grad-CAM: where in the image the model looked for a class (Selvaraju et al., 2017).

Our classifiers are ``Input "image" -> backbone_* (preprocessing -> "base" -> "pool") -> head``.
The class score is differentiated with respect to the 4-D output of the nested ``base`` model
(the last convolutional feature map): channel weights are the spatially averaged gradients, the
map is ``ReLU(sum_k w_k * A_k)``, normalised to 0..1 per image.

The score is the class *logit* when the head ends in a softmax Dense layer (as ``build_head``
does), so confident predictions still give a clear map; otherwise the probability.

A tiled backbone (:mod:`transferlab.backbones.tiling`) runs ``base`` on every tile: its maps
(T tiles of h x w) are explained as one map of T*h x w, so the channel weights are averaged
over all tiles (the tile whose features won the max over tiles carries the gradient), and
each tile's part is put back where the tile is in the image (overlaps: the larger value).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from transferlab.data.tiles import place_tiles
from transferlab.errors import ConfigError, TransferlabError, closest_name_hint

logger = logging.getLogger("transferlab")

__all__ = ["gradcam", "gradcam_with_predictions", "feature_maps", "FeatureMapCache", "overlay", "explain",
           "GradCamUnavailable"]

_BATCH = 16


class GradCamUnavailable(TransferlabError, ValueError):
    """The model has no convolutional feature map to explain (or not our model structure)."""


def _is_input(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.InputLayer)


def _chain(model) -> list:
    """The layers of a single-path functional model in call order, inputs left out."""
    layers = [layer for layer in model.layers if not _is_input(layer)]
    for layer in layers:
        nodes = [n for n in layer._inbound_nodes if n.operation is layer]
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            raise GradCamUnavailable(
                f"Grad-CAM needs a single-path model; layer {layer.name!r} of {model.name!r} has "
                "several inputs or is called more than once.")
    return layers


class _Explainer:
    """Splits a classifier into ``to_map`` (pixels -> 4-D map) and ``to_score`` (map -> scores)."""

    def __init__(self, model):
        import keras

        from transferlab.backbones.tiling import is_tiled

        backbone = next((l for l in model.layers if isinstance(l, keras.Model) and l.name.startswith("backbone_")),
                        None)
        head = next((l for l in model.layers if isinstance(l, keras.Model) and l.name == "head"), None)
        if backbone is None or head is None:
            raise GradCamUnavailable(
                f"Grad-CAM needs a transferlab classifier (image -> backbone_* -> head); model "
                f"{model.name!r} has layers {', '.join(l.name for l in model.layers)}.")
        self.head_layers = _chain(head)
        last = self.head_layers[-1]
        self.logit = (isinstance(last, keras.layers.Dense)
                      and getattr(last.activation, "__name__", "") == "softmax")
        self.grid = None
        if is_tiled(backbone):
            self._tiled(backbone)
            return
        layers = _chain(backbone)
        names = [l.name for l in layers]
        if "base" not in names:
            raise GradCamUnavailable(f"Backbone {backbone.name!r} has no nested 'base' model.")
        cut = names.index("base")
        self.pre, self.base, self.post = layers[:cut], layers[cut], layers[cut + 1:]
        shape = tuple(self.base.output.shape)
        self.map_shape = tuple(int(d) for d in shape[1:]) if len(shape) == 4 and None not in shape[1:] else ()
        if len(shape) != 4:
            raise GradCamUnavailable(
                f"Grad-CAM needs a 4-D convolutional feature map, but the backbone's base model "
                f"outputs shape {shape} (e.g. a SavedModel / TF-Hub feature vector). Use a "
                "built-in backbone or a Keras model whose features come from a conv layer.")

    def _tiled(self, backbone) -> None:
        """Sub-models image -> per-tile maps (N, T, h, w, C) and maps -> pooled features."""
        import keras

        from transferlab.backbones.tiling import TILED_BASE, grid_of

        self.grid = grid_of(backbone)
        maps = backbone.get_layer(TILED_BASE).output
        if len(maps.shape) != 5:
            raise GradCamUnavailable(f"Grad-CAM needs a 4-D convolutional feature map, but the tiled backbone's base "
                                     f"outputs shape {maps.shape[:1] + maps.shape[2:]} per tile.")
        self.to_tiles, self.from_tiles = keras.Model(backbone.input, maps), keras.Model(maps, backbone.output)
        count, h, w, c = (int(d) for d in maps.shape[1:])
        self.map_shape = (count * h, w, c)

    def feature_map(self, x):
        import keras

        if self.grid is not None:  # (N, T, h, w, C) -> tiles stacked along the height: (N, T*h, w, C)
            return keras.ops.reshape(self.to_tiles(x, training=False), (-1, *self.map_shape))
        for layer in self.pre:
            x = layer(x, training=False)
        return self.base(x, training=False)

    def arrange(self, cams: np.ndarray) -> np.ndarray:
        """Maps (N, h', w) as computed -> (N, H, W) laid out like the image (tiles put back in place)."""
        if self.grid is None:
            return cams
        count = self.grid.count
        return place_tiles(cams.reshape(len(cams), count, cams.shape[1] // count, cams.shape[2]), self.grid)

    def scores(self, fmap):
        """(probabilities, class scores used for the gradient)."""
        import keras

        x = fmap
        if self.grid is not None:
            count, (height, w, c) = self.grid.count, self.map_shape
            x = self.from_tiles(keras.ops.reshape(x, (-1, count, height // count, w, c)), training=False)
        for layer in self.post if self.grid is None else ():
            x = layer(x, training=False)
        for layer in self.head_layers[:-1]:
            x = layer(x, training=False)
        last = self.head_layers[-1]
        if self.logit:
            logits = keras.ops.matmul(x, last.kernel)
            if last.use_bias:
                logits = logits + last.bias
            return keras.ops.softmax(logits, axis=-1), logits
        probs = last(x, training=False)
        return probs, probs


def _explainer(clf) -> _Explainer:
    model = getattr(clf, "model", None)
    if model is None:
        where = f" ({clf.run_dir})" if getattr(clf, "run_dir", None) else ""
        raise GradCamUnavailable(f"Grad-CAM needs the Keras model, and this classifier runs {clf.runtime.name}: "
                                 f"pass the run directory{where}, which holds model.keras, instead of the "
                                 "exported file.")
    cached = getattr(clf, "_gradcam_explainer", None)
    if cached is None:
        cached = _Explainer(model)
        clf._gradcam_explainer = cached
    return cached


def feature_maps(clf, images_uint8: np.ndarray) -> np.ndarray:
    """The 4-D feature maps Grad-CAM explains, (N, h, w, C) float32, for RGB images 0..255."""
    import tensorflow as tf

    from transferlab.data.arrays import images_to_batch

    explainer = _explainer(clf)
    batch = images_to_batch(images_uint8, clf.resize).astype(np.float32)
    maps = [np.asarray(explainer.feature_map(tf.constant(batch[i:i + _BATCH])), np.float32)
            for i in range(0, len(batch), _BATCH)]
    return np.concatenate(maps) if maps else np.zeros((0, *explainer.map_shape), np.float32)


class FeatureMapCache:
    """Feature maps of a frozen backbone, kept in the feature cache beside its pooled features.

    Grad-CAM needs each explained image's last 4-D feature map: a pass through the whole
    backbone (for a report's gallery of 8 images about 0.5 s on 2 CPU cores, most of the
    report's time). While the backbone is frozen an image's map never changes, so training
    keeps the maps of the images it explains under the features' fingerprint plus
    ``"output": "feature_map"``; the next run with other head settings reuses them.
    """

    def __init__(self, root: str | os.PathLike, fingerprint: dict):
        from transferlab.features.cache import FeatureCache

        self.cache = FeatureCache(root, {**fingerprint, "output": "feature_map"})

    def maps(self, clf, images_uint8: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """Maps of ``images_uint8`` (whose files have content hashes ``keys``), computing only the missing."""
        shape = _explainer(clf).map_shape
        if not shape:  # variable-size map (model without a fixed input size): nothing to key it by
            return feature_maps(clf, images_uint8)
        out = np.zeros((len(keys), int(np.prod(shape))), np.float32)
        missing = self.cache.gather(keys, out)
        if missing:
            computed = feature_maps(clf, np.asarray(images_uint8)[missing])
            for row, fmap in zip(missing, computed):
                out[row] = fmap.ravel()
                self.cache.put(keys[row], fmap)
        return out.reshape(len(keys), *shape)


def gradcam_with_predictions(clf, images_uint8: np.ndarray, class_index=None, *, maps: np.ndarray | None = None):
    """Like :func:`gradcam`, also returning probabilities (N, C) and the explained class indices."""
    import tensorflow as tf

    explainer = _explainer(clf)
    if maps is None:
        maps = feature_maps(clf, images_uint8)
    n = len(maps)
    if class_index is not None:
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
        if ((targets < 0) | (targets >= len(clf.class_names))).any():
            raise ConfigError(f"class_index must be in [0, {len(clf.class_names) - 1}].")
    cams, probs, chosen = [], [], []
    for start in range(0, n, _BATCH):
        fmap = tf.constant(maps[start:start + _BATCH])
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            p, score = explainer.scores(fmap)
            idx = (tf.argmax(p, axis=-1) if class_index is None
                   else tf.constant(targets[start:start + _BATCH]))
            target = tf.gather(score, idx, axis=1, batch_dims=1)
        grads = tape.gradient(target, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy().astype(np.float32)
        peak = cam.reshape(len(cam), -1).max(axis=1)
        cam = np.divide(cam, peak[:, None, None], out=np.zeros_like(cam), where=peak[:, None, None] > 0)
        cams.append(explainer.arrange(cam))
        probs.append(np.asarray(p, np.float32))
        chosen.append(np.asarray(idx, np.int64))
    return np.concatenate(cams), np.concatenate(probs), np.concatenate(chosen)


def gradcam(clf, images_uint8: np.ndarray, class_index: int | Sequence[int] | None = None, *,
            maps: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (N, h, w) in 0..1 at the feature map's resolution.

    Args:
        clf: a :class:`~transferlab.inference.Classifier` with a Keras model.
        images_uint8: RGB images (N, H, W, 3) or (H, W, 3), 0..255; resized like at prediction.
        class_index: the class to explain (one index, or one per image); default the predicted one.
        maps: the images' feature maps if already known (:func:`feature_maps`, :class:`FeatureMapCache`).

    Raises:
        GradCamUnavailable (a ValueError): the backbone has no 4-D feature map.
    """
    return gradcam_with_predictions(clf, images_uint8, class_index, maps=maps)[0]


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Heatmap (h, w) in 0..1, upsampled to the image and colour-mapped, alpha-blended: uint8 (H, W, 3)."""
    from matplotlib import colormaps
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.float32)
    height, width = img.shape[:2]
    heat = np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0)
    heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.BILINEAR))
    colour = colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1.0 - alpha) * img + alpha * colour, 0, 255).round().astype(np.uint8)


def _display(image: np.ndarray, min_side: int = 224) -> np.ndarray:
    """Upscale small model inputs (e.g. 32 px) so the overlay can be seen."""
    from PIL import Image

    side = min(image.shape[:2])
    if side >= min_side:
        return image
    scale = -(-min_side // side)
    return np.asarray(Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale),
                                                    Image.BICUBIC))


def explain(model_path_or_clf, paths, out_dir: str | os.PathLike, class_name: str | None = None) -> list[Path]:
    """Write a Grad-CAM overlay PNG per image into ``out_dir``; returns the files written.

    Args:
        model_path_or_clf: a run directory, a ``.keras`` file or a loaded Classifier.
        paths: image files, folders or globs.
        class_name: explain this class; default each image's predicted class.

    Unreadable images are skipped with a warning.
    """
    from transferlab.data.decode import ImageDecodeError
    from transferlab.inference import expand_paths, load
    from transferlab.progress import progress_bar

    clf = model_path_or_clf if hasattr(model_path_or_clf, "class_names") else load(model_path_or_clf)
    class_index = None
    if class_name is not None:
        if class_name not in clf.class_names:
            raise ConfigError(f"Unknown class {class_name!r}.{closest_name_hint(class_name, clf.class_names)} "
                              f"The model's classes: {', '.join(clf.class_names)}.")
        class_index = clf.class_names.index(class_name)
    _explainer(clf)  # fail before reading any image
    files = expand_paths(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    used: set[str] = set()
    from PIL import Image

    with progress_bar(total=len(files), desc="Explaining", unit="img") as bar:
        for path in files:
            bar.update(1)
            try:
                image = clf.resize.load(path)
            except ImageDecodeError as exc:
                logger.warning("cannot read %s: %s", path, exc)
                continue
            cam, probs, idx = gradcam_with_predictions(clf, image[None], class_index)
            label = clf.class_names[int(idx[0])]
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "image"
            name = f"{stem}_gradcam_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"
            unique, n = name, 2
            while unique in used:
                unique, n = f"{name}_{n}", n + 1
            used.add(unique)
            target = out / f"{unique}.png"
            Image.fromarray(overlay(_display(image), cam[0])).save(target)
            # debug only: the CLI prints each written file once itself
            logger.debug("%s: %s %.3f -> %s", path, label, float(probs[0, idx[0]]), target)
            written.append(target)
    return written
