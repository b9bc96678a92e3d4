"""A runtime in a child process: for runtimes that hold the GIL, or to keep a model's crash out of
the server.

:class:`ProcessRuntime` opens the real runtime in a child started with ``spawn`` (a clean
interpreter, no inherited threads or sockets) and forwards each ``infer`` over a pipe; arrays
travel pickled. One child per instance, so instances compute in parallel on separate
interpreters. A child that dies (a crash in the model, or a kill) fails the call it was serving
with a clear message, and a fresh one starts at once in the background; the next call waits for
it. A call can be stopped from another thread (:class:`~mserve.runtime.base.Cancellable`): the
child computing it is killed, and restarted the same way.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from mserve.config import RuntimeOptions
from mserve.errors import MserveError, RepositoryError
from mserve.protocol import TensorSpec
from mserve.runtime.base import RunCancelled, RunHandle

log = logging.getLogger("mserve.runtime")

START_TIMEOUT_S = 120.0  # opening a big model in the child can take a while
STOP_TIMEOUT_S = 10.0


def _child(conn: Connection, backend: str, path: Path, options: RuntimeOptions) -> None:
    """The child's loop: open the runtime, then answer (inputs, outputs) until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server drains and stops its children
    from mserve.runtime import open_runtime

    try:
        runtime = open_runtime(backend, path, options)
    except Exception as exc:  # reported to the parent, which raises it at load
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", runtime.platform, runtime.inputs, runtime.outputs))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the server went away
                return
            if message is None:
                return
            inputs, outputs = message
            try:
                reply: tuple[Any, ...] = ("ok", runtime.infer(inputs, outputs))
            except Exception as exc:  # the model's failure belongs to this call only
                reply = ("fail", type(exc).__name__, str(exc))
            conn.send(reply)
    finally:
        runtime.close()


class InstanceProcessError(RuntimeError):
    """The child process running an instance exited while it held a call."""


class ProcessRuntime:
    """The runtime named by ``backend`` running in a child process of its own."""

    thread_safe = False  # one pipe, one call at a time: each instance gets its own child

    def __init__(self, backend: str, path: Path, options: RuntimeOptions) -> None:
        self._args = (backend, Path(path), options)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._closed = False
        self.restarts = 0
        self.platform = ""
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()
        self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it restarts, and once closed)."""
        process = self._process
        return None if process is None else int(process.pid)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_child, args=(child, *self._args), name="mserve-instance", daemon=True
        )
        process.start()
        child.close()
        source = str(self._args[1])
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise RepositoryError(source, f"instance process did not start in {START_TIMEOUT_S} s")
        try:
            reply = parent.recv()
        except EOFError:
            process.join(STOP_TIMEOUT_S)
            raise RepositoryError(
                source, f"instance process exited while opening the model ({_exit(process)})"
            ) from None
        if reply[0] == "error":
            process.join(STOP_TIMEOUT_S)
            raise RepositoryError(None, reply[1])
        _, self.platform, self.inputs, self.outputs = reply
        self._conn, self._process = parent, process
        log.debug("instance process %d serves %s", process.pid, source)

    def _restart(self) -> None:
        """Start a child in place of one that died, unless a call or close came first."""
        with self._lock:
            if self._closed or self._conn is not None:
                return
            try:
                self._start()
            except MserveError as exc:  # the next call tries again, and reports it
                log.warning("cannot restart the instance process: %s", exc)
                return
            self.restarts += 1
            log.info("restarted the instance process of %s (pid %d)", self._args[1], self.pid)

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self._call(inputs, outputs, None)

    def infer_cancellable(
        self, inputs: dict[str, np.ndarray], outputs: list[str], run: RunHandle
    ) -> dict[str, np.ndarray]:
        """Like :meth:`infer`; ``run``'s stop kills the child (a new one starts at once)."""
        return self._call(inputs, outputs, run)

    def _call(
        self, inputs: dict[str, np.ndarray], outputs: list[str], run: RunHandle | None
    ) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the instance process was closed")
            if self._conn is None:  # the background restart failed: try again for this call
                self._start()
                self.restarts += 1
            conn, process = self._conn, self._process
            assert conn is not None
            pid = process.pid
            if run is not None:

                def stop() -> str:
                    process.kill()
                    return f"the instance process (pid {pid}) was killed and a new one is starting"

                run.begin(stop)
            try:
                conn.send((inputs, outputs))
                reply = conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                self._lost()
                if run is not None and run.cancelled:
                    raise RunCancelled(f"the instance process (pid {pid}) was killed") from None
                raise InstanceProcessError(
                    f"the instance process (pid {pid}) exited during the call "
                    f"({_exit(process)}); a new one is starting"
                ) from None
            # decide result or cancellation now, under the lock: once finished, the watchdog
            # can no longer kill this child (which would fail the next, unrelated call)
            if run is not None and not run.finish():  # killed just as it answered
                self._lost()
                raise RunCancelled(f"the instance process (pid {pid}) was killed")
        if reply[0] == "ok":
            return reply[1]
        raise RuntimeError(f"{reply[1]}: {reply[2]}")

    def _lost(self) -> None:
        """Reap the child that died (or was killed) and start another in the background; the
        lock is held, so the restart waits for the caller to finish."""
        process, conn = self._process, self._conn
        process.join(STOP_TIMEOUT_S)
        assert conn is not None
        conn.close()
        self._conn = self._process = None
        threading.Thread(target=self._restart, name="mserve-instance-restart", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            conn, process = self._conn, self._process
            self._conn = self._process = None
            self._closed = True
        if conn is None or process is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(None)
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()


def _exit(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (signal {-code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
