"""A Keras model (raw 0..255 pixels in) under a traced function: no per-call ``predict`` overhead."""

from __future__ import annotations

import numpy as np

from transferlab.runtimes.base import as_dtype


class KerasRuntime:
    """Runs a Keras model (a classifier or a backbone) under ``tf.function``.

    Args:
        model: a ``keras.Model`` taking (N, S, S, 3) images; float32 (a run's model) or uint8
            (an exported one) inputs are fed in their own dtype.
    """

    name = "keras"

    def __init__(self, model):
        from transferlab._tf import import_tf

        tf = import_tf()
        self.model = model
        self.input_dtype = str(getattr(model.inputs[0], "dtype", "float32")).split(".")[-1]
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @property
    def input_size(self) -> int | None:
        shape = self.model.input_shape
        return shape[1] if shape[1] == shape[2] else None

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(as_dtype(images, self.input_dtype)), dtype=np.float32)
