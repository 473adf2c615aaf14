"""Check every file before training: decode it fully, hash its bytes, record its size.

Runs on all cores with a process pool (decoding is CPU-bound). Each worker decodes one file,
keeps only a few numbers and drops the pixels, so memory stays flat for any number of files.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from transferlab.data.decode import ImageDecodeError, open_rgb
from transferlab.progress import progress_bar

# Below this many files the cost of starting worker processes outweighs the parallelism.
_MIN_FILES_FOR_POOL = 64


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one file: either decoded metadata or the reason it is bad."""

    path: str
    ok: bool
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    reason: str = ""


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


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_chunk(paths: list[str]) -> list[FileCheck]:
    return [check_file(p) for p in paths]


def check_files(
    paths: Iterable[str], *, workers: int | None = None, show_progress: bool = True, desc: str = "Checking images"
) -> list[FileCheck]:
    """Check many files in parallel; results in input order.

    Args:
        paths: file paths.
        workers: processes to use (default: all CPUs). 1 checks in this process.
        show_progress: show a progress bar with rate and ETA.
    """
    paths = list(paths)
    workers = workers or os.cpu_count() or 1
    results: list[FileCheck] = []
    with progress_bar(total=len(paths), desc=desc, unit="img", enabled=show_progress) as bar:
        if workers <= 1 or len(paths) < _MIN_FILES_FOR_POOL:
            for path in paths:
                results.append(check_file(path))
                bar.update(1)
            return results
        # "spawn": the parent may already run TensorFlow threads, and forking a threaded
        # process can deadlock. Workers import only Pillow and NumPy, so they start fast.
        context = multiprocessing.get_context("spawn")
        chunk = max(8, min(64, len(paths) // (workers * 8) or 8))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for checked in pool.map(_check_chunk, _chunks(paths, chunk)):
                results.extend(checked)
                bar.update(len(checked))
    return results
