"""A TensorFlow-free batch loader: decode and resize files in threads, ahead of the consumer.

Used wherever images feed a model outside ``fit`` (feature extraction, prediction, evaluation,
export calibration and parity): the next batches are decoded by a thread pool while the model
runs on the current one (Pillow releases the GIL while decoding), memory stays at a few
batches, and an unreadable file is reported, never fatal.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from transferlab.data.decode import ImageDecodeError
from transferlab.data.pipeline import ResizeConfig


def _load_batch(paths: Sequence[str], start: int, stop: int, resize: ResizeConfig):
    images, indices, errors = [], [], {}
    for i in range(start, stop):
        try:
            images.append(resize.load(paths[i]))
            indices.append(i)
        except ImageDecodeError as exc:
            errors[i] = exc.reason
    batch = np.stack(images) if images else np.zeros((0, resize.size, resize.size, 3), np.uint8)
    return indices, batch, errors


def iter_file_batches(paths: Sequence[str], resize: ResizeConfig, batch_size: int, workers: int | None = None,
                      prefetch: int | None = None) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
    """Yield ``(indices, uint8 images (B, S, S, 3), {index: error reason})`` per batch, in order.

    Args:
        workers: decoding threads (default: all CPUs).
        prefetch: batches decoded ahead of the consumer (default: ``workers``).
    """
    workers = workers or os.cpu_count() or 1
    ahead = max(1, prefetch or workers)
    starts = iter(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append(pool.submit(_load_batch, paths, start, min(start + batch_size, len(paths)), resize))

        for _ in range(ahead):
            submit()
        while pending:
            result = pending.popleft().result()
            submit()
            yield result
