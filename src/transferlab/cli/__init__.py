"""Command line interface: a thin layer over the Python API (every command calls a public function).

    transferlab inspect DIR            check a dataset          -> transferlab.inspect()
    transferlab sample OUT             write the demo dataset   -> transferlab.make_sample_dataset()
    transferlab backbones              list pretrained networks -> transferlab.list_backbones()
    transferlab extract DIR [--ray]    fill the feature cache   -> transferlab.extract()
    transferlab train DIR              train a classifier       -> transferlab.train()
    transferlab compare DIR            rank backbones x heads   -> transferlab.compare()
    transferlab evaluate MODEL DIR     report on labeled data   -> transferlab.evaluate()
    transferlab predict MODEL PATHS    classify images          -> transferlab.predict()
    transferlab export RUN             SavedModel/ONNX/TFLite   -> transferlab.export.export_run()
    transferlab report RUN             report.html              -> transferlab.evaluation.reporting.write_run_report()
    transferlab explain MODEL IMAGES   Grad-CAM overlays        -> transferlab.evaluation.gradcam.explain()
    transferlab audit DIR              label errors, duplicates -> transferlab.audit()
    transferlab serve MODEL            HTTP prediction service  -> transferlab.serving.serve()
    transferlab runs                   list runs and metrics    -> transferlab.rundir.list_runs()

Each command group is a module here with a ``register(subparsers)`` function; :data:`COMMANDS`
lists them, in the order ``--help`` shows them. A new command is a new module and one entry there.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from transferlab import __version__
from transferlab.cli import audit, compare, data, evaluate, export, extract, predict, runs, serve, train
from transferlab.cli._common import ExitCode, global_options
from transferlab.errors import TransferlabError
from transferlab.progress import set_quiet

__all__ = ["COMMANDS", "ExitCode", "build_parser", "entry_point", "main"]

COMMANDS = (data.register, extract.register, train.register, compare.register, evaluate.register,
            predict.register, export.register, audit.register, serve.register, runs.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlab", description="Transfer learning for image classification.",
                                     parents=[global_options(top_level=True)])
    parser.add_argument("--version", action="version", version=f"transferlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (:class:`ExitCode`).

    Errors the user can fix (:class:`~transferlab.errors.TransferlabError`) print as one line;
    anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # A file name that is not valid UTF-8 and slipped through unescaped must not kill the output.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # a replaced or detached stream (tests, pipes)
            pass
    try:
        return int(args.func(args))
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:
        if exc.filename is None or isinstance(exc, BrokenPipeError):
            raise
        # A path the user gave (or a full or read-only disk) is at fault, not the code: one line.
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def entry_point() -> None:
    """Console-script entry: ``main()``, then leave without the interpreter's teardown.

    Tearing down a process that imported TensorFlow takes about a second (measured on a 2-core
    machine: 2.9 s vs 4.0 s for ``import keras`` alone), longer than training a head on cached
    features. By the time ``main`` returns every output file is written and closed, so only
    the standard streams and logging handlers need flushing before ``os._exit``.
    """
    try:
        code = main()
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        code = ExitCode.OK
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe or stream: nothing left to deliver
            pass
    os._exit(code)
