"""Prometheus metrics of one server: recorded at phase boundaries, summed over workers, rendered
in Prometheus' text format (0.0.4).

Recording is plain Python on the event loop (a dict look-up, a bisect and two additions per
histogram), so it costs a few microseconds a request. Gauges are not recorded: callbacks read
them from the server's state when a snapshot is taken. A snapshot is a JSON-able dict; with
several workers each publishes its own to a shared directory, and whichever worker answers a
scrape sums them (:func:`merge`) before rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from mserve import errors
from mserve.monitor.drift import DriftMonitor

#: Upper bounds in seconds: fine around a millisecond, wide enough for a stalled request.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LATENCY_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)  # the same bounds in nanoseconds

#: One outcome per error class, most specific first (see docs/metrics.md).
OUTCOMES: tuple[tuple[type[errors.MserveError], str], ...] = (
    (errors.ServerBusy, "overloaded"),
    (errors.InvalidRequest, "bad_request"),
    (errors.NotFound, "not_found"),
    (errors.Unavailable, "unavailable"),
    (errors.DeadlineExceeded, "timeout"),
    (errors.ModelFailure, "model_error"),
)


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label of a request that ended with ``exc`` (None: success)."""
    if exc is None:
        return "success"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    for cls, outcome in OUTCOMES:
        if isinstance(exc, cls):
            return outcome
    return "internal"


# -- recording ---------------------------------------------------------------------------------


class Histogram:
    """One labelled histogram: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Counter:
    """One labelled counter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Family:
    """A metric name with its help, type, label names and labelled children.

    ``merge`` says how the gauges of several workers combine: "sum", "min" or "max". Counters and
    histograms always add up.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        labels: tuple[str, ...] = (),
        bounds: tuple[float, ...] | None = None,
        merge: str = "sum",
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.labelnames = labels
        self.bounds = bounds
        self.merge = merge
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        """The child for these label values, created on first use."""
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            if self.kind == "histogram":
                assert self.bounds is not None
                child = Histogram(self.bounds)
            elif self.kind == "counter":
                child = Counter()
            else:
                child = [0.0]  # a gauge: set at collection time
            self.children[values] = child
        return child

    def set(self, value: float, *labels: str) -> None:
        """Set a gauge."""
        self.labels(*labels)[0] = float(value)

    def samples(self) -> list[list[Any]]:
        # list(): a copy taken at once, as a model loading on another thread may add a child
        children = list(self.children.items())
        if self.kind == "histogram":
            return [[list(k), list(h.counts), h.sum, list(h.bounds)] for k, h in children]
        if self.kind == "counter":
            return [[list(k), c.value] for k, c in children]
        return [[list(k), g[0]] for k, g in children]


class Registry:
    """The metric families of one worker, and the callbacks that set its gauges."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self._collectors: list[Callable[[], None]] = []

    def add(self, family: Family) -> Family:
        if family.name in self.families:
            raise ValueError(f"metric {family.name} is registered twice")
        self.families[family.name] = family
        return family

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Family:
        return self.add(Family(name, "counter", help, labels))

    def gauge(
        self, name: str, help: str, labels: tuple[str, ...] = (), merge: str = "sum"
    ) -> Family:
        return self.add(Family(name, "gauge", help, labels, merge=merge))

    def histogram(
        self, name: str, help: str, labels: tuple[str, ...], bounds: tuple[float, ...]
    ) -> Family:
        return self.add(Family(name, "histogram", help, labels, bounds=bounds))

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` before each snapshot (it sets gauges from live state)."""
        self._collectors.append(callback)

    def snapshot(self) -> dict[str, Any]:
        """Every family's samples now, JSON-able; gauges refreshed by the collectors first."""
        for family in self.families.values():
            if family.kind == "gauge":
                family.children.clear()
        for collect in self._collectors:
            collect()
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "families": {
                f.name: {
                    "type": f.kind,
                    "help": f.help,
                    "labels": list(f.labelnames),
                    "bounds": list(f.bounds) if f.bounds is not None else None,
                    "merge": f.merge,
                    "samples": f.samples(),
                }
                for f in self.families.values()
            },
        }


# -- several workers ---------------------------------------------------------------------------


def merge(snapshots: Iterable[Mapping[str, Any]], live: Callable[[int], bool]) -> dict[str, Any]:
    """Sum snapshots of several workers: counters and histograms of all (a dead worker's counts
    stay), gauges of live workers only (combined by each family's ``merge``)."""
    out: dict[str, Any] = {}
    workers = 0
    for snap in snapshots:
        alive = live(int(snap["pid"]))
        workers += alive
        for name, fam in snap["families"].items():
            if fam["type"] == "gauge" and not alive:
                continue
            into = out.get(name)
            if into is None:
                into = out[name] = {**fam, "samples": {}}
            samples = into["samples"]
            histogram = fam["type"] == "histogram"
            for sample in fam["samples"]:
                key = tuple(sample[0])
                have = samples.get(key)
                if have is None:
                    samples[key] = (
                        [list(sample[1]), sample[2], sample[3]] if histogram else sample[1]
                    )
                elif histogram:
                    counts = have[0]
                    if len(counts) != len(sample[1]):  # bounds changed (a reloaded reference)
                        continue
                    for i, c in enumerate(sample[1]):
                        counts[i] += c
                    have[1] += sample[2]
                elif fam["type"] == "gauge" and fam["merge"] == "min":
                    samples[key] = min(have, sample[1])
                elif fam["type"] == "gauge" and fam["merge"] == "max":
                    samples[key] = max(have, sample[1])
                else:
                    samples[key] = have + sample[1]
    out.setdefault(
        "mserve_workers",
        {
            "type": "gauge",
            "help": "Worker processes whose figures are in this scrape.",
            "labels": [],
            "bounds": None,
            "merge": "sum",
            "samples": {},
        },
    )["samples"] = {(): float(workers)}
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (workers are siblings of one user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


class Exchange:
    """The directory where the workers of one server publish their snapshots."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.own = self.directory / f"worker-{os.getpid()}.json"

    def publish(self, snapshot: Mapping[str, Any]) -> None:
        """Write this worker's snapshot atomically (readers never see half a file)."""
        tmp = self.own.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(snapshot))
        os.replace(tmp, self.own)

    def others(self) -> list[dict[str, Any]]:
        """The latest snapshots of the other workers, live or dead."""
        found = []
        for path in self.directory.glob("worker-*.json"):
            if path == self.own:
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                found.append(orjson.loads(path.read_bytes()))
        return found


# -- rendering ---------------------------------------------------------------------------------


def _value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(float(v))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def render(merged: Mapping[str, Any]) -> bytes:
    """Prometheus' text exposition format (version 0.0.4) of merged snapshots."""
    lines: list[str] = []
    add = lines.append
    le_cache: dict[tuple[float, ...], list[str]] = {}
    for name in sorted(merged):
        fam = merged[name]
        kind, names = fam["type"], fam["labels"]
        help_text = fam["help"].replace("\\", "\\\\").replace("\n", "\\n")
        add(f"# HELP {name} {help_text}")
        add(f"# TYPE {name} {kind}")
        for key in sorted(fam["samples"]):
            sample = fam["samples"][key]
            labels = _label_text(names, key)  # once per series, not per bucket
            braced = f"{{{labels}}}" if labels else ""
            if kind != "histogram":
                add(f"{name}{braced} {_value(sample)}")
                continue
            counts, total, bounds = sample
            les = le_cache.get(tuple(bounds))
            if les is None:
                les = [f'le="{_value(b)}"}}' for b in bounds] + ['le="+Inf"}']
                le_cache[tuple(bounds)] = les
            prefix = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
            running = 0
            for le, count in zip(les, counts, strict=True):
                running += count
                add(f"{prefix}{le} {running}")
            add(f"{name}_sum{braced} {_value(total)}")
            add(f"{name}_count{braced} {running}")
    add("")
    return "\n".join(lines).encode()


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


# -- the host --------------------------------------------------------------------------------------


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_sample() -> dict[str, float]:
    """This process's CPU seconds, resident and virtual memory, open files and start time."""
    times = os.times()
    out = {"cpu": times.user + times.system}
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = f.read().split()[:2]
        out["rss"] = float(int(resident) * _PAGE)
        out["vms"] = float(int(size) * _PAGE)
        out["fds"] = float(len(os.listdir("/proc/self/fd")))
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        out["start"] = boot + start_ticks / _TICKS
    except (OSError, ValueError, StopIteration):  # pragma: no cover - not Linux
        import resource

        out["rss"] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return out


class Gpus:
    """GPU utilisation and memory through NVML, when a GPU and ``nvidia-ml-py`` are present."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[str, str, Any]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                self._handles.append((str(i), name, handle))
            self._nvml = pynvml
        except Exception:  # no library, no driver or no GPU: nothing to report
            self._handles = []

    @property
    def present(self) -> bool:
        return bool(self._handles)

    def sample(self) -> list[tuple[str, str, float, float, float]]:
        """(index, name, utilisation 0..1, memory used, memory total) per GPU."""
        rows = []
        for index, name, handle in self._handles:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                continue
            rows.append((index, name, util.gpu / 100.0, float(mem.used), float(mem.total)))
        return rows


# -- the server's metrics ----------------------------------------------------------------------

_MV = ("model", "version")


class ModelMetrics:
    """The children of one model version, resolved once so recording is a few additions."""

    __slots__ = ("batch", "compute_infer", "compute_input", "compute_output", "queue")

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        self.queue: Histogram = metrics.queue.labels(name, version)
        self.compute_input: Histogram = metrics.compute_input.labels(name, version)
        self.compute_infer: Histogram = metrics.compute_infer.labels(name, version)
        self.compute_output: Histogram = metrics.compute_output.labels(name, version)
        self.batch: Histogram = metrics.batch_size.labels(name, version)

    def success(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """The phases of one answered request (unrolled: it runs for every request)."""
        b = _LATENCY_NS
        h = self.queue
        h.counts[bisect_left(b, queue_ns)] += 1
        h.sum += queue_ns * 1e-9
        h = self.compute_input
        h.counts[bisect_left(b, input_ns)] += 1
        h.sum += input_ns * 1e-9
        h = self.compute_infer
        h.counts[bisect_left(b, infer_ns)] += 1
        h.sum += infer_ns * 1e-9
        h = self.compute_output
        h.counts[bisect_left(b, output_ns)] += 1
        h.sum += output_ns * 1e-9

    def execution(self, rows: int) -> None:
        """One execution of the model over ``rows`` rows."""
        self.batch.observe(rows)


class ServerMetrics:
    """Every metric of docs/metrics.md on one registry."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.requests = r.counter(
            "mserve_requests_total",
            "Inference requests by model, version, protocol and outcome.",
            ("model", "version", "protocol", "outcome"),
        )
        self.duration = r.histogram(
            "mserve_request_duration_seconds",
            "End-to-end time in the server of successful inference requests.",
            ("model", "version", "protocol"),
            LATENCY_BUCKETS,
        )
        self.queue = r.histogram(
            "mserve_queue_duration_seconds",
            "Time a successful request waited for an instance.",
            _MV,
            LATENCY_BUCKETS,
        )
        self.compute_input = r.histogram(
            "mserve_compute_input_duration_seconds",
            "Validating inputs and stacking the batch, per successful request.",
            _MV,
            LATENCY_BUCKETS,
        )
        self.compute_infer = r.histogram(
            "mserve_compute_infer_duration_seconds",
            "The model's execution (of the request's batch), per successful request.",
            _MV,
            LATENCY_BUCKETS,
        )
        self.compute_output = r.histogram(
            "mserve_compute_output_duration_seconds",
            "Splitting the batch and building the response, per successful request.",
            _MV,
            LATENCY_BUCKETS,
        )
        self.batch_size = r.histogram(
            "mserve_batch_size", "Rows per execution of the model.", _MV, BATCH_BUCKETS
        )
        self.queue_depth = r.gauge(
            "mserve_queue_depth", "Requests waiting in the model's batching queue.", _MV
        )
        self.queue_capacity = r.gauge(
            "mserve_queue_capacity",
            "The queue's max_queue_size (0: unbounded).",
            _MV,
            merge="max",
        )
        self.in_flight = r.gauge(
            "mserve_inflight_requests", "Requests received and not yet answered."
        )
        self.model_ready = r.gauge(
            "mserve_model_ready", "1 when the model version serves, else 0.", _MV, merge="min"
        )
        self.model_state = r.gauge(
            "mserve_model_state",
            "1 for the model's state (READY, LOADING, UNAVAILABLE).",
            ("model", "version", "state"),
            merge="max",
        )
        self.load_seconds = r.gauge(
            "mserve_model_load_duration_seconds",
            "How long loading and warming up the model version took.",
            _MV,
            merge="max",
        )
        self.load_failures = r.counter(
            "mserve_model_load_failures_total",
            "Loads of the model that failed (at start-up, through the load API or by polling).",
            ("model",),
        )
        self.reloads = r.counter(
            "mserve_model_reloads_total",
            "Reloads of a serving model whose new versions switched in.",
            ("model",),
        )
        self.cpu = r.counter(
            "process_cpu_seconds_total", "CPU time of the workers (user + system)."
        )
        self.rss = r.gauge("process_resident_memory_bytes", "Resident memory of the workers.")
        self.vms = r.gauge("process_virtual_memory_bytes", "Virtual memory of the workers.")
        self.fds = r.gauge("process_open_fds", "Open file descriptors of the workers.")
        self.start = r.gauge(
            "process_start_time_seconds",
            "When the oldest worker started (Unix time).",
            merge="min",
        )
        self.gpu_util = r.gauge(
            "mserve_gpu_utilization_ratio", "GPU busy fraction from NVML.", ("gpu", "name"), "max"
        )
        self.gpu_used = r.gauge(
            "mserve_gpu_memory_used_bytes", "GPU memory in use.", ("gpu", "name"), "max"
        )
        self.gpu_total = r.gauge(
            "mserve_gpu_memory_total_bytes", "GPU memory in all.", ("gpu", "name"), "max"
        )
        mvi = ("model", "version", "input")
        self.input_values = r.histogram(
            "mserve_input_values",
            "Elements of the input seen so far, in bins at the reference set's deciles.",
            mvi,
            (),
        )
        self.input_mean = r.gauge(
            "mserve_input_mean", "Mean of the input's elements over the recent window.", mvi, "max"
        )
        self.input_std = r.gauge(
            "mserve_input_std", "Standard deviation of the input in the recent window.", mvi, "max"
        )
        self.input_reference_mean = r.gauge(
            "mserve_input_reference_mean", "The reference set's mean of the input.", mvi, "max"
        )
        self.input_reference_std = r.gauge(
            "mserve_input_reference_std", "The reference set's standard deviation.", mvi, "max"
        )
        self.input_psi = r.gauge(
            "mserve_input_drift_psi",
            "Population stability index of the recent window against the reference.",
            mvi,
            "max",
        )
        self.input_shift = r.gauge(
            "mserve_input_feature_shift",
            "Largest shift of one feature's mean, in its reference standard deviations.",
            mvi,
            "max",
        )
        self._request_children: dict[tuple[str, str, str, str], Counter] = {}
        self._duration_children: dict[tuple[str, str, str], Histogram] = {}
        self._gpus: Gpus | None = None
        r.on_collect(self._collect_host)

    def model(self, name: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, name, version)

    def drift(self, name: str, version: str, monitor: DriftMonitor, now: float) -> None:
        """Set the drift metrics of one model version from its monitor."""
        monitor.flush(now)  # count what the requests queued since the last time
        for tensor, tracker in monitor.inputs.items():
            key = (name, version, tensor)
            ref = tracker.reference
            h = Histogram(tuple(float(e) for e in ref.edges))
            h.counts = [int(c) for c in tracker.counts]
            h.sum = tracker.total
            self.input_values.children[key] = h
            self.input_reference_mean.set(ref.mean, *key)
            self.input_reference_std.set(ref.std, *key)
            w = tracker.window(now)
            if w is not None:
                self.input_mean.set(w.mean, *key)
                self.input_std.set(w.std, *key)
                self.input_psi.set(w.psi, *key)
                self.input_shift.set(w.feature_shift, *key)

    def request(
        self, model: str, version: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        """One inference request ended; its duration counts only when it succeeded."""
        key = (model, version, protocol, outcome)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.value += 1
        if outcome == "success":
            dkey = (model, version, protocol)
            hist = self._duration_children.get(dkey)
            if hist is None:
                hist = self._duration_children[dkey] = self.duration.labels(*dkey)
            hist.observe(seconds)

    def _collect_host(self) -> None:
        p = process_sample()
        self.cpu.labels().value = p["cpu"]
        self.rss.set(p.get("rss", 0.0))
        if "vms" in p:
            self.vms.set(p["vms"])
            self.fds.set(p["fds"])
            self.start.set(p["start"])
        if self._gpus is None:
            self._gpus = Gpus()
        for index, name, util, used, total in self._gpus.sample():
            self.gpu_util.set(util, index, name)
            self.gpu_used.set(used, index, name)
            self.gpu_total.set(total, index, name)
