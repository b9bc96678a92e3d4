"""The candidates ``mserve tune`` measures: a grid over batching, instances, threads and variants.

Pure: expanding the grid, rendering a candidate's config.yaml from the model's own config, and
counting the cores a candidate may use. Nothing here touches files, sockets or processes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mserve.config import DynamicBatching, ModelConfig

#: The variant suffixes ``mserve convert`` writes beside NAME, in the order they are tried.
VARIANT_SUFFIXES = ("fp16", "int8-dynamic", "int8-static")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configuration to measure. ``max_batch_size`` 0 means no dynamic batching (each
    request runs alone); the queue delay only applies when batching is on."""

    model: str  # NAME or one of its variants (NAME-fp16, ...)
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    instance_count: int = 1
    intra_op_threads: int = 0  # 0: the runtime chooses

    def label(self) -> str:
        """A short, human-readable name: ``digits batch 16/1000us x1 threads auto``."""
        batching = (
            f"batch {self.max_batch_size}/{self.max_queue_delay_us}us"
            if self.max_batch_size
            else "no batching"
        )
        threads = self.intra_op_threads or "auto"
        return f"{self.model} {batching} x{self.instance_count} threads {threads}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
            "instance_count": self.instance_count,
            "intra_op_threads": self.intra_op_threads,
        }


@dataclass(frozen=True, slots=True)
class Grid:
    """The knobs' values. ``variants`` are model names (NAME first)."""

    variants: tuple[str, ...]
    batch_sizes: tuple[int, ...] = (0, 16)
    delays_us: tuple[int, ...] = (1000,)
    instances: tuple[int, ...] = (1,)
    threads: tuple[int, ...] = (0,)

    def check(self) -> None:
        """Raise ValueError naming the option when a value is out of range or a list empty."""
        lists = (
            ("--variants", self.variants),
            ("--batch-sizes", self.batch_sizes),
            ("--delays-us", self.delays_us),
            ("--instances", self.instances),
            ("--threads", self.threads),
        )
        for option, values in lists:
            if not values:
                raise ValueError(f"{option} needs at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{option} lists a value twice: {list(values)}")
        minimums = (
            ("--batch-sizes", self.batch_sizes, 0),
            ("--delays-us", self.delays_us, 0),
            ("--instances", self.instances, 1),
            ("--threads", self.threads, 0),
        )
        for option, ints, minimum in minimums:
            low = [v for v in ints if v < minimum]
            if low:
                raise ValueError(f"{option} values must be >= {minimum}; got {low}")


def expand(grid: Grid) -> list[Candidate]:
    """Every candidate of the grid in a fixed order: variant, then batching (none first, then
    each batch size with each delay), then instances, then threads. Without batching the delay
    means nothing, so it is not multiplied in."""
    grid.check()
    batching: list[tuple[int, int]] = []
    for size in grid.batch_sizes:
        if size == 0:
            batching.append((0, 0))
        else:
            batching.extend((size, delay) for delay in grid.delays_us)
    return [
        Candidate(model, size, delay, instances, threads)
        for model in grid.variants
        for size, delay in batching
        for instances in grid.instances
        for threads in grid.threads
    ]


def variant_names(name: str, present: set[str]) -> tuple[str, ...]:
    """``--variants auto``: NAME and those of NAME-fp16, NAME-int8-dynamic, NAME-int8-static
    whose folders are present."""
    found = [f"{name}-{suffix}" for suffix in VARIANT_SUFFIXES if f"{name}-{suffix}" in present]
    return (name, *found)


def resolve_variant(name: str, entry: str) -> str:
    """A ``--variants`` entry as a model name: ``fp32`` or NAME is NAME itself, a suffix such as
    ``fp16`` is NAME-fp16, and a full name (NAME-...) stays as it is."""
    if entry in ("fp32", name) or entry.startswith(name + "-"):
        return name if entry == "fp32" else entry
    return f"{name}-{entry}"


def render(base: ModelConfig, candidate: Candidate) -> ModelConfig:
    """The model's config with the candidate's knobs set; everything else (signature, version
    policy, other runtime options, batching fields the grid does not vary) is kept."""
    if candidate.max_batch_size:
        previous = base.dynamic_batching or DynamicBatching()
        batching: DynamicBatching | None = replace(
            previous,
            max_queue_delay_us=candidate.max_queue_delay_us,
            preferred_batch_sizes=tuple(
                p for p in previous.preferred_batch_sizes if p <= candidate.max_batch_size
            ),
        )
        max_batch = candidate.max_batch_size
    else:
        batching = None
        max_batch = base.max_batch_size  # the batch dimension clients send stays as it was
    return replace(
        base,
        name=candidate.model,
        max_batch_size=max_batch,
        dynamic_batching=batching,
        instance_count=candidate.instance_count,
        runtime=replace(base.runtime, intra_op_threads=candidate.intra_op_threads),
    )


def cores(candidate: Candidate, available: int) -> int:
    """The cores a candidate may compute on: each instance runs ``intra_op_threads`` threads
    (all ``available`` cores when 0), never more than the machine has."""
    per_instance = candidate.intra_op_threads or available
    return max(1, min(available, candidate.instance_count * per_instance))
