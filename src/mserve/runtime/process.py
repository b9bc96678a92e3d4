"""A runtime in a child process: for runtimes that hold the GIL, or to keep a model's crash out of
the server.

:class:`ProcessRuntime` opens the real runtime in a child started with ``spawn`` (a clean
interpreter, no inherited threads or sockets) and forwards each ``infer`` over a pipe; arrays
travel pickled. One child per instance, so instances compute in parallel on separate
interpreters. A child that dies fails the call it was serving with a clear message, and the next
call starts a fresh one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from mserve.config import RuntimeOptions
from mserve.errors import RepositoryError
from mserve.protocol import TensorSpec

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
        self.restarts = 0
        self.platform = ""
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()
        self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id (None once closed)."""
        return None if self._process is None else int(self._process.pid)

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

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._conn is None:  # the last child died: start another for this call
                self._start()
                self.restarts += 1
            conn = self._conn
            assert conn is not None
            try:
                conn.send((inputs, outputs))
                reply = conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                process = self._process
                process.join(STOP_TIMEOUT_S)
                conn.close()
                self._conn = self._process = None
                raise InstanceProcessError(
                    f"the instance process (pid {process.pid}) exited during the call "
                    f"({_exit(process)}); the next call starts a new one"
                ) from None
        if reply[0] == "ok":
            return reply[1]
        raise RuntimeError(f"{reply[1]}: {reply[2]}")

    def close(self) -> None:
        with self._lock:
            conn, process = self._conn, self._process
            self._conn = self._process = None
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
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
