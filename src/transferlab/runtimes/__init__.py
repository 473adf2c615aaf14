"""Model runners with one interface (:class:`~transferlab.runtimes.base.Runtime`).

:class:`KerasRuntime` (a Keras model under ``tf.function``), :class:`OnnxRuntime` (ONNX Runtime),
:class:`TFLiteRuntime` (LiteRT, or TensorFlow's interpreter) and :class:`SavedModelRuntime`. The
feature extractor, prediction and the exporter's parity checks all run models through these.
ONNX and TFLite runtimes never import TensorFlow; attributes are imported lazily for that reason.
"""

from __future__ import annotations

from transferlab._lazy import lazy_attributes

_LAZY = {
    "Runtime": "transferlab.runtimes.base",
    "as_dtype": "transferlab.runtimes.base",
    "KerasRuntime": "transferlab.runtimes.keras",
    "OnnxRuntime": "transferlab.runtimes.exported",
    "TFLiteRuntime": "transferlab.runtimes.exported",
    "SavedModelRuntime": "transferlab.runtimes.exported",
    "tflite_interpreter": "transferlab.runtimes.exported",
    "keras_to_onnx": "transferlab.runtimes.onnx_convert",
    "onnx_session": "transferlab.runtimes.onnx_convert",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
