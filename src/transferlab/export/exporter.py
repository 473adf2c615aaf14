"""``transferlab export RUN``: deployable copies of a run's classifier, each checked against Keras.

``RUN/export/`` receives (each format optional)::

    model.keras          Keras 3 model, uint8 input
    saved_model/         TensorFlow SavedModel, signature serving_default: image (uint8) -> probabilities
    model.onnx           ONNX (opset 17), one input ``image`` (uint8), output ``probabilities``
    model.tflite         TFLite, float32 weights, uint8 input
    model_int8.tflite    TFLite int8 quantization, uint8 input, uint8 output (a few layers float)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from transferlab._atomic import disk_full_guard, ensure_space
from transferlab.data.decode import ResizeConfig
from transferlab.data.loader import iter_file_batches
from transferlab.errors import ConfigError, MissingDependencyError, MissingFileError
from transferlab.export.card import build_model_card
from transferlab.export.embed import embed_onnx, embed_tflite, model_metadata
from transferlab.export.quantize import FALLBACK_RMSE_STEPS, convert_int8
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


_EMBED = {"onnx": embed_onnx, "tflite": embed_tflite, "tflite-int8": embed_tflite}


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


def _shortfall(fmt: str, entry: dict) -> str:
    if fmt == "tflite-int8":
        return (f"top-1 agreement with Keras {entry['top1_agreement']:.1%} < {INT8_MIN_AGREEMENT:.0%} "
                f"(short by {100 * (INT8_MIN_AGREEMENT - entry['top1_agreement']):.1f} points)")
    return f"max |probability difference| {entry['max_abs_diff']:.2e} > {FLOAT_TOLERANCE:g}"


def _advice(fmt: str, entry: dict, summary: dict) -> str:
    others = ",".join(f for f in FORMATS if f != fmt)
    if fmt == "tflite-int8":
        tips = ("calibrate on more training images (--calibration-images, all of them by default up to 300), "
                "train on more data (a head fit to few images is sensitive to rounding), or use the float "
                "model.tflite, which matches Keras")
    else:
        tips = "a float format should match Keras: this looks like a converter bug, please report it"
    return f"{tips}; keep it anyway with --keep-failing, or leave it out with --format {others}"


def _failure(fmt: str, entry: dict, summary: dict, kept: bool) -> str:
    where = f"on the {summary['split']} split ({summary['images']} images)"
    accuracy = (f"; accuracy {entry['accuracy']:.1%} vs Keras {summary['keras_accuracy']:.1%}"
                if summary.get("keras_accuracy") is not None else "")
    if kept:
        return f"{fmt} ({entry['file']}) FAILED its parity check {where}: {_shortfall(fmt, entry)}{accuracy}. Kept (--keep-failing)."
    return (f"{fmt} ({entry['file']}) FAILED its parity check {where}: {_shortfall(fmt, entry)}{accuracy}. "
            f"Not written. To try: {entry['advice']}.")


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
               safe_mode: bool = True, show_progress: bool = True, keep_failing: bool = False,
               int8_fallback: bool = True) -> dict:
    """Export a run's classifier to ``RUN/export/`` and check every format against Keras.

    Args:
        run_dir: a run directory written by ``transferlab train``.
        formats: any of keras, savedmodel, onnx, tflite, tflite-int8 (list or comma string; default all).
        calibration_images: training images (a seeded random sample) calibrating the int8 model.
        data_root: the dataset's folder, if it moved since training (splits.csv paths are relative to it).
        safe_mode: load the run's model in Keras safe mode (off only for a trusted model with Lambda layers).
        int8_fallback: keep in float the few layers whose int8 error the quantization debugger
            measures above one quantization step (:mod:`transferlab.export.quantize`).
        keep_failing: keep a format that fails its parity check (by default it is not written, and
            any earlier file of that format stays as it was).

    Returns:
        The parity summary also written to ``export/parity.json``: per format the file, its size,
        max abs probability difference and top-1 agreement with Keras, accuracy, ``passed``,
        ``kept`` and, for a format that failed and was not kept, ``advice``.
    """
    out = Path(run_dir) / EXPORT_DIR
    # Each format is written in a work folder and moved into place whole: a full disk leaves the
    # formats exported before untouched and no partial file, and says which folder is full.
    with disk_full_guard(out, hint="free space there, then export again (finished formats are kept)"):
        return _export_run(run_dir, formats, calibration_images=calibration_images, data_root=data_root,
                           safe_mode=safe_mode, show_progress=show_progress, keep_failing=keep_failing,
                           int8_fallback=int8_fallback)


def _export_run(run_dir: str | os.PathLike, formats: str | Sequence[str] | None, *, calibration_images: int,
                data_root: str | os.PathLike | None, safe_mode: bool, show_progress: bool, keep_failing: bool,
                int8_fallback: bool) -> dict:
    from transferlab._tf import import_tf
    from transferlab.backbones.trusted import load_run_model

    import_tf()
    formats = parse_formats(formats)
    run = _read_run(Path(run_dir), data_root)
    out = run.dir / EXPORT_DIR
    out.mkdir(exist_ok=True)
    model = load_run_model(run.dir / MODEL_FILE, safe_mode=safe_mode, run_config=run.config)
    size = run.resize.size

    # Every image the weights never saw (test and validation): on a small set one near-tie image
    # that int8 rounding flips costs 1/N of the agreement, so the more images the fairer the check.
    held_splits = [name for name in ("test", "val") if run.split(name)] or ["train"]
    split = "+".join(held_splits)
    if split == "train":
        logger.warning("The run has no test or validation split: parity is checked on training images.")
    rows = [r for name in held_splits for r in run.split(name)]
    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        # Held-out images go to a file-backed array: a large test split never has to fit in memory.
        shape = (len(rows), size, size, 3)
        ensure_space(work / "heldout.npy", int(np.prod(shape)) + 4096)  # a memory map on a full disk is a SIGBUS
        held = np.lib.format.open_memmap(work / "heldout.npy", "w+", np.uint8, shape)
        images, labels = _decode(rows, run, held)
        reference = _predict(KerasRuntime(model), images)
        summary = {"run_dir": str(run.dir), "export_dir": str(out), "split": split, "images": int(len(images)),
                   "keras_accuracy": float(np.mean(reference.argmax(1) == labels)) if len(images) else None,
                   "thresholds": {"float_max_abs_diff": FLOAT_TOLERANCE, "int8_top1_agreement": INT8_MIN_AGREEMENT},
                   "formats": {}}
        card = build_model_card(run.dir, run.config, run.class_names, run.resize, {})
        for folder in (out, work):  # work: what the parity check's loader reads beside each new file
            write_labels(folder / LABELS_FILE, run.class_names)
            write_json(folder / MODEL_CARD_FILE, card)

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
                    quantization = convert_int8(saved_model("float32"), tmp, calibration,
                                                fallback_rmse_steps=FALLBACK_RMSE_STEPS if int8_fallback else None)
                if fmt in _EMBED:  # labels and resize inside the file: it may travel alone
                    _EMBED[fmt](tmp, model_metadata(run.class_names, run.resize))
                seconds = time.perf_counter() - start
                # Checked before it replaces anything, through the loader users call (which reads
                # the labels beside it in the work folder), so the check covers loading too.
                runtime = load(tmp, safe_mode=safe_mode).runtime
                entry = {"file": FILES[fmt], "bytes": _size(tmp), "export_seconds": round(seconds, 3),
                         "runtime": runtime.name, "input_dtype": getattr(runtime, "input_dtype", None)}
                if fmt.startswith("tflite"):
                    entry.update(interpreter=runtime.interpreter, output_dtype=runtime.output_dtype,
                                 input_quantization=list(runtime.input_quantization),
                                 output_quantization=list(runtime.output_quantization))
                if fmt == "tflite-int8":
                    entry["calibration_images"] = int(len(calibration))
                    entry.update(quantization)
                entry.update(_parity(fmt, _predict(runtime, images), reference, labels))
                del runtime
                entry["kept"] = entry["passed"] is not False or keep_failing
                if entry["kept"]:
                    _replace(tmp, final)
                else:  # never leave a model that failed its check where it could be deployed
                    entry["advice"] = _advice(fmt, entry, summary)
                summary["formats"][fmt] = entry
                logger.info("%s", _describe(fmt, entry, split, len(images)))
                if entry["passed"] is False:
                    logger.warning("%s", _failure(fmt, entry, summary, keep_failing))
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
    """Up to ``count`` training images, every class as evenly represented as it can be.

    A seeded shuffle per class, then round-robin over the classes: a rare class still shapes
    the activation ranges (a plain random sample of an imbalanced set could leave it out).
    """
    rows = run.split("train")
    rng = np.random.default_rng(0)
    by_class: dict[str, list[int]] = {}
    for i, (_, label, _) in enumerate(rows):
        by_class.setdefault(label, []).append(i)
    queues = [list(rng.permutation(indices)) for _, indices in sorted(by_class.items())]
    order: list[int] = []
    while len(order) < max(1, count) and any(queues):
        order.extend(q.pop() for q in queues if q)
    order = order[:max(1, count)]
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
