"""The data plane: what every transport calls. Real models, in process, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve import __version__
from mserve.config import ModelConfig, VersionPolicy
from mserve.errors import InvalidRequest, ModelNotFound, ModelNotReady
from mserve.protocol import InferRequest, Tensor, TensorSpec
from mserve.repository import Repository
from mserve.server.dataplane import DataPlane
from mserve.server.models import ModelManager


@pytest.fixture
def dataplane(tmp_path: Path, onnx_factory: Any, place: Any) -> Iterator[DataPlane]:
    place(
        tmp_path,
        "batched",
        {1: onnx_factory.identity("FP32"), 2: onnx_factory.identity("FP32")},
        config=ModelConfig(
            "batched",
            max_batch_size=16,
            instance_count=2,
            version_policy=VersionPolicy("specific", specific=(1, 2)),
        ),
    )
    place(tmp_path, "strings", {3: onnx_factory.identity("BYTES", (2,))})
    place(tmp_path, "broken", {1: b"junk"})
    models = ModelManager(Repository(tmp_path))
    models.load_all()
    dp = DataPlane(models)
    yield dp
    models.close()


def test_health_and_server_metadata(dataplane: DataPlane) -> None:
    assert dataplane.live()
    assert not dataplane.ready()  # not until start-up says so
    dataplane.set_ready(True)
    assert dataplane.ready()
    assert dataplane.metadata().to_dict() == {
        "name": "mserve",
        "version": __version__,
        "extensions": [
            "binary_tensor_data",
            "model_repository",
            "statistics",
            "model_configuration",
        ],
    }


def test_model_config_has_tritons_shape(dataplane: DataPlane) -> None:
    assert dataplane.model_config("batched") == {
        "name": "batched",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [1, 2]}},
        "max_batch_size": 16,
        "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [2]}],  # batch dim dropped
        "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [2]}],
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    }
    config = dataplane.model_config("strings")
    assert config["input"] == [{"name": "INPUT", "data_type": "TYPE_STRING", "dims": [2]}]
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["max_batch_size"] == 0


def test_model_metadata_and_readiness(dataplane: DataPlane) -> None:
    md = dataplane.model_metadata("batched").to_dict()
    assert md == {
        "name": "batched",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 2]}],
    }
    assert dataplane.model_ready("batched", "1")
    assert not dataplane.model_ready("broken")
    with pytest.raises(ModelNotFound):
        dataplane.model_ready("batched", "3")
    with pytest.raises(ModelNotReady):
        dataplane.model_metadata("broken")


def test_infer_and_statistics_per_version(dataplane: DataPlane) -> None:
    x = Tensor("INPUT", "FP32", np.array([[1, 2], [3, 4]], dtype=np.float32))
    resp = asyncio.run(dataplane.infer(InferRequest("batched", "1", [x], id="7")))
    assert (resp.model_name, resp.model_version, resp.id) == ("batched", "1", "7")
    assert resp.outputs[0].data.tolist() == [[1, 2], [3, 4]]
    asyncio.run(dataplane.infer(InferRequest("batched", None, [x])))
    asyncio.run(dataplane.infer(InferRequest("batched", None, [x])))
    stats = dataplane.statistics("batched")["model_stats"]
    assert [(s["version"], s["inference_count"], s["execution_count"]) for s in stats] == [
        ("1", 2, 1),
        ("2", 4, 2),
    ]
    (one,) = dataplane.statistics("batched", "2")["model_stats"]
    assert one["inference_stats"]["success"]["count"] == 2
    everything = dataplane.statistics()["model_stats"]
    assert [(s["name"], s["version"]) for s in everything] == [
        ("batched", "1"),
        ("batched", "2"),
        ("strings", "3"),
    ]
    with pytest.raises(ModelNotFound):
        dataplane.statistics("nope")
    with pytest.raises(ModelNotReady):
        dataplane.statistics("broken")


def test_bytes_in_bytes_out(dataplane: DataPlane) -> None:
    data = np.array([b"h\xc3\xa9", b""], dtype=object)
    resp = asyncio.run(
        dataplane.infer(InferRequest("strings", None, [Tensor("INPUT", "BYTES", data)]))
    )
    (out,) = resp.outputs
    assert out.datatype == "BYTES"
    assert [str(v) for v in out.data] == ["hé", ""]


def test_repository_index_and_ready_filter(dataplane: DataPlane) -> None:
    rows = [r.to_dict() for r in dataplane.repository_index()]
    assert [(r["name"], r.get("version"), r["state"]) for r in rows] == [
        ("batched", "1", "READY"),
        ("batched", "2", "READY"),
        ("broken", None, "UNAVAILABLE"),
        ("strings", "3", "READY"),
    ]
    assert "ONNX Runtime cannot load the model" in rows[2]["reason"]
    ready = [(r.name, r.version) for r in dataplane.repository_index(ready_only=True)]
    assert ready == [("batched", "1"), ("batched", "2"), ("strings", "3")]


def test_load_parameters_are_refused_and_unload_works(dataplane: DataPlane) -> None:
    with pytest.raises(InvalidRequest, match="load parameters config, file:x are not supported"):
        asyncio.run(dataplane.load("strings", {"file:x": "", "config": "{}"}))
    asyncio.run(dataplane.unload("strings"))
    assert not dataplane.model_ready("strings")
    asyncio.run(dataplane.load("strings"))
    assert dataplane.model_ready("strings")


def test_lookup_gives_the_signature_a_transport_decodes_with(dataplane: DataPlane) -> None:
    mv = dataplane.lookup("strings")
    assert mv.config.inputs == (TensorSpec("INPUT", "BYTES", (2,)),)
    assert mv.version == "3"
