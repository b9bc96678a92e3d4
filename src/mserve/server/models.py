"""The loaded models: load / unload / reload from the repository, readiness, versions, inference.

A :class:`ModelVersion` is one version ready to compute: its runtime instances, its effective
signature (config and model reconciled), and its statistics. :class:`ModelManager` holds them by
name and version and swaps a reloaded model in only once the new one has loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mserve.config import INLINE_MAX_US, ModelConfig
from mserve.errors import (
    DeadlineExceeded,
    InvalidInput,
    InvalidRequest,
    ModelFailure,
    ModelNotFound,
    ModelNotReady,
    MserveError,
    RepositoryError,
)
from mserve.monitor.drift import DriftMonitor, InputReference
from mserve.protocol import (
    DATATYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    Tensor,
    TensorSpec,
)
from mserve.repository import ModelSource, Repository, valid_model_name
from mserve.runtime import open_runtime, releases_gil
from mserve.runtime.base import Runtime, warmup_inputs
from mserve.server.batching.batcher import Batcher
from mserve.server.batching.policy import BatchPolicy
from mserve.server.instances import InstancePool
from mserve.server.load import InFlight
from mserve.server.metrics import ModelMetrics, ServerMetrics
from mserve.server.reload import Signature, signature
from mserve.server.statistics import ModelStats

log = logging.getLogger("mserve.models")

RuntimeFactory = Callable[[str, Path, ModelConfig], Runtime]

READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a cgroup)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def intra_op_threads(config: ModelConfig) -> int:
    """The rule for ``intra_op_threads: 0``: the usable cores shared out between the model's
    instances, at least one each, so parallel instances do not fight over the same cores."""
    if config.runtime.intra_op_threads > 0:
        return config.runtime.intra_op_threads
    return max(1, usable_cores() // config.instance_count)


def instance_kind(config: ModelConfig) -> str:
    """ "thread" or "process": ``instance_kind: auto`` is threads when the backend releases the
    GIL while it computes (ONNX Runtime does), else a process per instance."""
    if config.instance_kind != "auto":
        return config.instance_kind
    return "thread" if releases_gil(config.backend) else "process"


def default_runtime_factory(backend: str, path: Path, config: ModelConfig) -> Runtime:
    """Open the model file with the backend the config names, in this process or in a child
    process of its own (``instance_kind: process``)."""
    options = replace(config.runtime, intra_op_threads=intra_op_threads(config))
    if instance_kind(config) == "process":
        from mserve.runtime.process import ProcessRuntime

        return ProcessRuntime(backend, path, options)
    return open_runtime(backend, path, options)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return None
    return trim


def release_freed_memory() -> None:
    """Give heap memory freed by closed runtimes back to the system (glibc's ``malloc_trim``).

    glibc keeps freed memory in its arenas for later allocations, so without this an unloaded
    model's weights would stay in the process's resident memory; measured in
    benchmarks/RELOAD.md. Does nothing where the C library is not glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _fmt(spec: TensorSpec) -> str:
    return f"{spec.name} ({spec.datatype} {list(spec.shape)})"


def reconcile(config: ModelConfig | None, runtime: Runtime, name: str, source: str) -> ModelConfig:
    """The effective config: the file's, checked against the model, or one read from the model."""
    if config is None:
        return ModelConfig(name=name, inputs=runtime.inputs, outputs=runtime.outputs)
    for declared, actual, kind in (
        (config.inputs, runtime.inputs, "inputs"),
        (config.outputs, runtime.outputs, "outputs"),
    ):
        if not declared:
            continue
        by_name = {s.name: s for s in actual}
        for spec in declared:
            model_spec = by_name.get(spec.name)
            if model_spec is None:
                raise RepositoryError(
                    source,
                    f"{kind} '{spec.name}' is declared in config.yaml but the model has "
                    f"{', '.join(map(_fmt, actual))}",
                )
            if model_spec.datatype != spec.datatype:
                raise RepositoryError(
                    source,
                    f"{kind} '{spec.name}' is declared {spec.datatype} in config.yaml "
                    f"but the model computes {model_spec.datatype}",
                )
            if len(model_spec.shape) != len(spec.shape) or any(
                m >= 0 and d >= 0 and m != d
                for m, d in zip(model_spec.shape, spec.shape, strict=True)
            ):
                raise RepositoryError(
                    source,
                    f"{kind} '{spec.name}' is declared with shape {list(spec.shape)} in "
                    f"config.yaml but the model has {list(model_spec.shape)}",
                )
        if kind == "inputs" and {s.name for s in declared} != set(by_name):
            raise RepositoryError(
                source,
                f"config.yaml declares inputs {', '.join(s.name for s in declared)} but the "
                f"model needs {', '.join(by_name)}",
            )
    inputs = config.inputs or runtime.inputs
    outputs = config.outputs or runtime.outputs
    if config.max_batch_size > 0:
        for spec in (*inputs, *outputs):
            if not spec.shape or spec.shape[0] != -1:
                raise RepositoryError(
                    source,
                    f"max_batch_size is {config.max_batch_size} but '{spec.name}' has shape "
                    f"{list(spec.shape)}; a batched model needs -1 as its first dimension",
                )
    return ModelConfig(
        name=config.name,
        backend=config.backend,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=config.max_batch_size,
        instance_count=config.instance_count,
        instance_kind=config.instance_kind,
        dynamic_batching=config.dynamic_batching,
        runtime=config.runtime,
        version_policy=config.version_policy,
        drift=config.drift,
    )


_NUMERIC = frozenset(DATATYPES) - {"BYTES"}


def load_drift_reference(model_dir: Path, config: ModelConfig) -> DriftMonitor:
    """The drift monitor of a model from the reference file its config names.

    The file holds one array per input: examples along the first dimension, each shaped as one
    row of the input (batched models) or as the whole input (unbatched ones).
    """
    assert config.drift is not None
    path = model_dir / config.drift.reference
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise RepositoryError(
            where, "drift.reference names this file but it does not exist"
        ) from None
    except (OSError, ValueError) as exc:
        raise RepositoryError(
            where, f"not a readable .npz file of arrays (numpy.savez): {exc}"
        ) from None
    references: dict[str, InputReference] = {}
    for spec in config.inputs:
        if spec.datatype not in _NUMERIC:
            continue  # drift of text or bytes is not measured
        values = arrays.get(spec.name)
        if values is None:
            raise RepositoryError(
                where,
                f"no array for input '{spec.name}'; the file has {', '.join(arrays) or 'none'}",
            )
        row = spec.shape[1:] if config.max_batch_size > 0 else spec.shape
        got = values.shape[1:]
        if (
            values.ndim < 1
            or len(got) != len(row)
            or any(d >= 0 and d != g for d, g in zip(row, got, strict=True))
        ):
            raise RepositoryError(
                where,
                f"array '{spec.name}' has shape {list(values.shape)}; expected examples along "
                f"the first dimension, each of shape {list(row)}",
            )
        try:
            references[spec.name] = InputReference.of(spec.name, values)
        except (ValueError, TypeError) as exc:
            raise RepositoryError(where, str(exc)) from None
    return DriftMonitor(references, config.drift.half_life_s)


class ModelVersion:
    """One loaded version of a model."""

    def __init__(
        self,
        config: ModelConfig,
        version: int,
        runtimes: list[Runtime],
        in_flight: InFlight | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.config = config
        self.in_flight = in_flight or InFlight()
        self.name = config.name
        self.version = str(version)
        self.platform = runtimes[0].platform
        self.pool = InstancePool(
            runtimes,
            f"{self.name}-v{version}",
            timeout_s=config.runtime.timeout_s,
            model=self.name,
            version=self.version,
        )
        self.stats = ModelStats(self.name, self.version)
        self.metrics: ModelMetrics = (metrics or ServerMetrics()).model(self.name, self.version)
        self.load_seconds = 0.0  # loading and warm-up, set by the manager
        self.drift: DriftMonitor | None = None  # set by the manager when a reference is given
        policy = BatchPolicy.from_config(config)
        self.batcher = (
            None
            if policy is None
            else Batcher(
                policy,
                self.pool,
                self.name,
                self.version,
                self.in_flight,
                on_execution=self._executed,
            )
        )
        self._inputs = {s.name: s for s in config.inputs}
        self._outputs = {s.name: s for s in config.outputs}
        self._output_names = [s.name for s in config.outputs]
        # a call to an instance process blocks: never on the event loop
        self.inline = config.runtime.execution == "inline" and config.instance_kind != "process"

    def _executed(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.stats.record_execution(batch_size, input_ns, infer_ns, output_ns)
        self.metrics.execution(batch_size)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance now (in the batcher's queue, or for a thread)."""
        if self.batcher is not None:
            return self.batcher.queued
        return max(0, self.pool.pending - self.pool.count)

    def admit(self) -> None:
        """Refuse a request at once (ServerBusy, counted a failure) while the queue is full."""
        if self.batcher is not None:
            try:
                self.batcher.admit()
            except MserveError:
                self.stats.record_failure(0)
                raise

    def warmup(self) -> None:
        """Run on zeros so the first request does not pay for lazy initialisation; with
        ``execution: auto``, time a few runs to choose between inline and threads."""
        feed = warmup_inputs(self.config.inputs)
        self.pool.run_sync(feed, self._output_names)
        if (
            self.config.runtime.execution != "auto"
            or self.config.instance_count != 1
            or self.config.instance_kind == "process"
        ):
            return
        times = []
        for _ in range(9):
            start = time.perf_counter_ns()
            self.pool.run_sync(feed, self._output_names)
            times.append(time.perf_counter_ns() - start)
        median_us = sorted(times)[len(times) // 2] / 1000
        self.inline = median_us < INLINE_MAX_US
        log.info(
            "model %s version %s: warm-up median %.0f us, computing %s",
            self.name,
            self.version,
            median_us,
            "inline on the event loop" if self.inline else "on instance threads",
        )

    def validate(self, request: InferRequest) -> tuple[dict[str, np.ndarray], list[str], int]:
        """Check inputs against the signature; return the feed, output names and batch size."""
        feed: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            spec = self._inputs.get(tensor.name)
            if spec is None:
                raise InvalidInput(
                    self.name,
                    tensor.name,
                    "no such input; the model expects " + ", ".join(map(_fmt, self.config.inputs)),
                )
            if tensor.name in feed:
                raise InvalidInput(self.name, tensor.name, "given more than once")
            if tensor.datatype != spec.datatype:
                raise InvalidInput(
                    self.name,
                    tensor.name,
                    f"datatype {tensor.datatype} does not match; expected {spec.datatype}",
                )
            self._check_shape(spec, tensor.data.shape)
            feed[tensor.name] = tensor.data
        if len(feed) != len(self._inputs):
            missing = [s for name, s in self._inputs.items() if name not in feed]
            raise InvalidInput(
                self.name,
                missing[0].name,
                "missing; the model expects " + ", ".join(map(_fmt, self.config.inputs)),
            )
        if request.outputs:
            names = []
            for out in request.outputs:
                if out.name not in self._outputs:
                    raise InvalidRequest(
                        f"model '{self.name}' has no output '{out.name}'; its outputs are "
                        + ", ".join(map(_fmt, self.config.outputs))
                    )
                names.append(out.name)
        else:
            names = self._output_names
        batch = 1
        if self.config.max_batch_size > 0:
            batch = next(iter(feed.values())).shape[0]
            for name, arr in feed.items():
                if arr.shape[0] != batch:
                    raise InvalidInput(
                        self.name,
                        name,
                        f"batch dimension is {arr.shape[0]} but other inputs have {batch}; "
                        "the first dimension of every input is the batch dimension",
                    )
        return feed, names, batch

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> None:
        expected = spec.shape
        ok = len(shape) == len(expected) and all(
            e < 0 or e == s for e, s in zip(expected, shape, strict=True)
        )
        if not ok:
            note = ""
            if self.config.max_batch_size > 0 and len(shape) == len(expected) - 1:
                note = " (the first dimension is the batch dimension; add it, e.g. [1, ...])"
            raise InvalidInput(
                self.name,
                spec.name,
                f"shape {list(shape)} does not match the expected {list(expected)}"
                f" (-1 is a free dimension){note}",
            )
        mbs = self.config.max_batch_size
        if mbs > 0 and shape[0] > mbs:
            raise InvalidInput(
                self.name,
                spec.name,
                f"batch of {shape[0]} rows exceeds max_batch_size {mbs} "
                "(the first dimension is the batch dimension)",
            )

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, compute (alone or in a batch) and build the response; records statistics."""
        clock = time.perf_counter_ns
        t0 = clock()
        try:
            feed, names, rows = self.validate(request)
        except MserveError:
            self.stats.record_failure(clock() - t0)
            raise
        if self.drift is not None:
            if self.config.max_batch_size > 0:
                self.drift.update(feed, time.monotonic())
            else:  # one example per request: give it a batch dimension of 1
                self.drift.update({k: v[np.newaxis] for k, v in feed.items()}, time.monotonic())
        t1 = clock()
        deadline = request.deadline_ns
        if deadline and t1 >= deadline:
            self.stats.record_failure(t1 - t0)
            raise DeadlineExceeded(self.name, self.version, (t1 - t0) // 1000, 0, "client")
        alone = not self.in_flight.busy()
        batcher = self.batcher
        batched = batcher is not None and not (self.inline and alone and batcher.idle)
        try:
            if batched:
                assert batcher is not None
                done = await batcher.submit(feed, names, rows, deadline)
                outputs, queue_ns, input_ns, infer_ns = (
                    done.outputs,
                    done.queue_ns,
                    done.input_ns,
                    done.infer_ns,
                )
            else:
                if self.inline and alone and not self.pool.pending:
                    # nothing else waiting: a thread hand-off would cost more than the run; with
                    # requests queued the instance threads take over and the loop goes on
                    timed = self.pool.run_inline(feed, names)
                else:
                    timed = await self.pool.submit(feed, names, deadline)
                # ran past runtime.timeout_s, or its client's deadline passed while it queued
                if isinstance(timed.error, DeadlineExceeded):
                    raise timed.error
                if timed.error is not None or timed.outputs is None:
                    reason = f"{type(timed.error).__name__}: {timed.error}"
                    log.warning("model %s version %s failed: %s", self.name, self.version, reason)
                    raise ModelFailure(self.name, self.version, reason)
                outputs, queue_ns, input_ns, infer_ns = (
                    timed.outputs,
                    timed.queue_ns,
                    0,
                    timed.infer_ns,
                )
        except RuntimeError:  # closed since the lookup: unloaded or reloaded on another thread
            self.stats.record_failure(clock() - t0)
            raise ModelNotReady(
                self.name, self.version, UNAVAILABLE, "unloaded or reloaded as the request arrived"
            ) from None
        except MserveError:
            self.stats.record_failure(clock() - t0)
            raise
        response = InferResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[Tensor(name, self._outputs[name].datatype, outputs[name]) for name in names],
            id=request.id,
        )
        t2 = clock()
        input_ns += t1 - t0
        # compute_output also covers the hand-back from the instance thread to the event loop
        output_ns = max(0, t2 - t0 - queue_ns - input_ns - infer_ns)
        self.stats.record_success(
            rows,
            total_ns=t2 - t0,
            queue_ns=queue_ns,
            input_ns=input_ns,
            infer_ns=infer_ns,
            output_ns=output_ns,
        )
        self.metrics.success(queue_ns, input_ns, infer_ns, output_ns)
        if not batched:  # the batcher records its executions itself
            self._executed(rows, input_ns, infer_ns, output_ns)
        return response

    def close(self, on_closed: Callable[[], None] | None = None) -> None:
        """Stop taking work; queued requests finish, then the runtimes are released and
        ``on_closed`` is called (on a background thread)."""
        if self.batcher is not None:
            pool = self.pool
            self.batcher.close(on_drained=lambda: pool.close(on_closed))
        else:
            self.pool.close(on_closed)


@dataclass(slots=True)
class _Model:
    """A model name's state: its loaded versions, or why it has none."""

    state: str
    versions: dict[int, ModelVersion]
    reason: str = ""
    tried: Signature | None = None  # what its folder held when a load last read it
    loaded: Signature | None = None  # what it held when the serving versions were read


class ModelManager:
    """All models of one repository, loaded by name; safe to call from the event loop."""

    def __init__(
        self,
        repository: Repository,
        runtime_factory: RuntimeFactory = default_runtime_factory,
        in_flight: InFlight | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.in_flight = in_flight or InFlight()
        self.metrics = metrics or ServerMetrics()
        self._factory = runtime_factory
        self._models: dict[str, _Model] = {}
        self._load_lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------

    def load_all(self) -> None:
        """Load every model of the repository; a broken one is recorded, the others load."""
        for name in self.repository.names():
            try:
                self.load(name)
            except MserveError as exc:
                if name not in self._models:  # else load() recorded and logged it
                    log.error("%s", exc)

    def load(self, name: str, keep: Collection[int] = ()) -> None:
        """(Re)load a model from disk as a transaction: the new versions load and warm up beside
        the old ones, which serve until all the new ones are up and then switch in at once.

        ``keep``: versions whose files and config.yaml the caller knows unchanged since they were
        loaded; their loaded objects (and statistics) are kept rather than loaded again. A
        failure is raised, logged and counted; old versions that serve go on serving, and the
        reason of their repository index entries says that the reload failed and why.
        """
        self._load(name, keep, None)

    def _load(
        self, name: str, keep: Collection[int], loop: asyncio.AbstractEventLoop | None
    ) -> None:
        if not valid_model_name(name):
            raise InvalidRequest(
                f"'{name}' is not a valid model name; expected letters, digits, '_', '.', '-'"
            )
        with self._load_lock:
            # taken before the folder is read: a change made meanwhile shows as a change later
            files = signature(self.repository.root / name)
            try:
                source = self.repository.source(name)
            except RepositoryError:
                if name not in self._models:
                    raise ModelNotFound(name, known=self.repository.names()) from None
                raise
            previous = self._models.get(name)
            if previous is None:
                self._models[name] = _Model(LOADING, {})
            for counter in (self.metrics.load_failures, self.metrics.reloads):
                counter.labels(name)  # at 0 from the start, so that increase() sees the first
            serving = previous.versions if previous is not None and previous.state == READY else {}
            reuse = {v: serving[v] for v in keep if v in serving}
            try:
                versions = self._open(source, reuse)
            except MserveError as exc:
                self.metrics.load_failures.labels(name).inc()
                if previous is not None and serving:
                    kept = ", ".join(map(str, sorted(serving)))
                    previous.reason = f"reload failed, version(s) {kept} still serving: {exc}"
                    previous.tried = files
                    log.error("model %s: %s", name, previous.reason)
                else:
                    self._models[name] = _Model(UNAVAILABLE, {}, str(exc), tried=files)
                    log.error("%s", exc)
                raise
            # the switch: one assignment
            self._models[name] = _Model(READY, versions, tried=files, loaded=files)
            if serving:
                self.metrics.reloads.labels(name).inc()
            if previous is not None:
                retired = [mv for v, mv in previous.versions.items() if versions.get(v) is not mv]
                self._retire(retired, loop)
            log.info(
                "loaded model %s versions %s%s",
                name,
                ", ".join(map(str, versions)),
                f" (kept {', '.join(map(str, sorted(reuse)))} as loaded)" if reuse else "",
            )

    def _open(self, source: ModelSource, reuse: dict[int, ModelVersion]) -> dict[int, ModelVersion]:
        if not source.ok:
            # the scan's message already names the file and field
            raise RepositoryError(None, source.error or f"{source.path}: cannot be loaded")
        opened: dict[int, ModelVersion] = {}
        try:
            for version, path in source.versions.items():
                kept = reuse.get(version)
                opened[version] = (
                    kept if kept is not None else self._open_version(source, version, path)
                )
        except BaseException:
            self._retire([mv for v, mv in opened.items() if reuse.get(v) is not mv], None)
            raise
        return opened

    def _retire(self, versions: list[ModelVersion], loop: asyncio.AbstractEventLoop | None) -> None:
        """Close versions that no longer serve, then give the memory they held back.

        With ``loop`` (a load or unload called from the event loop) they close on the loop: a
        request's look-up and its hand-over to the version's queue run there without a break,
        so a request that found an old version never finds it closed, and what is queued
        finishes first.
        """
        if not versions:
            return
        left = [len(versions)]
        lock = threading.Lock()

        def closed() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                release_freed_memory()

        def close() -> None:
            for mv in versions:
                mv.close(closed)

        if loop is not None:
            try:
                loop.call_soon_threadsafe(close)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        close()

    def _open_version(self, source: ModelSource, version: int, path: Path) -> ModelVersion:
        config = source.config or ModelConfig(name=source.name)
        started = time.perf_counter()
        runtimes: list[Runtime] = []
        try:
            first = self._factory(config.backend, path, config)
            runtimes.append(first)
            effective = reconcile(source.config, first, source.name, str(path))
            effective = replace(effective, instance_kind=instance_kind(config))
            # a thread-safe runtime is shared by all instances; otherwise one each
            while len(runtimes) < effective.instance_count:
                runtimes.append(
                    first if first.thread_safe else self._factory(config.backend, path, config)
                )
            mv = ModelVersion(effective, version, runtimes, self.in_flight, self.metrics)
        except MserveError:
            for rt in {id(r): r for r in runtimes}.values():
                rt.close()
            raise
        if effective.drift is not None:
            try:
                mv.drift = load_drift_reference(source.path, effective)
            except MserveError:
                mv.close()  # its instance threads (and watchdog) with its runtimes
                raise
        if effective.runtime.warmup:
            try:
                mv.warmup()
            except Exception as exc:
                mv.close()
                raise RepositoryError(
                    str(path), f"warm-up run failed: {type(exc).__name__}: {exc}"
                ) from None
        mv.load_seconds = time.perf_counter() - started
        return mv

    def unload(self, name: str, reason: str = "unloaded") -> None:
        """Stop serving a model; in-flight requests finish first, then its memory is released.
        ``reason`` is what its repository index entry says."""
        self._unload(name, reason, None)

    def _unload(self, name: str, reason: str, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._load_lock:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(name, known=sorted(self._models))
            # what a folder held is forgotten once it is gone, so that it loads when it returns
            gone = not (self.repository.root / name).is_dir()
            tried = None if gone else model.tried
            self._models[name] = _Model(UNAVAILABLE, {}, reason, tried=tried)
            self._retire(list(model.versions.values()), loop)

    def close(self) -> None:
        """Unload everything."""
        for name in list(self._models):
            self.unload(name)

    # -- lookup --------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version to serve: the one named, or the highest loaded one."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, known=sorted(self._models))
        if model.state != READY or not model.versions:
            raise ModelNotReady(name, version, model.state, model.reason)
        if version is None or version == "":
            return model.versions[max(model.versions)]
        digits = version.isascii() and version.isdigit()
        mv = model.versions.get(int(version)) if digits else None
        if mv is None:
            raise ModelNotFound(name, version, [str(v) for v in sorted(model.versions)])
        return mv

    def is_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
        except ModelNotReady:
            return False
        return True

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        mv = self.get(name, version)
        versions = tuple(str(v) for v in sorted(self._models[name].versions))
        return ModelMetadata(
            name=name,
            versions=versions if version is None else (mv.version,),
            platform=mv.platform,
            inputs=mv.config.inputs,
            outputs=mv.config.outputs,
        )

    def index(self) -> list[RepositoryEntry]:
        """Every model in the repository or loaded, with its state (the repository extension)."""
        rows: list[RepositoryEntry] = []
        names = sorted(set(self.repository.names()) | set(self._models))
        for name in names:
            model = self._models.get(name)
            if model is None:
                rows.append(RepositoryEntry(name, None, UNAVAILABLE, "not loaded"))
            elif model.versions:
                rows.extend(
                    RepositoryEntry(name, str(v), model.state, model.reason)
                    for v in sorted(model.versions)
                )
            else:
                rows.append(RepositoryEntry(name, None, model.state, model.reason))
        return rows

    def names(self) -> list[str]:
        """Models known to the server: loaded, loading or failed."""
        return list(self._models)

    def files(self) -> dict[str, tuple[Signature | None, Signature | None]]:
        """Per model, what its folder held when a load last read it, and when the versions that
        serve now were read (None: never, or forgotten since the folder went away)."""
        return {name: (m.tried, m.loaded) for name, m in list(self._models.items())}

    def collect_metrics(self) -> None:
        """Set the model gauges of :attr:`metrics` from the models' state now."""
        m = self.metrics
        for name, model in list(self._models.items()):
            if not model.versions:
                m.model_ready.set(0, name, "")
                m.model_state.set(1, name, "", model.state)
            for v, mv in model.versions.items():
                version = str(v)
                m.model_ready.set(1 if model.state == READY else 0, name, version)
                m.model_state.set(1, name, version, model.state)
                m.load_seconds.set(mv.load_seconds, name, version)
                m.queue_depth.set(mv.queue_depth, name, version)
                db = mv.config.dynamic_batching
                m.queue_capacity.set(db.max_queue_size if db is not None else 0, name, version)
                if mv.drift is not None:
                    m.drift(name, version, mv.drift, time.monotonic())

    def versions(self, name: str | None = None, version: str | None = None) -> list[ModelVersion]:
        """Loaded versions: all, one model's, or one version (for statistics)."""
        if name is None:
            return [
                mv
                for model_name in sorted(self._models)
                for _, mv in sorted(self._models[model_name].versions.items())
            ]
        if version:
            return [self.get(name, version)]
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, known=sorted(self._models))
        if not model.versions:
            raise ModelNotReady(name, None, model.state, model.reason)
        return [mv for _, mv in sorted(model.versions.items())]

    async def load_async(self, name: str, keep: Collection[int] = ()) -> None:
        """:meth:`load` off the event loop, so other requests keep flowing while a model loads;
        the versions it replaces close on the loop, so that no request fails for the switch."""
        await asyncio.to_thread(self._load, name, keep, asyncio.get_running_loop())

    async def unload_async(self, name: str, reason: str = "unloaded") -> None:
        """:meth:`unload` off the event loop; the versions close on the loop."""
        await asyncio.to_thread(self._unload, name, reason, asyncio.get_running_loop())
