"""Merge concurrent requests' images into model calls of a bounded size, and shed load past a time budget.

Plain asyncio and NumPy, no BentoML: the service's model runs in one thread of its own
(ONNX Runtime, or torch, has its own threads), fed by one asyncio task.
"""

import asyncio
import collections
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Overloaded(Exception):
    """Shed this request: the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class MicroBatcher:
    """Merge concurrent requests' images into model calls of at most ``max_batch`` images.

    Greedy: while the model runs, arriving images queue; the next call takes what is queued (up to
    ``max_batch``). A request larger than ``max_batch`` is split into chunks. The budget counts
    images: a request whose images would wait longer than ``max_queue_seconds`` (at the measured
    seconds per image) is refused with ``Overloaded``. With ``batching`` off each request, whatever
    its size, is one model call of its own (for comparison).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_queue_seconds: float,
        batching: bool = True,
    ):
        self.run, self.max_batch, self.max_queue_seconds = run, max_batch, max_queue_seconds
        self.batching = batching
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="onnx")  # ONNX Runtime has its own threads
        self.queue: collections.deque = collections.deque()
        self.queued_images = 0
        self.seconds_per_image = 0.0
        self.wakeup: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    def calibrate(self, sample: np.ndarray) -> None:
        """Time a full batch (after a warm-up call): what a queued image costs under load."""
        self.run(sample)
        began = time.perf_counter()
        self.run(sample)
        self.seconds_per_image = (time.perf_counter() - began) / len(sample)

    async def submit(self, batch: np.ndarray) -> np.ndarray:
        wait = (self.queued_images + len(batch)) * self.seconds_per_image
        if self.queued_images and wait > self.max_queue_seconds:
            raise Overloaded(
                f"the server is busy: {self.queued_images} images are queued (about {wait:.1f} s of work); retry later",
                math.ceil(self.queued_images * self.seconds_per_image),
            )
        if self.worker is None or self.worker.done():
            self.wakeup = asyncio.Event()
            self.worker = asyncio.get_running_loop().create_task(self._work())
        loop = asyncio.get_running_loop()
        futures = []
        step = self.max_batch if self.batching else len(batch)
        for start in range(0, len(batch), step):
            future = loop.create_future()
            self.queue.append((batch[start : start + step], future))
            self.queued_images += len(batch[start : start + step])
            futures.append(future)
        self.wakeup.set()
        return np.concatenate(await asyncio.gather(*futures))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                taken, size = [], 0
                while self.queue and (not taken or (self.batching and size + len(self.queue[0][0]) <= self.max_batch)):
                    chunk, future = self.queue.popleft()
                    taken.append((chunk, future))
                    size += len(chunk)
                began = time.perf_counter()
                try:
                    result = await loop.run_in_executor(
                        self.executor, self.run, np.concatenate([chunk for chunk, _ in taken])
                    )
                except Exception as error:  # a real fault: every waiting request gets it
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(error)
                    continue
                finally:
                    self.queued_images -= size
                if size >= self.max_batch // 2:  # queued images run in full batches: small ones say little
                    per_image = (time.perf_counter() - began) / size
                    self.seconds_per_image = 0.8 * self.seconds_per_image + 0.2 * per_image
                offset = 0
                for chunk, future in taken:
                    if not future.done():
                        future.set_result(result[offset : offset + len(chunk)])
                    offset += len(chunk)
