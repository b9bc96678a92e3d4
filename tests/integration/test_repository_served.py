"""The model repository through the server: versions and version policies, a broken config
beside good models, models without config.yaml, load / unload, statistics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from mserve.config import ModelConfig

pytestmark = pytest.mark.integration

X = np.array([[0.5], [-2.0]], dtype=np.float32)


def add_const(client: Any, model: str, version: str = "") -> np.ndarray:
    x = httpclient.InferInput("INPUT", [2, 1], "FP32")
    x.set_data_from_numpy(X)
    out: np.ndarray = client.infer(model, [x], model_version=version).as_numpy("OUTPUT")
    return out


@pytest.mark.parametrize(
    ("model", "versions"),
    [
        ("versions_latest2", ["2", "3"]),
        ("versions_all", ["1", "2", "3"]),
        ("versions_specific", ["1", "3"]),
        ("versions_default", ["3"]),  # no config.yaml: the latest only
    ],
)
def test_version_policy_decides_which_versions_answer(
    client: Any, model: str, versions: list[str]
) -> None:
    assert client.get_model_metadata(model)["versions"] == versions
    for version in ("1", "2", "3"):
        if version in versions:
            assert client.is_model_ready(model, version)
            assert np.array_equal(add_const(client, model, version), X + float(version))
            assert client.get_model_metadata(model, version)["versions"] == [version]
        else:
            assert not client.is_model_ready(model, version)
            with pytest.raises(InferenceServerException) as info:
                add_const(client, model, version)
            assert info.value.status() == "404"
            assert info.value.message() == (
                f"unknown version '{version}' of model '{model}'; "
                f"available versions: {', '.join(versions)}"
            )
    # no version named: the highest one served
    assert np.array_equal(add_const(client, model), X + float(versions[-1]))


def test_repository_index_shows_the_broken_config_beside_the_good_models(
    client: Any, served: Any
) -> None:
    reply = served.request("POST", "/v2/repository/index", "")
    assert reply.status == 200
    rows = {(r["name"], r.get("version")): r for r in reply.json()}
    assert rows == {(r["name"], r.get("version")): r for r in client.get_model_repository_index()}
    broken = rows["broken", None]
    assert broken["state"] == "UNAVAILABLE"
    config_path = served.repository / "broken" / "config.yaml"
    assert (
        f"{config_path}: field 'max_batch_size': expected an integer >= 0, got 'lots'"
        in (broken["reason"])
    )
    for name in ("digits", "iris", "addsub", "identity_bytes", "versions_default"):
        assert rows[name, "1" if name != "versions_default" else "3"]["state"] == "READY"
    assert [v for (n, v) in rows if n == "versions_all"] == ["1", "2", "3"]
    ready = served.request("POST", "/v2/repository/index", json.dumps({"ready": True})).json()
    assert {r["state"] for r in ready} == {"READY"}
    assert "broken" not in {r["name"] for r in ready}
    assert {r["name"] for r in ready} >= {"digits", "iris", "identity_fp16"}


def test_the_good_model_beside_the_broken_one_serves(client: Any) -> None:
    assert not client.is_model_ready("broken")
    x = httpclient.InferInput("INPUT", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1.0, 2.0]], np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("broken", [x])
    assert info.value.status() == "503"
    assert "field 'max_batch_size': expected an integer >= 0" in info.value.message()
    assert client.infer("identity_fp32", [x]).as_numpy("OUTPUT").tolist() == [[1.0, 2.0]]


def test_model_without_config_has_a_config_read_from_the_model(client: Any) -> None:
    config = client.get_model_config("iris")
    assert config["max_batch_size"] == 0
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    assert [o["name"] for o in config["output"]] == ["label", "probabilities"]


def test_repo_check_reports_the_broken_config(
    tmp_path: Path, onnx_factory: Any, place: Any, mserve_cli: Any
) -> None:
    place(tmp_path, "good", {1: onnx_factory.identity("INT8")})
    place(tmp_path, "broken", {1: onnx_factory.identity("FP32")}, config_text="inputs: 3\n")
    result = mserve_cli("repo", "check", str(tmp_path), "--json")
    assert result.returncode == 1, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["good"]["state"] == "READY"
    assert rows["good"]["versions"] == ["1"]
    assert rows["good"]["inputs"] == [{"name": "INPUT", "datatype": "INT8", "shape": [-1, 2]}]
    assert rows["broken"]["state"] == "UNAVAILABLE"
    assert (
        f"{tmp_path / 'broken' / 'config.yaml'}: field 'inputs': expected a list of "
        in (rows["broken"]["reason"])
    )
    assert "got 3" in rows["broken"]["reason"]
    assert "Traceback" not in result.stderr

    (tmp_path / "broken" / "config.yaml").write_text(
        "max_batch_size: 8\ndynamic_batching: {max_queue_size: 16}\n"
    )
    fixed = mserve_cli("repo", "check", str(tmp_path), "--json")
    assert fixed.returncode == 0, fixed.stderr
    rows = {r["name"]: r for r in json.loads(fixed.stdout)["models"]}
    assert {r["state"] for r in rows.values()} == {"READY"}
    assert rows["broken"]["dynamic_batching"] == {
        "max_queue_delay_microseconds": 0,
        "preferred_batch_sizes": [],
        "max_queue_size": 16,
        "default_timeout_microseconds": 0,
    }
    assert rows["good"]["dynamic_batching"] is None
    assert rows["good"]["instance_kind"] == "thread"  # auto, resolved for ONNX Runtime


@pytest.mark.parametrize(
    ("content", "field", "expected"),
    [
        (b"max_batch_size: \xff\n", "(file)", "expected UTF-8 text"),
        (
            b"inputs:\n  - {name: INPUT, datatype: [FP32], shape: [-1, 2]}\n",
            "inputs[0].datatype",
            "expected a V2 datatype",
        ),
        (b"version_policy: {newest: 1}\n", "version_policy", "expected 'all', {latest: N}"),
    ],
    ids=["not-utf8", "datatype-not-a-string", "unknown-policy"],
)
def test_repo_check_never_crashes_on_a_bad_config(
    tmp_path: Path,
    onnx_factory: Any,
    place: Any,
    content: bytes,
    field: str,
    expected: str,
    mserve_cli: Any,
) -> None:
    place(tmp_path, "good", {1: onnx_factory.identity("FP32")})
    place(tmp_path, "bad", {1: onnx_factory.identity("FP32")}, config_text=content)
    result = mserve_cli("repo", "check", str(tmp_path), "--json")
    assert result.returncode == 1, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["good"]["state"] == "READY"
    reason = rows["bad"]["reason"]
    assert f"{tmp_path / 'bad' / 'config.yaml'}: field '{field}': {expected}" in reason


def test_load_and_unload_through_tritonclient(
    client: Any, served: Any, onnx_factory: Any, place: Any
) -> None:
    assert client.is_model_ready("swappable")
    assert np.array_equal(add_const(client, "swappable"), X + 10)

    client.unload_model("swappable")
    assert not client.is_model_ready("swappable")
    with pytest.raises(InferenceServerException) as info:
        add_const(client, "swappable")
    assert info.value.status() == "503"
    assert info.value.message() == "model 'swappable' is not ready (state: UNAVAILABLE): unloaded"
    index = {r["name"]: r for r in client.get_model_repository_index()}
    assert (index["swappable"]["state"], index["swappable"]["reason"]) == (
        "UNAVAILABLE",
        "unloaded",
    )
    assert client.is_model_ready("digits")  # the others keep serving

    client.load_model("swappable")
    assert client.is_model_ready("swappable")
    assert np.array_equal(add_const(client, "swappable"), X + 10)

    # a model placed in the repository while the server runs: listed, then loaded on request
    config = ModelConfig("late")
    place(served.repository, "late", {1: onnx_factory.add_const(100.0)}, config=config)
    index = {r["name"]: r for r in client.get_model_repository_index()}
    assert (index["late"]["state"], index["late"]["reason"]) == ("UNAVAILABLE", "not loaded")
    assert not client.is_model_ready("late")
    client.load_model("late")
    assert client.is_model_ready("late")
    assert np.array_equal(add_const(client, "late"), X + 100)

    # loading again picks up a new version (the default policy serves the latest)
    place(served.repository, "late", {2: onnx_factory.add_const(200.0)}, config=config)
    client.load_model("late")
    assert client.get_model_metadata("late")["versions"] == ["2"]
    assert np.array_equal(add_const(client, "late"), X + 200)

    # a reload that fails leaves the loaded versions serving
    (served.repository / "late" / "config.yaml").write_text("instance_count: zero\n")
    with pytest.raises(InferenceServerException) as info:
        client.load_model("late")
    assert info.value.status() == "400"
    assert "field 'instance_count': expected an integer >= 1, got 'zero'" in info.value.message()
    assert np.array_equal(add_const(client, "late"), X + 200)

    for missing in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            missing("not_in_repository")
        assert info.value.status() == "404"
        assert "unknown model 'not_in_repository'" in info.value.message()


def test_load_with_parameters_is_refused(served: Any) -> None:
    body = json.dumps({"parameters": {"config": "{}"}})
    reply = served.request("POST", "/v2/repository/models/swappable/load", body)
    assert reply.status == 400
    assert reply.json() == {
        "error": "load parameters config are not supported; "
        "place the model in the repository and load it by name"
    }


def test_load_with_parameters_that_are_not_an_object(served: Any) -> None:
    reply = served.request("POST", "/v2/repository/models/swappable/load", '{"parameters": 5}')
    assert reply.status == 400
    assert "'parameters' must be a JSON object" in reply.json()["error"]


def stats_input(rows: int, binary: bool, columns: int = 2) -> Any:
    x = httpclient.InferInput("INPUT", [rows, columns], "FP32")
    x.set_data_from_numpy(np.full((rows, columns), rows, np.float32), binary_data=binary)
    return x


def test_statistics_count_the_requests_sent(client: Any, served: Any) -> None:
    sizes = [1, 3, 3, 8]
    before_ms = time.time() * 1000
    for i, rows in enumerate(sizes):
        client.infer("stats_probe", [stats_input(rows, binary=i % 2 == 0)])
    for bad in (stats_input(9, True), stats_input(1, False, columns=3)):
        with pytest.raises(InferenceServerException) as info:
            client.infer("stats_probe", [bad])  # over max_batch_size 8, then a wrong shape
        assert info.value.status() == "400"

    (stats,) = client.get_inference_statistics("stats_probe")["model_stats"]
    assert (stats["name"], stats["version"]) == ("stats_probe", "1")
    assert stats["inference_count"] == sum(sizes)
    assert stats["execution_count"] == len(sizes)
    assert before_ms - 1000 <= stats["last_inference"] <= time.time() * 1000 + 1000
    phases = stats["inference_stats"]
    assert phases["success"]["count"] == len(sizes)
    assert phases["fail"]["count"] == 2
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert phases[phase]["count"] == len(sizes)
    assert phases["compute_infer"]["ns"] > 0
    assert phases["success"]["ns"] >= phases["compute_infer"]["ns"]
    by_size = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
    assert by_size == {1: 1, 3: 2, 8: 1}

    raw = served.request("GET", "/v2/models/stats_probe/stats")
    assert raw.status == 200
    assert raw.json() == {"model_stats": [stats]}
    assert served.request("GET", "/v2/models/stats_probe/versions/1/stats").json() == raw.json()
    everything = client.get_inference_statistics()["model_stats"]
    assert stats in everything
    assert {"digits", "iris", "identity_bool", "versions_all"} <= {s["name"] for s in everything}
    assert [s["version"] for s in everything if s["name"] == "versions_all"] == ["1", "2", "3"]
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("no_such_model")
    assert info.value.status() == "404"
