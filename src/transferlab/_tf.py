"""Import TensorFlow lazily and quietly.

``import transferlab`` must stay light (ONNX/TFLite prediction on edge devices never imports
TensorFlow), so every module that needs TensorFlow calls :func:`import_tf` at use time, and
entry points call it before importing anything that imports Keras.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator, Sequence

from transferlab.errors import MissingDependencyError

# TensorFlow >= 2.20 prints these through absl before it reads TF_CPP_MIN_LOG_LEVEL, so the
# variable no longer hides them: two to four lines of start-up chatter on every command.
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


@contextmanager
def stderr_filtered(noise: Sequence[str]) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then pass on what was written
    there except the lines containing one of ``noise``.

    For C++ libraries (TensorFlow, LiteRT) that print info lines straight to the descriptor,
    past Python's ``sys.stderr`` and logging. Warnings and errors still show.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (some notebook hosts)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not any(m in line for m in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextmanager
def _startup_chatter_filtered() -> Iterator[None]:
    """While TensorFlow is first imported, hide the start-up lines above (:func:`stderr_filtered`).

    Only when the user has not asked for TensorFlow's info logs (``TF_CPP_MIN_LOG_LEVEL`` >= 1).
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if "tensorflow" in sys.modules or not level.isdigit() or int(level) < 1:
        yield
        return
    with stderr_filtered(_STARTUP_NOISE):
        yield


def import_tf():
    """Return the ``tensorflow`` module, with its C++ info logs off unless the user set them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _startup_chatter_filtered():
        try:
            import tensorflow as tf
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MissingDependencyError(
                "TensorFlow is not installed. Install transferlab with a TensorFlow build: "
                "`pip install 'transferlab[cpu]'` (CPU) or `pip install 'transferlab[gpu]'` (NVIDIA GPU)."
            ) from exc
    return tf
