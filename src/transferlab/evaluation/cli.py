"""Sub-commands ``report`` and ``explain`` (registered into the main ``transferlab`` parser).

    transferlab report RUN                                     write RUN/report.html
    transferlab explain MODEL IMAGE... [--out DIR] [--class NAME]   Grad-CAM overlays as PNG
"""

from __future__ import annotations

import argparse


def _cmd_report(args: argparse.Namespace) -> int:
    from transferlab.evaluation.report import write_report

    path = write_report(args.run, max_gallery=args.max_gallery, gradcam=not args.no_gradcam)
    print(f"Report: {path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from transferlab.evaluation.gradcam import explain
    from transferlab.inference import load

    clf = load(args.model, safe_mode=not args.unsafe)
    written = explain(clf, args.images, args.out, class_name=args.class_name)
    for path in written:
        print(path)
    if not written:
        print("No image could be read.")
        return 1
    return 0


def register(subparsers) -> None:
    """Add ``report`` and ``explain`` to the ``transferlab`` sub-command parsers."""
    p = subparsers.add_parser("report", help="write RUN/report.html: settings, data, curves, metrics, mistakes")
    p.add_argument("run", help="run directory")
    p.add_argument("--max-gallery", type=int, default=48, help="most misclassified images shown (default 48)")
    p.add_argument("--no-gradcam", action="store_true", help="no Grad-CAM overlays in the gallery")
    p.set_defaults(func=_cmd_report)

    p = subparsers.add_parser("explain", help="Grad-CAM heatmaps: where the model looked, as PNG overlays")
    p.add_argument("model", help="run directory or model file")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", default="gradcam", help="output folder (default ./gradcam)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: the predicted one)")
    p.add_argument("--unsafe", action="store_true", help="load a model file with safe_mode off (trusted files only)")
    p.set_defaults(func=_cmd_explain)


def main(argv=None) -> int:
    """``python -m transferlab.evaluation.cli`` until the main CLI registers these commands."""
    from transferlab import cli

    if register not in cli._EXTRA_COMMANDS:
        cli._EXTRA_COMMANDS.append(register)
    return cli.main(argv)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
