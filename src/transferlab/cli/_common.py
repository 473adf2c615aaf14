"""What every command module of the CLI shares: exit codes, JSON output, common options."""

from __future__ import annotations

import argparse
import enum
import json
import sys


class ExitCode(enum.IntEnum):
    """Process exit status of every ``transferlab`` command."""

    OK = 0
    PROBLEMS = 1  # the command ran, but found problems (bad files, failed parity, unreadable images)
    USAGE = 2  # the user must change something: an argument, a file, an install
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def print_json(obj) -> None:
    """Write ``obj`` to stdout as indented JSON (paths and other objects as strings)."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def global_options(*, top_level: bool) -> argparse.ArgumentParser:
    """``-q``/``-v``, accepted before the command and after it (``transferlab train -q DIR``).

    Given after the command, the subparser's value must not overwrite one given before it: hence
    ``SUPPRESS`` as the default there.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default = False if top_level else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    return parser


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command parser that also takes the global options."""
    return subparsers.add_parser(name, parents=[global_options(top_level=False)], **kwargs)


def add_unsafe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unsafe", action="store_true",
                        help="load a model file with Keras safe_mode off (runs code from the file: trusted files only)")


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir``, as on ``train``: where file checks and features are kept between commands."""
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="cache folder (default: user cache dir or $TRANSFERLAB_CACHE_DIR); the same as train's")
