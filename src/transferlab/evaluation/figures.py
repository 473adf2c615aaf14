"""Draw a run's figures in a helper process, beside the TensorFlow work of the same run.

The pictures of a run (two confusion matrices, the training curves) take ~0.5 s of Matplotlib
at its end, all of it holding the GIL, so a thread would overlap nothing. With a spare core a
helper process draws them while this one saves the model and computes Grad-CAM.

The helper is ``python -m transferlab.evaluation.figures``: it imports Matplotlib, reads a JSON
list of :class:`FigureJob` from stdin, draws them and exits (at once, on empty input). The CLI
starts it before importing TensorFlow (:func:`prestart_helper`), so its own start-up is hidden
too; otherwise :func:`draw_figures` starts one when asked. If it cannot start or fails, the
figures are drawn in this process: never a missing picture.

This module imports neither Matplotlib nor TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

logger = logging.getLogger("transferlab")

__all__ = ["FigureJob", "PendingFigures", "draw_figures", "prestart_helper"]

_PLOTS = ("plot_confusion_matrix", "plot_precision_recall", "plot_training_curves")  # what a job may name
_HELPER_TIMEOUT_S = 300
_prestarted: subprocess.Popen | None = None


@dataclass(frozen=True)
class FigureJob:
    """One figure: ``plot`` names a function of :mod:`transferlab.evaluation.plots`, ``args`` its
    keyword arguments (JSON types), ``path`` the output file."""

    plot: str
    path: str
    args: dict = field(default_factory=dict)


def _draw(job: FigureJob) -> Path:
    if job.plot not in _PLOTS:
        raise ValueError(f"unknown plot {job.plot!r}; expected one of {', '.join(_PLOTS)}")
    from transferlab.evaluation import plots

    return getattr(plots, job.plot)(path=job.path, **job.args)


def _spare_core() -> bool:
    if getattr(sys, "frozen", False):  # a frozen app's executable is the app, not a Python
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores > 1


def _start_helper() -> subprocess.Popen | None:
    # The helper imports this very package: give it this process's import path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        return subprocess.Popen([sys.executable, "-m", "transferlab.evaluation.figures"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        logger.debug("cannot start the figure helper (%s); figures are drawn in this process", exc)
        return None


def prestart_helper() -> None:
    """Start the helper now, to be used by the next :func:`draw_figures` with ``background=True``.

    Call it before importing TensorFlow: the helper's own start-up (Python, NumPy, Matplotlib)
    then runs on another core meanwhile. An unused helper exits when this process does.
    """
    global _prestarted
    if _prestarted is None and _spare_core():
        _prestarted = _start_helper()


class PendingFigures:
    """Figures being drawn, maybe by the helper; :meth:`wait` returns once they are all on disk."""

    def __init__(self, jobs: Sequence[FigureJob], process: subprocess.Popen | None = None):
        self.jobs, self._process = list(jobs), process

    @property
    def in_background(self) -> bool:
        return self._process is not None

    def wait(self) -> list[Path]:
        """Block until every figure is written; if the helper failed, draw them here instead."""
        if self._process is not None:
            process, self._process = self._process, None
            try:
                _, err = process.communicate(timeout=_HELPER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if process.returncode != 0:
                logger.debug("figure helper failed (%s); drawing in this process", (err or b"").decode()[-500:])
                for job in self.jobs:
                    _draw(job)
        return [Path(job.path) for job in self.jobs]


def draw_figures(jobs: Sequence[FigureJob], *, background: bool = False) -> PendingFigures:
    """Draw ``jobs``; with ``background=True`` (and a spare core) in the helper process.

    Returns:
        :class:`PendingFigures`; call ``wait()`` before reading the files. Without
        ``background`` they are already on disk.
    """
    global _prestarted
    jobs = list(jobs)
    if background and jobs and _spare_core():
        process, _prestarted = _prestarted or _start_helper(), None
        if process is not None:
            try:
                process.stdin.write(json.dumps([asdict(job) for job in jobs]).encode("utf-8"))
                process.stdin.close()
                process.stdin = None  # so that communicate() leaves it alone
                return PendingFigures(jobs, process)
            except OSError as exc:  # the helper died already (its failure is not ours)
                logger.debug("figure helper unavailable (%s); drawing in this process", exc)
                process.kill()
                process.wait()
    for job in jobs:
        _draw(job)
    return PendingFigures(jobs)


def _helper_main() -> int:
    from transferlab.evaluation import plots  # noqa: F401  (imported before the jobs arrive)

    text = sys.stdin.buffer.read()
    for job in json.loads(text) if text.strip() else []:
        _draw(FigureJob(**job))
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main())
