"""Model instances: threads that run a runtime off the event loop.

Each instance is one thread taking work from a shared queue, so ``instance_count`` executions run
in parallel (ONNX Runtime releases the GIL while it computes). Results come back to the event loop
with ``call_soon_threadsafe``; the time a request waited in the queue and the time it computed are
measured with the monotonic clock and returned with the result.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mserve.runtime.base import Runtime

Feed = dict[str, np.ndarray]


@dataclass(slots=True)
class Timed:
    """What an instance returns: the outputs (or the exception) and how long each phase took."""

    outputs: dict[str, np.ndarray] | None
    error: BaseException | None
    queue_ns: int
    infer_ns: int


_STOP = object()


def _resolve(fut: asyncio.Future[Timed], result: Timed) -> None:
    if not fut.done():  # the caller may have gone (cancelled) meanwhile
        fut.set_result(result)


class InstancePool:
    """``count`` threads executing ``runtime.infer`` calls in arrival order."""

    def __init__(self, runtimes: list[Runtime], name: str) -> None:
        if not runtimes:
            raise ValueError("an instance pool needs at least one runtime")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._work, args=(rt,), name=f"{name}-instance-{i}", daemon=True
            )
            for i, rt in enumerate(runtimes)
        ]
        self._runtimes = runtimes
        self._closed = False
        self.pending = 0  # submitted and not yet resolved; touched only on the event loop
        for t in self._threads:
            t.start()

    @property
    def count(self) -> int:
        return len(self._threads)

    def submit(self, feed: Feed, outputs: list[str]) -> asyncio.Future[Timed]:
        """Queue one execution; the future resolves on the calling event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Timed] = loop.create_future()
        self.execute(feed, outputs, partial(_resolve, fut), loop)
        return fut

    def execute(
        self,
        feed: Feed,
        outputs: list[str],
        on_done: Callable[[Timed], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Queue one execution; ``on_done(result)`` is called on ``loop`` when it ends."""
        if self._closed:
            raise RuntimeError("instance pool is closed")
        self.pending += 1
        self._queue.put((feed, outputs, on_done, loop, time.perf_counter_ns()))

    def _done(self, on_done: Callable[[Timed], None], result: Timed) -> None:
        self.pending -= 1
        on_done(result)

    def run_sync(self, feed: Feed, outputs: list[str]) -> dict[str, np.ndarray]:
        """Execute once on the caller's thread with the first runtime (warm-up, tools)."""
        return self._runtimes[0].infer(feed, outputs)

    def run_inline(self, feed: Feed, outputs: list[str]) -> Timed:
        """Execute on the caller's thread (the event loop), timed like a queued execution."""
        if self._closed:
            raise RuntimeError("instance pool is closed")
        start = time.perf_counter_ns()
        try:
            result = Timed(self._runtimes[0].infer(feed, outputs), None, 0, 0)
        except Exception as exc:  # the model's failure belongs to this request only
            result = Timed(None, exc, 0, 0)
        result.infer_ns = time.perf_counter_ns() - start
        return result

    def close(self, on_closed: Callable[[], None] | None = None) -> None:
        """Finish what is queued, then stop the threads and close the runtimes (in background)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)

        def finish() -> None:
            for t in self._threads:
                t.join()
            for rt in {id(r): r for r in self._runtimes}.values():  # shared runtimes once
                rt.close()
            if on_closed is not None:
                on_closed()

        threading.Thread(target=finish, name="instance-pool-close", daemon=True).start()

    def _work(self, runtime: Runtime) -> None:
        get = self._queue.get
        clock = time.perf_counter_ns
        while True:
            item = get()
            if item is _STOP:
                return
            feed, outputs, on_done, loop, queued_at = item
            start = clock()
            try:
                result = Timed(runtime.infer(feed, outputs), None, start - queued_at, 0)
            except BaseException as exc:  # the model's failure belongs to this request only
                result = Timed(None, exc, start - queued_at, 0)
            result.infer_ns = clock() - start
            try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
                loop.call_soon_threadsafe(self._done, on_done, result)
            except RuntimeError:  # the loop closed while we computed
                pass
