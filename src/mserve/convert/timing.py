"""In-process latency of a model on this machine, as the server would run it.

Each variant is timed in its own session with the server's settings (every graph optimisation,
the machine's usable cores), after a warm-up, as the median of repeated runs. Variants are
compared with each other inside one conversion, on the same inputs, minutes apart at most; the
absolute figures drift with the machine's load, the ratios much less.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

Run = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), as the server counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def ort_session(model: onnx.ModelProto, threads: int = 0, providers: tuple[str, ...] = ()) -> Run:
    """A function running ``model`` in ONNX Runtime with the server's session settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=list(providers) or ["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(session.run(names, dict(feed)))

    return run


def openvino_session(model: onnx.ModelProto, threads: int = 0) -> Run:
    """A function running ``model`` in OpenVINO on the CPU at fp32, outputs in graph order."""
    import openvino as ov

    core = ov.Core()
    ov_model = core.read_model(model.SerializeToString(), b"")
    config: dict[str, object] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()
    names = [o.name for o in model.graph.output]
    ports = [compiled.output(name) for name in names]

    def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(dict(feed))
        return [np.array(result[port]) for port in ports]

    return run


@dataclass(frozen=True, slots=True)
class Latency:
    """Median and spread of one variant's latency at one batch size."""

    batch: int
    p50_ms: float
    p90_ms: float
    runs: int
    rounds: tuple[float, ...] = ()  # each round's median, in round order (interleaved timing)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "batch": self.batch,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "runs": self.runs,
        }


def measure(
    run: Run,
    feed: Mapping[str, np.ndarray],
    *,
    min_runs: int = 20,
    min_seconds: float = 0.5,
    max_seconds: float = 5.0,
    warmup: int = 3,
) -> Latency:
    """Time ``run(feed)``: ``warmup`` discarded runs, then at least ``min_runs`` runs and
    ``min_seconds``, stopping at ``max_seconds``."""
    for _ in range(warmup):
        run(feed)
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        run(feed)
        samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        if (len(samples) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    samples.sort()
    batch = int(next(iter(feed.values())).shape[0]) if feed else 1
    p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
    return Latency(batch, statistics.median(samples) * 1e3, p90 * 1e3, len(samples))


def interleaved(
    runs: Mapping[str, Run],
    feeds: Mapping[int, Mapping[str, np.ndarray]],
    *,
    rounds: int = 7,
    seconds_per_round: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[Latency]]:
    """Time several models against each other: in each round every model runs at every batch
    size in turn, so a change in the machine's load touches all of them alike, and the order
    rotates from round to round, so that no model is always the first (or the one after the
    heaviest). A model's figure is the median over the rounds of each round's median; the
    round medians are kept for paired comparisons (:func:`paired_speedup`)."""
    for run in runs.values():  # warm every session up before any is timed
        for feed in feeds.values():
            for _ in range(3):
                run(feed)
    per_round: dict[tuple[str, int], list[Latency]] = {}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run = runs[name]
            for batch, feed in feeds.items():
                m = measure(run, feed, min_runs=5, min_seconds=seconds_per_round, warmup=1)
                per_round.setdefault((name, batch), []).append(m)
        if progress:
            progress(r + 1, rounds)
    result: dict[str, list[Latency]] = {name: [] for name in runs}
    for (name, batch), ms in per_round.items():
        result[name].append(
            Latency(
                batch,
                statistics.median(m.p50_ms for m in ms),
                statistics.median(m.p90_ms for m in ms),
                sum(m.runs for m in ms),
                tuple(m.p50_ms for m in ms),
            )
        )
    return result


def paired_speedup(base: Latency, other: Latency) -> float:
    """How many times faster ``other`` runs than ``base``: the median over the rounds of the
    ratio within each round (both timed minutes apart at most, under the same load), or the
    ratio of the medians when there are no rounds to pair."""
    if base.rounds and len(base.rounds) == len(other.rounds):
        return statistics.median(b / o for b, o in zip(base.rounds, other.rounds, strict=True))
    return base.p50_ms / other.p50_ms
