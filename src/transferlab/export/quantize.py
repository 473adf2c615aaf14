"""Full-integer (int8) TFLite conversion, with float fallback for the layers that quantize badly.

Where the int8 error enters is measured with TensorFlow's ``QuantizationDebugger``: for every
quantized layer, the RMS difference between its int8 output and the float output, in units of
that output's quantization step (``rmse / scale``). On EfficientNet-Lite0 classifiers almost
every layer sits at 0.3-0.6 steps, except the stem convolution and the first depthwise block,
at ~2.5 steps (measured on hymenoptera_data, see the closing note of issue 17): they see raw
image statistics, with few channels to average the rounding out. Layers above
``FALLBACK_RMSE_STEPS`` stay in float; they are tiny (a few kB of weights), so the file stays
about a quarter of the float size, and its interface stays uint8 pixels in, uint8 probabilities
out. The head (dense + softmax) quantizes well and stays integer.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger("transferlab")

FALLBACK_RMSE_STEPS = 1.0  # a layer whose int8 output is off by more than one step (RMS) stays float
DEBUG_IMAGES = 16  # calibration images the debugger compares float and int8 layer outputs on


def _converter(saved_model: Path, samples: np.ndarray):
    from transferlab._tf import import_tf

    tf = import_tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"image": s[None]} for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def layer_errors(debugger) -> list[dict]:
    """Per quantized layer: ``{"layer", "op", "rmse_steps"}``, from a run QuantizationDebugger."""
    text = io.StringIO()
    debugger.layer_statistics_dump(text)
    rows = []
    for row in csv.DictReader(io.StringIO(text.getvalue())):
        scale = float(row["scale"] or 0)
        if scale > 0:
            rows.append({"layer": row["tensor_name"], "op": row["op_name"],
                         "rmse_steps": float(np.sqrt(float(row["mean_squared_error"])) / scale)})
    return rows


def convert_int8(saved_model_float: Path, path: Path, calibration: np.ndarray, *,
                 fallback_rmse_steps: float | None = FALLBACK_RMSE_STEPS) -> dict:
    """Write a full-integer TFLite model (uint8 in, uint8 out) calibrated on ``calibration``.

    Args:
        saved_model_float: a SavedModel taking float32 pixels (N, S, S, 3).
        path: the ``.tflite`` file to write.
        calibration: uint8 training images (N, S, S, 3), resized as at inference.
        fallback_rmse_steps: layers whose int8 output is off by more than this many
            quantization steps (RMS) stay float; None: every layer int8.

    Returns:
        ``{"float_fallback": [layer names], "worst_layers": [{"layer", "op", "rmse_steps"}]}``.
    """
    from transferlab._tf import import_tf

    tf = import_tf()
    samples = calibration.astype(np.float32)
    # The input's quantization comes from the calibration range: one pixel at 0 and one at 255
    # make it scale 1, zero point 0, so the uint8 input is the raw pixel values.
    samples[0, 0, 0], samples[0, 0, -1] = 0.0, 255.0
    with warnings.catch_warnings():  # the calibrator's own tf.lite.Interpreter deprecation notice
        warnings.simplefilter("ignore")
        if fallback_rmse_steps is None:
            path.write_bytes(_converter(saved_model_float, samples).convert())
            return {"float_fallback": [], "worst_layers": []}
        debug = samples[np.linspace(0, len(samples) - 1, min(DEBUG_IMAGES, len(samples))).astype(int)]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_converter(saved_model_float, samples), debug_dataset=lambda: ([d[None]] for d in debug))
        debugger.run()
        errors = sorted(layer_errors(debugger), key=lambda r: -r["rmse_steps"])
        flagged = [r["layer"] for r in errors if r["rmse_steps"] > fallback_rmse_steps]
        path.write_bytes(_quantize(debugger.calibrated_model, flagged))
    for r in errors[:3]:
        logger.debug("int8 error %.2f steps at %s (%s)", r["rmse_steps"], r["layer"], r["op"])
    return {"float_fallback": flagged, "worst_layers": [{**r, "rmse_steps": round(r["rmse_steps"], 3)}
                                                       for r in errors[:5]]}


def _quantize(calibrated_model: bytes, float_layers: list[str]) -> bytes:
    """The calibrated model, quantized with uint8 input/output, ``float_layers`` kept float.

    The same call the converter and the debugger make (``mlir_quantize``), with the interface
    types of the converter: the debugger's own export would have float input and output.
    """
    from tensorflow.lite.python import convert

    from transferlab._tf import import_tf

    tf = import_tf()
    # As TFLiteConverter.convert() calls it for inference_input/output_type uint8.
    return convert.mlir_quantize(calibrated_model, input_data_type=tf.uint8, output_data_type=tf.uint8,
                                 denylisted_nodes=float_layers or None)
