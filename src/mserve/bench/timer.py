"""Call back at a nanosecond deadline, for the open-loop sender.

asyncio's timers round a wait up to the next millisecond, so a sender that used them would lag
its schedule by up to 1 ms. In the main thread a one-shot interval timer (``setitimer``) raises
SIGALRM at the deadline and the loop runs the callback; elsewhere a sleeping thread wakes the
loop. Either way the callback runs on the event loop, with no task or future per wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

clock = time.perf_counter_ns
Callback = Callable[[], None]


class Timer(Protocol):
    """One pending call at a time; arming again replaces it."""

    def arm(self, deadline_ns: int, callback: Callback) -> None: ...

    def close(self) -> None: ...


class AlarmTimer:
    """SIGALRM through ``setitimer``; only for a loop running in the main thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callback: Callback | None = None
        loop.add_signal_handler(signal.SIGALRM, self._fire)

    def arm(self, deadline_ns: int, callback: Callback) -> None:
        self._callback = callback
        delay = (deadline_ns - clock()) / 1e9
        signal.setitimer(signal.ITIMER_REAL, max(delay, 1e-6))

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    def close(self) -> None:
        self._callback = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        with contextlib.suppress(RuntimeError, ValueError):
            self._loop.remove_signal_handler(signal.SIGALRM)


class ThreadTimer:
    """A thread that sleeps until the deadline, then has the loop run the callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cond = threading.Condition()
        self._deadline = 0
        self._callback: Callback | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-timer", daemon=True)
        self._thread.start()

    def arm(self, deadline_ns: int, callback: Callback) -> None:
        with self._cond:
            self._deadline = deadline_ns
            self._callback = callback
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._callback = None
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._callback is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline, callback = self._deadline, self._callback
                self._callback = None
            if callback is None:
                continue
            delay = (deadline - clock()) / 1e9
            if delay > 0:
                time.sleep(delay)
            with contextlib.suppress(RuntimeError):  # the loop closed
                self._loop.call_soon_threadsafe(callback)


def make_timer(loop: asyncio.AbstractEventLoop) -> Timer:
    """The best timer for this thread."""
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            return AlarmTimer(loop)
    return ThreadTimer(loop)
