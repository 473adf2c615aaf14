"""Check every file before training: decode it fully, hash its bytes, record its size.

Runs on all cores with a thread pool: Pillow's decoders and hashlib release the GIL while they
work, so threads decode in parallel without the start-up cost and the ``if __name__ ==
"__main__"`` requirement of worker processes (scripts and notebooks just work). Each task
decodes one file, keeps only a few numbers and drops the pixels, so memory stays flat for any
number of files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from transferlab.data.check_cache import CheckCache, FileCheck  # noqa: F401 (FileCheck re-exported)
from transferlab.data.decode import ImageDecodeError, open_rgb
from transferlab.progress import progress_bar

logger = logging.getLogger("transferlab")

# Below this many files a pool is not worth starting.
_MIN_FILES_FOR_POOL = 8


def check_file(path: str) -> FileCheck:
    """Read, hash and fully decode one file. Never raises for a bad image."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return FileCheck(path, False, reason=f"cannot read file ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = open_rgb(data)
    except ImageDecodeError as exc:
        return FileCheck(path, False, sha256=digest, reason=exc.reason)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop a 10,000-file check
        return FileCheck(path, False, sha256=digest, reason=f"cannot decode ({type(exc).__name__}: {exc})")
    fmt = img.info.get("source_format", "")
    return FileCheck(path, True, sha256=digest, width=img.width, height=img.height, format=fmt)


def check_files(
    paths: Iterable[str], *, workers: int | None = None, show_progress: bool = True, desc: str = "Checking images",
    cache: CheckCache | None = None, recheck: bool = False,
) -> list[FileCheck]:
    """Check many files in parallel; results in input order.

    Args:
        paths: file paths.
        workers: threads to use (default: all CPUs). 1 checks in the calling thread.
        show_progress: show a progress bar with rate and ETA.
        cache: earlier verdicts (see :mod:`transferlab.data.check_cache`): files unchanged since
            they were checked are not read again, and new verdicts are added to it.
        recheck: check every file even if the cache knows it (and refresh the cache).
    """
    paths = list(paths)
    known, stamps = cache.lookup(paths) if cache is not None else ({}, {})
    if recheck:
        known = {}
    todo = [p for p in paths if p not in known]
    if known:
        logger.info("%d of %d files unchanged since they were last checked (not decoded again)", len(known),
                    len(paths))
    checked = {c.path: c for c in _check_all(todo, workers, show_progress, desc)}
    if cache is not None:
        cache.store(checked.values(), stamps)
    return [known[p] if p in known else checked[p] for p in paths]


def _check_all(paths: list[str], workers: int | None, show_progress: bool, desc: str) -> list[FileCheck]:
    workers = workers or os.cpu_count() or 1
    results: list[FileCheck] = []
    if not paths:
        return results
    with progress_bar(total=len(paths), desc=desc, unit="img", enabled=show_progress) as bar:
        if workers <= 1 or len(paths) < _MIN_FILES_FOR_POOL:
            for path in paths:
                results.append(check_file(path))
                bar.update(1)
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # map() keeps input order and holds at most one FileCheck per file, never pixels.
            for checked in pool.map(check_file, paths):
                results.append(checked)
                bar.update(1)
    return results
