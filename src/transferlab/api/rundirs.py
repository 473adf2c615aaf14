"""Run directory names: a new run's folder, a taken name's message, ``--overwrite``.

Used by ``train`` and by the selection commands, which check the name before their search.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from transferlab.errors import RunExistsError
from transferlab.rundir import RunDir
from transferlab.training.config import TrainConfig
from transferlab.training.runlock import run_lock

logger = logging.getLogger("transferlab")

__all__ = ["check_run_name", "new_run_dir"]


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, hint: str, *, overwrite: bool = False) -> Path:
    """Create ``runs_dir/name``; without a name, ``<hint>-<timestamp>``; never reuses a folder.

    ``mkdir`` itself is the test, so of two runs started at once under one name exactly one gets it.
    ``overwrite`` first deletes an existing run of that name (only a transferlab run directory,
    and not while another process writes it).
    """
    runs = Path(runs_dir)
    base = name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', hint).strip('-') or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"
    runs.mkdir(parents=True, exist_ok=True)
    if name and overwrite and (runs / base).exists():
        _remove_run(runs / base)
    candidate, n = runs / base, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if name:
                raise RunExistsError(_exists_message(candidate, name)) from None
            candidate, n = runs / f"{base}-{n}", n + 1


def check_run_name(config: TrainConfig, overwrite: bool = False) -> None:
    """Fail before any work when ``config.name`` is taken (and ``overwrite`` is not given), with
    the message that says whether to resume that run, overwrite it or pick another name."""
    if config.name and not overwrite and (Path(config.runs_dir) / config.name).exists():
        raise RunExistsError(_exists_message(Path(config.runs_dir) / config.name, config.name))


def _exists_message(run_dir: Path, name: str) -> str:
    status = None
    try:
        status = RunDir(run_dir).read_metadata().status if RunDir(run_dir).is_run() else None
    except (OSError, ValueError):
        pass
    if status == "complete":
        return (f"Run directory {run_dir} already exists and holds a finished run. Choose another --name, or pass "
                f"--overwrite to replace it (its model and report are deleted).")
    if status in ("running", "interrupted"):
        return (f"Run directory {run_dir} already exists and holds a run that did not finish ({status}; or another "
                f"`train --name {name}` is running now). Once it has stopped, continue it with --resume {run_dir}; "
                f"or choose another --name, or pass --overwrite to start it again.")
    return (f"Run directory {run_dir} already exists (from an earlier run, or from another `train --name {name}` "
            f"started at the same time). Choose another --name.")


def _remove_run(run_dir: Path) -> None:
    """Delete a run directory for ``--overwrite``: never a folder that is not a run, nor a running one."""
    if not RunDir(run_dir).is_run():
        raise RunExistsError(f"{run_dir} exists but is not a transferlab run directory (no config.json): "
                             f"--overwrite only replaces runs. Choose another --name.")
    with run_lock(run_dir):  # raises at once if another process is writing it
        shutil.rmtree(run_dir)
    logger.info("Replaced the earlier run %s (--overwrite).", run_dir)
