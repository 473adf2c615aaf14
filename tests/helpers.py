"""Tiny models for fast tests (a real pretrained backbone is used only in a few slow tests)."""

from __future__ import annotations

from pathlib import Path

TINY_SIZE = 32


def save_tiny_cnn(path: Path, num_classes: int = 4, size: int = TINY_SIZE, seed: int = 0) -> Path:
    """A small CNN classifier saved as ``.keras``: usable as a "personal model" backbone."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path
