"""Execution timeouts of an instance pool: the watchdog answers a run that goes on too long,
stops it when the runtime can be stopped, and the instance serves the next run; a batch that
runs too long fails all its requests with the timeout; nothing is watched without a timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve import errors
from mserve.config import RuntimeOptions
from mserve.runtime.base import RunHandle
from mserve.runtime.fake import FakeRuntime
from mserve.runtime.onnx import OnnxRuntime
from mserve.runtime.process import ProcessRuntime
from mserve.server.batching.batcher import Batcher
from mserve.server.batching.policy import BatchPolicy
from mserve.server.grpc.status import Code, code_of
from mserve.server.http.status import status_of
from mserve.server.instances import NOT_STOPPED, InstancePool, Timed
from mserve.server.metrics import outcome_of
from mserve.server.watchdog import Watchdog

HANG = 10**9
BOUND_S = 60.0  # generous: proves only that nothing hangs


def feed(trips: int, x: float = 1.0, rows: int = 1) -> dict[str, np.ndarray]:
    return {"X": np.full((rows, 4), x, np.float32), "N": np.full((rows, 1), trips, np.int64)}


@pytest.fixture
def loop_path(tmp_path: Path, onnx_factory: Any) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_factory.counting_loop())
    return path


async def execute(pool: InstancePool, data: dict[str, np.ndarray]) -> Timed:
    return await asyncio.wait_for(pool.submit(data, ["OUTPUT"]), BOUND_S)


def closed(pool: InstancePool) -> None:
    done = threading.Event()
    pool.close(done.set)
    assert done.wait(BOUND_S)


def test_a_run_past_the_timeout_is_cancelled_and_the_instance_serves_the_next(
    loop_path: Path,
) -> None:
    rt = OnnxRuntime(loop_path, RuntimeOptions(intra_op_threads=1))
    pool = InstancePool([rt], "m-v1", timeout_s=0.3, model="m", version="1")
    assert pool.timeout_s == 0.3

    async def main() -> None:
        hung = await execute(pool, feed(HANG))
        assert isinstance(hung.error, errors.ExecutionTimeout)
        assert str(hung.error) == (
            "model 'm' version '1': execution exceeded its timeout of 0.3 s; the run was cancelled"
        )
        assert hung.outputs is None
        ok = await execute(pool, feed(4, x=0.5))
        assert ok.error is None
        assert ok.outputs is not None
        np.testing.assert_array_equal(ok.outputs["OUTPUT"], np.full((1, 4), 4.5, np.float32))
        assert pool.pending == 0

    asyncio.run(main())
    closed(pool)


def test_parallel_instances_time_out_alone(loop_path: Path) -> None:
    rt = OnnxRuntime(loop_path, RuntimeOptions(intra_op_threads=1))
    pool = InstancePool([rt, rt], "m-v1", timeout_s=0.5, model="m", version="1")

    async def main() -> None:
        hung, *quick = await asyncio.gather(
            execute(pool, feed(HANG)), *(execute(pool, feed(i)) for i in range(20))
        )
        assert isinstance(hung.error, errors.ExecutionTimeout)
        for i, timed in enumerate(quick):
            assert timed.error is None
            assert timed.outputs is not None
            assert timed.outputs["OUTPUT"].tolist() == [[1.0 + i] * 4]

    asyncio.run(main())
    closed(pool)


def test_a_process_instance_past_the_timeout_is_killed_and_restarted(loop_path: Path) -> None:
    rt = ProcessRuntime("onnxruntime", loop_path, RuntimeOptions(intra_op_threads=1))
    first = rt.pid
    pool = InstancePool([rt], "m-v1", timeout_s=0.3, model="m", version="1")

    async def main() -> None:
        hung = await execute(pool, feed(HANG))
        assert isinstance(hung.error, errors.ExecutionTimeout)
        assert str(hung.error) == (
            "model 'm' version '1': execution exceeded its timeout of 0.3 s; the instance "
            f"process (pid {first}) was killed and a new one is starting"
        )
        ok = await execute(pool, feed(2))  # waits for the new child, untimed until it runs
        assert ok.error is None
        assert ok.outputs is not None
        assert ok.outputs["OUTPUT"].tolist() == [[3.0] * 4]

    asyncio.run(main())
    assert rt.pid not in (None, first)
    assert rt.restarts == 1
    closed(pool)


def test_a_runtime_that_cannot_stop_is_answered_anyway() -> None:
    rt = FakeRuntime(delay_s=1.0)
    pool = InstancePool([rt], "fake-v1", timeout_s=0.1, model="fake", version="1")

    async def main() -> None:
        hung = await execute(pool, {"INPUT": np.ones((1, 4), np.float32)})
        assert isinstance(hung.error, errors.ExecutionTimeout)
        assert str(hung.error).endswith(f"timeout of 0.1 s; {NOT_STOPPED}")
        rt.delay_s = 0.0
        ok = await execute(pool, {"INPUT": np.ones((1, 4), np.float32)})  # after the slow run
        assert ok.outputs is not None
        assert ok.outputs["OUTPUT"].tolist() == [[2.0] * 4]

    asyncio.run(main())
    closed(pool)


def test_a_failing_run_fails_alone_under_a_watchdog() -> None:
    rt = FakeRuntime(fail_when=-1.0)
    pool = InstancePool([rt], "fake-v1", timeout_s=5.0)

    async def main() -> None:
        bad = await execute(pool, {"INPUT": -np.ones((1, 4), np.float32)})
        assert isinstance(bad.error, RuntimeError)
        assert "fake failure" in str(bad.error)
        ok = await execute(pool, {"INPUT": np.ones((1, 4), np.float32)})
        assert ok.outputs is not None
        assert ok.outputs["OUTPUT"].tolist() == [[2.0] * 4]

    asyncio.run(main())
    closed(pool)


def test_warm_up_and_inline_runs_are_bounded_too(loop_path: Path) -> None:
    rt = OnnxRuntime(loop_path, RuntimeOptions(intra_op_threads=1))
    pool = InstancePool([rt], "m-v1", timeout_s=0.2, model="m", version="1")
    with pytest.raises(errors.ExecutionTimeout, match="the run was cancelled"):
        pool.run_sync(feed(HANG), ["OUTPUT"])
    assert pool.run_sync(feed(1), ["OUTPUT"])["OUTPUT"].tolist() == [[2.0] * 4]
    inline = pool.run_inline(feed(HANG), ["OUTPUT"])
    assert isinstance(inline.error, errors.ExecutionTimeout)
    closed(pool)


def test_a_batch_past_the_timeout_fails_each_request_with_the_timeout(loop_path: Path) -> None:
    rt = OnnxRuntime(loop_path, RuntimeOptions(intra_op_threads=1))
    pool = InstancePool([rt], "m-v1", timeout_s=0.3, model="m", version="1")
    batcher = Batcher(BatchPolicy(max_batch_size=8), pool, "m", "1")

    async def main() -> None:
        hung = [batcher.submit(feed(HANG, rows=2), ["OUTPUT"], 2) for _ in range(3)]
        for fut in hung:
            with pytest.raises(errors.ExecutionTimeout, match=r"exceeded its timeout of 0\.3 s"):
                await asyncio.wait_for(fut, BOUND_S)
        done = await asyncio.wait_for(batcher.submit(feed(1), ["OUTPUT"], 1), BOUND_S)
        assert done.outputs["OUTPUT"].tolist() == [[2.0] * 4]

    asyncio.run(main())
    closed(pool)


def test_no_timeout_means_no_watchdog() -> None:
    pool = InstancePool([FakeRuntime()], "unwatched-v1")
    assert pool.timeout_s == 0.0
    assert not [t for t in threading.enumerate() if t.name == "unwatched-v1-watchdog"]
    closed(pool)
    with pytest.raises(ValueError, match="timeout > 0"):
        Watchdog(0.0, "x")


def test_the_watchdog_cancels_only_runs_past_their_deadline() -> None:
    dog = Watchdog(0.2, "unit")
    try:
        late, early = dog.handle(), dog.handle()
        late.begin(lambda: "stopped late")
        early.begin(lambda: "stopped early")
        assert early.finish()
        start = time.monotonic()
        while not late.cancelled and time.monotonic() - start < BOUND_S:
            time.sleep(0.01)
        assert late.cancelled
        assert late.outcome == "stopped late"
        assert not early.cancelled
        plain = RunHandle()  # a handle nobody watches is never cancelled
        plain.begin(lambda: "never")
        assert plain.finish()
    finally:
        dog.close()


def test_an_execution_timeout_is_a_deadline_on_every_edge() -> None:
    exc = errors.ExecutionTimeout("m", "1", 2.0, "the run was cancelled")
    assert str(exc) == (
        "model 'm' version '1': execution exceeded its timeout of 2 s; the run was cancelled"
    )
    assert status_of(exc) == 504
    assert code_of(exc) == Code.DEADLINE_EXCEEDED
    assert outcome_of(exc) == "timeout"
