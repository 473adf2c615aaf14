"""``transferlab export RUN``: the CLI layer over :func:`transferlab.export.exporter.export_run`."""

from __future__ import annotations

import argparse

from transferlab.cli._common import ExitCode, add_command, add_unsafe, print_json


def format_table(summary: dict) -> str:
    """One row per format: file, size, max abs diff and top-1 agreement vs Keras, accuracy, verdict."""
    lines = [f"Exported to {summary['export_dir']}; parity on the {summary['split']} split "
             f"({summary['images']} images) against the Keras model"
             + (f" (accuracy {summary['keras_accuracy']:.4f})" if summary.get("keras_accuracy") is not None else "")]
    lines.append(f"  {'format':<12} {'file':<18} {'size':>9} {'max |diff|':>11} {'top-1 agr.':>10} "
                 f"{'accuracy':>9}  check")
    for fmt, e in summary["formats"].items():
        def num(key: str, spec: str) -> str:
            return format(e[key], spec) if e.get(key) is not None else "-"

        verdict = "-" if e.get("passed") is None else "ok" if e["passed"] else f"FAILED: {e['check']}"
        lines.append(f"  {fmt:<12} {e['file']:<18} {e['bytes'] / 1e6:>7.2f}MB {num('max_abs_diff', '.2e'):>11} "
                     f"{num('top1_agreement', '.2%'):>10} {num('accuracy', '.4f'):>9}  {verdict}")
    return "\n".join(lines)


def _cmd_export(args: argparse.Namespace) -> int:
    from transferlab.export.exporter import export_run

    summary = export_run(args.run, args.formats, calibration_images=args.calibration_images, data_root=args.data,
                         safe_mode=not args.unsafe, show_progress=not (getattr(args, "quiet", False) or args.json))
    if args.json:
        print_json(summary)
    else:
        print(format_table(summary))
    return ExitCode.PROBLEMS if summary.get("passed") is False else ExitCode.OK


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to the ``transferlab`` parser's sub-parsers."""
    p = add_command(
        subparsers, "export", help="export a run to Keras, SavedModel, ONNX and TFLite (float, int8) with labels and a model card")
    p.add_argument("run", help="run directory (runs/NAME); files go to RUN/export/")
    p.add_argument("--format", dest="formats", default="all",
                   help="comma-separated subset of keras,savedmodel,onnx,tflite,tflite-int8 (default: all)")
    p.add_argument("--calibration-images", type=int, default=300,
                   help="training images calibrating the int8 model (default 300)")
    p.add_argument("--data", help="the dataset's folder if it moved since training")
    p.add_argument("--json", action="store_true", help="print the parity summary as JSON")
    add_unsafe(p)
    p.set_defaults(func=_cmd_export)
    return p
