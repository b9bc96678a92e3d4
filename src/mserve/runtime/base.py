"""The interface every execution backend implements: load, describe, infer a batch; and the
optional one of a backend that can stop a running call from another thread (:class:`Cancellable`,
driven through a :class:`RunHandle`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from mserve.protocol import TensorSpec


class Runtime(Protocol):
    """A loaded model that computes outputs from inputs.

    ``infer`` may be called from several threads at once when the runtime says it is
    ``thread_safe``; otherwise the server gives each instance its own runtime.
    """

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    thread_safe: bool

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Compute the named outputs; every declared input is present with a matching dtype."""
        ...

    def close(self) -> None:
        """Release what the runtime holds (sessions, memory); calling it again does nothing."""
        ...


#: Stops one running call from another thread, promptly and without blocking; returns what it did
#: in words ("the run was cancelled"), for the message its request is answered with.
Stop = Callable[[], str]

_RUNNING, _FINISHED, _CANCELLED = 0, 1, 2


class RunCancelled(RuntimeError):
    """Raised by a cancellable call that was stopped through its :class:`RunHandle`."""


class RunHandle:
    """One call's link to whoever may stop it from another thread (the instance pool's watchdog).

    The runtime calls :meth:`begin` with its :data:`Stop` function right before it starts
    computing, after any restart it needed first: :meth:`started` (a hook, for the watchdog's
    clock) runs then. The call ends one of two ways, decided once under a lock: :meth:`finish`
    (the caller's, when the call returned or raised) or :meth:`cancel` (the watchdog's), so a
    result and a cancellation never both count.
    """

    __slots__ = ("_lock", "_state", "_stop", "outcome")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _RUNNING
        self._stop: Stop | None = None
        self.outcome = ""  # what cancel did, in words ("" when the call could not be stopped)

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` came before :meth:`finish` (the result is not wanted)."""
        return self._state == _CANCELLED

    def begin(self, stop: Stop | None) -> None:
        """The call starts computing now; ``stop`` stops it (None: it cannot be stopped)."""
        with self._lock:
            self._stop = stop
            if self._state == _CANCELLED and stop is not None:
                self.outcome = stop()
        self.started()

    def started(self) -> None:
        """Hook run by :meth:`begin`; does nothing here."""

    def finish(self) -> bool:
        """Mark the call over; False when it had been cancelled first (then :attr:`outcome`
        says what became of it)."""
        with self._lock:
            if self._state == _CANCELLED:
                return False
            self._state = _FINISHED
            return True

    def cancel(self) -> bool:
        """Stop the call unless it finished; False when it had. ``stop`` runs under the lock,
        so :attr:`outcome` is set by the time :meth:`finish` answers False."""
        with self._lock:
            if self._state != _RUNNING:
                return False
            self._state = _CANCELLED
            if self._stop is not None:
                self.outcome = self._stop()
            return True


@runtime_checkable
class Cancellable(Protocol):
    """A runtime whose running call another thread can stop."""

    def infer_cancellable(
        self, inputs: dict[str, np.ndarray], outputs: list[str], run: RunHandle
    ) -> dict[str, np.ndarray]:
        """Like ``infer``; calls ``run.begin(stop)`` as it starts computing, and raises
        :class:`RunCancelled` when ``stop`` ended the call."""
        ...


def warmup_inputs(specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Zero-filled inputs for a warm-up run: free dimensions become 1."""
    from mserve.protocol import numpy_dtype

    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=object)
            arr.fill(b"")
        else:
            arr = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
        feed[spec.name] = arr
    return feed
