"""The batcher over real instance threads: grouping, splitting, waiting, shedding, timeouts.

The runtime is a small in-memory model that records the shapes it was called with, so a test
can see exactly which requests were computed together.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from mserve.errors import DeadlineExceeded, ModelFailure, ServerBusy
from mserve.protocol import TensorSpec
from mserve.server.batching.batcher import Batched, Batcher
from mserve.server.batching.policy import BatchPolicy
from mserve.server.instances import InstancePool
from mserve.server.load import InFlight


class Recorder:
    """OUTPUT = INPUT * 3 + row sum; records each call's input shape; can hold each call until
    released, and fails on a batch holding the value -1."""

    platform = "test"
    thread_safe = True
    inputs = (TensorSpec("INPUT", "FP32", (-1, -1)),)
    outputs = (TensorSpec("OUTPUT", "FP32", (-1, -1)), TensorSpec("SUM", "FP32", (-1, 1)))

    def __init__(self, hold: bool = False) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.gate = threading.Semaphore(0)
        self.hold = hold
        self.started = threading.Event()

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = inputs["INPUT"]
        self.shapes.append(x.shape)
        self.started.set()
        if self.hold:
            self.gate.acquire(timeout=10)
        if np.any(x == -1):
            raise ValueError("poisoned row")
        return {"OUTPUT": x * 3, "SUM": x.sum(axis=1, keepdims=True)}

    def close(self) -> None:
        pass


def rows(n: int, width: int = 4, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


def make(
    runtime: Recorder, instances: int = 1, in_flight: InFlight | None = None, **policy: Any
) -> tuple[Batcher, list[int]]:
    executions: list[int] = []
    pool = InstancePool([runtime] * instances, "test")
    batcher = Batcher(
        BatchPolicy(**{"max_batch_size": 8, **policy}),
        pool,
        "m",
        "1",
        in_flight,
        on_execution=lambda n, *_: executions.append(n),
    )
    return batcher, executions


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in 10 s")


def test_requests_queued_together_run_as_one_batch_and_each_gets_its_own_rows() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt)
        first = batcher.submit({"INPUT": rows(1, start=-100)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)  # the instance is busy with the first request
        inputs = [rows(1, start=10 * i) for i in range(3)] + [rows(2, start=500)]
        futures = [batcher.submit({"INPUT": x}, ["OUTPUT", "SUM"], len(x)) for x in inputs]
        assert batcher.queued == 4
        rt.gate.release()
        rt.gate.release()
        done: list[Batched] = list(await asyncio.gather(*futures))
        await first
        assert rt.shapes == [(1, 4), (5, 4)]
        assert executions == [1, 5]
        for x, d in zip(inputs, done, strict=True):
            np.testing.assert_array_equal(d.outputs["OUTPUT"], x * 3)
            np.testing.assert_array_equal(d.outputs["SUM"], x.sum(axis=1, keepdims=True))
            assert d.batch_rows == 5
            assert d.queue_ns > 0
            assert d.infer_ns > 0
        assert batcher.idle

    run(main)


def test_requests_that_cannot_share_a_batch_are_never_mixed() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt)
        blocker = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        widths = [3, 5, 3, 5, 7, 3]
        inputs = [rows(1, width=w, start=i) for i, w in enumerate(widths)]
        futures = [batcher.submit({"INPUT": x}, ["OUTPUT"], 1) for x in inputs]
        for _ in range(4):
            rt.gate.release()
        done = await asyncio.gather(*futures)
        await blocker
        assert sorted(rt.shapes[1:]) == [(1, 7), (2, 5), (3, 3)]  # one batch per width
        assert sorted(executions) == [1, 1, 2, 3]
        for x, d in zip(inputs, done, strict=True):
            np.testing.assert_array_equal(d.outputs["OUTPUT"], x * 3)

    run(main)


def test_batches_never_exceed_max_batch_size_and_keep_arrival_order() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt, max_batch_size=4)
        blocker = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        sizes = [1, 2, 2, 1, 3, 1]
        futures = [
            batcher.submit({"INPUT": rows(n, start=i)}, ["OUTPUT"], n) for i, n in enumerate(sizes)
        ]
        for _ in range(5):
            rt.gate.release()
        await asyncio.gather(blocker, *futures)
        assert executions == [1, 3, 3, 4]  # [1,2] [2,1] [3,1]: FIFO, never above 4

    run(main)


def test_a_lone_request_is_not_held_for_the_queue_delay() -> None:
    async def main() -> None:
        rt = Recorder()
        in_flight = InFlight()
        in_flight.count = 1  # only this request is in the server
        batcher, executions = make(rt, in_flight=in_flight, max_queue_delay_ns=60 * 10**9)
        done = await asyncio.wait_for(batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1), 30)
        assert executions == [1]
        assert done.queue_ns < 30 * 10**9

    run(main)


def test_a_batch_waits_while_requests_are_on_their_way_and_leaves_once_all_are_in() -> None:
    async def main() -> None:
        rt = Recorder()
        in_flight = InFlight()
        in_flight.count = 3  # three requests in the server: two more will reach the batcher
        batcher, executions = make(rt, in_flight=in_flight, max_queue_delay_ns=60 * 10**9)
        futures = [batcher.submit({"INPUT": rows(1, start=i)}, ["OUTPUT"], 1) for i in range(2)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert executions == []
        assert batcher.queued == 2
        futures.append(batcher.submit({"INPUT": rows(1, start=9)}, ["OUTPUT"], 1))
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert executions == [3]

    run(main)


def test_the_queue_delay_bounds_the_wait() -> None:
    async def main() -> None:
        rt = Recorder()
        in_flight = InFlight()
        in_flight.count = 5  # others seem to be coming, but never do
        batcher, executions = make(rt, in_flight=in_flight, max_queue_delay_ns=20_000_000)
        done = await asyncio.wait_for(batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1), 30)
        assert executions == [1]
        assert done.queue_ns >= 20_000_000

    run(main)


def test_a_full_queue_refuses_at_once_and_accepts_again_once_drained() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, _ = make(rt, max_queue_size=2, max_batch_size=1)
        running = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        queued = [batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1) for _ in range(2)]
        with pytest.raises(ServerBusy, match=r"2 requests are waiting \(max_queue_size 2\)") as e:
            batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        assert e.value.retry_after_s == 1
        for _ in range(3):
            rt.gate.release()
        await asyncio.gather(running, *queued)
        rt.hold = False
        await batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)

    run(main)


def test_a_request_queued_past_its_timeout_fails_without_being_computed() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt, timeout_ns=30_000_000)
        running = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        late = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        with pytest.raises(
            DeadlineExceeded, match=r"timed out after waiting \d+ us .*timeout 30000 us"
        ):
            await late
        assert batcher.queued == 0
        rt.gate.release()
        await running  # the one already computing is not cut short
        assert executions == [1]

    run(main)


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, _ = make(rt)
        blocker = batcher.submit({"INPUT": rows(1, width=2)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        poisoned = np.full((1, 3), -1, np.float32)
        bad = [batcher.submit({"INPUT": x}, ["OUTPUT"], 1) for x in (rows(1, 3), poisoned)]
        good = batcher.submit({"INPUT": rows(1, width=5)}, ["OUTPUT"], 1)
        for _ in range(3):
            rt.gate.release()
        results = await asyncio.gather(*bad, return_exceptions=True)
        for r in results:
            assert isinstance(r, ModelFailure)
            assert "ValueError: poisoned row" in str(r)
        np.testing.assert_array_equal((await good).outputs["OUTPUT"], rows(1, 5) * 3)
        await blocker

    run(main)


def test_a_cancelled_request_leaves_the_queue() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt)
        running = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        gone = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        kept = batcher.submit({"INPUT": rows(1, start=7)}, ["OUTPUT"], 1)
        gone.cancel()
        await asyncio.sleep(0)
        assert batcher.queued == 1
        rt.gate.release()
        rt.gate.release()
        np.testing.assert_array_equal((await kept).outputs["OUTPUT"], rows(1, start=7) * 3)
        await running
        assert executions == [1, 1]

    run(main)


def test_close_sends_what_is_queued_then_reports_drained() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        in_flight = InFlight()
        batcher, executions = make(rt, in_flight=in_flight, max_queue_delay_ns=60 * 10**9)
        running = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        await until(rt.started.is_set)
        in_flight.count = 10  # from now on a batch would wait for company
        queued = batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        drained = asyncio.Event()
        batcher.close(on_drained=drained.set)
        with pytest.raises(RuntimeError, match="closed"):
            batcher.submit({"INPUT": rows(1)}, ["OUTPUT"], 1)
        rt.gate.release()
        rt.gate.release()
        await asyncio.wait_for(asyncio.gather(running, queued), 30)  # not held for the delay
        await asyncio.wait_for(drained.wait(), 30)
        assert executions == [1, 1]

    run(main)


def test_parallel_instances_each_take_a_batch() -> None:
    async def main() -> None:
        rt = Recorder(hold=True)
        batcher, executions = make(rt, instances=2, max_batch_size=2)
        futures = [batcher.submit({"INPUT": rows(1, start=i)}, ["OUTPUT"], 1) for i in range(4)]
        await until(lambda: len(rt.shapes) == 2)  # two executions at once, both held
        assert batcher.busy == 2
        for _ in range(3):
            rt.gate.release()
        await asyncio.gather(*futures)
        assert executions == [2, 2]

    run(main)
