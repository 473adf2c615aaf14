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
    "closest_name_hint",
    "ConfigError",
    "MissingDependencyError",
    "MissingFileError",
    "ModelFormatError",
    "RunExistsError",
    "TrainingInterrupted",
    "TransferlabError",
]


def closest_name_hint(name: str, known: list[str]) -> str:
    """`` Did you mean 'ants'?`` for a name that differs from a known one in case, or is close
    to one (for messages about class or setting names); ``""`` when nothing is close."""
    import difflib

    same_case = [k for k in known if k.lower() == name.lower()]
    if same_case:
        return f" Did you mean {same_case[0]!r}? Class names are case-sensitive."
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


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
        run_dir: the run directory; phase: "feature extraction", "head", "fine-tune" or
        "evaluation"; epochs_done: completed epochs of that phase in the kept checkpoint (None
        for phases without epochs).
    """

    def __init__(self, run_dir: str | os.PathLike, phase: str, epochs_done: int | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        self.run_dir, self.phase, self.epochs_done = Path(run_dir), phase, epochs_done
        if epochs_done is not None:
            kept = f"after {epochs_done} completed epoch{'' if epochs_done == 1 else 's'}; the checkpoint of " \
                   f"epoch {epochs_done} is kept in {checkpoint_dir}"
        elif phase == "feature extraction":
            kept = "the features computed so far are kept in the feature cache"
        else:
            kept = f"the checkpoint is kept in {checkpoint_dir}"
        super().__init__(f"Interrupted during {phase}, {kept}. Resume with: transferlab train --resume {run_dir}")
