"""Keras -> ONNX conversion through a traced ``tf.function`` and tf2onnx.

Used twice: by the feature extractor (a backbone runs faster under ONNX Runtime on CPU) and by
the exporter (a deployable classifier). Tracing the model as a plain function of one input
keeps every weight and constant inside the graph, so the ONNX model has exactly one input.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferlab._atomic import atomic_write_bytes

ONNX_OPSET = 17


def keras_to_onnx(model, path: str | os.PathLike, *, input_size: int, input_dtype: str = "float32",
                  input_name: str = "image", output_name: str | None = None, opset: int = ONNX_OPSET) -> Path:
    """Convert ``model`` (N, S, S, 3) -> outputs to an ONNX file, written atomically.

    ``input_dtype="uint8"`` makes the graph take raw pixels and cast them to float32 inside;
    ``output_name`` names the single output (tf2onnx's default name otherwise).

    Raises:
        ImportError: tf2onnx is not installed.
    """
    from transferlab._tf import import_tf

    tf = import_tf()
    import logging

    import tf2onnx  # imported here: not needed at predict time

    tf2onnx.logging.set_level(logging.ERROR)  # its per-conversion INFO lines are noise to users

    spec = (tf.TensorSpec((None, input_size, input_size, 3), getattr(tf, input_dtype), name=input_name),)

    @tf.function(input_signature=spec)
    def serve(image):
        outputs = model(tf.cast(image, tf.float32), training=False)
        # A dict output is how tf2onnx learns the output's name.
        return {output_name: outputs} if output_name else outputs

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session using all cores (or ``threads``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    # No busy-waiting between operators: the image decoding threads need those cycles
    # (measured: +15% extraction throughput on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
