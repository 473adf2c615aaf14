"""Runtimes for exported models: ONNX Runtime, the TFLite interpreter, a TF SavedModel.

Every runtime has ``name``, ``input_size``, ``num_classes`` and ``__call__(images)`` mapping
uint8 (or 0..255 float) RGB images (N, S, S, 3) to float32 probabilities (N, C), so a
:class:`~transferlab.inference.Classifier` works the same on any of them.

:class:`OnnxRuntime` and :class:`TFLiteRuntime` (with the ``ai-edge-litert`` package) never
import TensorFlow: on an edge device it would double the start-up time and the install size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from transferlab.errors import MissingDependencyError, ModelFormatError
from transferlab.runtimes.base import as_dtype, static_dim
from transferlab.runtimes.metadata import read_tflite_metadata

# LiteRT / tf.lite print this info line on every interpreter: nothing a user can act on.
_TFLITE_NOISE = ("Created TensorFlow Lite XNNPACK delegate", "Created TensorFlow Lite delegate")

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class OnnxRuntime:
    """An exported ``.onnx`` classifier under ONNX Runtime (CPU)."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from transferlab.runtimes.onnx_convert import onnx_session

        self.path = Path(path)
        self._session = onnx_session(self.path, threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelFormatError(f"{self.path} has {len(inputs)} inputs; a classifier takes one image batch. "
                             "Export it with `transferlab export RUN`.")
        self._input = inputs[0].name
        self._output = OUTPUT_NAME if OUTPUT_NAME in [o.name for o in outputs] else outputs[0].name
        self._dtype = np.uint8 if inputs[0].type == "tensor(uint8)" else np.float32
        shape = inputs[0].shape
        self.input_size = static_dim(shape[1]) if len(shape) == 4 else None
        out_shape = next(o.shape for o in outputs if o.name == self._output)
        self.num_classes = static_dim(out_shape[-1]) if out_shape else None
        self.input_dtype = np.dtype(self._dtype).name
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        feed = {self._input: as_dtype(images, self._dtype)}
        return np.asarray(self._session.run([self._output], feed)[0], dtype=np.float32)


def tflite_interpreter(path: str | os.PathLike, threads: int | None = None):
    """A TFLite interpreter: LiteRT (``ai_edge_litert``, no TensorFlow) when installed, else ``tf.lite``."""
    threads = threads or os.cpu_count() or 1
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from transferlab._tf import import_tf

            tf = import_tf()
        except ImportError as exc:
            raise MissingDependencyError("Running a .tflite model needs the LiteRT interpreter: "
                              "`pip install ai-edge-litert` (or TensorFlow).") from exc
        with warnings.catch_warnings():  # tf.lite.Interpreter warns that it is deprecated in favour of LiteRT
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    return Interpreter(model_path=str(path), num_threads=threads)


class TFLiteRuntime:
    """An exported ``.tflite`` classifier (float or integer-quantized) under the TFLite interpreter.

    Quantized inputs are quantized and quantized outputs dequantized here, so callers always
    pass pixels and get probabilities.
    """

    name = "tflite"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        with _tflite_quiet():
            self._interpreter = tflite_interpreter(self.path, threads)
            self._interpreter.allocate_tensors()  # where the delegate is created (and announced)
        self.interpreter = type(self._interpreter).__module__.split(".")[0]
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1:
            raise ModelFormatError(f"{self.path} has {len(inputs)} inputs; a classifier takes one image batch. "
                             "Export it with `transferlab export RUN`.")
        self._in = inputs[0]
        self._out = next((o for o in outputs if OUTPUT_NAME in o["name"]), outputs[0])
        signature = self._in.get("shape_signature", self._in["shape"])
        self._dynamic_batch = int(signature[0]) < 1
        self._batch = int(self._in["shape"][0])
        self.input_size = static_dim(int(self._in["shape"][1]))
        self.num_classes = static_dim(int(self._out["shape"][-1]))
        self.input_dtype = np.dtype(self._in["dtype"]).name
        self.output_dtype = np.dtype(self._out["dtype"]).name
        self.input_quantization = tuple(self._in["quantization"])
        self.output_quantization = tuple(self._out["quantization"])
        self.metadata = read_tflite_metadata(self.path)  # labels and resize written at export

    def _quantize(self, images: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        scale, zero = self._in["quantization"]
        if dtype.kind in "iu" and scale and (scale, zero) != (1.0, 0):
            images = np.asarray(images, np.float32) / scale + zero
        return as_dtype(images, dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        index = self._in["index"]
        if len(batch) != self._batch:
            self._interpreter.resize_tensor_input(index, [len(batch), *self._in["shape"][1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(index, batch)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._out["index"])
        scale, zero = self._out["quantization"]
        if out.dtype.kind in "iu" and scale:
            return (out.astype(np.float32) - zero) * np.float32(scale)
        return out.astype(np.float32, copy=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = self._quantize(images)
        if self._dynamic_batch or len(batch) == self._batch:
            return self._run(batch)
        # A model with a fixed batch dimension runs in chunks of that size; the last is padded.
        size, parts = self._batch, []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            parts.append(self._run(padded)[:len(chunk)])
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes or 0), np.float32)


def _tflite_quiet():
    """Hide the interpreter's info chatter unless the user asked for C++ info logs (``TF_CPP_MIN_LOG_LEVEL=0``)."""
    from contextlib import nullcontext

    from transferlab._tf import stderr_filtered

    return nullcontext() if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" else stderr_filtered(_TFLITE_NOISE)


class SavedModelRuntime:
    """A TensorFlow SavedModel directory, through its ``serving_default`` signature."""

    name = "savedmodel"

    def __init__(self, path: str | os.PathLike, signature: str = SERVING_SIGNATURE):
        from transferlab._tf import import_tf

        tf = import_tf()
        self.path = Path(path)
        self._loaded = tf.saved_model.load(str(self.path))
        signatures = dict(self._loaded.signatures)
        if signature not in signatures:
            raise ModelFormatError(f"{self.path} has no {signature!r} signature (it has: {', '.join(signatures) or 'none'}). "
                             "Export it with `transferlab export RUN`.")
        self._fn = signatures[signature]
        _, inputs = self._fn.structured_input_signature
        if len(inputs) != 1:
            raise ModelFormatError(f"The {signature!r} signature of {self.path} takes {len(inputs)} inputs; "
                             "a classifier takes one image batch.")
        (self._input, spec), = inputs.items()
        outputs = self._fn.structured_outputs
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs))
        self._dtype = spec.dtype.as_numpy_dtype
        self._tf = tf
        self.input_size = static_dim(spec.shape[1]) if spec.shape.rank == 4 else None
        self.num_classes = static_dim(outputs[self._output].shape[-1])
        self.input_dtype = np.dtype(self._dtype).name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = self._tf.constant(as_dtype(images, self._dtype))
        return np.asarray(self._fn(**{self._input: batch})[self._output], dtype=np.float32)
