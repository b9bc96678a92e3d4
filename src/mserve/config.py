"""Typed, frozen settings: the model config (``config.yaml``) and the server settings.

Shapes in a model config are the full shapes the model computes on, batch dimension included, as
the metadata endpoint reports them and as clients send them. When ``max_batch_size`` is above 0
the first dimension of every input and output is the batch dimension and must be -1.

Every loader check raises :class:`~mserve.errors.ConfigError` naming the file, the field and what
was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mserve.errors import ConfigError
from mserve.protocol import DATATYPES, TensorSpec

BACKENDS = ("onnxruntime", "openvino")
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: Where a model computes. "thread": on its instance threads, off the event loop. "inline": on
#: the event loop itself while no other request is waiting (handing a tiny model's work to a
#: thread and back costs more than the computation); when requests queue, the instance threads
#: take over and the loop goes on decoding and encoding the others meanwhile. "auto": "inline"
#: when the warm-up runs take under INLINE_MAX_US and the model has one instance, else "thread".
EXECUTION_MODES = ("auto", "thread", "inline")
INLINE_MAX_US = 200
#: How a model's instances run in parallel. "thread": threads of the server process, for runtimes
#: that release the GIL while they compute (ONNX Runtime does). "process": one child process per
#: instance, for runtimes that hold the GIL, or to keep a crashing model out of the server.
#: "auto": threads when the runtime releases the GIL, else processes.
INSTANCE_KINDS = ("auto", "thread", "process")
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Execution settings handed to the runtime."""

    intra_op_threads: int = 0  # 0: let the runtime choose
    inter_op_threads: int = 0
    execution_providers: tuple[str, ...] = ()  # empty: the best the machine has, CPU last
    graph_optimization_level: str = "all"
    warmup: bool = True
    execution: str = "auto"  # "auto" | "thread" | "inline", see EXECUTION_MODES
    timeout_s: float = 0.0  # longest one execution may run before it is stopped; 0: no limit


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    """The dynamic batcher's limits (config.yaml's ``dynamic_batching`` section).

    Requests whose non-batch dimensions match are stacked along the first dimension into one
    execution of at most ``max_batch_size`` rows. A batch leaves as soon as it reaches
    ``max_batch_size`` or a preferred size; otherwise it waits up to ``max_queue_delay_us`` for
    more rows, but only while a queue is forming (a lone request is never held back).
    """

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0  # requests waiting; 0: unbounded
    default_timeout_us: int = 0  # longest wait in the queue; 0: no timeout


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model to serve: the latest N, all, or a specific list."""

    kind: str = "latest"  # "latest" | "all" | "specific"
    latest: int = 1
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those present on disk, ascending."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.specific]
        return ordered[-self.latest :] if self.latest > 0 else []


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Input drift monitoring (config.yaml's ``drift`` section): a reference set of inputs, as a
    ``.npz`` file beside config.yaml with one array per input (batch dimension first), and the
    half-life of the recent window that is compared with it."""

    reference: str
    half_life_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model's configuration, from its ``config.yaml`` or read from the model itself."""

    name: str
    backend: str = "onnxruntime"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    max_batch_size: int = 0
    instance_count: int = 1
    instance_kind: str = "auto"  # see INSTANCE_KINDS
    dynamic_batching: DynamicBatching | None = None  # None: every request runs alone
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    drift: DriftConfig | None = None  # None: no drift statistics


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the server listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # V2 over gRPC on this port; None: no gRPC
    metrics_port: int | None = None  # /metrics and health also on this port; None: HTTP port only
    workers: int = 1
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: str = "warning"
    keep_alive_s: float = 75.0  # idle connections close after this
    drain_s: float = 30.0  # at shutdown, longest wait for in-flight requests
    unready_s: float = 0.0  # at shutdown, how long to serve on while reporting not ready
    metrics_dir: str = ""  # with several workers: where they share their metrics (set by serve)
    poll_interval_s: float = 0.0  # rescan the repository this often and reload what changed; 0: off
    management: bool = False  # the load / unload API (off: 403)
    api_keys: str = ""  # file of API keys and their scopes; "" and no api_keys_env: no auth
    api_keys_env: str = ""  # the keys as $MSERVE_API_KEYS held them (read by the CLI)
    tls_cert: str = ""  # PEM certificate chain; with tls_key, HTTPS and gRPC over TLS
    tls_key: str = ""
    max_header_bytes: int = 16 * 1024  # request line and headers together; larger gets 431
    max_connections: int = 1024  # open connections per worker; more are answered 503 and closed
    max_tensor_elements: int = 64 * 1024 * 1024  # elements of all inputs of one request together
    request_timeout_s: float = 0.0  # longest a request may take when its client sets no deadline


_MODEL_FIELDS = {
    "name",
    "backend",
    "inputs",
    "outputs",
    "max_batch_size",
    "instance_count",
    "instance_kind",
    "dynamic_batching",
    "runtime",
    "version_policy",
    "drift",
}
_DRIFT_FIELDS = {"reference", "half_life_s"}
_BATCHING_FIELDS = {
    "max_queue_delay_microseconds",
    "preferred_batch_sizes",
    "max_queue_size",
    "default_timeout_microseconds",
}
_RUNTIME_FIELDS = {
    "intra_op_threads",
    "inter_op_threads",
    "execution_providers",
    "graph_optimization_level",
    "warmup",
    "execution",
    "timeout_s",
}
_TENSOR_FIELDS = {"name", "datatype", "shape"}


def load_model_config(path: Path, default_name: str) -> ModelConfig:
    """Read and validate a ``config.yaml``; ``default_name`` is used when it names no model."""
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(source, "(file)", f"valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, "(file)", f"UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(source, "(file)", f"a readable file ({exc.strerror})") from None
    if raw is None:
        raw = {}
    return parse_model_config(raw, source, default_name)


def parse_model_config(raw: object, source: str, default_name: str) -> ModelConfig:
    """Validate a decoded config mapping; ``source`` names it in error messages."""
    m = _mapping(raw, source, "(top level)")
    _no_unknown(m, _MODEL_FIELDS, source, "")
    name = m.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(source, "name", "a non-empty string", name)
    if name != default_name:
        raise ConfigError(source, "name", f"the directory's name '{default_name}'", name)
    backend = m.get("backend", "onnxruntime")
    if backend not in BACKENDS:
        raise ConfigError(source, "backend", f"one of {', '.join(BACKENDS)}", backend)
    max_batch = _int(m.get("max_batch_size", 0), source, "max_batch_size", minimum=0)
    instances = _int(m.get("instance_count", 1), source, "instance_count", minimum=1)
    kind = m.get("instance_kind", "auto")
    if kind not in INSTANCE_KINDS:
        raise ConfigError(source, "instance_kind", f"one of {', '.join(INSTANCE_KINDS)}", kind)
    inputs = _tensors(m.get("inputs", []), source, "inputs", max_batch)
    outputs = _tensors(m.get("outputs", []), source, "outputs", max_batch)
    return ModelConfig(
        name=name,
        backend=backend,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch,
        instance_count=instances,
        instance_kind=kind,
        dynamic_batching=_batching(m, source, max_batch),
        runtime=_runtime(m.get("runtime", {}), source),
        version_policy=_version_policy(m.get("version_policy", {"latest": 1}), source),
        drift=_drift(m["drift"], source) if "drift" in m else None,
    )


def _drift(value: object, source: str) -> DriftConfig:
    m = _mapping(value, source, "drift")
    _no_unknown(m, _DRIFT_FIELDS, source, "drift.")
    reference = m.get("reference")
    if (
        not isinstance(reference, str)
        or not reference.endswith(".npz")
        or "/" in reference
        or "\\" in reference
        or reference.startswith(".")
    ):
        raise ConfigError(
            source,
            "drift.reference",
            "the name of a .npz file beside config.yaml (one array per input)",
            reference,
        )
    half_life = m.get("half_life_s", 60.0)
    if isinstance(half_life, bool) or not isinstance(half_life, int | float) or half_life <= 0:
        raise ConfigError(source, "drift.half_life_s", "a number of seconds > 0", half_life)
    return DriftConfig(reference, float(half_life))


def _mapping(value: object, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(source, where, "a mapping", type(value).__name__)
    return value


def _no_unknown(m: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    for key in m:
        if key not in known:
            raise ConfigError(
                source, f"{prefix}{key}", f"one of the known fields {', '.join(sorted(known))}"
            )


def _int(value: object, source: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(source, where, f"an integer >= {minimum}", value)
    return value


def _tensors(value: object, source: str, where: str, max_batch: int) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError(source, where, "a list of {name, datatype, shape}", value)
    specs: list[TensorSpec] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        t = _mapping(item, source, at)
        _no_unknown(t, _TENSOR_FIELDS, source, f"{at}.")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(source, f"{at}.name", "a non-empty string", name)
        datatype = t.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ConfigError(
                source, f"{at}.datatype", f"a V2 datatype ({', '.join(DATATYPES)})", datatype
            )
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d >= 0) for d in shape
        ):
            raise ConfigError(
                source, f"{at}.shape", "a list of dimensions (integers >= 0, or -1 for free)", shape
            )
        if max_batch > 0 and (not shape or shape[0] != -1):
            raise ConfigError(
                source,
                f"{at}.shape",
                "-1 as the first dimension, the batch dimension, since max_batch_size > 0",
                shape,
            )
        if any(s.name == name for s in specs):
            raise ConfigError(source, f"{at}.name", "a name not used twice", name)
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(specs)


def _runtime(value: object, source: str) -> RuntimeOptions:
    m = _mapping(value, source, "runtime")
    _no_unknown(m, _RUNTIME_FIELDS, source, "runtime.")
    providers = m.get("execution_providers", [])
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise ConfigError(
            source,
            "runtime.execution_providers",
            "a list of provider names such as CPUExecutionProvider",
            providers,
        )
    level = m.get("graph_optimization_level", "all")
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise ConfigError(
            source,
            "runtime.graph_optimization_level",
            f"one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}",
            level,
        )
    warmup = m.get("warmup", True)
    if not isinstance(warmup, bool):
        raise ConfigError(source, "runtime.warmup", "true or false", warmup)
    execution = m.get("execution", "auto")
    if execution not in EXECUTION_MODES:
        raise ConfigError(
            source, "runtime.execution", f"one of {', '.join(EXECUTION_MODES)}", execution
        )
    timeout_s = m.get("timeout_s", 0)
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 <= timeout_s < float("inf")
    ):
        raise ConfigError(
            source, "runtime.timeout_s", "a number of seconds >= 0 (0: no timeout)", timeout_s
        )
    if timeout_s and execution == "inline":
        raise ConfigError(
            source,
            "runtime.execution",
            "thread or auto when runtime.timeout_s is set (a run on the event loop would hold "
            "every other request until it is stopped)",
            execution,
        )
    if timeout_s and execution == "auto":
        execution = "thread"  # a watched run never blocks the event loop
    return RuntimeOptions(
        intra_op_threads=_int(m.get("intra_op_threads", 0), source, "runtime.intra_op_threads", 0),
        inter_op_threads=_int(m.get("inter_op_threads", 0), source, "runtime.inter_op_threads", 0),
        execution_providers=tuple(providers),
        graph_optimization_level=level,
        warmup=warmup,
        execution=execution,
        timeout_s=float(timeout_s),
    )


def _batching(model: Mapping[str, Any], source: str, max_batch: int) -> DynamicBatching | None:
    if "dynamic_batching" not in model:
        return None
    value = model["dynamic_batching"]
    # an empty section (``dynamic_batching:`` or ``{}``) turns batching on with the defaults
    m = _mapping({} if value is None else value, source, "dynamic_batching")
    _no_unknown(m, _BATCHING_FIELDS, source, "dynamic_batching.")
    if max_batch < 1:
        raise ConfigError(
            source,
            "max_batch_size",
            "a value >= 1 when dynamic_batching is set (the batcher stacks requests along the "
            "first dimension, up to max_batch_size rows)",
            max_batch,
        )
    where = "dynamic_batching.preferred_batch_sizes"
    preferred = m.get("preferred_batch_sizes", [])
    if (
        not isinstance(preferred, list)
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in preferred)
        or len(set(preferred)) != len(preferred)
    ):
        raise ConfigError(source, where, "a list of distinct batch sizes >= 1", preferred)
    too_big = [p for p in preferred if p > max_batch]
    if too_big:
        raise ConfigError(
            source, where, f"sizes no larger than max_batch_size {max_batch}", too_big
        )
    return DynamicBatching(
        max_queue_delay_us=_int(
            m.get("max_queue_delay_microseconds", 0),
            source,
            "dynamic_batching.max_queue_delay_microseconds",
            0,
        ),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_size=_int(
            m.get("max_queue_size", 0), source, "dynamic_batching.max_queue_size", 0
        ),
        default_timeout_us=_int(
            m.get("default_timeout_microseconds", 0),
            source,
            "dynamic_batching.default_timeout_microseconds",
            0,
        ),
    )


def _version_policy(value: object, source: str) -> VersionPolicy:
    expected = "'all', {latest: N}, {all: {}} or {specific: [versions]}"
    if value == "all":
        return VersionPolicy(kind="all")
    m = _mapping(value, source, "version_policy")
    if len(m) != 1:
        raise ConfigError(source, "version_policy", expected, dict(m))
    ((kind, arg),) = m.items()
    if kind == "all":
        return VersionPolicy(kind="all")
    if kind == "latest":
        n = _int(arg, source, "version_policy.latest", minimum=1)
        return VersionPolicy(kind="latest", latest=n)
    if kind == "specific":
        if (
            not isinstance(arg, list)
            or not arg
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in arg)
        ):
            raise ConfigError(
                source, "version_policy.specific", "a non-empty list of version numbers > 0", arg
            )
        return VersionPolicy(kind="specific", specific=tuple(arg))
    raise ConfigError(source, "version_policy", expected, dict(m))


def dynamic_batching_to_dict(db: DynamicBatching) -> dict[str, Any]:
    """The config.yaml form of a ``dynamic_batching`` section."""
    return {
        "max_queue_delay_microseconds": db.max_queue_delay_us,
        "preferred_batch_sizes": list(db.preferred_batch_sizes),
        "max_queue_size": db.max_queue_size,
        "default_timeout_microseconds": db.default_timeout_us,
    }


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The config.yaml form of a model config (what :func:`parse_model_config` reads back)."""
    policy: Any
    vp = config.version_policy
    if vp.kind == "all":
        policy = "all"
    elif vp.kind == "specific":
        policy = {"specific": list(vp.specific)}
    else:
        policy = {"latest": vp.latest}
    rt = config.runtime
    doc: dict[str, Any] = {
        "name": config.name,
        "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "instance_count": config.instance_count,
        "instance_kind": config.instance_kind,
    }
    if config.dynamic_batching is not None:
        doc["dynamic_batching"] = dynamic_batching_to_dict(config.dynamic_batching)
    if config.drift is not None:
        drift = config.drift
        doc["drift"] = {"reference": drift.reference, "half_life_s": drift.half_life_s}
    return doc | {
        "inputs": [t.to_dict() for t in config.inputs],
        "outputs": [t.to_dict() for t in config.outputs],
        "runtime": {
            "intra_op_threads": rt.intra_op_threads,
            "inter_op_threads": rt.inter_op_threads,
            "execution_providers": list(rt.execution_providers),
            "graph_optimization_level": rt.graph_optimization_level,
            "warmup": rt.warmup,
            "execution": rt.execution,
            "timeout_s": rt.timeout_s,
        },
        "version_policy": policy,
    }


def write_model_config(path: Path, config: ModelConfig) -> None:
    """Write a config.yaml that :func:`load_model_config` reads back to the same config."""
    path.write_text(yaml.safe_dump(model_config_to_dict(config), sort_keys=False))
