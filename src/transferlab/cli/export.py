"""``transferlab export RUN``: the CLI layer over :func:`transferlab.export.exporter.export_run`."""

from __future__ import annotations

import argparse
import sys

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

        verdict = ("-" if e.get("passed") is None else "ok" if e["passed"]
                   else f"FAILED: {e['check']}" + ("" if e.get("kept", True) else " (not written)"))
        lines.append(f"  {fmt:<12} {e['file']:<18} {e['bytes'] / 1e6:>7.2f}MB {num('max_abs_diff', '.2e'):>11} "
                     f"{num('top1_agreement', '.2%'):>10} {num('accuracy', '.4f'):>9}  {verdict}")
    return "\n".join(lines)


def _cmd_export(args: argparse.Namespace) -> int:
    from transferlab._tf import quiet_native_logs
    from transferlab.export.exporter import export_run

    quiet = getattr(args, "quiet", False)
    with quiet_native_logs(quiet or args.json):  # the converters' C++ logs; they show if export fails
        summary = export_run(args.run, args.formats, calibration_images=args.calibration_images, data_root=args.data,
                             safe_mode=not args.unsafe, show_progress=not (quiet or args.json),
                             keep_failing=args.keep_failing)
    if args.json:
        print_json(summary)
    else:
        print(format_table(summary))
    failed = [fmt for fmt, e in summary["formats"].items() if e.get("passed") is False]
    for fmt in failed:
        e = summary["formats"][fmt]
        print(f"{fmt}: FAILED its parity check ({e['check']}); "
              + ("kept as asked (--keep-failing)" if e.get("kept") else f"not written. To try: {e.get('advice')}"),
              file=sys.stderr)
    return ExitCode.PROBLEMS if failed and not args.keep_failing else ExitCode.OK


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
    p.add_argument("--keep-failing", action="store_true",
                   help="keep a format that fails its parity check (and exit 0); by default it is not written")
    add_unsafe(p)
    p.set_defaults(func=_cmd_export)
    return p
