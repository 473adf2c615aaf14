"""Import TensorFlow lazily and quietly.

``import transferlab`` must stay light (ONNX/TFLite prediction on edge devices never imports
TensorFlow), so every module that needs TensorFlow calls :func:`import_tf` at use time.
"""

from __future__ import annotations

import os


def import_tf():
    """Return the ``tensorflow`` module, with its C++ info logs off unless the user set them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "TensorFlow is not installed. Install transferlab with a TensorFlow build: "
            "`pip install 'transferlab[cpu]'` (CPU) or `pip install 'transferlab[gpu]'` (NVIDIA GPU)."
        ) from exc
    return tf
