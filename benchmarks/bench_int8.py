"""Benchmark: int8 TFLite variants of one run, against its Keras model, on images it never saw.

For a run trained on ``hymenoptera_data/train`` the held-out images are the run's own test+val
split and, with ``--extra``, another labeled folder (``hymenoptera_data/val``). Variants:

- ``fbT``: the export's recipe, layers whose int8 output is off by more than T quantization steps
  (RMS, QuantizationDebugger) kept float (the export uses T = 1.0);
- ``nofb``: every layer int8;
- ``headT``: as ``fbT``, plus the head (pooling, dense, softmax) in float;
- ``int16``: 16-bit activations with int8 weights (TFLite's 16x8 mode; not an int8 model).

Per variant: file size, top-1 agreement with Keras, accuracy, mean and max |probability diff|.

Usage: python benchmarks/bench_int8.py RUN [--variants fb1.0,fb0.5,head1.0,int16]
       [--extra ../shared/datasets/hymenoptera_data/val] [--out benchmarks/results/int8_variants.json]
Not a test: figures depend on the run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def convert(variant: str, saved_model: Path, path: Path, calibration: np.ndarray) -> list[str]:
    """Write ``variant`` to ``path``; the layers kept float."""
    from transferlab._tf import import_tf
    from transferlab.export.quantize import _converter, _quantize, convert_int8, layer_errors

    tf = import_tf()
    if variant == "nofb":
        return convert_int8(saved_model, path, calibration, fallback_rmse_steps=None)["float_fallback"]
    if variant.startswith("fb"):
        return convert_int8(saved_model, path, calibration, fallback_rmse_steps=float(variant[2:] or 1.0))["float_fallback"]
    samples = calibration.astype(np.float32)
    if variant == "int16":
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ({"image": s[None]} for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        path.write_bytes(converter.convert())
        return []
    if variant.startswith("head"):
        samples[0, 0, 0], samples[0, 0, -1] = 0.0, 255.0
        debug = samples[np.linspace(0, len(samples) - 1, 16).astype(int)]
        debugger = tf.lite.experimental.QuantizationDebugger(converter=_converter(saved_model, samples),
                                                             debug_dataset=lambda: ([d[None]] for d in debug))
        debugger.run()
        errors = layer_errors(debugger)
        floats = [r["layer"] for r in errors if r["rmse_steps"] > float(variant[4:] or 1.0)]
        floats += [r["layer"] for r in errors[-3:]]  # mean pooling, dense, softmax
        path.write_bytes(_quantize(debugger.calibrated_model, floats))
        return floats
    raise SystemExit(f"unknown variant {variant!r}")


def tflite_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    from transferlab.runtimes.exported import TFLiteRuntime

    runtime = TFLiteRuntime(path)
    return np.concatenate([runtime(images[i:i + 32]) for i in range(0, len(images), 32)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--variants", default="fb1.0,fb0.5,head1.0,int16")
    parser.add_argument("--extra", help="a labeled folder (class subfolders) the run never saw")
    parser.add_argument("--out", default=str(HERE / "results" / "int8_variants.json"))
    args = parser.parse_args()

    from transferlab._tf import import_tf
    from transferlab.backbones.trusted import load_run_model
    from transferlab.export import exporter
    from transferlab.runtimes.keras import KerasRuntime

    import_tf()
    run = exporter._read_run(Path(args.run), None)
    model = load_run_model(Path(args.run) / "model.keras", safe_mode=True, run_config=run.config)
    size = run.resize.size
    sets = {"run test+val": [r for name in ("test", "val") for r in run.split(name)]}
    if args.extra:
        sets[args.extra] = [(str(p), p.parent.name, "extra") for p in sorted(Path(args.extra).glob("*/*"))]
    decoded = {name: exporter._decode(rows, run, np.zeros((len(rows), size, size, 3), np.uint8))
               for name, rows in sets.items()}
    reference = {name: exporter._predict(KerasRuntime(model), images) for name, (images, _) in decoded.items()}
    work = Path(tempfile.mkdtemp(prefix="tl-int8-"))
    exporter._save_saved_model(model, work / "saved_model", "float32")
    calibration = exporter._calibration(run, 300)
    results = {"run": args.run, "calibration_images": int(len(calibration)), "variants": {}}
    for variant in args.variants.split(","):
        path = work / f"{variant}.tflite"
        floats = convert(variant, work / "saved_model", path, calibration)
        row = {"bytes": path.stat().st_size, "float_layers": len(floats)}
        for name, (images, labels) in decoded.items():
            probs, ref = tflite_probabilities(path, images), reference[name]
            row[name] = {"images": int(len(images)), "top1_agreement": round(float(np.mean(probs.argmax(1) == ref.argmax(1))), 4),
                         "accuracy": round(float(np.mean(probs.argmax(1) == labels)), 4),
                         "keras_accuracy": round(float(np.mean(ref.argmax(1) == labels)), 4),
                         "mean_abs_diff": round(float(np.abs(probs - ref).mean()), 4),
                         "max_abs_diff": round(float(np.abs(probs - ref).max()), 4)}
        results["variants"][variant] = row
        print(variant, json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
