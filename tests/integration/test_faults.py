"""Fault isolation on a real server: an execution that runs past ``runtime.timeout_s`` is answered
504 and stopped (ONNX Runtime's run terminated on a thread instance, the child killed and
restarted on a process instance), a child killed mid-request fails only that request (500) and
is restarted, a model that raises fails only its request; the next requests to the same model
succeed, and another model on the server answers correctly throughout.

The slow model is a real ONNX ``Loop`` whose trip count is an input: N = 10**9 runs for hours.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import DynamicBatching, ModelConfig, RuntimeOptions

pytestmark = pytest.mark.integration

HANG = 10**9
BOUND_S = 60.0  # generous upper bounds: they prove nothing hangs, and time nothing else
TIMEOUT = RuntimeOptions(timeout_s=1.0)
TABLE = np.arange(6, dtype=np.float32).reshape(3, 2)


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, start_server: Any, onnx_factory: Any, place: Any
) -> Any:
    """A server with slow models of each instance kind, with and without a timeout, a model that
    raises in a child process, and an unrelated model beside them."""
    root = tmp_path_factory.mktemp("faults")
    loop = onnx_factory.counting_loop()
    configs = [
        ModelConfig("loop_thread", runtime=TIMEOUT, instance_kind="thread"),
        ModelConfig("loop_process", runtime=TIMEOUT, instance_kind="process"),
        ModelConfig(
            "loop_batched",
            runtime=TIMEOUT,
            max_batch_size=8,
            dynamic_batching=DynamicBatching(max_queue_delay_us=2000),
        ),
        ModelConfig("loop_crash", instance_kind="process"),  # no timeout: hangs until killed
    ]
    for config in configs:
        place(root, config.name, {1: loop}, config=config)
    place(root, "other", {1: onnx_factory.add_const(10.0)}, config=ModelConfig("other"))
    lookup = onnx_factory.lookup(TABLE)
    place(
        root,
        "lookup_process",
        {1: lookup},
        config=ModelConfig("lookup_process", instance_kind="process"),
    )
    return start_server(root, args=["--log-level", "debug"])


@pytest.fixture
def background() -> Iterator[Callable[..., Future[Any]]]:
    with ThreadPoolExecutor(4) as pool:
        yield pool.submit


def count(served: Any, model: str, trips: int, x: float = 1.0) -> Any:
    """OUTPUT = x + trips over one row, computed by ``trips`` Loop iterations."""
    body = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [x] * 4},
            {"name": "N", "datatype": "INT64", "shape": [1, 1], "data": [trips]},
        ]
    }
    return served.request("POST", f"/v2/models/{model}/infer", json.dumps(body))


def assert_counted(reply: Any, expected: float) -> None:
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["data"] == [expected] * 4


def assert_other_serves(served: Any, times: int = 5) -> None:
    """The unrelated model answers, correctly, each time."""
    for i in range(times):
        body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [2, 1], "data": [i, -i]}]}
        reply = served.request("POST", "/v2/models/other/infer", json.dumps(body))
        assert reply.status == 200, reply.body
        assert reply.json()["outputs"][0]["data"] == [10.0 + i, 10.0 - i]


def error_of(reply: Any, status: int) -> str:
    assert reply.status == status, reply.body
    message = reply.json()["error"]
    assert isinstance(message, str)
    assert "Traceback" not in message
    return message


def children(pid: int) -> set[int]:
    """The process ids of ``pid``'s children, from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def cpu_ticks(pid: int) -> int:
    """User and system time of a process so far, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {BOUND_S} s")


def instance_pid(served: Any, model: str) -> int:
    """The child serving ``model``, as the server logs it at debug level."""
    pattern = rf"instance process (\d+) serves \S*/{model}/1/model\.onnx"
    pids = re.findall(pattern, served.process.log())
    assert len(pids) == 1, served.process.log()
    return int(pids[0])


def test_a_hung_run_on_a_thread_instance_is_cancelled_with_504_and_the_next_runs(
    faults: Any, background: Callable[..., Future[Any]]
) -> None:
    hung = background(count, faults, "loop_thread", HANG)
    queued = background(count, faults, "loop_thread", 3)  # behind it on the only instance
    assert_other_serves(faults)
    message = error_of(hung.result(BOUND_S), 504)
    assert message == (
        "model 'loop_thread' version '1': execution exceeded its timeout of 1 s; "
        "the run was cancelled"
    )
    assert_counted(queued.result(BOUND_S), 4.0)
    assert_counted(count(faults, "loop_thread", 7, x=0.5), 7.5)
    assert_other_serves(faults)


def test_a_hung_run_on_a_process_instance_kills_the_child_which_restarts(
    faults: Any, background: Callable[..., Future[Any]]
) -> None:
    first = instance_pid(faults, "loop_process")
    assert first in children(faults.process.proc.pid)
    hung = background(count, faults, "loop_process", HANG)
    assert_other_serves(faults)
    message = error_of(hung.result(BOUND_S), 504)
    assert message == (
        "model 'loop_process' version '1': execution exceeded its timeout of 1 s; "
        f"the instance process (pid {first}) was killed and a new one is starting"
    )
    assert_counted(count(faults, "loop_process", 2), 3.0)  # served by the new child
    assert not Path(f"/proc/{first}").exists()  # killed and reaped
    assert_counted(count(faults, "loop_process", 5), 6.0)
    assert_other_serves(faults)


def test_a_hung_batch_is_answered_504_and_the_next_batch_runs(
    faults: Any, background: Callable[..., Future[Any]]
) -> None:
    hung = background(count, faults, "loop_batched", HANG)
    beside = background(count, faults, "loop_batched", 2)  # in the same batch, or the next
    assert_other_serves(faults)
    assert "execution exceeded its timeout of 1 s" in error_of(hung.result(BOUND_S), 504)
    reply = beside.result(BOUND_S)
    if reply.status == 200:
        assert_counted(reply, 3.0)
    else:  # it shared the hung batch
        assert "execution exceeded its timeout" in error_of(reply, 504)
    assert_counted(count(faults, "loop_batched", 6), 7.0)


def test_a_child_killed_mid_request_fails_it_with_500_and_is_restarted(
    faults: Any, background: Callable[..., Future[Any]]
) -> None:
    server = faults.process.proc.pid
    pid = instance_pid(faults, "loop_crash")
    assert pid in children(server)
    before = cpu_ticks(pid)
    hung = background(count, faults, "loop_crash", HANG)
    wait_for(lambda: cpu_ticks(pid) > before + 10, "the child computes the request")
    assert_other_serves(faults)
    assert not hung.done()  # no timeout on this model: it runs until the child dies
    os.kill(pid, signal.SIGKILL)  # a segfault in the model, as the server sees it
    message = error_of(hung.result(BOUND_S), 500)
    assert message == (
        "model 'loop_crash' version '1' failed: InstanceProcessError: the instance process "
        f"(pid {pid}) exited during the call (killed by SIGKILL (signal 9)); "
        "a new one is starting"
    )
    assert_counted(count(faults, "loop_crash", 3), 4.0)
    restarted = wait_for(
        lambda: re.findall(
            r"restarted the instance process of \S*/loop_crash/1/model\.onnx \(pid (\d+)\)",
            faults.process.log(),
        ),
        "the restart is logged",
    )
    assert int(restarted[-1]) in children(server) - {pid}
    assert_other_serves(faults)


def test_a_model_raising_in_a_child_fails_only_its_request(faults: Any) -> None:
    body = {"inputs": [{"name": "INDEX", "datatype": "INT64", "shape": [1, 1], "data": [99]}]}
    reply = faults.request("POST", "/v2/models/lookup_process/infer", json.dumps(body))
    assert "model 'lookup_process' version '1' failed" in error_of(reply, 500)
    good = {"inputs": [{"name": "INDEX", "datatype": "INT64", "shape": [1, 1], "data": [2]}]}
    reply = faults.request("POST", "/v2/models/lookup_process/infer", json.dumps(good))
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["data"] == TABLE[2].tolist()
    assert "restarted the instance process of" not in "".join(
        line for line in faults.process.log().splitlines() if "lookup_process" in line
    )
    assert_other_serves(faults)
