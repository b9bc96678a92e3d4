"""The loaded models: load / unload / reload, reconciling config and model, validation, versions.

Real ONNX models built on the spot, run in process; no sockets.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.config import ModelConfig, RuntimeOptions, VersionPolicy
from mserve.errors import (
    InvalidInput,
    InvalidRequest,
    ModelFailure,
    ModelNotFound,
    ModelNotReady,
    RepositoryError,
)
from mserve.protocol import InferRequest, RepositoryEntry, RequestedOutput, Tensor, TensorSpec
from mserve.repository import Repository
from mserve.runtime.fake import FakeRuntime
from mserve.server.models import ModelManager, instance_kind, intra_op_threads

BATCHED = ModelConfig(
    name="addsub",
    inputs=(TensorSpec("INPUT0", "FP32", (-1, 4)), TensorSpec("INPUT1", "FP32", (-1, 4))),
    outputs=(TensorSpec("OUTPUT0", "FP32", (-1, 4)), TensorSpec("OUTPUT1", "FP32", (-1, 4))),
    max_batch_size=8,
)


def fp32(name: str, data: Any) -> Tensor:
    return Tensor(name, "FP32", np.asarray(data, dtype=np.float32))


def request(model: str, *inputs: Tensor, version: str | None = None, **kw: Any) -> InferRequest:
    return InferRequest(model, version, list(inputs), **kw)


@pytest.fixture
def repo(tmp_path: Path, onnx_factory: Any, place: Any) -> Path:
    place(tmp_path, "addsub", {1: onnx_factory.add_sub()}, config=BATCHED)
    place(tmp_path, "plain", {1: onnx_factory.identity("INT32", (2, 2))})
    versions = {v: onnx_factory.add_const(float(v)) for v in (1, 2, 3)}
    place(
        tmp_path,
        "multi",
        versions,
        config=ModelConfig("multi", version_policy=VersionPolicy("all")),
    )
    place(tmp_path, "broken", {1: onnx_factory.identity("FP32")}, config_text="instance_count: 0\n")
    return tmp_path


@pytest.fixture
def manager(repo: Path) -> Iterator[ModelManager]:
    m = ModelManager(Repository(repo))
    m.load_all()
    yield m
    m.close()


def test_load_all_loads_the_good_and_records_the_broken(manager: ModelManager, repo: Path) -> None:
    rows = manager.index()
    assert [(r.name, r.version, r.state) for r in rows] == [
        ("addsub", "1", "READY"),
        ("broken", None, "UNAVAILABLE"),
        ("multi", "1", "READY"),
        ("multi", "2", "READY"),
        ("multi", "3", "READY"),
        ("plain", "1", "READY"),
    ]
    assert [r.reason for r in rows if r.name != "broken"] == [""] * 5
    (broken,) = (r for r in rows if r.name == "broken")
    assert broken.reason.endswith(
        f"{repo / 'broken' / 'config.yaml'}: field 'instance_count': "
        "expected an integer >= 1, got 0"
    )
    with pytest.raises(ModelNotReady, match=r"model 'broken' is not ready \(state: UNAVAILABLE\)"):
        manager.get("broken")
    assert not manager.is_ready("broken")


def test_signature_without_config_comes_from_the_model(manager: ModelManager) -> None:
    md = manager.metadata("plain")
    assert md.platform == "onnxruntime_onnx"
    assert md.versions == ("1",)
    assert md.inputs == (TensorSpec("INPUT", "INT32", (2, 2)),)
    assert md.outputs == (TensorSpec("OUTPUT", "INT32", (2, 2)),)
    assert manager.get("plain").config.max_batch_size == 0


def test_versions_pick_the_named_or_the_highest(manager: ModelManager) -> None:
    assert manager.metadata("multi").versions == ("1", "2", "3")
    assert manager.metadata("multi", "2").versions == ("2",)
    assert manager.get("multi").version == "3"
    assert manager.get("multi", "1").version == "1"
    for bad in ("4", "0", "x", "-1"):
        with pytest.raises(ModelNotFound) as info:
            manager.get("multi", bad)
        assert str(info.value) == (
            f"unknown version '{bad}' of model 'multi'; available versions: 1, 2, 3"
        )
    with pytest.raises(ModelNotFound, match=r"^unknown model 'nope'; known models: addsub, "):
        manager.get("nope")


def test_infer_computes_and_answers_the_version_asked(manager: ModelManager) -> None:
    x = fp32("INPUT", [[1.0], [2.5]])
    for version, add in (("1", 1.0), ("3", 3.0), (None, 3.0)):
        mv = manager.get("multi", version)
        resp = asyncio.run(mv.infer(request("multi", x, version=version, id="r")))
        assert resp.model_version == ("3" if version is None else version)
        assert resp.id == "r"
        (out,) = resp.outputs
        assert (out.name, out.datatype) == ("OUTPUT", "FP32")
        assert out.data.tolist() == [[1.0 + add], [2.5 + add]]


def test_requested_outputs_are_the_only_ones_computed(manager: ModelManager) -> None:
    a, b = np.arange(8, dtype=np.float32).reshape(2, 4), np.ones((2, 4), np.float32)
    req = request(
        "addsub", fp32("INPUT0", a), fp32("INPUT1", b), outputs=[RequestedOutput("OUTPUT1")]
    )
    resp = asyncio.run(manager.get("addsub").infer(req))
    assert [o.name for o in resp.outputs] == ["OUTPUT1"]
    assert np.array_equal(resp.outputs[0].data, a - b)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [fp32("INPUT0", np.zeros((1, 4)))],
            "input 'INPUT1': missing; the model expects "
            "INPUT0 (FP32 [-1, 4]), INPUT1 (FP32 [-1, 4])",
        ),
        (
            [fp32("INPUT0", np.zeros((1, 4))), fp32("INPUT0", np.zeros((1, 4)))],
            "input 'INPUT0': given more than once",
        ),
        (
            [fp32("INPUT0", np.zeros((1, 4))), fp32("EXTRA", np.zeros((1, 4)))],
            "input 'EXTRA': no such input; the model expects INPUT0",
        ),
        (
            [fp32("INPUT0", np.zeros((1, 4))), Tensor("INPUT1", "FP64", np.zeros((1, 4)))],
            "input 'INPUT1': datatype FP64 does not match; expected FP32",
        ),
        (
            [fp32("INPUT0", np.zeros((1, 3))), fp32("INPUT1", np.zeros((1, 3)))],
            "input 'INPUT0': shape [1, 3] does not match the expected [-1, 4] "
            "(-1 is a free dimension)",
        ),
        (
            [fp32("INPUT0", np.zeros(4)), fp32("INPUT1", np.zeros(4))],
            "the first dimension is the batch dimension; add it, e.g. [1, ...]",
        ),
        (
            [fp32("INPUT0", np.zeros((9, 4))), fp32("INPUT1", np.zeros((9, 4)))],
            "batch of 9 rows exceeds max_batch_size 8",
        ),
        (
            [fp32("INPUT0", np.zeros((2, 4))), fp32("INPUT1", np.zeros((3, 4)))],
            "input 'INPUT1': batch dimension is 3 but other inputs have 2",
        ),
    ],
)
def test_validation_says_what_the_model_expects(
    manager: ModelManager, inputs: list[Tensor], message: str
) -> None:
    mv = manager.get("addsub")
    with pytest.raises(InvalidInput) as info:
        asyncio.run(mv.infer(request("addsub", *inputs)))
    assert str(info.value).startswith("model 'addsub', ")
    assert message in str(info.value)


def test_unknown_requested_output_is_refused(manager: ModelManager) -> None:
    x = fp32("INPUT", [[1.0]])
    with pytest.raises(InvalidRequest) as info:
        manager.get("multi").validate(request("multi", x, outputs=[RequestedOutput("nope")]))
    assert str(info.value) == (
        "model 'multi' has no output 'nope'; its outputs are OUTPUT (FP32 [-1, 1])"
    )


def test_statistics_count_successes_rows_and_failures(manager: ModelManager) -> None:
    mv = manager.get("addsub")
    for rows in (1, 3, 3):
        z = np.zeros((rows, 4), np.float32)
        asyncio.run(mv.infer(request("addsub", fp32("INPUT0", z), fp32("INPUT1", z))))
    with pytest.raises(InvalidInput):
        asyncio.run(mv.infer(request("addsub", fp32("INPUT0", np.zeros((1, 4))))))
    doc = mv.stats.to_dict()
    assert (doc["inference_count"], doc["execution_count"]) == (7, 3)
    assert doc["inference_stats"]["success"]["count"] == 3
    assert doc["inference_stats"]["fail"]["count"] == 1
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in doc["batch_stats"]] == [
        (1, 1),
        (3, 2),
    ]
    success_ns = doc["inference_stats"]["success"]["ns"]
    parts = sum(
        doc["inference_stats"][p]["ns"]
        for p in ("queue", "compute_input", "compute_infer", "compute_output")
    )
    assert 0 < parts <= success_ns


def test_unload_then_load_again(manager: ModelManager) -> None:
    manager.unload("plain")
    assert not manager.is_ready("plain")
    with pytest.raises(ModelNotReady, match="state: UNAVAILABLE\\): unloaded"):
        manager.get("plain")
    assert RepositoryEntry("plain", None, "UNAVAILABLE", "unloaded") in manager.index()
    manager.load("plain")
    assert manager.is_ready("plain")
    with pytest.raises(ModelNotFound, match="unknown model 'ghost'"):
        manager.unload("ghost")
    with pytest.raises(ModelNotFound, match="unknown model 'ghost'"):
        manager.load("ghost")
    with pytest.raises(InvalidRequest, match=r"'\.\./x' is not a valid model name"):
        manager.load("../x")


def test_reload_that_fails_keeps_the_old_versions_serving(
    manager: ModelManager, repo: Path
) -> None:
    before = manager.get("plain")
    (repo / "plain" / "config.yaml").write_text("max_batch_size: -3\n")
    with pytest.raises(RepositoryError, match="field 'max_batch_size': expected an integer >= 0"):
        manager.load("plain")
    assert manager.get("plain") is before
    (repo / "plain" / "config.yaml").unlink()
    manager.load("plain")
    assert manager.get("plain") is not before


def test_a_model_added_later_is_indexed_then_loads(
    manager: ModelManager, repo: Path, onnx_factory: Any, place: Any
) -> None:
    place(repo, "late", {1: onnx_factory.identity("BOOL")})
    assert RepositoryEntry("late", None, "UNAVAILABLE", "not loaded") in manager.index()
    manager.load("late")
    assert manager.is_ready("late")


@pytest.mark.parametrize(
    ("model_shape", "config", "message"),
    [
        (
            (-1, 2),
            ModelConfig("m", inputs=(TensorSpec("INPUT", "FP64", (-1, 2)),)),
            "inputs 'INPUT' is declared FP64 in config.yaml but the model computes FP32",
        ),
        (
            (-1, 2),
            ModelConfig("m", inputs=(TensorSpec("INPUT", "FP32", (-1, 3)),)),
            "inputs 'INPUT' is declared with shape [-1, 3] in config.yaml "
            "but the model has [-1, 2]",
        ),
        (
            (-1, 2),
            ModelConfig("m", outputs=(TensorSpec("OUT", "FP32", (-1, 2)),)),
            "outputs 'OUT' is declared in config.yaml but the model has OUTPUT (FP32 [-1, 2])",
        ),
        (
            (3, 2),  # the config frees the batch dimension, the model's output keeps it fixed
            ModelConfig("m", max_batch_size=4, inputs=(TensorSpec("INPUT", "FP32", (-1, 2)),)),
            "max_batch_size is 4 but 'OUTPUT' has shape [3, 2]; a batched model needs -1",
        ),
    ],
)
def test_config_that_disagrees_with_the_model_is_refused(
    tmp_path: Path,
    onnx_factory: Any,
    place: Any,
    model_shape: tuple[int, ...],
    config: ModelConfig,
    message: str,
) -> None:
    place(tmp_path, "m", {1: onnx_factory.identity("FP32", model_shape)}, config=config)
    m = ModelManager(Repository(tmp_path))
    with pytest.raises(RepositoryError) as info:
        m.load("m")
    assert message in str(info.value)
    assert str(tmp_path / "m" / "1" / "model.onnx") in str(info.value)
    assert not m.is_ready("m")
    m.close()


def test_a_file_that_is_not_onnx_is_refused_with_the_path(tmp_path: Path, place: Any) -> None:
    place(tmp_path, "junk", {1: b"not a model"})
    m = ModelManager(Repository(tmp_path))
    with pytest.raises(RepositoryError, match="ONNX Runtime cannot load the model"):
        m.load("junk")
    (row,) = m.index()
    assert row.state == "UNAVAILABLE"
    assert str(tmp_path / "junk" / "1" / "model.onnx") in row.reason


def test_a_failing_model_fails_only_its_request(tmp_path: Path, place: Any) -> None:
    place(tmp_path, "fake", {1: b"unused by the fake runtime"})
    runtime = FakeRuntime(scale=3.0, fail_when=13.0)
    m = ModelManager(Repository(tmp_path), lambda backend, path, config: runtime)
    m.load("fake")
    mv = m.get("fake")
    with pytest.raises(ModelFailure) as info:
        asyncio.run(mv.infer(request("fake", fp32("INPUT", [[13.0, 0, 0, 0]]))))
    assert str(info.value) == (
        "model 'fake' version '1' failed: RuntimeError: fake failure on value 13.0"
    )
    resp = asyncio.run(mv.infer(request("fake", fp32("INPUT", [[1.0, 2.0, 0, 0]]))))
    assert resp.outputs[0].data.tolist() == [[3.0, 6.0, 0.0, 0.0]]
    stats = mv.stats.to_dict()["inference_stats"]
    assert (stats["success"]["count"], stats["fail"]["count"]) == (1, 1)
    m.close()


def test_a_request_that_reaches_a_version_just_unloaded_is_not_ready(
    manager: ModelManager,
) -> None:
    # the transport looked the version up, then an unload (on another thread) closed it
    mv = manager.get("multi", "2")
    manager.unload("multi")
    with pytest.raises(ModelNotReady) as info:
        asyncio.run(mv.infer(request("multi", fp32("INPUT", [[1.0]]))))
    assert str(info.value) == (
        "model 'multi' version '2' is not ready (state: UNAVAILABLE): "
        "unloaded or reloaded as the request arrived"
    )
    assert mv.stats.to_dict()["inference_stats"]["fail"]["count"] == 1


def test_intra_op_threads_share_the_usable_cores_between_instances() -> None:

    cores = len(os.sched_getaffinity(0))
    assert intra_op_threads(ModelConfig("m", instance_count=1)) == cores
    assert intra_op_threads(ModelConfig("m", instance_count=cores * 4)) == 1
    explicit = ModelConfig("m", instance_count=2, runtime=RuntimeOptions(intra_op_threads=3))
    assert intra_op_threads(explicit) == 3


@pytest.mark.parametrize("execution", ["thread", "inline", "auto"])
def test_every_execution_mode_computes_the_same_answers(
    tmp_path: Path, onnx_factory: Any, place: Any, execution: str
) -> None:
    config = ModelConfig(
        "addsub",
        inputs=BATCHED.inputs,
        outputs=BATCHED.outputs,
        max_batch_size=8,
        runtime=RuntimeOptions(execution=execution),
    )
    place(tmp_path, "addsub", {1: onnx_factory.add_sub()}, config=config)
    m = ModelManager(Repository(tmp_path))
    m.load_all()
    try:
        mv = m.get("addsub")
        if execution != "auto":
            assert mv.inline is (execution == "inline")
        a, b = [[1, 2, 3, 4]], [[0.5, 0.5, 0.5, 0.5]]
        response = asyncio.run(mv.infer(request("addsub", fp32("INPUT0", a), fp32("INPUT1", b))))
        assert response.outputs[0].data.tolist() == [[1.5, 2.5, 3.5, 4.5]]
        assert response.outputs[1].data.tolist() == [[0.5, 1.5, 2.5, 3.5]]
        stats = mv.stats.to_dict()
        assert stats["inference_count"] == 1
        assert stats["inference_stats"]["compute_infer"]["count"] == 1
    finally:
        m.close()


def test_auto_execution_with_several_instances_uses_threads(
    tmp_path: Path, onnx_factory: Any, place: Any
) -> None:
    config = ModelConfig("ident", instance_count=2)
    place(tmp_path, "ident", {1: onnx_factory.identity("FP32")}, config=config)
    m = ModelManager(Repository(tmp_path))
    m.load_all()
    try:
        assert m.get("ident").inline is False
    finally:
        m.close()


class ThreadRecordingRuntime(FakeRuntime):
    """The fake runtime, remembering on which thread each call ran."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        import threading

        self.threads.append(threading.current_thread().name)
        return super().infer(inputs, outputs)


def test_inline_models_move_to_their_threads_when_requests_queue(tmp_path: Path) -> None:
    from mserve.config import ModelConfig as Config
    from mserve.server.load import InFlight

    (tmp_path / "fake" / "1").mkdir(parents=True)
    (tmp_path / "fake" / "1" / "model.onnx").write_bytes(b"unused by the fake runtime")
    runtime = ThreadRecordingRuntime()
    in_flight = InFlight()

    def factory(backend: str, path: Path, config: Config) -> ThreadRecordingRuntime:
        return runtime

    m = ModelManager(Repository(tmp_path), factory, in_flight)
    m.load("fake")
    mv = m.get("fake")
    mv.inline = True
    x = fp32("INPUT", [[1, 2, 3, 4]])
    try:
        in_flight.count = 1  # this request alone: computed on the event loop
        asyncio.run(mv.infer(request("fake", x)))
        in_flight.count = 5  # others waiting: computed on an instance thread
        out = asyncio.run(mv.infer(request("fake", x)))
    finally:
        m.close()
    assert runtime.threads[-2] == "MainThread"
    assert runtime.threads[-1].startswith("fake-v1-instance-")
    assert out.outputs[0].data.tolist() == [[2.0, 4.0, 6.0, 8.0]]


def test_instance_kind_auto_is_threads_for_a_runtime_that_releases_the_gil() -> None:
    assert instance_kind(ModelConfig("m")) == "thread"  # ONNX Runtime computes without the GIL
    assert instance_kind(ModelConfig("m", instance_kind="process")) == "process"
    assert instance_kind(ModelConfig("m", instance_kind="thread")) == "thread"


def _drift_model(root: Path, onnx_factory: Any, place: Any, reference: Any) -> None:
    from mserve.config import DriftConfig

    config = ModelConfig(
        "watched",
        inputs=(TensorSpec("INPUT", "FP32", (-1, 2)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, 2)),),
        max_batch_size=4,
        drift=DriftConfig("reference.npz"),
    )
    folder = place(root, "watched", {1: onnx_factory.identity("FP32")}, config=config)
    if reference is not None:
        np.savez(folder / "reference.npz", **reference)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (None, "drift.reference names this file but it does not exist"),
        ({"other": np.zeros((5, 2))}, "no array for input 'INPUT'; the file has other"),
        ({"INPUT": np.zeros((5, 3))}, "each of shape [2]"),
        ({"INPUT": np.zeros((1, 2))}, "at least 2 rows"),
    ],
)
def test_a_bad_drift_reference_keeps_only_its_model_from_loading(
    tmp_path: Path, onnx_factory: Any, place: Any, reference: Any, message: str
) -> None:
    _drift_model(tmp_path, onnx_factory, place, reference)
    place(tmp_path, "plain", {1: onnx_factory.identity("FP32")})
    m = ModelManager(Repository(tmp_path))
    try:
        m.load_all()
        rows = {r.name: r for r in m.index()}
        assert rows["plain"].state == "READY"
        assert rows["watched"].state == "UNAVAILABLE"
        assert "reference.npz" in rows["watched"].reason
        assert message in rows["watched"].reason
    finally:
        m.close()


def test_a_drift_reference_counts_what_the_model_sees(
    tmp_path: Path, onnx_factory: Any, place: Any
) -> None:
    rng = np.random.default_rng(0)
    _drift_model(tmp_path, onnx_factory, place, {"INPUT": rng.normal(size=(100, 2))})
    m = ModelManager(Repository(tmp_path))
    try:
        m.load_all()
        mv = m.get("watched")
        assert mv.drift is not None
        asyncio.run(mv.infer(request("watched", fp32("INPUT", np.ones((3, 2))))))
        mv.drift.flush(0.0)
        assert mv.drift.inputs["INPUT"].counts.sum() == 6
    finally:
        m.close()
