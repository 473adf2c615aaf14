"""Dynamic batching: concurrent requests share one model call.

Requests put their (already decoded) images on a queue; one worker takes what is waiting, up to
``max_batch`` images, waiting at most ``max_wait_s`` for more once the first has arrived, and runs
the model on the lot in a single thread. While the model runs, new requests queue up, so under
load batches fill by themselves and throughput approaches the runtime's batch throughput.
Memory stays bounded: at most ``max_pending`` images wait or run at any time; past that a
request is refused at once (:class:`Overloaded`) rather than queued without limit.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


class Overloaded(Exception):
    """More images are waiting than the service allows (``max_pending``)."""


class DynamicBatcher:
    """Group concurrent ``predict`` calls into model batches.

    Args:
        runtime: ``runtime(uint8 (N, S, S, 3)) -> float32 (N, C)``; called from one thread.
        max_batch: most images per model call (default 32). A request with more images than
            this still runs, as its own batch.
        max_wait_s: how long to wait for more requests after the first (default 2 ms).
        max_pending: most images waiting or running at once (default 256).
        on_batch: called with ``(images, seconds)`` after each model call (metrics).
    """

    def __init__(self, runtime: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 32,
                 max_wait_s: float = 0.002, max_pending: int = 256,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_pending < 1:
            raise ValueError(f"max_batch and max_pending must be >= 1, got {max_batch} and {max_pending}.")
        self._runtime = runtime
        self.max_batch, self.max_wait_s, self.max_pending = max_batch, max_wait_s, max_pending
        self._on_batch = on_batch
        self.pending = 0
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker (inside the running event loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferlab-model")
        self._task = asyncio.create_task(self._work(), name="transferlab-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still queued get a RuntimeError."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))
        if self._executor:
            self._executor.shutdown(wait=True)

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities float32 (N, C) for uint8 images (N, S, S, 3), batched with other calls.

        Raises:
            Overloaded: accepting these images would exceed ``max_pending``.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        n = len(images)
        if self.pending + n > self.max_pending:
            raise Overloaded(f"{self.pending} images are already waiting (limit {self.max_pending})")
        future = asyncio.get_running_loop().create_future()
        self.pending += n
        try:
            self._queue.put_nowait((images, future))
            return await future
        finally:  # also on timeout/cancel: the worker skips futures that are already done
            self.pending -= n

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        carry = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            batch, count = [first], len(first[0])
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if count + len(item[0]) > self.max_batch:
                    carry = item  # starts the next batch
                    break
                batch.append(item)
                count += len(item[0])
            batch = [(x, f) for x, f in batch if not f.done()]  # requests that timed out meanwhile
            if not batch:
                continue
            images = batch[0][0] if len(batch) == 1 else np.concatenate([x for x, _ in batch])
            start = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self._runtime, images)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self._on_batch:
                self._on_batch(len(images), time.perf_counter() - start)
            offset = 0
            for x, future in batch:
                if not future.done():
                    future.set_result(probs[offset:offset + len(x)])
                offset += len(x)
