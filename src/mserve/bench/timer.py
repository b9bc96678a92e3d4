"""Wake the event loop at a nanosecond deadline.

asyncio's timers round a wait up to the next millisecond, so a sender that used them would lag
its schedule by up to 1 ms. In the main thread a one-shot interval timer (``setitimer``) raises
SIGALRM at the deadline; the interpreter's C-level handler wakes the loop through its wake-up
descriptor, with no second thread competing for the GIL. Elsewhere a sleeping thread does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from typing import Protocol

clock = time.perf_counter_ns


class Timer(Protocol):
    """One pending wake-up at a time."""

    def wait_until(self, deadline_ns: int) -> asyncio.Future[None]: ...

    def close(self) -> None: ...


def _set_done(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class AlarmTimer:
    """SIGALRM through ``setitimer``; only for the loop running in the main thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        loop.add_signal_handler(signal.SIGALRM, self._fire)

    def wait_until(self, deadline_ns: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._future = fut
        delay = (deadline_ns - clock()) / 1e9
        if delay <= 0:
            fut.set_result(None)
        else:
            signal.setitimer(signal.ITIMER_REAL, max(delay, 1e-6))
        return fut

    def _fire(self) -> None:
        fut, self._future = self._future, None
        _set_done(fut)

    def close(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with contextlib.suppress(RuntimeError, ValueError):
            self._loop.remove_signal_handler(signal.SIGALRM)
        _set_done(self._future)


class ThreadTimer:
    """A thread that sleeps until the deadline, then wakes the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cond = threading.Condition()
        self._deadline = 0
        self._future: asyncio.Future[None] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-timer", daemon=True)
        self._thread.start()

    def wait_until(self, deadline_ns: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            self._deadline = deadline_ns
            self._future = fut
            self._cond.notify()
        return fut

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._future is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline, fut = self._deadline, self._future
                self._future = None
            delay = (deadline - clock()) / 1e9
            if delay > 0:
                time.sleep(delay)
            with contextlib.suppress(RuntimeError):  # loop closed
                self._loop.call_soon_threadsafe(_set_done, fut)


def make_timer(loop: asyncio.AbstractEventLoop) -> Timer:
    """The best timer for this thread."""
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            return AlarmTimer(loop)
    return ThreadTimer(loop)
