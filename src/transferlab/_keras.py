"""``from transferlab._keras import keras``: Keras, imported after TensorFlow's start-up chatter filter.

Modules that need Keras at import time take it from here, so that the first import of
TensorFlow anywhere in the process goes through :func:`transferlab._tf.import_tf` and modules
that do not need Keras (the data stage, configs, ONNX/TFLite runtimes) never pull it in.
"""

from transferlab._tf import import_tf

import_tf()

import keras  # noqa: E402

__all__ = ["keras"]
