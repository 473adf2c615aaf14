"""Import TensorFlow lazily and quietly.

``import transferlab`` must stay light (ONNX/TFLite prediction on edge devices never imports
TensorFlow), so every module that needs TensorFlow calls :func:`import_tf` at use time, and
entry points call it before importing anything that imports Keras.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

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
def native_stderr_filtered(drop: Callable[[str], bool]) -> Iterator[None]:
    """While the block runs, send file descriptor 2 to a temporary file, then pass on what was
    written there except the lines ``drop`` selects; everything is passed on if the block raises.

    TensorFlow's and TFLite's C++ code writes to the descriptor directly, past ``sys.stderr`` and
    the logging module: only this catches it.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (some notebook hosts)
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if failed or not drop(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextmanager
def stderr_filtered(noise: Sequence[str]) -> Iterator[None]:
    """:func:`native_stderr_filtered` dropping the lines that contain one of ``noise``."""
    with native_stderr_filtered(lambda line: any(m in line for m in noise)):
        yield


@contextmanager
def _startup_chatter_filtered() -> Iterator[None]:
    """While TensorFlow is first imported, drop its start-up lines above (warnings and errors
    still show); only when the user has not asked for its info logs (``TF_CPP_MIN_LOG_LEVEL`` >= 1)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if "tensorflow" in sys.modules or not level.isdigit() or int(level) < 1:
        yield
        return
    with stderr_filtered(_STARTUP_NOISE):
        yield


# Lines of native logs: glog's "I0000 00:00:1796226413.038390 5823 port.cc:153] ..." (TensorFlow, the
# TFLite converter), TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate", its calibrator's
# "fully_quantize: 0, inference_type: 6, ..." and absl's preamble.
_NATIVE_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s|INFO: |WARNING: All log messages before absl|fully_quantize: )")


@contextmanager
def quiet_native_logs(enabled: bool = True) -> Iterator[None]:
    """``--quiet`` for native code: TensorFlow's/TFLite's own log lines written in the block do
    not show (our warnings and errors still do), unless the block fails: then all of it shows."""
    if not enabled:
        yield
        return
    with native_stderr_filtered(lambda line: bool(_NATIVE_LOG_LINE.match(line))):
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
