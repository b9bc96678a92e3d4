"""Runs a benchmark: steps of load, each until stable (or a fixed duration), over one or several
generator processes, with the target's statistics read around each step.

With ``workers > 1`` each worker process runs its share of the load (concurrency split; rate
split, each with its own seed for Poisson and shifted offsets for constant arrivals) on one
common monotonic start time; the parent merges their windows by index, judges stability on the
merged windows and tells them when to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from mserve.bench import schedule
from mserve.bench.generator import Generator, Load, WindowRecord, clock
from mserve.bench.result import Settings, as_stats_windows, new_result, summarize_step
from mserve.bench.slo import Slo
from mserve.bench.slo import search as slo_search
from mserve.bench.stats import is_stable
from mserve.bench.targets.base import Prepared, Target

#: progress(event) where event["kind"] is "step", "window" or "done".
Progress = Callable[[dict[str, Any]], None]


def _offsets(load: Load, settings: Settings, worker: int, workers: int) -> np.ndarray | None:
    if load.mode != "open":
        return None
    total_s = settings.warmup_s + (settings.duration_s or settings.max_duration_s) + 1.0
    share = load.rate / workers
    if load.arrival == "poisson":
        # each worker's stream starts one gap in, so N workers do not all send at t=0
        seed = load.seed + 7919 * worker
        first = int(np.random.default_rng(seed + 1).exponential(1e9 / share))
        return schedule.poisson_offsets(share, total_s, seed) + first
    base = schedule.constant_offsets(share, total_s)
    return base + int(worker * 1e9 / load.rate)  # interleave the workers' constant streams


def _share(load: Load, worker: int, workers: int) -> Load:
    if load.mode == "closed":
        n = load.concurrency // workers + (1 if worker < load.concurrency % workers else 0)
        return replace(load, concurrency=n)
    return replace(
        load, rate=load.rate / workers, max_connections=max(1, load.max_connections // workers)
    )


def _should_stop(windows: list[WindowRecord], settings: Settings) -> bool:
    if settings.duration_s is not None:
        measured = sum(w.end_ns - w.start_ns for w in windows) / 1e9
        return measured >= settings.duration_s - 1e-6
    return is_stable(as_stats_windows(windows), settings.stability_pct, settings.stable_windows)


def _window_s(settings: Settings) -> float:
    if settings.duration_s is not None:
        return min(settings.window_s, settings.duration_s)
    return settings.window_s


async def run_step(
    target: Target,
    prepared: Prepared,
    load: Load,
    settings: Settings,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one step and return its summary (see :func:`mserve.bench.result.summarize_step`)."""
    before = await target.server_stats()
    if settings.workers <= 1:
        windows, tail, warmup, conns = await _run_local(prepared, load, settings, progress)
    else:
        windows, tail, warmup, conns = await asyncio.to_thread(
            _run_workers, prepared, load, settings, progress
        )
    after = await target.server_stats()
    wall_offset_ns = time.time_ns() - clock()  # windows carry the generator's monotonic clock
    return summarize_step(
        load,
        settings,
        windows,
        tail,
        warmup,
        prepared.rows_per_request,
        before,
        after,
        conns,
        wall_offset_ns,
    )


async def _run_local(
    prepared: Prepared, load: Load, settings: Settings, progress: Progress | None
) -> tuple[list[WindowRecord], WindowRecord, WindowRecord, int]:
    gen = Generator(prepared, load, settings.timeout_s)
    seen: list[WindowRecord] = []
    max_s = settings.duration_s if settings.duration_s is not None else settings.max_duration_s

    def on_window(record: WindowRecord) -> bool:
        seen.append(record)
        if progress is not None:
            progress({"kind": "window", "load": load, "window": record, "windows": seen})
        return _should_stop(seen, settings)

    windows, tail = await gen.run(
        settings.warmup_s,
        _window_s(settings),
        max_s + 1e-3,
        on_window,
        _offsets(load, settings, 0, 1),
    )
    return windows, tail, gen.warmup, gen.connections_used


# -- several worker processes ----------------------------------------------------------------


def _worker(conn: Connection) -> None:
    """A generator process: runs steps on command, streams windows, stops when told."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    while True:
        msg = conn.recv()
        if msg is None:
            return
        if msg == "stop":  # arrived after this worker had already finished its step
            continue
        prepared, load, settings, offsets, start_ns, max_s = msg

        def on_window(record: WindowRecord) -> bool:
            conn.send(("window", record.to_wire()))
            return bool(conn.poll() and conn.recv() == "stop")

        gen = Generator(prepared, load, settings.timeout_s)
        try:
            windows, tail = asyncio.run(
                gen.run(settings.warmup_s, _window_s(settings), max_s, on_window, offsets, start_ns)
            )
        except Exception as exc:  # report, never hang the parent
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(
            (
                "done",
                [w.to_wire() for w in windows],
                tail.to_wire(),
                gen.warmup.to_wire(),
                gen.connections_used,
            )
        )


def _run_workers(
    prepared: Prepared, load: Load, settings: Settings, progress: Progress | None
) -> tuple[list[WindowRecord], WindowRecord, WindowRecord, int]:
    n = settings.workers
    ctx = multiprocessing.get_context("spawn")
    pipes = []
    procs = []
    for _ in range(n):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child,), daemon=True, name="mserve-bench-worker")
        p.start()
        pipes.append(parent)
        procs.append(p)
    try:
        max_s = settings.duration_s if settings.duration_s is not None else settings.max_duration_s
        start_ns = time.perf_counter_ns() + 1_500_000_000  # time for the workers to start
        for i, pipe in enumerate(pipes):
            pipe.send(
                (
                    prepared,
                    _share(load, i, n),
                    settings,
                    _offsets(load, settings, i, n),
                    start_ns,
                    max_s + 1e-3,
                )
            )
        merged: dict[int, WindowRecord] = {}
        arrived: dict[int, int] = {}
        stopped = False
        done: list[tuple[list[WindowRecord], WindowRecord, WindowRecord, int]] = []
        finished = [False] * n
        # warm-up, the longest measurement, the drain and the start-up: past this, a worker hangs
        deadline = time.monotonic() + settings.warmup_s + max_s + settings.timeout_s + 60
        while not all(finished):
            if time.monotonic() > deadline:
                raise RuntimeError("a generator worker stopped answering; the step is abandoned")
            for i, pipe in enumerate(pipes):
                if finished[i] or not pipe.poll(0.01):
                    continue
                try:
                    msg = pipe.recv()
                except EOFError:
                    raise RuntimeError(
                        f"generator worker {i} exited unexpectedly (code {procs[i].exitcode})"
                    ) from None
                if msg[0] == "error":
                    raise RuntimeError(f"generator worker {i} failed: {msg[1]}")
                if msg[0] == "done":
                    finished[i] = True
                    done.append(
                        (
                            [WindowRecord.from_wire(w) for w in msg[1]],
                            WindowRecord.from_wire(msg[2]),
                            WindowRecord.from_wire(msg[3]),
                            msg[4],
                        )
                    )
                    continue
                record = WindowRecord.from_wire(msg[1])
                if record.index in merged:
                    merged[record.index].merge(record)
                else:
                    merged[record.index] = record
                arrived[record.index] = arrived.get(record.index, 0) + 1
                if arrived[record.index] == n and not stopped:
                    complete = [merged[k] for k in sorted(merged) if arrived[k] == n]
                    if progress is not None:
                        progress(
                            {
                                "kind": "window",
                                "load": load,
                                "window": merged[record.index],
                                "windows": complete,
                            }
                        )
                    if _should_stop(complete, settings):
                        stopped = True
                        for other in pipes:
                            other.send("stop")
        # windows every worker measured; the rest of each worker's answers go to the tail
        common = min(len(ws) for ws, _, _, _ in done)
        windows = []
        for k in range(common):
            w = done[0][0][k]
            for ws, _, _, _ in done[1:]:
                w.merge(ws[k])
            windows.append(w)
        tail = WindowRecord(-1, 0, 0)
        warmup = WindowRecord(-1, 0, 0)
        for ws, t, warm, _ in done:
            for extra in ws[common:]:
                tail.merge(extra)
            tail.merge(t)
            warmup.merge(warm)
        return windows, tail, warmup, sum(c for _, _, _, c in done)
    finally:
        for pipe in pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(None)
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()


async def benchmark(
    target: Target,
    loads: list[Load],
    settings: Settings,
    slo: Slo | None = None,
    progress: Progress | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Run every load as a step (or, with ``slo``, search from the first load) and return the
    canonical result document."""
    prepared = await target.prepare()
    result = new_result(prepared.description, settings, command or [])

    async def step(load: Load) -> dict[str, Any]:
        if progress is not None:
            progress({"kind": "step", "load": load, "index": len(result["steps"])})
        summary = await run_step(target, prepared, load, settings, progress)
        result["steps"].append(summary)
        if progress is not None:
            progress({"kind": "done", "load": load, "step": summary})
        return summary

    if slo is None:
        for load in loads:
            await step(load)
    else:
        outcome = await slo_search(step, loads[0], slo)
        outcome.pop("_steps")
        result["slo"] = outcome
    return result
