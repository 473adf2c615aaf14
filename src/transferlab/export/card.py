"""``model_card.json``: what someone deploying an exported model needs to use it correctly."""

from __future__ import annotations

import importlib.metadata
from datetime import datetime, timezone
from pathlib import Path

from transferlab import __version__
from transferlab.data.decode import ResizeConfig
from transferlab.rundir import METRICS_FILE, read_json
from transferlab.runtimes.metadata import METADATA_CLASSES, METADATA_RESIZE

CARD_VERSION = 2
# tflite-support (the standard TFLite metadata writer) pins protobuf < 4, which TensorFlow 2.21
# cannot run with: the labels and resize go into entries of the flatbuffer's own metadata table.
TFLITE_METADATA = {
    "embedded": True,
    "entries": [METADATA_CLASSES, METADATA_RESIZE],
    "how": "Model.metadata entries of the TFLite flatbuffer, each naming a buffer of UTF-8 JSON",
    "standard_metadata": False,
    "reason": "the standard TFLITE_METADATA (Android Task Library) needs tflite-support, whose protobuf<4 "
              "pin this TensorFlow cannot run with; the labels are also in labels.txt and 'classes'.",
}
ONNX_METADATA = {"embedded": True, "entries": [METADATA_CLASSES, METADATA_RESIZE], "how": "metadata_props"}


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


def resize_rule(resize: ResizeConfig) -> dict:
    """The resize as exact arithmetic, for a client written in another language.

    transferlab resizes with Pillow ``Image.resize(size, filter, box=...)``: convolution
    resampling whose filter support grows with the shrink factor (antialiased), on a
    fractional source box.
    """
    s, how = resize.size, resize.interpolation
    rule = {"library": "Pillow Image.resize (convolution resampling, antialiased when shrinking; "
                       "fractional source box, pixel centres at +0.5)",
            "filter": how, "output": [s, s]}
    if resize.mode == "squash":
        rule["box"] = "(0, 0, w, h): the whole image, aspect ratio not kept"
    elif resize.mode == "center-crop":
        rule["box"] = (f"side = {resize.crop_fraction:g} * min(w, h); left = (w - side) / 2; top = (h - side) / 2; "
                       "box = (left, top, left + side, top + side), floats, not rounded")
    else:
        rule["box"] = (f"scale = {s} / max(w, h); new = (max(1, round(w * scale)), max(1, round(h * scale))); "
                       f"resize the whole image to new, paste it on black {s}x{s} at "
                       f"(({s} - new_w) // 2, ({s} - new_h) // 2)")
    rule["python"] = (f"transferlab.data.decode.load_image(path_or_bytes, ({s}, {s}), mode={resize.mode!r}, "
                      f"interpolation={how!r}, crop_fraction={resize.crop_fraction:g})")
    return rule


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


def decision_for_card(config: dict) -> dict | None:
    """The run's decision rule with how to apply it, for ``model_card.json`` ``"decision"``."""
    rule = (config.get("extras") or {}).get("operating_point")
    if not rule:
        return None
    how = []
    if rule.get("threshold") is not None:
        how.append(f"if probabilities[{rule['good_class']!r}] <= threshold: the answer is the most probable class "
                   f"other than {rule['good_class']!r} (defective); else {rule['good_class']!r}")
    if rule.get("uncertain_below") is not None:
        how.append("if max(probabilities) < uncertain_below: the answer is 'uncertain' (a person checks)")
    return {**rule, "apply": "; ".join(how)}


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
            "resize_rule": resize_rule(resize),
            "decode": "8-bit RGB; EXIF orientation applied; alpha composited over white; first frame of animations",
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(class_names)],
                   "meaning": "class probabilities (softmax) in the order of 'classes' / labels.txt",
                   "int8_note": "model_int8.tflite outputs uint8: probability = (q - zero_point) * scale, "
                                "see files.tflite-int8.output_quantization"},
        "files": {fmt: {k: e.get(k) for k in ("file", "bytes", "input_dtype", "output_dtype", "input_quantization",
                                              "output_quantization", "max_abs_diff", "top1_agreement", "accuracy",
                                              "passed", "kept", "advice") if k in e}
                  for fmt, e in formats.items()},
        "backbone": config.get("backbone"),
        "training": config.get("config"),
        "data": config.get("data"),
        "metrics": metrics,
        # The operating point / reject option chosen at training (None: plain argmax): consumers apply it.
        "decision": decision_for_card(config),
        "parity": {k: summary.get(k) for k in ("split", "images", "keras_accuracy", "passed")} if formats else None,
        "accuracy_note": (f"files.*.accuracy: each format's top-1 accuracy on the {summary.get('split')} split "
                          f"({summary.get('images')} images never trained on)") if formats else None,
        "tflite_metadata": TFLITE_METADATA,
        "onnx_metadata": ONNX_METADATA,
        "versions": {**package_versions(), "trained_with": config.get("versions")},
    }
