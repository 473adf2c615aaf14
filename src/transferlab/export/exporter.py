"""``transferlab export RUN``: deployable copies of a run's classifier, each checked against Keras.

``RUN/export/`` receives (each format optional)::

    model.keras          Keras 3 model, uint8 input
    saved_model/         TensorFlow SavedModel, signature serving_default: image (uint8) -> probabilities
    model.onnx           ONNX (opset 17), one input ``image`` (uint8), output ``probabilities``
    model.tflite         TFLite, float32 weights, uint8 input
    model_int8.tflite    TFLite full-integer (int8) quantization, uint8 input, uint8 output
    labels.txt           class names in output order
    model_card.json      classes, input size/dtype, the resize to do, backbone, data, metrics, versions
    parity.json          each format against the Keras model on held-out images

Every model takes raw RGB pixels (N, S, S, 3) uint8, already resized as the card says, and
returns class probabilities: the backbone's normalisation is inside the model.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from transferlab.data.decode import ResizeConfig
from transferlab.data.loader import iter_file_batches
from transferlab.errors import ConfigError, MissingDependencyError, MissingFileError
from transferlab.export.card import build_model_card
from transferlab.inference import load
from transferlab.progress import progress_bar
from transferlab.rundir import (
    CONFIG_FILE,
    EXPORT_DIR,
    LABELS_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    PARITY_FILE,
    SPLITS_FILE,
    RunDir,
    write_json,
    write_labels,
)
from transferlab.runtimes.keras import KerasRuntime

logger = logging.getLogger("transferlab")

FORMATS = ("keras", "savedmodel", "onnx", "tflite", "tflite-int8")
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "onnx": "model.onnx", "tflite": "model.tflite",
         "tflite-int8": "model_int8.tflite"}
FLOAT_TOLERANCE = 1e-4  # max |probability difference| of a float format vs Keras
INT8_MIN_AGREEMENT = 0.98  # top-1 agreement of the int8 model with Keras
_BATCH = 32


def parse_formats(formats: str | Sequence[str] | None) -> list[str]:
    """``"onnx,tflite"`` / a list / None or ``"all"`` -> validated format names in export order."""
    if formats is None or formats == "all":
        return list(FORMATS)
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"Unknown export format {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(FORMATS)} or all.")
    return [f for f in FORMATS if f in names]


# ------------------------------------------------------------------ the run and its images
@dataclass
class _Run:
    dir: Path
    config: dict
    class_names: list[str]
    resize: ResizeConfig
    rows: list[tuple[str, str, str]]  # (absolute path, label, split) from splits.csv

    def split(self, name: str) -> list[tuple[str, str, str]]:
        return [r for r in self.rows if r[2] == name]


def _read_run(run_dir: Path, data_root: str | os.PathLike | None) -> _Run:
    for name in (MODEL_FILE, CONFIG_FILE, LABELS_FILE, SPLITS_FILE):
        if not (run_dir / name).is_file():
            raise MissingFileError(f"{run_dir} is not a complete run directory (no {name}). "
                                    "Pass a folder written by `transferlab train` (runs/NAME).")
    run = RunDir(run_dir)
    config = run.read_metadata().to_dict()
    class_names = run.read_labels()
    # splits.csv paths are relative to the dataset folder (the CSV's folder for a CSV dataset).
    source = Path(data_root or config.get("data", {}).get("source", "."))
    base = source if source.is_dir() else source.parent
    with open(run.splits, newline="", encoding="utf-8") as fh:
        rows = [(str(base / r["path"]), r["label"], r["split"]) for r in csv.DictReader(fh)]
    if rows and not any(os.path.exists(p) for p, _, _ in rows[:50]):
        raise MissingFileError(f"The images of {run.splits} are not under {base} any more. "
                                "Pass the dataset's current folder: --data FOLDER (data_root=...).")
    return _Run(run_dir, config, class_names, ResizeConfig(**config["resize"]), rows)


def _decode(rows: list[tuple[str, str, str]], run: _Run, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``rows`` into ``out`` (unreadable files skipped): ``(images view, label indices)``."""
    index = {c: i for i, c in enumerate(run.class_names)}
    labels, n = [], 0
    for indices, batch, errors in iter_file_batches([r[0] for r in rows], run.resize, _BATCH):
        for i in errors:
            logger.warning("skipped %s: %s", rows[i][0], errors[i])
        out[n:n + len(batch)] = batch
        labels.extend(index[rows[i][1]] for i in indices)
        n += len(batch)
    return out[:n], np.array(labels, dtype=np.int64)


def _predict(runtime: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    parts = [runtime(np.ascontiguousarray(images[i:i + _BATCH])) for i in range(0, len(images), _BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------ one function per format
def _save_keras(model, path: Path) -> None:
    import keras

    size = model.input_shape[1]
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    # Rescaling(1.0) is a built-in layer that casts to float32: unlike a Lambda, plain Keras
    # loads it in safe mode.
    pixels = keras.layers.Rescaling(1.0, name="uint8_to_float32")(image)
    keras.Model(image, model(pixels), name="transferlab_classifier_uint8").save(path)


def _save_saved_model(model, path: Path, dtype: str = "uint8") -> None:
    """A SavedModel whose ``serving_default`` takes ``image`` (dtype) and returns ``probabilities``."""
    from transferlab._tf import import_tf

    tf = import_tf()
    size = model.input_shape[1]
    serve = tf.function(lambda image: {"probabilities": model(tf.cast(image, tf.float32), training=False)},
                        input_signature=[tf.TensorSpec((None, size, size, 3), getattr(tf, dtype), name="image")])
    # A bare tf.Module tracking the model's tf.Variables, rather than keras.export.ExportArchive:
    # with Keras 3.15 the archive checkpoints every variable twice (a SavedModel twice the size).
    module = tf.Module()
    module.model_variables = [getattr(w, "value", w) for w in model.weights]
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})


def _save_onnx(model, path: Path) -> None:
    from transferlab.runtimes.onnx_convert import keras_to_onnx

    try:
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs tf2onnx and onnx: `pip install 'transferlab[cpu]'` "
                          "(or `pip install tf2onnx onnx`), or leave onnx out of --format.") from exc
    keras_to_onnx(model, path, input_size=model.input_shape[1], input_dtype="uint8", output_name="probabilities")


def _tflite_converter(saved_model: Path):
    from transferlab._tf import import_tf

    return import_tf().lite.TFLiteConverter.from_saved_model(str(saved_model))


def _save_tflite(saved_model_uint8: Path, path: Path) -> None:
    path.write_bytes(_tflite_converter(saved_model_uint8).convert())


def _save_tflite_int8(saved_model_float: Path, path: Path, calibration: np.ndarray) -> None:
    """Full-integer quantization, calibrated on training images; uint8 in, uint8 out."""
    from transferlab._tf import import_tf

    tf = import_tf()
    samples = calibration.astype(np.float32)
    # The input's quantization comes from the calibration range: one pixel at 0 and one at 255
    # make it scale 1, zero point 0, so the uint8 input is the raw pixel values.
    samples[0, 0, 0], samples[0, 0, -1] = 0.0, 255.0
    converter = _tflite_converter(saved_model_float)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"image": s[None]} for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with warnings.catch_warnings():  # the calibrator's own tf.lite.Interpreter deprecation notice
        warnings.simplefilter("ignore")
        path.write_bytes(converter.convert())


def _replace(tmp: Path, final: Path) -> None:
    """Move a finished file or folder into place, so a failed export never leaves half a model."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


# ------------------------------------------------------------------ parity
def _parity(fmt: str, probs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    if not len(reference):
        return {"max_abs_diff": None, "top1_agreement": None, "accuracy": None, "passed": None}
    diff = float(np.max(np.abs(probs - reference)))
    agreement = float(np.mean(probs.argmax(1) == reference.argmax(1)))
    entry = {"max_abs_diff": diff, "top1_agreement": agreement,
             "accuracy": float(np.mean(probs.argmax(1) == labels))}
    if fmt == "tflite-int8":
        entry.update(check=f"top1_agreement >= {INT8_MIN_AGREEMENT}", passed=agreement >= INT8_MIN_AGREEMENT)
    else:
        entry.update(check=f"max_abs_diff <= {FLOAT_TOLERANCE:g}", passed=diff <= FLOAT_TOLERANCE)
    return entry


def _describe(fmt: str, entry: dict, split: str, n: int) -> str:
    if entry.get("max_abs_diff") is None:
        return f"{fmt:<12} {entry['file']}: exported (no held-out images for a parity check)"
    verdict = "ok" if entry["passed"] else f"FAILED ({entry['check']})"
    return (f"{fmt:<12} {entry['file']} ({entry['bytes'] / 1e6:.2f} MB): max |diff| {entry['max_abs_diff']:.2e}, "
            f"top-1 agreement {entry['top1_agreement']:.1%}, accuracy {entry['accuracy']:.1%} "
            f"({split}, {n} images) {verdict}")


# ------------------------------------------------------------------ export_run
def export_run(run_dir: str | os.PathLike, formats: str | Sequence[str] | None = FORMATS, *,
               calibration_images: int = 300, data_root: str | os.PathLike | None = None,
               safe_mode: bool = True, show_progress: bool = True) -> dict:
    """Export a run's classifier to ``RUN/export/`` and check every format against Keras.

    Args:
        run_dir: a run directory written by ``transferlab train``.
        formats: any of keras, savedmodel, onnx, tflite, tflite-int8 (list or comma string; default all).
        calibration_images: training images (a seeded random sample) calibrating the int8 model.
        data_root: the dataset's folder, if it moved since training (splits.csv paths are relative to it).
        safe_mode: load the run's model in Keras safe mode (off only for a trusted model with Lambda layers).

    Returns:
        The parity summary also written to ``export/parity.json``: per format the file, its size,
        max abs probability difference and top-1 agreement with Keras, accuracy, and ``passed``.
    """
    import keras

    from transferlab._tf import import_tf

    import_tf()
    formats = parse_formats(formats)
    run = _read_run(Path(run_dir), data_root)
    out = run.dir / EXPORT_DIR
    out.mkdir(exist_ok=True)
    model = keras.models.load_model(run.dir / MODEL_FILE, compile=False, safe_mode=safe_mode)
    size = run.resize.size

    split = "test" if run.split("test") else "val" if run.split("val") else "train"
    if split == "train":
        logger.warning("The run has no test or validation split: parity is checked on training images.")
    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        # Held-out images go to a file-backed array: a large test split never has to fit in memory.
        held = np.lib.format.open_memmap(work / "heldout.npy", "w+", np.uint8, (len(run.split(split)), size, size, 3))
        images, labels = _decode(run.split(split), run, held)
        reference = _predict(KerasRuntime(model), images)
        summary = {"run_dir": str(run.dir), "export_dir": str(out), "split": split, "images": int(len(images)),
                   "keras_accuracy": float(np.mean(reference.argmax(1) == labels)) if len(images) else None,
                   "thresholds": {"float_max_abs_diff": FLOAT_TOLERANCE, "int8_top1_agreement": INT8_MIN_AGREEMENT},
                   "formats": {}}
        write_labels(out / LABELS_FILE, run.class_names)
        card = build_model_card(run.dir, run.config, run.class_names, run.resize, {})
        write_json(out / MODEL_CARD_FILE, card)

        saved: dict[str, Path] = {}

        def saved_model(dtype: str) -> Path:
            if dtype not in saved:
                saved[dtype] = work / f"saved_model_{dtype}"
                _save_saved_model(model, saved[dtype], dtype)
            return saved[dtype]

        with progress_bar(total=len(formats), desc="Exporting", unit="formats", enabled=show_progress) as bar:
            for fmt in formats:
                start = time.perf_counter()
                final, tmp = out / FILES[fmt], work / FILES[fmt]
                if fmt == "keras":
                    _save_keras(model, tmp)
                elif fmt == "savedmodel":
                    shutil.copytree(saved_model("uint8"), tmp)
                elif fmt == "onnx":
                    _save_onnx(model, tmp)
                elif fmt == "tflite":
                    _save_tflite(saved_model("uint8"), tmp)
                else:
                    calibration = _calibration(run, calibration_images)
                    _save_tflite_int8(saved_model("float32"), tmp, calibration)
                _replace(tmp, final)
                seconds = time.perf_counter() - start
                # Checked through the same loader users call, so the check covers loading too.
                runtime = load(final, safe_mode=safe_mode).runtime
                entry = {"file": FILES[fmt], "bytes": _size(final), "export_seconds": round(seconds, 3),
                         "runtime": runtime.name, "input_dtype": getattr(runtime, "input_dtype", None)}
                if fmt.startswith("tflite"):
                    entry.update(interpreter=runtime.interpreter, output_dtype=runtime.output_dtype,
                                 input_quantization=list(runtime.input_quantization),
                                 output_quantization=list(runtime.output_quantization))
                if fmt == "tflite-int8":
                    entry["calibration_images"] = int(len(calibration))
                entry.update(_parity(fmt, _predict(runtime, images), reference, labels))
                summary["formats"][fmt] = entry
                logger.info("%s", _describe(fmt, entry, split, len(images)))
                bar.update(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    _merge_previous(out, summary)
    checked = [e["passed"] for e in summary["formats"].values() if e.get("passed") is not None]
    summary["passed"] = all(checked) if checked else None
    write_json(out / PARITY_FILE, summary)
    card = build_model_card(run.dir, run.config, run.class_names, run.resize, summary)
    write_json(out / MODEL_CARD_FILE, card)
    return summary


def _calibration(run: _Run, count: int) -> np.ndarray:
    rows = run.split("train")
    order = np.random.default_rng(0).permutation(len(rows))[:max(1, count)]
    images, _ = _decode([rows[i] for i in sorted(order)], run,
                        np.zeros((len(order), run.resize.size, run.resize.size, 3), np.uint8))
    if not len(images):
        raise ConfigError("No readable training image to calibrate the int8 model: check the dataset "
                         "(or pass --data FOLDER if it moved).")
    return images


def _merge_previous(out: Path, summary: dict) -> None:
    """Keep the parity entries of formats exported earlier and not redone now (their files remain)."""
    path = out / PARITY_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("formats", {})
    except (OSError, ValueError):
        return
    for fmt, entry in previous.items():
        if fmt not in summary["formats"] and fmt in FILES and (out / FILES[fmt]).exists():
            summary["formats"][fmt] = entry
    summary["formats"] = {f: summary["formats"][f] for f in FORMATS if f in summary["formats"]}
