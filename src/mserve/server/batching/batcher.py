"""The dynamic batcher of one model version: a bounded queue on the event loop and its clock.

Requests wait in one queue per *batch key* (the shapes and dtypes they must share to be stacked),
so requests that cannot share a batch are never mixed. Whenever an instance is free, the group
whose oldest request is oldest forms the next batch: at once when it is full (``max_batch_size``
or a preferred size), otherwise after waiting up to ``max_queue_delay`` - but only while more
requests are on their way. "On their way" is judged from the server's in-flight count: when every
request the server has held lately is already queued here, nobody else can join, and waiting would
only add latency (a single client is never delayed).

All state is touched on the event loop only; the instance threads call back through
``call_soon_threadsafe``. Durations come from the monotonic clock, in nanoseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from mserve.errors import DeadlineExceeded, ModelFailure, ServerBusy
from mserve.server.batching.merge import Feed, SplitError, batch_key, split, stack
from mserve.server.batching.policy import BatchPolicy, take
from mserve.server.instances import InstancePool, Timed
from mserve.server.load import InFlight

log = logging.getLogger("mserve.batching")

#: The in-flight peak is the largest count seen over the current and the previous window.
PEAK_WINDOW_NS = 100_000_000

ExecutionHook = Callable[[int, int, int, int], None]  # (rows, input_ns, infer_ns, output_ns)


@dataclass(slots=True)
class Batched:
    """One request's share of a batch: its outputs and the phases, in nanoseconds."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_rows: int


@dataclass(slots=True, eq=False)
class _Entry:
    feed: Feed
    outputs: list[str]
    rows: int
    key: Hashable
    future: asyncio.Future[Batched]
    enqueued_ns: int
    timer: asyncio.TimerHandle | None = None
    deadline_ns: int = 0  # the client's, when it comes before the queue's timeout
    gone: bool = False  # timed out or cancelled while queued: skipped when batches form


@dataclass(slots=True, eq=False)
class _Group:
    entries: deque[_Entry] = field(default_factory=deque)
    rows: int = 0


class Batcher:
    """Forms batches for ``slots`` parallel executions on ``pool``."""

    def __init__(
        self,
        policy: BatchPolicy,
        pool: InstancePool,
        name: str,
        version: str,
        in_flight: InFlight | None = None,
        on_execution: ExecutionHook | None = None,
    ) -> None:
        self.policy = policy
        self.pool = pool
        self.slots = pool.count
        self.name = name
        self.version = version
        self.in_flight = in_flight or InFlight()
        self.on_execution = on_execution
        self.queued = 0  # requests waiting (not timed out, not cancelled)
        self.busy = 0  # executions running
        self.running = 0  # requests in those executions
        self._groups: dict[Hashable, _Group] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._on_drained: Callable[[], None] | None = None
        self._peak_now = 0
        self._peak_before = 0
        self._window_end = 0

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self.queued and not self.busy

    # -- intake ---------------------------------------------------------------------------------

    def admit(self) -> None:
        """Raise :class:`ServerBusy` when the queue is full: a transport calls this before it
        decodes a request, so that shedding costs next to nothing."""
        policy = self.policy
        if policy.max_queue_size and self.queued >= policy.max_queue_size:
            raise ServerBusy(self.name, self.version, self.queued, policy.max_queue_size)

    def submit(
        self, feed: Feed, outputs: list[str], rows: int, deadline_ns: int = 0
    ) -> asyncio.Future[Batched]:
        """Queue one validated request of ``rows`` rows; the future resolves with its share.
        A request still queued at its ``deadline_ns`` (perf_counter_ns; 0: none) or after the
        queue's timeout is dropped uncomputed with :class:`DeadlineExceeded`.

        Raises :class:`ServerBusy` at once when the queue is full, and RuntimeError once closed.
        """
        if self._closing:
            raise RuntimeError("batcher is closed")
        self.admit()
        policy = self.policy
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = time.perf_counter_ns()
        self._sample_in_flight(now)
        key = batch_key(feed)
        entry = _Entry(feed, outputs, rows, key, loop.create_future(), now)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        group.entries.append(entry)
        group.rows += rows
        self.queued += 1
        if deadline_ns and (not policy.timeout_ns or deadline_ns < now + policy.timeout_ns):
            entry.deadline_ns = deadline_ns
            entry.timer = loop.call_later((deadline_ns - now) / 1e9, self._expire, entry)
        elif policy.timeout_ns:
            entry.timer = loop.call_later(policy.timeout_ns / 1e9, self._expire, entry)
        entry.future.add_done_callback(lambda fut: self._cancelled(entry, fut))
        self._kick()
        return entry.future

    def _sample_in_flight(self, now: int) -> None:
        if now >= self._window_end:
            self._peak_before = self._peak_now if now - self._window_end < PEAK_WINDOW_NS else 0
            self._peak_now = 0
            self._window_end = now + PEAK_WINDOW_NS
        if self.in_flight.count > self._peak_now:
            self._peak_now = self.in_flight.count

    def _more_coming(self) -> bool:
        """Whether the server holds, or held lately, more requests than are queued or computing
        here: requests received but not yet handed to the batcher, or closed-loop clients whose
        answers just left and who are about to send again."""
        held = max(self._peak_now, self._peak_before, self.in_flight.count)
        return held > self.queued + self.running

    def _drop(self, entry: _Entry) -> None:
        entry.gone = True
        self.queued -= 1
        self._groups[entry.key].rows -= entry.rows
        if entry.timer is not None:
            entry.timer.cancel()

    def _expire(self, entry: _Entry) -> None:
        if entry.gone or entry.future.done():
            return
        self._drop(entry)
        waited_us = (time.perf_counter_ns() - entry.enqueued_ns) // 1000
        if entry.deadline_ns:  # the client's deadline came first
            timeout_us = (entry.deadline_ns - entry.enqueued_ns) // 1000
            error = DeadlineExceeded(self.name, self.version, waited_us, timeout_us, "client")
        else:
            timeout_us = self.policy.timeout_ns // 1000
            error = DeadlineExceeded(self.name, self.version, waited_us, timeout_us)
        entry.future.set_exception(error)

    def _cancelled(self, entry: _Entry, fut: asyncio.Future[Batched]) -> None:
        # the caller went away (connection closed) while its request was still queued
        if fut.cancelled() and not entry.gone:
            self._drop(entry)

    # -- forming batches ------------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            # one turn of the loop first, so requests that arrived together batch together
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        policy = self.policy
        while self.busy < self.slots and self.queued:
            groups = self._live_groups()
            chosen, limit = groups[0], 0
            for group in groups:  # a full batch goes first, whatever its age
                full = policy.full(group.rows)
                if full is not None:
                    chosen, limit = group, full
                    break
            if not limit:
                if not self._closing:
                    waited = time.perf_counter_ns() - chosen.entries[0].enqueued_ns
                    wait_ns = policy.should_wait(waited, self._more_coming())
                    if wait_ns:
                        assert self._loop is not None
                        self._timer = self._loop.call_later(wait_ns / 1e9, self._kick)
                        return
                limit = policy.max_batch_size
            self._launch(self._take(chosen, limit))
        self._maybe_drained()

    def _live_groups(self) -> list[_Group]:
        """Groups holding live requests, the one whose first request is oldest first."""
        live: list[_Group] = []
        for key, group in list(self._groups.items()):
            entries = group.entries
            while entries and entries[0].gone:
                entries.popleft()
            if entries:
                live.append(group)
            else:
                del self._groups[key]
        if len(live) > 1:
            live.sort(key=lambda g: g.entries[0].enqueued_ns)
        return live

    def _take(self, group: _Group, limit: int) -> list[_Entry]:
        live = [e for e in group.entries if not e.gone]
        n = take((e.rows for e in live), limit)
        batch = live[:n]
        rest = live[n:]
        group.entries = deque(rest)
        for e in batch:
            group.rows -= e.rows
            if e.timer is not None:
                e.timer.cancel()
            e.gone = True  # no longer queued: a late cancel must not count it again
        self.queued -= n
        return batch

    def _launch(self, batch: list[_Entry]) -> None:
        assert self._loop is not None
        start = time.perf_counter_ns()
        names: list[str] = []
        for e in batch:
            names.extend(n for n in e.outputs if n not in names)
        try:
            feed = stack([e.feed for e in batch])
        except (ValueError, MemoryError) as exc:
            self._fail(batch, f"cannot stack the batch: {exc}")
            return
        input_ns = time.perf_counter_ns() - start
        self.busy += 1
        self.running += len(batch)
        try:
            self.pool.execute(
                feed,
                names,
                lambda timed: self._done(batch, start, input_ns, timed),
                self._loop,
            )
        except RuntimeError:  # the pool closed under us (unload racing a request)
            self.busy -= 1
            self.running -= len(batch)
            self._fail(batch, "the model was unloaded while the request was queued")

    def _done(self, batch: list[_Entry], start: int, input_ns: int, timed: Timed) -> None:
        self.busy -= 1
        self.running -= len(batch)
        rows = [e.rows for e in batch]
        if timed.error is not None or timed.outputs is None:
            error, reason = timed.error, f"{type(timed.error).__name__}: {timed.error}"
            self._fail(batch, error if isinstance(error, DeadlineExceeded) else reason)
        else:
            try:
                parts = split(timed.outputs, rows)
            except SplitError as exc:
                self._fail(batch, str(exc))
            else:
                # output: the hand-back from the instance thread to this loop, plus the split
                ended = start + input_ns + timed.queue_ns + timed.infer_ns
                output_ns = max(0, time.perf_counter_ns() - ended)
                total_rows = sum(rows)
                for e, part in zip(batch, parts, strict=True):
                    if not e.future.done():
                        e.future.set_result(
                            Batched(
                                part,
                                queue_ns=start - e.enqueued_ns + timed.queue_ns,
                                input_ns=input_ns,
                                infer_ns=timed.infer_ns,
                                output_ns=output_ns,
                                batch_rows=total_rows,
                            )
                        )
                if self.on_execution is not None:
                    self.on_execution(total_rows, input_ns, timed.infer_ns, output_ns)
        if self.queued:
            self._kick()
        else:
            self._maybe_drained()

    def _fail(self, batch: list[_Entry], reason: str | DeadlineExceeded) -> None:
        log.warning(
            "model %s version %s failed a batch of %d requests: %s",
            self.name,
            self.version,
            len(batch),
            reason,
        )
        if isinstance(reason, DeadlineExceeded):  # an execution timeout, as the pool answered it
            exc: DeadlineExceeded | ModelFailure = reason
        else:
            exc = ModelFailure(self.name, self.version, reason)
        for e in batch:
            if not e.future.done():
                e.future.set_exception(exc)

    # -- closing --------------------------------------------------------------------------------

    def close(self, on_drained: Callable[[], None]) -> None:
        """Refuse new requests, send what is queued without waiting, then call ``on_drained``
        (once nothing is queued or running). Safe to call from any thread."""
        self._closing = True
        self._on_drained = on_drained
        loop = self._loop
        if loop is None or loop.is_closed():
            self._finish()
            return
        try:
            loop.call_soon_threadsafe(self._kick_closed)
        except RuntimeError:  # the loop closed meanwhile
            self._finish()

    def _kick_closed(self) -> None:
        if self.queued:
            self._kick()
        else:
            self._maybe_drained()

    def _maybe_drained(self) -> None:
        if self._closing and not self.queued and not self.busy:
            self._finish()

    def _finish(self) -> None:
        on_drained, self._on_drained = self._on_drained, None
        if on_drained is not None:
            on_drained()
