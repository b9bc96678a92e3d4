"""Model instances: threads that run a runtime off the event loop.

Each instance is one thread taking work from a shared queue, so ``instance_count`` executions run
in parallel (ONNX Runtime releases the GIL while it computes). Results come back to the event loop
with ``call_soon_threadsafe``; the time a request waited in the queue and the time it computed are
measured with the monotonic clock and returned with the result.

With a timeout (``runtime.timeout_s``), a :class:`~mserve.server.watchdog.Watchdog` watches every
execution: one that runs too long is answered at once with
:class:`~mserve.errors.ExecutionTimeout` and stopped when its runtime can be stopped
(:class:`~mserve.runtime.base.Cancellable`: ONNX Runtime's run is terminated, an instance
process is killed and restarted), which frees its instance for the next execution. Without a
timeout the instance threads run exactly as before, with nothing watched.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mserve.errors import DeadlineExceeded, ExecutionTimeout
from mserve.runtime.base import Cancellable, RunCancelled, Runtime
from mserve.server.watchdog import Watchdog, Watched

log = logging.getLogger("mserve.instances")

#: What a timed-out run that its runtime gives no way to stop becomes.
NOT_STOPPED = "the runtime cannot stop a running call, so its instance stays busy until it ends"

Feed = dict[str, np.ndarray]


@dataclass(slots=True)
class Timed:
    """What an instance returns: the outputs (or the exception) and how long each phase took."""

    outputs: dict[str, np.ndarray] | None
    error: BaseException | None
    queue_ns: int
    infer_ns: int


_STOP = object()


class _Ticket:
    """A queued execution's deadline, shared by the event loop and the instance threads."""

    __slots__ = ("deadline_ns", "dropped", "queued_ns", "started")

    def __init__(self, deadline_ns: int) -> None:
        self.deadline_ns = deadline_ns
        self.queued_ns = 0  # set as it is queued
        self.started = False  # an instance took it: it runs to the end
        self.dropped = False  # answered at its deadline: skipped when its turn comes


def _resolve(fut: asyncio.Future[Timed], result: Timed) -> None:
    if not fut.done():  # the caller may have gone (cancelled) meanwhile
        fut.set_result(result)


class _Execution(Watched):
    """A watched execution of the pool: answered by the watchdog when it expires."""

    __slots__ = ("_pool", "begun_ns", "loop", "on_done", "queue_ns")

    def __init__(
        self,
        pool: InstancePool,
        watchdog: Watchdog,
        on_done: Callable[[Timed], None],
        loop: asyncio.AbstractEventLoop,
        queue_ns: int,
    ) -> None:
        super().__init__(watchdog)
        self._pool = pool
        self.on_done = on_done
        self.loop = loop
        self.queue_ns = queue_ns
        self.begun_ns = 0

    def started(self) -> None:
        self.begun_ns = time.perf_counter_ns()
        super().started()

    def expired(self) -> None:
        infer_ns = time.perf_counter_ns() - self.begun_ns
        result = Timed(None, self._pool.timed_out(self.outcome), self.queue_ns, infer_ns)
        self._pool.deliver(self.on_done, self.loop, result)


class InstancePool:
    """``count`` threads executing ``runtime.infer`` calls in arrival order.

    ``timeout_s`` > 0 bounds each execution (see the module's docstring); ``model`` and
    ``version`` name the model in the timeout's message.
    """

    def __init__(
        self,
        runtimes: list[Runtime],
        name: str,
        *,
        timeout_s: float = 0.0,
        model: str = "",
        version: str = "",
    ) -> None:
        if not runtimes:
            raise ValueError("an instance pool needs at least one runtime")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._watchdog = Watchdog(timeout_s, name) if timeout_s > 0 else None
        self._model = (model or name, version)
        work = self._work if self._watchdog is None else self._work_watched
        self._threads = [
            threading.Thread(target=work, args=(rt,), name=f"{name}-instance-{i}", daemon=True)
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

    @property
    def timeout_s(self) -> float:
        """The longest one execution may run (0: no limit)."""
        return 0.0 if self._watchdog is None else self._watchdog.timeout_s

    def submit(self, feed: Feed, outputs: list[str], deadline_ns: int = 0) -> asyncio.Future[Timed]:
        """Queue one execution; the future resolves on the calling event loop. One still
        queued at ``deadline_ns`` (perf_counter_ns; 0: none) is answered at once with a
        :class:`DeadlineExceeded`, and skipped uncomputed when its turn comes."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Timed] = loop.create_future()
        ticket = _Ticket(deadline_ns) if deadline_ns else None
        self.execute(feed, outputs, partial(_resolve, fut), loop, ticket)
        if ticket is not None:
            delay = max(0.0, (deadline_ns - ticket.queued_ns) / 1e9)
            timer = loop.call_later(delay, self._drop, ticket, fut)

            def settled(fut: asyncio.Future[Timed]) -> None:
                timer.cancel()
                if fut.cancelled():  # its client left: skipped too, when its turn comes
                    ticket.dropped = True

            fut.add_done_callback(settled)
        return fut

    def execute(
        self,
        feed: Feed,
        outputs: list[str],
        on_done: Callable[[Timed], None],
        loop: asyncio.AbstractEventLoop,
        ticket: _Ticket | None = None,
    ) -> None:
        """Queue one execution; ``on_done(result)`` is called on ``loop`` when it ends, or when
        it runs past the timeout (its error then an :class:`ExecutionTimeout`). With a
        ``ticket``, an execution still queued at its deadline is skipped uncomputed (its error
        a :class:`DeadlineExceeded`)."""
        if self._closed:
            raise RuntimeError("instance pool is closed")
        self.pending += 1
        now = time.perf_counter_ns()
        if ticket is not None:
            ticket.queued_ns = now
        self._queue.put((feed, outputs, on_done, loop, now, ticket))

    def _drop(self, ticket: _Ticket, fut: asyncio.Future[Timed]) -> None:
        """The deadline passed (on the event loop): answer now unless it is computing."""
        if ticket.started or fut.done():
            return
        ticket.dropped = True
        now = time.perf_counter_ns()
        _resolve(fut, self._expired(ticket.queued_ns, now, ticket.deadline_ns))

    def _skip(self, ticket: _Ticket, queued_at: int, start: int) -> Timed | None:
        """On an instance thread: the result of a queued execution whose deadline passed (None:
        compute it). Marks the ticket started otherwise."""
        if ticket.dropped or start >= ticket.deadline_ns:
            return self._expired(queued_at, start, ticket.deadline_ns)
        ticket.started = True
        return None

    def _expired(self, queued_at: int, start: int, deadline_ns: int) -> Timed:
        """The result of an execution whose client's deadline passed while it was queued."""
        name, version = self._model
        waited_us = (start - queued_at) // 1000
        timeout_us = (deadline_ns - queued_at) // 1000
        error = DeadlineExceeded(name, version, waited_us, timeout_us, "client")
        return Timed(None, error, start - queued_at, 0)

    def _done(self, on_done: Callable[[Timed], None], result: Timed) -> None:
        self.pending -= 1
        on_done(result)

    def deliver(
        self, on_done: Callable[[Timed], None], loop: asyncio.AbstractEventLoop, result: Timed
    ) -> None:
        """Hand ``result`` to ``on_done`` on ``loop`` (from any thread)."""
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
            loop.call_soon_threadsafe(self._done, on_done, result)
        except RuntimeError:  # the loop closed while we computed
            pass

    def timed_out(self, outcome: str) -> ExecutionTimeout:
        """The error of an execution stopped for its timeout; ``outcome`` says how."""
        name, version = self._model
        error = ExecutionTimeout(name, version, self.timeout_s, outcome or NOT_STOPPED)
        log.warning("%s", error)
        return error

    def run_sync(self, feed: Feed, outputs: list[str]) -> dict[str, np.ndarray]:
        """Execute once on the caller's thread with the first runtime (warm-up, tools); raises
        :class:`ExecutionTimeout` when it runs past the timeout."""
        if self._watchdog is None:
            return self._runtimes[0].infer(feed, outputs)
        run = self._watchdog.handle()
        try:
            result = _call(self._runtimes[0], feed, outputs, run)
        except RunCancelled:
            raise self.timed_out(run.outcome) from None
        except BaseException:
            if run.finish():
                raise
            raise self.timed_out(run.outcome) from None
        if not run.finish():
            raise self.timed_out(run.outcome)
        return result

    def run_inline(self, feed: Feed, outputs: list[str]) -> Timed:
        """Execute on the caller's thread (the event loop), timed like a queued execution."""
        if self._closed:
            raise RuntimeError("instance pool is closed")
        start = time.perf_counter_ns()
        try:
            if self._watchdog is None:
                result = Timed(self._runtimes[0].infer(feed, outputs), None, 0, 0)
            else:
                result = Timed(self.run_sync(feed, outputs), None, 0, 0)
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
            if self._watchdog is not None:
                self._watchdog.close()
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
            feed, outputs, on_done, loop, queued_at, ticket = item
            start = clock()
            skipped = None if ticket is None else self._skip(ticket, queued_at, start)
            if skipped is not None:
                result = skipped
            else:
                try:
                    result = Timed(runtime.infer(feed, outputs), None, start - queued_at, 0)
                except BaseException as exc:  # the model's failure belongs to this request only
                    result = Timed(None, exc, start - queued_at, 0)
                result.infer_ns = clock() - start
            try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
                loop.call_soon_threadsafe(self._done, on_done, result)
            except RuntimeError:  # the loop closed while we computed
                pass

    def _work_watched(self, runtime: Runtime) -> None:
        """:meth:`_work` with each execution watched: whichever of the runtime's answer and the
        watchdog's timeout comes first answers the request; the other is dropped."""
        assert self._watchdog is not None
        watchdog = self._watchdog
        get = self._queue.get
        clock = time.perf_counter_ns
        cancellable = isinstance(runtime, Cancellable)  # once: a Protocol check is slow
        while True:
            item = get()
            if item is _STOP:
                return
            feed, outputs, on_done, loop, queued_at, ticket = item
            start = clock()
            skipped = None if ticket is None else self._skip(ticket, queued_at, start)
            if skipped is not None:
                self.deliver(on_done, loop, skipped)
                continue
            run = _Execution(self, watchdog, on_done, loop, start - queued_at)
            try:
                if cancellable:
                    computed = runtime.infer_cancellable(feed, outputs, run)  # type: ignore[attr-defined]
                else:
                    run.begin(None)  # cannot be stopped: timed from now
                    computed = runtime.infer(feed, outputs)
                result = Timed(computed, None, start - queued_at, 0)
            except BaseException as exc:  # the model's failure belongs to this request only
                result = Timed(None, exc, start - queued_at, 0)
            result.infer_ns = clock() - start
            if run.finish():  # else the watchdog answered already
                self.deliver(on_done, loop, result)


def _call(runtime: Runtime, feed: Feed, outputs: list[str], run: Watched) -> dict[str, np.ndarray]:
    """One watched call: cancellable when the runtime can stop, else timed from now."""
    if isinstance(runtime, Cancellable):
        return runtime.infer_cancellable(feed, outputs, run)
    run.begin(None)
    return runtime.infer(feed, outputs)
