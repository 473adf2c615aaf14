"""Training augmentation: :class:`AugmentConfig`, the named presets, and the seeded transform.

Every transform is a stateless TensorFlow op keyed by a per-image seed, so the augmented view
of image i in epoch k is a function of (seed, epoch, i) alone: reproducible, and identical in a
resumed run. Presets (``--augment NAME``):

========== ======================================================================================
none       no augmentation
light      mirror left-right, small zoom, brightness and contrast (the pre-0.x default)
standard   light + random resized crop (area 0.5-1, aspect 3/4-4/3): photos whose up is up
micrograph standard + vertical flips and 90-degree rotations, crops of area 0.6-1: images whose
           orientation carries no meaning (microscopy, top-down inspection shots, aerial tiles)
aerial     micrograph with crops of area 0.4-1
========== ======================================================================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from transferlab.errors import ConfigError

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "augment_preset", "resolve_augment", "augment_image"]


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation; each transform is off at 0 / False / 1.0.

    Attributes:
        flip_horizontal, flip_vertical: random mirror (vertical suits top-down inspection shots).
        brightness: max absolute brightness change, as a fraction of 255.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        zoom: random crop keeping between (1 - zoom) and 1 of each side, resized back.
        rotate90: rotate by a random multiple of 90 degrees (square inputs only).
        min_crop_area: random resized crop (Inception style) keeping between this fraction and
            all of the image's area, aspect ratio log-uniform in [3/4, 4/3], resized back;
            1.0 = off.
    """

    flip_horizontal: bool = True
    flip_vertical: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    zoom: float = 0.1
    rotate90: bool = False
    min_crop_area: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.min_crop_area <= 1.0:
            raise ConfigError(f"min_crop_area must be in (0, 1], got {self.min_crop_area!r}.")
        if not 0.0 <= self.zoom < 1.0:
            raise ConfigError(f"zoom must be in [0, 1), got {self.zoom!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


_LIGHT = AugmentConfig()
AUGMENT_PRESETS: dict[str, AugmentConfig | None] = {
    "none": None,
    "light": _LIGHT,
    "standard": replace(_LIGHT, zoom=0.0, min_crop_area=0.5),
    "micrograph": replace(_LIGHT, zoom=0.0, min_crop_area=0.6, flip_vertical=True, rotate90=True),
    "aerial": replace(_LIGHT, zoom=0.0, min_crop_area=0.4, flip_vertical=True, rotate90=True),
}


def augment_preset(name: str) -> AugmentConfig | None:
    """The :class:`AugmentConfig` of preset ``name`` (None for "none")."""
    try:
        return AUGMENT_PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown augmentation preset {name!r}; choose one of "
                         f"{', '.join(AUGMENT_PRESETS)}.") from None


def resolve_augment(value: "str | dict | AugmentConfig | None") -> AugmentConfig | None:
    """A preset name, a dict of :class:`AugmentConfig` fields, a config or None -> config or None."""
    if value is None or isinstance(value, AugmentConfig):
        return value
    if isinstance(value, str):
        return augment_preset(value)
    if isinstance(value, dict):
        return AugmentConfig(**value)
    raise ConfigError(f"augment must be a preset name ({', '.join(AUGMENT_PRESETS)}), a dict or None, "
                     f"got {value!r}.")


def augment_image(image, seed, config: AugmentConfig):
    """Augment one float32 image (H, W, 3) in 0..255 with a stateless seed of shape (2,) int64.

    Returns float32 (H, W, 3) in 0..255, a function of (image, seed, config) alone.
    """
    import tensorflow as tf  # already imported by the caller; plain import keeps AutoGraph quiet

    image = image / 255.0
    # The first five streams are those of the original transforms, so a config without the
    # newer ones augments exactly as before (resumed runs stay bit-identical).
    s = tf.random.experimental.stateless_split(seed, num=5)
    extra = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 7), num=2)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    if config.min_crop_area < 1.0:
        u = tf.random.stateless_uniform([4], extra[0])
        area = config.min_crop_area + (1.0 - config.min_crop_area) * u[0]
        ratio = tf.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
        crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)  # fractions of the height and width
        crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        top, left = (1.0 - crop_h) * u[2], (1.0 - crop_w) * u[3]
        box = tf.stack([top, left, top + crop_h, left + crop_w])[None]
        image = tf.image.crop_and_resize(image[None], box, [0], tf.stack([h, w]))[0]
    if config.flip_horizontal:
        image = tf.image.stateless_random_flip_left_right(image, s[0])
    if config.flip_vertical:
        image = tf.image.stateless_random_flip_up_down(image, s[1])
    if config.rotate90:
        turns = tf.random.stateless_uniform([], extra[1], minval=0, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, turns)
    if config.zoom > 0:
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
