"""Sends requests at their intended times and records what happened, window by window.

Closed loop: ``concurrency`` connections, each sending its next request the moment the last
answer arrives (intended send time = actual send time).

Open loop: a schedule of intended send times made before the step starts. Each request's latency
counts from its intended time, so a server that stalls cannot hide the stall by slowing the
sender (no coordinated omission); the time from intended to actual send (the lag) is recorded
separately, and so is the latency from the actual send (service time). When every connection is
busy a new one is opened, up to ``max_connections``; beyond that requests wait in a backlog and
are counted as not started on time, which makes the step INVALID.

All times are integer nanoseconds of the monotonic clock; histograms hold integer microseconds.
One generator runs in one process on one event loop; several processes merge their windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mserve.bench.connection import Http1Connection
from mserve.bench.histogram import Histogram
from mserve.bench.stats import merge_errors
from mserve.bench.targets.base import Prepared
from mserve.bench.timer import Timer, make_timer
from mserve.errors import Unavailable

clock = time.perf_counter_ns

#: Shortest gap between two wake-ups of the open-loop sender: above some 20k requests/s the
#: requests due within it go out together (lag <= 50 us) instead of one wake-up each.
MIN_TICK_NS = 50_000
#: Connections being opened at once, at most.
MAX_OPENING = 8


@dataclass(frozen=True, slots=True)
class Load:
    """The load of one step."""

    mode: str  # "closed" | "open"
    concurrency: int = 1
    rate: float = 0.0
    arrival: str = "constant"
    seed: int = 0
    max_connections: int = 1024

    def label(self) -> str:
        if self.mode == "closed":
            return f"concurrency {self.concurrency}"
        return f"{self.rate:g} req/s ({self.arrival})"


@dataclass(slots=True)
class WindowRecord:
    """What one generator saw in one window; mergeable across processes."""

    index: int
    start_ns: int
    end_ns: int
    latency: Histogram = field(default_factory=Histogram)  # from the intended send
    service: Histogram = field(default_factory=Histogram)  # from the actual send
    lag: Histogram = field(default_factory=Histogram)  # actual send - intended send
    ok: int = 0
    sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_ns: int = 0
    backlogged: int = 0  # requests that found no free connection at max_connections
    due: int = 0  # open loop: sends the schedule called for in this window

    def merge(self, other: WindowRecord) -> None:
        """Add another process's record of the same window."""
        self.start_ns = min(self.start_ns, other.start_ns)
        self.end_ns = max(self.end_ns, other.end_ns)
        self.latency.merge(other.latency)
        self.service.merge(other.service)
        self.lag.merge(other.lag)
        self.ok += other.ok
        self.sent += other.sent
        self.errors = merge_errors(self.errors, other.errors)
        self.cpu_ns += other.cpu_ns
        self.backlogged += other.backlogged
        self.due += other.due

    def to_wire(self) -> dict[str, object]:
        return {
            "index": self.index,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "latency": self.latency.encode(),
            "service": self.service.encode(),
            "lag": self.lag.encode(),
            "ok": self.ok,
            "sent": self.sent,
            "errors": dict(self.errors),
            "cpu_ns": self.cpu_ns,
            "backlogged": self.backlogged,
            "due": self.due,
        }

    @classmethod
    def from_wire(cls, d: dict[str, object]) -> WindowRecord:
        return cls(
            index=int(d["index"]),  # type: ignore[call-overload]
            start_ns=int(d["start_ns"]),  # type: ignore[call-overload]
            end_ns=int(d["end_ns"]),  # type: ignore[call-overload]
            latency=Histogram.decode(str(d["latency"])),
            service=Histogram.decode(str(d["service"])),
            lag=Histogram.decode(str(d["lag"])),
            ok=int(d["ok"]),  # type: ignore[call-overload]
            sent=int(d["sent"]),  # type: ignore[call-overload]
            errors=dict(d["errors"]),  # type: ignore[call-overload]
            cpu_ns=int(d["cpu_ns"]),  # type: ignore[call-overload]
            backlogged=int(d["backlogged"]),  # type: ignore[call-overload]
            due=int(d.get("due", 0)),  # type: ignore[call-overload]
        )


#: on_window(record) -> True to stop the step after this window.
OnWindow = Callable[[WindowRecord], bool]


class Generator:
    """Runs one step's load from one process."""

    def __init__(self, prepared: Prepared, load: Load, timeout_s: float = 30.0) -> None:
        self.p = prepared
        self.load = load
        self.timeout_ns = int(timeout_s * 1e9)
        self._requests = prepared.requests
        self._next_request = 0
        self._conns: list[Http1Connection] = []
        self._idle: deque[Http1Connection] = deque()
        self._backlog: deque[int] = deque()
        self._opening = 0
        self._stopping = False
        self.warmup = WindowRecord(-1, 0, 0)  # what warm-up saw: reported, never measured
        self._window = self.warmup
        self._offsets: np.ndarray = np.empty(0, dtype=np.int64)
        self._next_send = 0
        self._t0 = 0
        self._end_ns = 0
        self._timer: Timer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_used = 0
        self._spare = max(2, math.ceil(load.rate * 0.005))

    # -- completion (the hot path) --------------------------------------------------------------

    def _done(self, conn: Http1Connection, status: int, body: bytes, error: str | None) -> None:
        now = clock()
        w = self._window
        kind = error if error is not None else self.p.check(status, body)
        if kind is None:
            w.ok += 1
            w.latency.record((now - conn.intended_ns) // 1000)
            w.service.record((now - conn.sent_ns) // 1000)
        else:
            w.errors[kind] = w.errors.get(kind, 0) + 1
        if self._stopping:
            if not conn.alive:
                self._drop(conn)
            return
        if not conn.alive:
            self._drop(conn)
            self._spawn(self._replace_connection())
            return
        if self.load.mode == "closed":
            self._send(conn, now)
            return
        if self._backlog:
            self._send(conn, self._backlog.popleft())
        else:
            self._idle.append(conn)
        self._dispatch_due(now)

    def _send(self, conn: Http1Connection, intended_ns: int) -> None:
        reqs = self._requests
        i = self._next_request
        self._next_request = (i + 1) % len(reqs)
        conn.send(reqs[i], intended_ns)
        w = self._window
        w.sent += 1
        w.lag.record((conn.sent_ns - intended_ns) // 1000)

    # -- open loop ------------------------------------------------------------------------------

    def _dispatch_due(self, now: int) -> None:
        offsets, t0 = self._offsets, self._t0
        i, n = self._next_send, len(offsets)
        while i < n and t0 + offsets[i] <= now:
            intended = t0 + int(offsets[i])
            i += 1
            self._window.due += 1
            if self._idle:
                self._send(self._idle.popleft(), intended)
            else:
                # wait for the next free connection; open more, a few at a time (a burst of
                # connects after a hiccup would cost more than the wait)
                self._backlog.append(intended)
                if len(self._conns) + self._opening >= self.load.max_connections:
                    self._window.backlogged += 1
                elif self._opening < MAX_OPENING:
                    self._start_opening()
        self._next_send = i
        # keep a few idle connections ready, so a slow server never makes us connect on demand
        while (
            len(self._idle) + self._opening < self._spare
            and len(self._conns) + self._opening < self.load.max_connections
            and self._opening < MAX_OPENING
        ):
            self._start_opening()

    def _tick(self) -> None:
        """The timer's callback: send what is due, then arm for the next intended time (at
        least MIN_TICK_NS ahead, so very high rates are sent in small bursts, not one wake-up
        per request)."""
        if self._stopping:
            return
        now = clock()
        self._dispatch_due(now)
        if self._next_send >= len(self._offsets):
            return
        due = self._t0 + int(self._offsets[self._next_send])
        if due <= self._end_ns and self._timer is not None:
            self._timer.arm(max(due, now + MIN_TICK_NS), self._tick)

    # -- connections ----------------------------------------------------------------------------

    def _start_opening(self) -> None:
        """Open one more connection in the background (counted as opening right away)."""
        self._opening += 1
        self._spawn(self._open_one())

    async def _open_one(self) -> None:
        try:
            conn = await self.p.connect(self.p.host, self.p.port, self._done, self.p.keep_body)
        except OSError:
            self._window.errors["connection"] = self._window.errors.get("connection", 0) + 1
            if self._backlog:
                self._backlog.popleft()  # that request cannot be sent
            return
        finally:
            self._opening -= 1
        self._conns.append(conn)
        self.connections_used = max(self.connections_used, len(self._conns))
        if self._stopping:
            conn.close()
        elif self._backlog:
            self._send(conn, self._backlog.popleft())
        else:
            self._idle.append(conn)

    async def _replace_connection(self) -> None:
        if self.load.mode == "open":
            self._start_opening()
            return
        try:
            conn = await self.p.connect(self.p.host, self.p.port, self._done, self.p.keep_body)
        except OSError:
            self._window.errors["connection"] = self._window.errors.get("connection", 0) + 1
            await asyncio.sleep(0.05)
            if not self._stopping:
                self._spawn(self._replace_connection())
            return
        self._conns.append(conn)
        if not self._stopping:
            self._send(conn, clock())

    def _drop(self, conn: Http1Connection) -> None:
        with contextlib.suppress(ValueError):
            self._conns.remove(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap_timeouts(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.1)
            limit = clock() - self.timeout_ns
            for conn in list(self._conns):
                if conn.busy and conn.sent_ns < limit:
                    conn.fail("timeout")  # counts it, then the closed connection is replaced
                    conn.close()

    # -- the step -------------------------------------------------------------------------------

    async def run(
        self,
        warmup_s: float,
        window_s: float,
        max_duration_s: float,
        on_window: OnWindow,
        offsets_ns: np.ndarray | None = None,
        start_ns: int | None = None,
    ) -> tuple[list[WindowRecord], WindowRecord]:
        """Run warm-up, then windows until ``on_window`` says stop or the time is up.

        Returns the measured windows and the tail (answers that arrived after the last window
        closed, from requests sent within it: counted in the step's totals, never dropped).
        ``start_ns`` aligns several processes on one monotonic start time.
        """
        load = self.load
        loop = asyncio.get_running_loop()
        initial = (
            load.concurrency
            if load.mode == "closed"
            else min(load.max_connections, max(4, math.ceil(load.rate * 0.02)))
        )
        opened = await asyncio.gather(
            *(
                self.p.connect(self.p.host, self.p.port, self._done, self.p.keep_body)
                for _ in range(initial)
            ),
            return_exceptions=True,
        )
        conns = [c for c in opened if not isinstance(c, BaseException)]
        failed = [e for e in opened if isinstance(e, BaseException)]
        if failed:
            for c in conns:
                c.close()
            exc = failed[0]
            if not isinstance(exc, OSError):
                raise exc
            raise Unavailable(
                f"cannot connect to {self.p.host}:{self.p.port}: {exc.strerror or exc}"
            ) from None
        self._conns = list(conns)
        self.connections_used = len(conns)
        self._idle = deque(conns)
        self._t0 = start_ns if start_ns is not None else clock()
        if self._t0 > clock():
            await asyncio.sleep((self._t0 - clock()) / 1e9)
        measure_start = self._t0 + int(warmup_s * 1e9)
        end_ns = measure_start + int(max_duration_s * 1e9)
        window_ns = int(window_s * 1e9)
        timer = self._timer = make_timer(loop)
        reaper = loop.create_task(self._reap_timeouts())
        if load.mode == "closed":
            now = clock()
            while self._idle:
                self._send(self._idle.popleft(), now)
        else:
            self._offsets = offsets_ns if offsets_ns is not None else np.empty(0, dtype=np.int64)
            self._end_ns = end_ns
            if len(self._offsets):
                timer.arm(self._t0 + int(self._offsets[0]), self._tick)
        windows: list[WindowRecord] = []
        try:
            await _sleep_until(measure_start)
            index = 0
            while True:
                start = self._t0 + int(warmup_s * 1e9) + index * window_ns
                record = WindowRecord(index, start, start + window_ns)
                cpu0 = time.process_time_ns()
                self._window = record
                await _sleep_until(record.end_ns)
                self._window = WindowRecord(index + 1, record.end_ns, record.end_ns)
                record.cpu_ns = time.process_time_ns() - cpu0
                windows.append(record)
                index += 1
                if on_window(record) or record.end_ns + window_ns > end_ns:
                    break
        finally:
            self._stopping = True
            tail = self._window
            if self._backlog:  # due, never sent: counted, so a stall at the end is not hidden
                tail.errors["not_started"] = tail.errors.get("not_started", 0) + len(self._backlog)
                self._backlog.clear()
            await self._drain()
            tail.end_ns = clock()
            reaper.cancel()
            timer.close()
            for t in list(self._tasks):
                t.cancel()
            for c in self._conns:
                c.close()
        return windows, tail

    async def _drain(self) -> None:
        """Wait for the answers still in flight (bounded by the request timeout)."""
        deadline = clock() + self.timeout_ns
        while any(c.busy for c in self._conns) and clock() < deadline:
            await asyncio.sleep(0.005)
        for c in self._conns:
            if c.busy:
                c.fail("timeout")


async def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - clock()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
