"""One process at a time per run directory: a lock that the operating system releases on exit.

``train`` and ``train --resume`` hold ``RUN/.lock`` (``flock``) while they write the run, so a
second ``--resume`` of a run that is still training says so instead of interleaving checkpoints.
A killed process leaves no stale lock: the kernel drops it with the process. Where ``fcntl`` does
not exist (Windows) the lock is not taken.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from transferlab._paths import display_path
from transferlab.errors import TransferlabError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_FILE = ".lock"


class RunBusyError(TransferlabError, RuntimeError):
    """Another process is writing this run directory right now."""


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run's lock for the block; raise :class:`RunBusyError` at once if another process holds it."""
    if fcntl is None:
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RunBusyError(f"run {display_path(run_dir)} is being written by another transferlab process "
                               f"right now (pid {holder}); wait for it to finish, or train under another --name")
        try:  # who holds it, for the message above; informational only (a full disk may refuse it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock
