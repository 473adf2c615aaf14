"""The exceptions transferlab raises for problems a user can fix.

Every error whose message tells the user what to change derives from :class:`TransferlabError`;
the CLI prints those as one line (``error: ...``, exit 2) and lets anything else, an internal
error, show its traceback. Each subclass also keeps the built-in type callers would catch
(``except ValueError`` still works for a bad setting, ``except FileNotFoundError`` for a
missing file).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ConfigError",
    "MissingDependencyError",
    "MissingFileError",
    "ModelFormatError",
    "RunExistsError",
    "TrainingInterrupted",
    "TransferlabError",
]


class TransferlabError(Exception):
    """Base class: the message names the value or file at fault and the fix."""


class ConfigError(TransferlabError, ValueError):
    """A setting or argument is out of its range or inconsistent with another one."""


class MissingFileError(TransferlabError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks a part it needs)."""


class ModelFormatError(TransferlabError, ValueError):
    """A model file cannot be used as given (format, inputs, outputs, labels)."""


class RunExistsError(TransferlabError, FileExistsError):
    """A run directory of that name already exists."""


class MissingDependencyError(TransferlabError, ImportError):
    """An optional package is needed for this feature; the message says which extra to install."""


class TrainingInterrupted(TransferlabError, RuntimeError):
    """Training stopped on request (Ctrl-C); the run resumes from its last checkpoint.

    Attributes:
        run_dir: the run directory; phase: "head" or "fine-tune"; epochs_done: completed epochs
        of that phase in the kept checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike, phase: str, epochs_done: int, checkpoint_dir: str | os.PathLike):
        self.run_dir, self.phase, self.epochs_done = Path(run_dir), phase, epochs_done
        super().__init__(f"Interrupted during {phase} after {epochs_done} completed epoch(s); checkpoint kept in "
                         f"{checkpoint_dir}. Resume with: transferlab train --resume {run_dir}")
