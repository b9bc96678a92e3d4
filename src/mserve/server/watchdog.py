"""The watchdog of a model's instances: one thread that stops executions running past a timeout.

An execution is watched from the moment its runtime says it starts computing
(:meth:`~mserve.runtime.base.RunHandle.begin`, after any restart of the instance), not from when
it was queued. Every watched execution has the same timeout, so deadlines arrive in the order
executions begin: the watched set is a dict in insertion order, its first entry the next to
expire, and the thread sleeps until then (or until something is watched, when nothing is).
"""

from __future__ import annotations

import threading
import time

from mserve.runtime.base import RunHandle


class Watched(RunHandle):
    """A run handle the watchdog times from :meth:`begin`; :meth:`expired` runs on the
    watchdog's thread once it has been cancelled for running too long."""

    __slots__ = ("_watchdog", "deadline_ns")

    def __init__(self, watchdog: Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog
        self.deadline_ns = 0

    def started(self) -> None:
        self._watchdog.watch(self)

    def finish(self) -> bool:
        self._watchdog.forget(self)
        return super().finish()

    def expired(self) -> None:
        """Hook: the run was cancelled for its timeout (:attr:`outcome` says how)."""


class Watchdog:
    """One thread that cancels every watched run still going ``timeout_s`` after it began."""

    def __init__(self, timeout_s: float, name: str) -> None:
        if timeout_s <= 0:
            raise ValueError("a watchdog needs a timeout > 0")
        self.timeout_s = timeout_s
        self._timeout_ns = round(timeout_s * 1e9)
        self._cond = threading.Condition()
        self._active: dict[Watched, None] = {}  # insertion order is deadline order
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-watchdog", daemon=True)
        self._thread.start()

    def handle(self) -> Watched:
        """A fresh handle for one run."""
        return Watched(self)

    def watch(self, run: Watched) -> None:
        """Start the clock of ``run`` (its runtime began computing)."""
        with self._cond:
            run.deadline_ns = time.monotonic_ns() + self._timeout_ns
            self._active[run] = None
            if len(self._active) == 1:  # the thread sleeps without a deadline: wake it
                self._cond.notify()

    def forget(self, run: Watched) -> None:
        """Stop watching ``run`` (it ended, or never began)."""
        with self._cond:
            self._active.pop(run, None)

    def close(self) -> None:
        """Stop the thread; runs still watched are left alone."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            expired: list[Watched] = []
            with self._cond:
                while not self._closed:
                    now = time.monotonic_ns()
                    for run in self._active:
                        if run.deadline_ns > now:
                            break
                        expired.append(run)
                    for run in expired:
                        del self._active[run]
                    if expired:
                        break
                    first = next(iter(self._active), None)
                    self._cond.wait(None if first is None else (first.deadline_ns - now) / 1e9)
                if self._closed:
                    return
            for run in expired:
                if run.cancel():  # else it finished as its deadline passed
                    run.expired()
