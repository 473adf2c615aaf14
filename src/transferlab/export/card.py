"""``model_card.json``: what someone deploying an exported model needs to use it correctly."""

from __future__ import annotations

import importlib.metadata
from datetime import datetime, timezone
from pathlib import Path

from transferlab import __version__
from transferlab.data.decode import ResizeConfig
from transferlab.rundir import METRICS_FILE, read_json

CARD_VERSION = 1
# tflite-support (the TFLite metadata writer) pins protobuf < 4, which TensorFlow 2.21 cannot
# run with, so labels travel beside the .tflite files instead of inside them.
TFLITE_METADATA = {
    "embedded": False,
    "reason": "tflite-support (the TFLite metadata writer) needs protobuf<4, incompatible with this "
              "TensorFlow; the labels are in labels.txt and in this card's 'classes'.",
}


def resize_instructions(resize: ResizeConfig) -> str:
    """The resize a caller must do before the model, in words (same as transferlab's decode)."""
    s, how = resize.size, resize.interpolation
    if resize.mode == "squash":
        return f"Resize the whole image to {s}x{s} pixels ({how}), ignoring the aspect ratio."
    if resize.mode == "center-crop":
        return (f"Crop the centred square whose side is {resize.crop_fraction:g} x the shorter side, "
                f"then resize it to {s}x{s} pixels ({how}).")
    return (f"Resize keeping the aspect ratio so the longer side is {s} pixels ({how}), then pad with black "
            f"to {s}x{s}, image centred (letterbox).")


def package_versions() -> dict[str, str]:
    """Versions of the exporting software (TensorFlow and Keras as imported by the exporter)."""
    import keras

    from transferlab._tf import import_tf

    versions = {"transferlab": __version__, "keras": keras.__version__, "tensorflow": import_tf().__version__}
    for dist, key in (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                      ("ai-edge-litert", "ai_edge_litert")):
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def build_model_card(run_dir: Path, config: dict, class_names: list[str], resize: ResizeConfig,
                     summary: dict) -> dict:
    """The card: classes, input contract, resize, backbone, data, test metrics, files, versions."""
    metrics = read_json(run_dir / METRICS_FILE) or None
    s = resize.size
    formats = summary.get("formats", {})
    return {
        "card_version": CARD_VERSION,
        "name": run_dir.name,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": list(class_names),
        "num_classes": len(class_names),
        "input": {
            "name": "image", "dtype": "uint8", "shape": [None, s, s, 3], "layout": "NHWC", "color": "RGB",
            "range": "0..255, raw pixels: normalisation is inside the model",
            "resize": resize.to_dict(),
            "resize_instructions": resize_instructions(resize),
            "decode": "8-bit RGB; EXIF orientation applied; alpha composited over white; first frame of animations",
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(class_names)],
                   "meaning": "class probabilities (softmax) in the order of 'classes' / labels.txt",
                   "int8_note": "model_int8.tflite outputs uint8: probability = (q - zero_point) * scale, "
                                "see files.tflite-int8.output_quantization"},
        "files": {fmt: {k: e.get(k) for k in ("file", "bytes", "input_dtype", "output_dtype", "input_quantization",
                                              "output_quantization", "max_abs_diff", "top1_agreement", "accuracy",
                                              "passed") if k in e}
                  for fmt, e in formats.items()},
        "backbone": config.get("backbone"),
        "training": config.get("config"),
        "data": config.get("data"),
        "metrics": metrics,
        "parity": {k: summary.get(k) for k in ("split", "images", "keras_accuracy", "passed")} if formats else None,
        "tflite_metadata": TFLITE_METADATA,
        "versions": {**package_versions(), "trained_with": config.get("versions")},
    }
